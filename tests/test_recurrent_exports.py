"""The recurrent language model's export targets (issue 12), for each cell: `logits` with
its batch and seq axes dynamic, proven at seq 1, an odd length and the block size, its
.pt2 skipped with the reason (never passed), the ONNX exporter choice in the metadata;
`step` with its state layout in the metadata, proven by generating one character at a
time; the GRU export in every runtime (C++ zoo-run and Node too); and a GRU written the
way the dynamo exporter once wrote it (ONNX `linear_before_reset=0`, pytorch issue
189225) caught by element-wise and task-level parity.

Each cell is trained for one step on the first 20,480 characters of pydoc (a 2,048-character
validation split), so task-level parity, which runs the whole validation split through
every artifact in every runtime, stays in seconds: from random init the model's
vocabulary is pydoc's, and its 5,631 validation windows cost minutes in zoo-run and Node.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from zoo.export import artifacts

CELLS = ("rnn", "lstm", "gru")
LAYERS, HIDDEN, BLOCK = 2, 16, 8
SMALL = ["--layers", str(LAYERS), "--hidden", str(HIDDEN), "--embedding", "8", "--block-size", str(BLOCK), "--batch-size", "4"]
# logits' parity sizes of seq (plugins/rnn.py axis_sizes): the block size, 1 and an odd length.
SEQ_ROWS = {(1, BLOCK), (2, BLOCK), (5, BLOCK), (1, 1), (1, 17)}
PT2_SKIP = "torch.export unrolls the recurrent layer over time"
# What each artifact was written with; the .pt2 of `step` is compiled for the CPU.
EXPORTED_WITH = {
    "logits.torchscript": "script",
    "logits.onnx": "torchscript",  # the TorchScript-based ONNX exporter keeps seq dynamic with ONNX's own RNN operators
    "step.torchscript": "script",
    "step.onnx": "torch.export",
    "step.cpu.pt2": "torch.export",
}


def cli(*args: str | Path) -> tuple[int, str, str]:
    from zoo.cli import cli as zoo_cli

    r = CliRunner().invoke(zoo_cli, [str(a) for a in args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recurrent-home")


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    """Ten blocks of pydoc: 18,432 characters to train on, 2,048 to validate on (255 windows)."""
    from zoo.datasets.text import pydoc_text

    path = tmp_path_factory.mktemp("text") / "pydoc-20k.txt"
    path.write_text(pydoc_text()[:20480], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, home, text):
    """trained(cell) -> last.pt of `zoo train rnn --cell CELL --max-steps 1` on the small text."""
    done: dict[str, Path] = {}

    def train(cell: str) -> Path:
        if cell not in done:
            out = tmp_path_factory.mktemp(f"run-{cell}")
            args = ["train", "rnn", "--data", f"text:{text}", "--cell", cell, *SMALL, "--max-steps", "1", "--threads", "1"]
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("ZOO_HOME", str(home))
                code, stdout, stderr = cli(*args, "--progress", "none", "--out", out)
            assert code == 0, stdout + stderr
            done[cell] = out / "last.pt"
        return done[cell]

    return train


def export(home: Path, out: Path, checkpoint: Path, text: Path, *args: str) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(home))
        code, stdout, stderr = cli(
            "export", "rnn", "--checkpoint", checkpoint, "--data", f"text:{text}", "--device", "cpu", "--no-latency", "--out", out, *args
        )
    assert code == 0, stdout + stderr
    return stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory, home, text, trained):
    """exported(cell) -> (directory, export.json) of every format each target allows. The
    .pt2 compiles take most of the time, so rnn's `step` stays TorchScript and ONNX (its
    logits still ask for .pt2, to be told no)."""
    done: dict[str, tuple[Path, dict]] = {}

    def make(cell: str) -> tuple[Path, dict]:
        if cell not in done:
            out = tmp_path_factory.mktemp(f"export-{cell}")
            if cell == "rnn":
                export(home, out, trained(cell), text, "--all-formats", "--target", "logits")
                export(home, out, trained(cell), text, "--torchscript", "--onnx", "--target", "step")  # adds to export.json
            else:
                export(home, out, trained(cell), text, "--all-formats")
            done[cell] = out, json.loads((out / "export.json").read_text())
        return done[cell]

    return make


def gru_nodes(path: Path) -> list:
    import onnx

    return [node for node in onnx.load(str(path)).graph.node if node.op_type == "GRU"]


def linear_before_reset(node) -> int:
    """ONNX's default is 0, PyTorch's GRU is 1: r gates (W_hn h + b_hn), not W_hn (r * h) + b_hn."""
    return next((a.i for a in node.attribute if a.name == "linear_before_reset"), 0)


def break_gru(directory: Path) -> list[str]:
    """Rewrite every ONNX GRU of the export with linear_before_reset=0, as the dynamo exporter
    did (pytorch issue 189225), and record the new bytes' sha256 in export.json so zoo verify
    runs the files instead of refusing them as modified. Returns the files it changed."""
    import onnx

    manifest = json.loads((directory / "export.json").read_text())
    changed = []
    for record in manifest["artifacts"]:
        if record["format"] != "onnx":
            continue
        path = directory / record["path"]
        before = artifacts.read_metadata(path)
        model = onnx.load(str(path))
        nodes = [node for node in model.graph.node if node.op_type == "GRU"]
        assert nodes, f"{path.name} has no GRU node to break"
        for node in nodes:
            (attribute,) = [a for a in node.attribute if a.name == "linear_before_reset"]
            attribute.i = 0
        onnx.save(model, str(path))
        assert all(linear_before_reset(node) == 0 for node in gru_nodes(path))
        # zoo.json does not hold its own file's hash: the flip leaves the embedded metadata as it was.
        assert artifacts.read_metadata(path) == before
        record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["bytes"] == path.stat().st_size  # an int attribute set to 0 is still written: same size
        changed.append(record["path"])
    (directory / "export.json").write_text(json.dumps(manifest, indent=2))
    return changed


def assert_broken_gru_fails(report: dict, runtime: str) -> None:
    """Every ONNX check of `runtime` failed with a reason naming an output's error, every other
    format passed, and task-level parity through the ONNX files failed too."""
    onnx_rows = [row for row in report["parity"] if (row["format"], row["runtime"]) == ("onnx", runtime)]
    assert {row["target"] for row in onnx_rows} == {"logits", "step"}, report["parity"]
    for row in onnx_rows:
        assert row["status"] == "failed" and row["passed"] is False, row
        assert "|diff|" in row["reason"] and "> atol" in row["reason"], row
    assert {(row["axes"].get("seq"), row["batch"]) for row in onnx_rows if row["target"] == "logits"} == {
        (seq, batch) for batch, seq in SEQ_ROWS
    }
    others = [row for row in report["parity"] if row["format"] != "onnx" and row["status"] != "skipped"]
    assert all(row["passed"] for row in others), others
    task = [row for row in report["task_parity"] if (row["format"], row["runtime"]) == ("onnx", runtime)]
    assert {row["target"] for row in task} == {"logits", "step"}, report["task_parity"]
    for row in task:
        assert row["status"] == "failed" and row["delta"] > row["bound"], row
        assert "val_bpc moved from" in row["reason"], row
    assert report["passed"] is False


# --------------------------------------------------------------------------- every cell, every format


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_exports_both_targets_with_parity_at_seq_1_odd_and_block(exported, cell):
    out, manifest = exported(cell)
    assert manifest["passed"] is True
    assert manifest["config"]["cell"] == cell and manifest["config"]["block_size"] == BLOCK
    files = {record["path"]: record for record in manifest["artifacts"]}
    expected = {path for path in EXPORTED_WITH if cell != "rnn" or not path.endswith(".pt2")}
    assert set(files) == expected

    # The exporter each file was written with, in export.json and in the file itself.
    for path, record in files.items():
        assert record["exported_with"] == EXPORTED_WITH[path], record
        assert artifacts.read_metadata(out / path)["exported_with"] == EXPORTED_WITH[path]

    # logits: batch and seq dynamic, parity at seq 1, an odd length (17) and the block size (8).
    for fmt in ("torchscript", "onnx"):
        rows = [row for row in manifest["parity"] if (row["target"], row["format"]) == ("logits", fmt)]
        assert {(row["batch"], row["axes"]["seq"]) for row in rows} == SEQ_ROWS, rows
        assert all(row["status"] == "passed" and row["passed"] is True for row in rows), rows
        meta = artifacts.read_metadata(out / f"logits.{fmt}")
        assert meta["inputs"][0]["shape"] == ["batch", "seq"] and meta["inputs"][0]["dtype"] == "int64"
        assert meta["outputs"][0]["shape"][:2] == ["batch", "seq"]

    # logits' .pt2 is skipped with its reason, never passed.
    (skip,) = manifest["skipped_formats"]
    assert (skip["target"], skip["format"]) == ("logits", "pt2") and PT2_SKIP in skip["reason"]
    pt2 = [row for row in manifest["parity"] if (row["target"], row["format"]) == ("logits", "pt2")]
    assert pt2 and all(row["status"] == "skipped" and row["passed"] is None for row in pt2), pt2
    assert all(row["reason"] == f"target opts out: {skip['reason']}" for row in pt2)
    assert not (out / "logits.cpu.pt2").exists()

    # step: every format at batches 1, 2 and 5; the state's layout is in the metadata.
    step_formats = {record["format"] for record in manifest["artifacts"] if record["target"] == "step"}
    for fmt in step_formats:
        rows = [row for row in manifest["parity"] if (row["target"], row["format"]) == ("step", fmt)]
        assert sorted(row["batch"] for row in rows) == [1, 2, 5] and all(row["passed"] is True for row in rows), rows
    state_rows = LAYERS * (2 if cell == "lstm" else 1)
    for path in (p for p in files if p.startswith("step.")):
        token, state = artifacts.read_metadata(out / path)["inputs"]
        assert token["shape"] == ["batch", 1] and state["shape"] == [state_rows, "batch", HIDDEN]
        assert "zeros to start" in state["range"] and "(layers, batch, hidden) for rnn and gru" in state["range"]
        lstm = "(2 x layers, batch, hidden) for lstm, rows 0 to layers-1 the h of each layer, rows layers to 2 x layers-1 its c"
        assert lstm in state["range"]  # what the next test checks the files do

    # Task-level parity: bits per character through every artifact, none skipped.
    task = manifest["task_parity"]
    assert {(row["target"], row["format"]) for row in task} == {(r["target"], r["format"]) for r in manifest["artifacts"]}
    assert all(row["status"] == "passed" for row in task), task


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_step_generates_what_logits_computes_and_its_state_is_laid_out_as_documented(exported, trained, cell):
    """Feeding a sequence one character at a time through each `step` file, from zeros and
    carrying the state, gives the `logits` file's scores at every position, without
    recomputing the prefix; the final state is the eager layer's h (then, for lstm, c)."""
    from zoo import get_plugin
    from zoo.models import build_model

    out, manifest = exported(cell)
    model = build_model(get_plugin("rnn"), checkpoint=str(trained(cell))).model
    vocab = len(manifest["data_info"]["vocabulary"])
    tokens = np.random.default_rng(0).integers(0, vocab, (3, 11))  # an odd length above the block size
    with torch.no_grad():
        eager, final = model(torch.from_numpy(tokens))
    expected_state = torch.cat(final, 0).numpy()  # (h,) or (h, c), each (layers, batch, hidden)
    (whole,) = artifacts.load(out / "logits.onnx")(tokens)
    np.testing.assert_allclose(whole, eager.numpy(), rtol=1e-4, atol=1e-5)
    for record in (r for r in manifest["artifacts"] if r["target"] == "step"):
        step = artifacts.load(out / record["path"])
        state = np.zeros([tokens.shape[0] if d == "batch" else d for d in step.metadata["inputs"][1]["shape"]], np.float32)
        for t in range(tokens.shape[1]):
            logits, state = step(tokens[:, t : t + 1], state)
            np.testing.assert_allclose(logits, whole[:, t], rtol=1e-4, atol=1e-5, err_msg=f"{record['path']} at t={t}")
        np.testing.assert_allclose(state, expected_state, rtol=1e-4, atol=1e-5, err_msg=record["path"])


# --------------------------------------------------------------------------- GRU in every runtime


@pytest.mark.slow
def test_gru_export_passes_in_every_runtime(exported, zoo, build_cache, monkeypatch):
    monkeypatch.setenv("ZOO_BUILD_CACHE", str(build_cache))
    out, _ = exported("gru")
    r = zoo("verify", out, "--runtime", "all", "--device", "cpu", "--no-latency", "--json")
    assert r.exit_code == 0, r
    report = r.json()
    cells = {(row["target"], row["format"], row["runtime"]) for row in report["parity"] if row["status"] == "passed"}
    for target, formats in (("logits", ("torchscript", "onnx")), ("step", ("torchscript", "onnx", "pt2"))):
        for fmt in formats:
            native = "node" if fmt == "onnx" else "cpp"
            assert {(target, fmt, "python"), (target, fmt, native)} <= cells, (target, fmt)
    ran = [row for row in report["parity"] if row["status"] != "skipped"]
    assert all(row["passed"] for row in ran), [row for row in ran if not row["passed"]]
    seqs = sorted(row["axes"]["seq"] for row in ran if (row["target"], row["runtime"]) == ("logits", "node"))
    assert seqs == [1, BLOCK, BLOCK, BLOCK, 17]
    skipped = [row for row in report["parity"] if row["status"] == "skipped"]
    assert {(row["target"], row["format"], row["runtime"]) for row in skipped} == {("logits", "pt2", "python"), ("logits", "pt2", "cpp")}
    task = {(row["target"], row["format"], row["runtime"]): row["status"] for row in report["task_parity"]}
    assert set(task.values()) == {"passed"} and len(task) == 10, task  # 5 artifacts, each in python and its native runtime


@pytest.mark.slow
def test_node_catches_a_gru_written_with_linear_before_reset_0(exported, zoo, build_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_BUILD_CACHE", str(build_cache))
    out = tmp_path / "broken"
    shutil.copytree(exported("gru")[0], out)
    assert sorted(break_gru(out)) == ["logits.onnx", "step.onnx"]
    r = zoo("verify", out, "--runtime", "node", "--device", "cpu", "--no-latency", "--json")
    assert r.exit_code == 1, r
    assert_broken_gru_fails(r.json(), "node")


# --------------------------------------------------------------------------- the wrong GRU, caught


@pytest.fixture
def gru_onnx(home, trained, text, tmp_path) -> Path:
    """What `zoo export rnn --onnx` ships for a GRU: logits (TorchScript-based exporter) and
    step (the dynamo exporter)."""
    export(home, tmp_path / "gru-onnx", trained("gru"), text, "--onnx")
    return tmp_path / "gru-onnx"


def test_shipped_gru_is_correct_and_one_written_with_linear_before_reset_0_fails_parity(zoo, gru_onnx):
    manifest = json.loads((gru_onnx / "export.json").read_text())
    assert manifest["passed"] is True
    assert {r["path"]: r["exported_with"] for r in manifest["artifacts"]} == {"logits.onnx": "torchscript", "step.onnx": "torch.export"}
    for name in ("logits.onnx", "step.onnx"):
        nodes = gru_nodes(gru_onnx / name)
        assert len(nodes) == LAYERS, name  # one ONNX GRU per layer, not an unrolled graph
        assert [linear_before_reset(node) for node in nodes] == [1] * LAYERS, name

    # The raw export as the buggy exporter wrote it: zoo verify runs it (its sha256 recorded)
    # and fails it, element-wise at every size and on the task's own metric.
    assert sorted(break_gru(gru_onnx)) == ["logits.onnx", "step.onnx"]
    r = zoo("verify", gru_onnx, "--device", "cpu", "--no-latency", "--json")
    assert r.exit_code == 1, r
    assert "parity FAILED" in r.stderr
    report = r.json()
    assert_broken_gru_fails(report, "python")
    # The dynamo-exported file records module paths: the divergence is pinned on the GRU layer.
    found = [row for row in report["localization"] if (row["target"], row["format"]) == ("step", "onnx")]
    assert found and found[0]["localized"] and found[0]["module"] == "rnn", report["localization"]
