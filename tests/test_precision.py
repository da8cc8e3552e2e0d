"""Mixed precision, channels-last and compilation through `zoo train`: runs train, keep
fp32 master weights in their checkpoints, resume, and export with parity like any other
run. (Their speed is a benchmark's business: benchmarks/train_throughput.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import one_line_error

SMALL = ("--hidden", "16", "--batch-size", "64", "--max-steps", "4", "--progress", "none")


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def floating_dtypes(run) -> set[torch.dtype]:
    state = torch.load(run / "last.pt", weights_only=True)
    return {t.dtype for t in state["model"].values() if t.is_floating_point()}


def export_passes(zoo, checkpoint, out) -> dict:
    r = zoo("export", "convnet", "--checkpoint", checkpoint, "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 0, r
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["passed"] is True and all(row["passed"] for row in manifest["task_parity"])
    return manifest


@pytest.mark.parametrize("options", [("--precision", "bf16-mixed"), ("--channels-last",), ("--precision", "bf16-mixed", "--channels-last")])
def test_a_run_with_the_option_trains_keeps_fp32_weights_and_exports(zoo, tmp_path, options):
    run = tmp_path / "run"
    r = zoo("train", "convnet", *SMALL, *options, "--out", run)
    assert r.exit_code == 0, r
    (row,) = records(run)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in row.items() if k in ("loss", "val_loss", "val_accuracy"))
    assert floating_dtypes(run) == {torch.float32}  # master weights stay fp32 whatever the compute
    config = json.loads((run / "config.json").read_text())
    assert config.get("precision", "fp32") == ("bf16-mixed" if "bf16-mixed" in options else "fp32")
    export_passes(zoo, run / "last.pt", tmp_path / "export")


def test_bf16_mixed_computes_in_bf16_and_lands_near_fp32(zoo, tmp_path):
    """Not the same numbers as fp32 (it really runs in bf16), but the same training."""
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    assert zoo("train", "convnet", *SMALL, "--out", fp32).exit_code == 0
    assert zoo("train", "convnet", *SMALL, "--precision", "bf16-mixed", "--out", bf16).exit_code == 0
    a, b = records(fp32)[-1], records(bf16)[-1]
    assert a["loss"] != b["loss"]
    assert abs(a["loss"] - b["loss"]) < 0.05 * abs(a["loss"]) + 0.05


def test_a_bf16_run_resumes_in_bf16_and_refuses_another_precision(zoo, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("convnet", "--hidden", "16", "--batch-size", "500", "--epochs", "2", "--precision", "bf16-mixed", "--progress", "none")
    assert zoo("train", *common, "--out", straight).exit_code == 0
    assert zoo("train", *common, "--max-steps", "4", "--out", split).exit_code == 0
    one_line_error(zoo("train", "convnet", "--epochs", "2", "--resume", split / "last.pt", "--precision", "fp32"), 2, "--precision")
    r = zoo("train", "convnet", "--epochs", "2", "--resume", split / "last.pt", "--precision", "bf16-mixed", "--progress", "none")
    assert r.exit_code == 0, r
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(split / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_compiled_run_trains_and_its_checkpoint_loads_without_compile(zoo, tmp_path):
    run = tmp_path / "run"
    r = zoo("train", "convnet", *SMALL, "--compile", "--out", run)
    assert r.exit_code == 0, r
    state = torch.load(run / "last.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in state["model"])  # the plain module's names
    (row,) = records(run)
    assert row["loss"] > 0 and "first_step_seconds" in row
    export_passes(zoo, run / "last.pt", tmp_path / "export")
