"""Task-level parity: every artifact judged on real data by its target's `task_check`,
eager PyTorch beside the artifact, in export.json and in the printed table; and an
export that passes random-input parity but fails on real data is caught."""

from __future__ import annotations

import json

import pytest
from conftest import one_line_error

from zoo import get_plugin

ROW_KEYS = {"target", "format", "runtime", "device", "metric", "eager", "artifact", "delta", "bound", "passed"}


def test_convnet_default_export_agrees_on_every_validation_digit(zoo, tmp_path):
    out = tmp_path / "out"
    r = zoo("export", "convnet", "--weights", "DEFAULT", "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 0, r
    assert "task-level parity" in r.stdout and "val_accuracy" in r.stdout
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["task_data"] == "digits"
    rows = manifest["task_parity"]
    assert {(row["format"], row["runtime"], row["device"]) for row in rows} == {("torchscript", "python", "cpu"), ("onnx", "python", "cpu")}
    recorded = get_plugin("convnet").get_weights("DEFAULT").meta["metrics"]["val_accuracy"]
    for row in rows:
        assert ROW_KEYS <= set(row), row
        assert row["passed"] is True and row["status"] == "passed"
        assert row["metric"] == "val_accuracy" and row["samples"] == 300
        assert row["eager"] == pytest.approx(recorded, abs=1e-9) and row["artifact"] == row["eager"]
        assert row["agreement"] == 1.0 and row["delta"] == 0.0 and row["bound"] == 1e-4


def test_no_task_parity_skips_it(zoo, tmp_path):
    out = tmp_path / "out"
    r = zoo("export", "linear", "--random-init", "--onnx", "--device", "cpu", "--no-latency", "--no-task-parity", "--out", out)
    assert r.exit_code == 0, r
    assert json.loads((out / "export.json").read_text())["task_parity"] == []
    assert "task-level parity" not in r.stdout


# A classifier whose exported graph (torch.export: ONNX and .pt2) treats a saturated pixel
# (exactly 1.0) as black. Random inputs come from torch.rand, which never reaches 1.0, so
# random-input parity passes; the bundled digits have saturated pixels in most images.
BLIND_MODULE = """
from dataclasses import dataclass

import torch
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, hparam, tasks
from zoo.classify import ClassifierTrainer


@dataclass
class BlindConfig(TrainConfig):
    epochs: int = hparam(1, "passes")


class Blind(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)

    def forward(self, image):
        if torch.jit.is_scripting():
            return self.linear(image.flatten(1))
        if torch.compiler.is_exporting():
            image = torch.where(image >= 1.0, torch.zeros_like(image), image)
        return self.linear(image.flatten(1))


plugin = Plugin(
    name="blind",
    summary="exports a graph that sees saturated pixels as black",
    config_class=BlindConfig,
    build=Blind,
    trainer_class=ClassifierTrainer,
    data_request=lambda config: DataRequest.images(size=28, channels=1, value_range=(0.0, 1.0), num_classes=10),
    default_dataset="digits",
    datasets=("digits",),
    export_targets=(
        ExportTarget(
            name="classifier",
            module=lambda model: model,
            inputs=(TensorSpec("image", value_range=(0.0, 1.0)),),
            outputs=(TensorSpec("logits"),),
            example_inputs=lambda config, batch, gen: (torch.rand(batch, 1, 28, 28, generator=gen),),
            task_check=tasks.classification(),
        ),
    ),
    predict_target="classifier",
)
"""


def test_an_export_exact_on_random_inputs_but_wrong_on_real_data_fails(zoo, install_dist, tmp_path):
    install_dist("zoo-blind", "1.0", {"zoo_blind": BLIND_MODULE}, {"blind": "zoo_blind:plugin"})
    out = tmp_path / "out"
    r = zoo("export", "blind", "--random-init", "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 1, r
    (error,) = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert "task parity FAILED: 1 of 2" in error and "Traceback" not in r.stderr
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["passed"] is False
    assert all(row["passed"] for row in manifest["parity"] if row["status"] != "skipped")  # tensors agree on random inputs
    rows = {row["format"]: row for row in manifest["task_parity"]}
    assert rows["torchscript"]["passed"] is True and rows["torchscript"]["agreement"] == 1.0
    assert rows["onnx"]["passed"] is False and rows["onnx"]["agreement"] < 1.0
    assert "decisions differ" in rows["onnx"]["reason"]
    # zoo verify judges it again, and --no-task-parity shows that only the task check fails.
    r = zoo("verify", out, "--device", "cpu", "--no-latency")
    assert r.exit_code == 1 and "task parity FAILED" in r.stderr
    r = zoo("verify", out, "--device", "cpu", "--no-latency", "--no-task-parity")
    assert r.exit_code == 0, r


def test_verify_judges_on_other_data_and_refuses_data_that_cannot_serve(zoo, tmp_path):
    out = tmp_path / "out"
    assert zoo("export", "vae", "--weights", "DEFAULT", "--torchscript", "--device", "cpu", "--no-latency", "--out", out).exit_code == 0
    r = zoo("verify", out, "--device", "cpu", "--no-latency", "--json")
    assert r.exit_code == 0, r
    rows = r.json()["task_parity"]
    assert {row["target"] for row in rows} == {"encoder", "decoder"}
    assert all(row["metric"] == "val_reconstruction_bce" and row["passed"] for row in rows)
    r = zoo("verify", out, "--device", "cpu", "--no-latency", "--data", "edges")
    one_line_error(r, 2, "vae needs image")


@pytest.mark.parametrize("name", [n for n in __import__("zoo").list_plugins() if any(t.task_check for t in get_plugin(n).export_targets)])
def test_info_shows_each_targets_task_check(zoo, name):
    info = zoo("info", name, "--json").json()
    for target in info["export_targets"]:
        check = get_plugin(name).target(target["name"]).task_check
        if check is None:
            assert target["task_check"] is None
            continue
        assert target["task_check"]["metric"] == check.metric and target["task_check"]["max_change"] == check.max_change
    assert "task parity:" in zoo("info", name).stdout


def test_a_checkpoint_is_judged_on_the_data_it_was_trained_on(zoo, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 120)
    run = tmp_path / "run"
    args = ("--hidden", "8", "--embedding", "4", "--layers", "1", "--block-size", "16", "--batch-size", "8", "--max-steps", "2")
    assert zoo("train", "rnn", "--data", f"text:{corpus}", *args, "--out", run, "--progress", "none").exit_code == 0
    out = tmp_path / "out"
    r = zoo(
        "export", "rnn", "--checkpoint", run / "last.pt", "--target", "logits", "--onnx", "--device", "cpu", "--no-latency", "--out", out
    )
    assert r.exit_code == 0, r
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["task_data"] == f"text:{corpus}"
    (row,) = manifest["task_parity"]
    assert row["passed"] is True and row["samples"] > 0  # not skipped for another vocabulary
    # The corpus moved away: the rows are skipped with the reason, the export still passes.
    corpus.rename(tmp_path / "moved.txt")
    r = zoo(
        "export", "rnn", "--checkpoint", run / "last.pt", "--target", "logits", "--onnx", "--device", "cpu", "--no-latency", "--out", out
    )
    assert r.exit_code == 0, r
    (row,) = json.loads((out / "export.json").read_text())["task_parity"]
    assert row["status"] == "skipped" and "could not be loaded" in row["reason"] and "--data" in row["reason"]
