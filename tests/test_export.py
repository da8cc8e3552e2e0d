"""`zoo export` and `zoo verify`: every plugin's targets leave Python and provably compute
what eager PyTorch computes.

Parametrized over the plugin registry, so a new plugin's export targets are exported and
checked without new test code. Weights are random (`--random-init`), which is enough:
parity compares the file with the same weights in eager PyTorch.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import registry_plugins

from zoo import get_plugin
from zoo.describe import describe
from zoo.errors import ZooError
from zoo.export import artifacts

FORMATS = ("torchscript", "onnx")
CASES = [(name, target.name) for name in registry_plugins() for target in get_plugin(name).export_targets]
CASE_IDS = [f"{p}-{t}" for p, t in CASES]
METADATA_KEYS = {
    "plugin",
    "plugin_version",
    "target",
    "format",
    "zoo_version",
    "torch_version",
    "inputs",
    "outputs",
    "checkpoint_sha256",
    "exported_with",
    "rtol",
    "atol",
}
NO_CUDA = not torch.cuda.is_available()


def export(zoo, plugin, out, *args):
    """`zoo export PLUGIN --random-init --json --no-latency --out OUT ARGS...` -> (result, manifest or None)."""
    r = zoo("export", plugin, "--random-init", "--json", "--no-latency", "--out", out, *args)
    manifest = json.loads((Path(out) / "export.json").read_text()) if (Path(out) / "export.json").is_file() else None
    return r, manifest


def one_error_line(r) -> str:
    """The command failed with exactly one `error:` line on stderr (progress lines aside)."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    return errors[0]


def rows(manifest, **match):
    return [r for r in manifest["parity"] if all(r[k] == v for k, v in match.items())]


def eager_outputs(plugin_name, target_name, config, inputs, seed=0):
    """The outputs of the same random-init model in eager PyTorch."""
    plugin = get_plugin(plugin_name)
    torch.manual_seed(seed)
    model = plugin.build(config).eval()
    module = plugin.target(target_name).module(model).eval()
    with torch.no_grad():
        out = module(*inputs)
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


# --------------------------------------------------------------------------- every plugin x target x format


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("plugin_name,target_name", CASES, ids=CASE_IDS)
def test_every_target_exports_and_passes_parity_on_cpu(zoo, tmp_path, plugin_name, target_name, fmt):
    out = tmp_path / "out"
    r, manifest = export(zoo, plugin_name, out, "--target", target_name, f"--{fmt}", "--device", "cpu")
    assert r.exit_code == 0, r
    assert r.json() == manifest
    assert manifest["passed"] is True
    target = get_plugin(plugin_name).target(target_name)

    (record,) = manifest["artifacts"]
    assert (record["target"], record["format"]) == (target_name, fmt)
    path = out / record["path"]
    assert path.is_file() and not Path(record["path"]).is_absolute()
    assert record["bytes"] == path.stat().st_size
    assert [i["name"] for i in record["inputs"]] == [s.name for s in target.inputs]
    assert [o["name"] for o in record["outputs"]] == [s.name for s in target.outputs]
    for spec, recorded in zip(target.inputs + target.outputs, record["inputs"] + record["outputs"]):
        named = [d for d, size in enumerate(recorded["shape"]) if size == "batch"]
        assert named == ([] if spec.batch_axis is None else [spec.batch_axis]), (spec, recorded)
    # `zoo info` promises the shapes the exported file has (named axes included).
    (described,) = [t for t in describe(get_plugin(plugin_name))["export_targets"] if t["name"] == target_name]
    assert [i["shape"] for i in described["inputs"]] == [i["shape"] for i in record["inputs"]]
    assert [o["shape"] for o in described["outputs"]] == [o["shape"] for o in record["outputs"]]

    checked = rows(manifest, target=target_name, format=fmt, device="cpu", runtime="python")
    # Every batch size at the export size of each other dynamic axis, then batch 1 at each other valid size.
    config = get_plugin(plugin_name).config()
    at_export = target.axes(config)
    assert sorted(r["batch"] for r in checked if r["axes"] == at_export) == [1, 2, 5]
    others = [{**at_export, axis: size} for axis, sizes in target.sizes_of_axes(config).items() for size in sizes[1:]]
    assert sorted(map(str, (r["axes"] for r in checked if r["axes"] != at_export))) == sorted(map(str, others))
    assert all(r["batch"] == 1 for r in checked if r["axes"] != at_export)
    for row in checked:
        assert row["passed"] is True and row["status"] == "passed", row
        assert row["max_abs"] <= row["atol"] + row["rtol"], row
        assert (row["rtol"], row["atol"]) == (target.rtol, target.atol)

    # Task-level parity: a target with a task_check is judged on its data, eager beside the file.
    tasks = [r for r in manifest["task_parity"] if (r["target"], r["format"], r["device"]) == (target_name, fmt, "cpu")]
    if target.task_check is None:
        assert tasks == []
    else:
        (task,) = tasks
        assert task["passed"] is True and task["metric"] == target.task_check.metric and task["samples"] > 0, task
        assert task["delta"] <= task["bound"] == target.task_check.max_change

    art = artifacts.load(path)
    assert art.format == fmt
    assert METADATA_KEYS <= set(art.metadata)
    assert art.metadata["plugin"] == plugin_name and art.metadata["target"] == target_name
    assert art.metadata["checkpoint_sha256"] is None  # random init
    assert art.metadata["config"] == manifest["config"]
    exporter = target.exporter(fmt, {"onnx": "dynamo", "torchscript": "script"}[fmt])
    assert (
        art.metadata["exported_with"]
        == {"dynamo": "torch.export", "torchscript": "torchscript", "script": "script", "trace": "trace"}[exporter]
    )
    assert record["exported_with"] == art.metadata["exported_with"]
    if fmt == "onnx":
        assert art.metadata["opset"] == manifest["opset"]


@pytest.mark.cuda
@pytest.mark.skipif(NO_CUDA, reason="no CUDA device")
@pytest.mark.parametrize("plugin_name,target_name", CASES, ids=CASE_IDS)
def test_every_target_passes_parity_on_cuda(zoo, tmp_path, plugin_name, target_name):
    r, manifest = export(zoo, plugin_name, tmp_path / "out", "--target", target_name, "--device", "all")
    assert r.exit_code == 0, r
    target = get_plugin(plugin_name).target(target_name)
    at_export = target.axes(get_plugin(plugin_name).config())
    for fmt in FORMATS:
        cuda = rows(manifest, format=fmt, device="cuda")
        if fmt == "onnx" and all(r["status"] == "skipped" for r in cuda):  # onnxruntime without its CUDA provider
            assert all("no CUDA provider" in r["reason"] for r in cuda), cuda
            continue
        assert sorted(r["batch"] for r in cuda if r["axes"] == at_export) == [1, 2, 5]
        assert len(cuda) == len(rows(manifest, format=fmt, device="cpu"))  # every size of every axis on both
        assert all(r["passed"] for r in cuda), cuda


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is present: the CUDA rows run instead")
def test_cuda_rows_are_skipped_with_a_reason_never_passed(zoo, tmp_path):
    r, manifest = export(zoo, "convnet", tmp_path / "out")
    assert r.exit_code == 0, r
    cuda = rows(manifest, device="cuda")
    assert {r["format"] for r in cuda} == set(FORMATS)
    for row in cuda:
        assert row["status"] == "skipped" and row["passed"] is None and "no CUDA" in row["reason"]
    r = zoo("export", "convnet", "--random-init", "--no-latency", "--out", tmp_path / "table")
    assert re.search(r"cuda .*skipped: no CUDA device", r.stdout), r.stdout


# --------------------------------------------------------------------------- the table and the default command


def test_plain_export_writes_both_formats_and_prints_the_table(zoo, tmp_path):
    """No format flag: TorchScript and ONNX (pt2 is opt-in); the table has max errors, verdicts
    and batch-1 latencies with ratios to eager; stdout carries no exporter chatter."""
    r = zoo("export", "convnet", "--random-init", "--out", tmp_path / "out")
    assert r.exit_code == 0, r
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert {a["format"] for a in manifest["artifacts"]} == {"torchscript", "onnx"}
    assert {(row["runtime"], row["device"]) for row in manifest["latency"]} == {
        ("eager", "cpu"),
        ("torchscript", "cpu"),
        ("onnxruntime", "cpu"),
    }
    assert all(row["median_ms"] > 0 and row["ratio_to_eager"] > 0 for row in manifest["latency"])
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "FORMAT", "RUNTIME", "DEVICE", "BATCH", "MAX_ABS", "MAX_REL", "RTOL", "ATOL", "RESULT"]
    assert "median latency at batch 1" in r.stdout and "ONNXRUNTIME" in r.stdout
    assert "parity passed" in r.stdout
    for noise in ("[torch.onnx]", "FutureWarning", "deprecated", "Warning"):
        assert noise not in r.stdout


def test_default_weights_are_the_newest_run_and_absent_runs_say_what_to_do(zoo, tmp_path):
    r = zoo("export", "convnet")
    assert r.exit_code == 2
    assert "train one first" in r.stderr and "--random-init" in r.stderr and "Traceback" not in r.stderr

    from zoo import checkpoint, paths
    from zoo import config as zconfig

    plugin = get_plugin("convnet")
    config = plugin.config()
    torch.manual_seed(3)
    model = plugin.build(config)
    run = paths.new_run_dir("convnet")
    checkpoint.save({"plugin": "convnet", "config": zconfig.to_dict(config), "model": model.state_dict()}, run / "last.pt")
    r = zoo("export", "convnet", "--onnx", "--device", "cpu", "--no-latency", "--json", "--out", tmp_path / "out")
    assert r.exit_code == 0, r
    manifest = r.json()
    assert manifest["source"]["kind"] == "checkpoint"
    assert manifest["source"]["sha256"] == checkpoint.sha256_file(run / "last.pt")
    art = artifacts.load(tmp_path / "out" / "classifier.onnx")
    assert art.metadata["checkpoint_sha256"] == manifest["source"]["sha256"]
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    (logits,) = art(x)
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- dynamic batch


@pytest.mark.parametrize("fmt", FORMATS)
def test_dynamic_batch_export_at_4_runs_at_1_and_7(zoo, tmp_path, fmt):
    out = tmp_path / "out"
    r, manifest = export(zoo, "convnet", out, f"--{fmt}", "--export-batch", "4", "--batch-sizes", "1,7", "--device", "cpu")
    assert r.exit_code == 0, r
    assert manifest["export_batch"] == 4
    assert sorted(r["batch"] for r in rows(manifest, device="cpu")) == [1, 7]
    art = artifacts.load(out / manifest["artifacts"][0]["path"])
    plugin = get_plugin("convnet")
    target = plugin.target("classifier")
    for batch in (1, 7):
        inputs = target.make_inputs(plugin.config(), batch, torch.Generator().manual_seed(5))
        (got,) = art(*inputs)
        (want,) = eager_outputs("convnet", "classifier", plugin.config(), inputs)
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, rtol=target.rtol, atol=target.atol)
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(out / "classifier.onnx"))
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.slow
def test_pt2_export_with_metadata_and_dynamic_batch(zoo, tmp_path):
    """AOTInductor compiles C++ (~30 s), so one small target only."""
    out = tmp_path / "out"
    r, manifest = export(zoo, "vae", out, "--pt2", "--target", "decoder", "--device", "all")
    assert r.exit_code == 0, r
    (record,) = manifest["artifacts"]
    assert (record["format"], record["device"], record["path"]) == ("pt2", "cpu", "decoder.cpu.pt2")
    assert all(r["passed"] for r in rows(manifest, format="pt2", device="cpu"))
    if NO_CUDA:
        (skipped,) = rows(manifest, format="pt2", device="cuda")
        assert skipped["status"] == "skipped" and "no CUDA" in skipped["reason"]

    import torch._inductor

    loaded = torch._inductor.aoti_load_package(str(out / "decoder.cpu.pt2"))
    meta = json.loads(loaded.get_metadata()["zoo.json"])
    assert meta["format"] == "pt2" and meta["device"] == "cpu" and meta["exported_with"] == "torch.export"
    art = artifacts.load(out / "decoder.cpu.pt2")
    assert art.metadata == meta
    assert artifacts.load(out / "decoder.cpu.pt2", device="auto").device == "cpu"  # a .pt2 picks its own device
    plugin = get_plugin("vae")
    for batch in (1, 7):
        z = torch.randn(batch, plugin.config().latent_dim, generator=torch.Generator().manual_seed(batch))
        (image,) = art(z)
        (want,) = eager_outputs("vae", "decoder", plugin.config(), (z,))
        np.testing.assert_allclose(image, want, rtol=1e-4, atol=1e-5)
    r = zoo("verify", out, "--no-latency", "--json")
    assert r.exit_code == 0, r


def test_pt2_gives_the_same_result_for_a_strided_input(zoo, tmp_path):
    """AOTInductor's kernels assume the strides the graph was captured with: a strided view
    (here the recurrent state, as a slice of a larger tensor) gave silently wrong outputs
    until the loader made inputs contiguous (task parity of rnn's `step` found it)."""
    out = tmp_path / "out"
    r, _ = export(zoo, "rnn", out, "--pt2", "--target", "step", "--device", "cpu", "--config", "hidden=8", "--no-task-parity")
    assert r.exit_code == 0, r
    art = artifacts.load(out / "step.cpu.pt2")
    plugin = get_plugin("rnn")
    gen = torch.Generator().manual_seed(3)
    token = torch.randint(0, 50, (5, 1), generator=gen)
    state = torch.randn(4, 10, 8, generator=gen)[:, ::2]  # (2 layers x h and c, batch 5, hidden 8), strided
    assert not state.is_contiguous()
    from zoo.models import build_model

    built = build_model(plugin, random_init=True, overrides={"hidden": 8})
    with torch.no_grad():
        want = plugin.target("step").module(built.model).eval()(token, state.contiguous())
    for got, expected in zip(art(token, state), want):
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- mismatches fail


DRIFT_MODULE = '''
"""A model whose compiled code takes another path than eager: the bug parity exists to catch."""
from dataclasses import dataclass

import torch
from torch import nn

from zoo.plugin import DataRequest, ExportTarget, Plugin, TensorSpec, Trainer, TrainConfig


@dataclass
class DriftConfig(TrainConfig):
    pass


class Drift(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if torch.jit.is_scripting():
            return y + 0.01
        if torch.compiler.is_exporting():
            return y + 0.01
        return y


plugin = Plugin(
    name="drift",
    summary="adds 0.01 only when scripted or exported",
    task="classification",
    config_class=DriftConfig,
    build=Drift,
    trainer_class=Trainer,
    data_request=lambda config: DataRequest(size=2),
    default_dataset="digits",
    datasets=("digits",),
    export_targets=(
        ExportTarget(
            name="linear",
            module=lambda model: model,
            inputs=(TensorSpec("x"),),
            outputs=(TensorSpec("y"),),
            example_inputs=lambda config, batch, gen: (torch.randn(batch, 4, generator=gen),),
        ),
    ),
)
'''


def test_export_exits_1_on_a_mismatch_and_keeps_the_files(zoo, install_dist, tmp_path):
    install_dist("zoo-drift", "1.0", {"zoo_drift": DRIFT_MODULE}, {"drift": "zoo_drift:plugin"})
    out = tmp_path / "out"
    r = zoo("export", "drift", "--random-init", "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 1, r
    assert "parity FAILED" in one_error_line(r)
    assert "FAIL" in r.stdout
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["passed"] is False
    assert {a["format"] for a in manifest["artifacts"]} == set(FORMATS)
    assert all((out / a["path"]).is_file() for a in manifest["artifacts"])
    failed = [r for r in manifest["parity"] if r["status"] == "failed"]
    assert len(failed) == 6 and all(0.009 < r["max_abs"] < 0.011 for r in failed)  # 2 formats x batches 1, 2, 5
    # verify agrees: the files still differ from eager
    r = zoo("verify", out, "--device", "cpu", "--no-latency")
    assert r.exit_code == 1 and "parity FAILED" in r.stderr


TRACED_MODULE = '''
"""Targets that declare `trace=True`: one the trace captures faithfully, one it does not."""
from dataclasses import dataclass

import torch
from torch import nn

from zoo.plugin import DataRequest, ExportTarget, Plugin, TensorSpec, Trainer, TrainConfig


@dataclass
class TracedConfig(TrainConfig):
    pass


class Flatten(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.linear = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))  # (N, 3, 4) -> (N, 12) -> (N, 2)


class BakedBatch(nn.Module):
    """int() turns the batch size into a Python number: the trace freezes it."""

    def __init__(self, flatten):
        super().__init__()
        self.flatten = flatten

    def forward(self, x):
        return self.flatten.linear(x.reshape(int(x.shape[0]), 12))


def _inputs(config, batch, gen):
    return (torch.randn(batch, 3, 4, generator=gen),)


plugin = Plugin(
    name="traced",
    summary="trace-exported targets",
    task="classification",
    config_class=TracedConfig,
    build=Flatten,
    trainer_class=Trainer,
    data_request=lambda config: DataRequest(size=2),
    default_dataset="digits",
    datasets=("digits",),
    export_targets=(
        ExportTarget(name="faithful", module=lambda m: m, inputs=(TensorSpec("x"),), outputs=(TensorSpec("y"),),
                     example_inputs=_inputs, trace=True),
        ExportTarget(name="baked", module=BakedBatch, inputs=(TensorSpec("x"),), outputs=(TensorSpec("y"),),
                     example_inputs=_inputs, trace=True),
    ),
)
'''


def test_traced_targets_are_checked_and_recorded(zoo, install_dist, tmp_path):
    install_dist("zoo-traced", "1.0", {"zoo_traced": TRACED_MODULE}, {"traced": "zoo_traced:plugin"})
    r, manifest = export(zoo, "traced", tmp_path / "ok", "--torchscript", "--target", "faithful", "--device", "cpu")
    assert r.exit_code == 0, r
    assert manifest["artifacts"][0]["exported_with"] == "trace"
    assert artifacts.load(tmp_path / "ok" / "faithful.torchscript").metadata["exported_with"] == "trace"
    r, _ = export(zoo, "traced", tmp_path / "baked", "--torchscript", "--target", "baked", "--device", "cpu")
    assert r.exit_code == 1, r
    assert "torch.jit.trace of target 'baked' failed" in one_error_line(r)
    assert not (tmp_path / "baked" / "baked.torchscript").exists()


def _perturb_onnx(path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(weight).copy()
    array.flat[0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(path))


def test_verify_passes_then_fails_on_a_perturbed_rehashed_artifact(zoo, tmp_path):
    from zoo.checkpoint import sha256_file, write_json

    out = tmp_path / "out"
    r, manifest = export(zoo, "convnet", out, "--device", "cpu")
    assert r.exit_code == 0, r
    r = zoo("verify", out, "--device", "cpu", "--json")
    assert r.exit_code == 0, r
    report = r.json()
    assert report["passed"] is True and {row["runtime"] for row in report["parity"]} == {"python"}
    assert len(report["parity"]) == len(manifest["parity"])
    assert {row["runtime"] for row in report["latency"]} == {"eager", "torchscript", "onnxruntime"}

    # Someone edits a weight and fixes up the manifest's hash: parity catches it.
    _perturb_onnx(out / "classifier.onnx")
    for record in manifest["artifacts"]:
        if record["format"] == "onnx":
            record["sha256"] = sha256_file(out / record["path"])
    write_json(manifest, out / "export.json")
    r = zoo("verify", out, "--device", "cpu", "--no-latency")
    assert r.exit_code == 1, r
    assert re.search(r"classifier\s+onnx\s+python\s+cpu\s+1 .*FAIL", r.stdout), r.stdout
    assert re.search(r"classifier\s+torchscript\s+python\s+cpu\s+1 .*pass", r.stdout), r.stdout


# --------------------------------------------------------------------------- bad input


def test_weights_file_is_exported_and_verified(zoo, tmp_path):
    """--weights PATH (safetensors with its config in the header): the source is recorded with
    its sha256, the config comes from the file, and verify rebuilds from it."""
    from safetensors.torch import save_file

    from zoo import config as zconfig
    from zoo.checkpoint import sha256_file

    plugin = get_plugin("convnet")
    config = plugin.config(hidden=16)
    torch.manual_seed(4)
    model = plugin.build(config)
    path = tmp_path / "convnet.safetensors"
    save_file(model.state_dict(), str(path), metadata={"zoo": json.dumps({"plugin": "convnet", "config": zconfig.to_dict(config)})})
    r = zoo("export", "convnet", "--weights", path, "--onnx", "--device", "cpu", "--no-latency", "--json", "--out", tmp_path / "out")
    assert r.exit_code == 0, r
    manifest = r.json()
    assert manifest["source"]["kind"] == "weights" and manifest["source"]["sha256"] == sha256_file(path)
    assert manifest["config"]["hidden"] == 16
    x = torch.rand(2, 1, 28, 28)
    (got,) = artifacts.load(tmp_path / "out" / "classifier.onnx")(x)
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(x).numpy(), rtol=1e-4, atol=1e-5)
    r = zoo("verify", tmp_path / "out", "--no-latency")
    assert r.exit_code == 0, r


@pytest.mark.parametrize("plugin_name", [p for p in registry_plugins() if get_plugin(p).default_weights])
def test_default_weights_export(zoo, tmp_path, plugin_name):
    r = zoo("export", plugin_name, "--weights", "DEFAULT", "--device", "cpu", "--no-latency", "--json", "--out", tmp_path / "w")
    assert r.exit_code == 0, r
    assert r.json()["source"]["kind"] == "weights" and r.json()["passed"] is True


def test_unknown_target_and_format(zoo, tmp_path):
    r = zoo("export", "convnet", "--random-init", "--target", "nope", "--out", tmp_path)
    assert r.exit_code == 2 and "no export target 'nope'" in r.stderr and "classifier" in r.stderr
    r = zoo("export", "convnet", "--random-init", "--format", "tflite", "--out", tmp_path)
    assert r.exit_code == 2 and "unknown format 'tflite'" in r.stderr
    r = zoo("export", "convnet", "--random-init", "--tflite", "--out", tmp_path)
    assert r.exit_code == 2 and "--tflite" in r.stderr
    r = zoo("export", "nope", "--random-init")
    assert r.exit_code == 2 and "unknown plugin" in r.stderr
    assert not list(tmp_path.glob("*.onnx"))


def test_opset_too_low_names_the_operator(zoo, tmp_path):
    import onnx

    r, manifest = export(zoo, "convnet", tmp_path / "ok", "--onnx", "--device", "cpu")
    assert r.exit_code == 0, r
    ops = {node.op_type for node in onnx.load(str(tmp_path / "ok" / "classifier.onnx")).graph.node}
    r = zoo("export", "convnet", "--random-init", "--onnx", "--opset", "9", "--out", tmp_path / "low")
    assert r.exit_code == 2, r
    one_error_line(r)
    m = re.search(r"--opset 9 is too low for operator (\w+)", r.stderr)
    assert m and m.group(1) in ops, r.stderr
    assert not (tmp_path / "low" / "classifier.onnx").exists()
    r = zoo("export", "convnet", "--random-init", "--onnx", "--opset", "99", "--out", tmp_path / "high")
    assert r.exit_code == 2 and "--opset 99" in r.stderr


def test_explicit_older_opset_is_recorded(zoo, tmp_path):
    import onnx

    r, manifest = export(zoo, "convnet", tmp_path / "out", "--onnx", "--device", "cpu", "--opset", "18")
    assert r.exit_code == 0, r
    model = onnx.load(str(tmp_path / "out" / "classifier.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert manifest["opset"] == 18 and manifest["artifacts"][0]["opset"] == 18
    assert json.loads({p.key: p.value for p in model.metadata_props}["zoo.json"])["opset"] == 18


def test_checkpoint_of_another_plugin_is_refused(zoo, tmp_path):
    from zoo import checkpoint
    from zoo import config as zconfig

    plugin = get_plugin("convnet")
    config = plugin.config()
    path = tmp_path / "convnet.pt"
    checkpoint.save({"plugin": "convnet", "config": zconfig.to_dict(config), "model": plugin.build(config).state_dict()}, path)
    r = zoo("export", "vae", "--checkpoint", path, "--out", tmp_path / "out")
    assert r.exit_code == 1 and "written by plugin 'convnet', not 'vae'" in r.stderr
    assert not (tmp_path / "out").exists()


def test_weight_sources_exclude_each_other_and_config_needs_random_init(zoo, tmp_path):
    r = zoo("export", "convnet", "--random-init", "--checkpoint", tmp_path / "x.pt")
    assert r.exit_code == 2 and "exclude each other" in r.stderr
    r = zoo("export", "convnet", "--checkpoint", tmp_path / "x.pt", "--config", "hidden=8")
    assert r.exit_code == 2 and "--config applies only with --random-init" in r.stderr
    r = zoo("export", "convnet", "--random-init", "--config", "nope=1")
    assert r.exit_code == 2 and "hidden" in r.stderr
    r = zoo("export", "convnet", "--random-init", "--config", "hidden=many")
    assert r.exit_code == 2 and "not a valid int" in r.stderr


def test_config_override_changes_the_exported_model(zoo, tmp_path):
    r, manifest = export(zoo, "convnet", tmp_path / "out", "--torchscript", "--device", "cpu", "--config", "hidden=8")
    assert r.exit_code == 0, r
    assert manifest["config"]["hidden"] == 8
    r = zoo("verify", tmp_path / "out", "--no-latency")
    assert r.exit_code == 0, r


def test_unwritable_output_directory(zoo, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = zoo("export", "convnet", "--random-init", "--out", blocker / "sub")
    assert r.exit_code == 2 and "cannot write there" in r.stderr and "Traceback" not in r.stderr
    if os.geteuid() != 0:  # root writes through any mode bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        r = zoo("export", "convnet", "--random-init", "--out", locked)
        assert r.exit_code == 2 and "cannot write there" in r.stderr


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is present")
def test_device_cuda_without_a_gpu(zoo, tmp_path):
    r = zoo("export", "convnet", "--random-init", "--device", "cuda", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "CUDA is not available" in r.stderr
    assert not (tmp_path / "out").exists()


def test_bad_batch_sizes_and_export_batch(zoo, tmp_path):
    r = zoo("export", "convnet", "--random-init", "--batch-sizes", "1,x")
    assert r.exit_code == 2 and "--batch-sizes" in r.stderr
    r = zoo("export", "convnet", "--random-init", "--export-batch", "1", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "specializes sizes 0 and 1" in r.stderr


def test_verify_refuses_truncated_and_tampered_artifacts(zoo, tmp_path):
    from zoo.checkpoint import sha256_file, write_json

    out = tmp_path / "out"
    r, manifest = export(zoo, "convnet", out, "--device", "cpu")
    assert r.exit_code == 0, r
    ts = out / "classifier.torchscript"
    data = ts.read_bytes()
    ts.write_bytes(data[: len(data) // 2])
    r = zoo("verify", out)
    assert r.exit_code == 1 and "modified after export" in one_error_line(r) and "refusing" in r.stderr

    # Truncated and re-hashed: it cannot even load, and says so in one line per row.
    for record in manifest["artifacts"]:
        if record["format"] == "torchscript":
            record["sha256"] = sha256_file(ts)
    write_json(manifest, out / "export.json")
    r = zoo("verify", out, "--no-latency", "--device", "cpu")
    assert r.exit_code == 1 and "parity FAILED" in r.stderr
    assert "truncated or corrupt" in r.stdout and "Traceback" not in r.stdout + r.stderr

    (out / "classifier.onnx").unlink()
    r = zoo("verify", out)
    assert r.exit_code == 1 and "missing" in r.stderr


def test_verify_bad_directory_and_runtime(zoo, tmp_path):
    r = zoo("verify", tmp_path)
    assert r.exit_code == 2 and "no export.json" in r.stderr
    (tmp_path / "export.json").write_text("{not json")
    r = zoo("verify", tmp_path)
    assert r.exit_code == 1 and "not valid JSON" in r.stderr
    r = zoo("verify", tmp_path, "--runtime", "java")
    assert r.exit_code == 2 and "--runtime" in r.stderr


def test_verify_rebuilds_from_the_recorded_checkpoint_and_checks_its_hash(zoo, tmp_path):
    from zoo import checkpoint
    from zoo import config as zconfig

    plugin = get_plugin("convnet")
    config = plugin.config()
    path = tmp_path / "last.pt"
    torch.manual_seed(1)
    state = {"plugin": "convnet", "config": zconfig.to_dict(config), "model": plugin.build(config).state_dict()}
    checkpoint.save(state, path)
    out = tmp_path / "out"
    r = zoo("export", "convnet", "--checkpoint", path, "--onnx", "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 0, r
    moved = tmp_path / "moved.pt"
    path.rename(moved)
    r = zoo("verify", out, "--no-latency")
    assert r.exit_code == 1 and "is missing; pass --checkpoint" in r.stderr
    r = zoo("verify", out, "--no-latency", "--checkpoint", moved)
    assert r.exit_code == 0, r
    torch.manual_seed(2)
    state["model"] = plugin.build(config).state_dict()  # other weights, same plugin
    checkpoint.save(state, moved)
    r = zoo("verify", out, "--no-latency", "--checkpoint", moved)
    assert r.exit_code == 1 and "not the one this export was made from" in r.stderr


# --------------------------------------------------------------------------- the artifact loader


@pytest.mark.filterwarnings("ignore::FutureWarning")  # this test calls torch.jit itself
def test_artifact_loader_checks_inputs_and_refuses_foreign_files(zoo, tmp_path):
    out = tmp_path / "out"
    r, manifest = export(zoo, "convnet", out, "--device", "cpu")
    assert r.exit_code == 0, r
    for fmt in FORMATS:
        art = artifacts.load(out / f"classifier.{fmt}")
        assert art.input_names == ["image"] and art.output_names == ["logits"]
        x = torch.rand(2, 1, 28, 28)
        (a,) = art(x)
        (b,) = art(x.numpy())
        assert a.shape == (2, 10) and np.array_equal(a, b)
        with pytest.raises(ZooError, match=r"must have shape \['batch', 1, 28, 28\], got \[2, 1, 27, 28\]"):
            art(torch.rand(2, 1, 27, 28))
        with pytest.raises(ZooError, match="must be float32, got int64"):
            art(torch.zeros(2, 1, 28, 28, dtype=torch.int64))
        with pytest.raises(ZooError, match=r"takes 1 input\(s\) \(image\), got 2"):
            art(x, x)

    bad = {
        "empty.onnx": b"",
        "garbage.onnx": b"\x08\x07garbage that is no protobuf \xff\xff",
        "half.torchscript": (out / "classifier.torchscript").read_bytes()[:5000],
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ZooError) as info:
            artifacts.load(tmp_path / name)
        assert "\n" not in str(info.value)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("a.txt", "hello")
    with pytest.raises(ZooError, match="zip archive that no installed format recognises"):
        artifacts.load(tmp_path / "other.zip")
    with pytest.raises(ZooError, match="does not exist"):
        artifacts.load(tmp_path / "nope.onnx")

    # A TorchScript file from elsewhere (no zoo.json) is not taken for a zoo artifact.
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, str(tmp_path / "plain.torchscript"))
    with pytest.raises(ZooError, match="no zoo metadata"):
        artifacts.load(tmp_path / "plain.torchscript")


def test_exports_into_one_directory_merge(zoo, tmp_path):
    """`--torchscript` then `--onnx` into the same directory from the same weights: one
    manifest lists both, so `zoo verify` checks both."""
    out = tmp_path / "out"
    r, _ = export(zoo, "convnet", out, "--torchscript", "--device", "cpu")
    assert r.exit_code == 0, r
    r, manifest = export(zoo, "convnet", out, "--onnx", "--device", "cpu")
    assert r.exit_code == 0, r
    assert {a["format"] for a in manifest["artifacts"]} == set(FORMATS)
    # Different weights never mix with an export of others: refused, or replaced with --overwrite.
    r, _ = export(zoo, "convnet", out, "--onnx", "--device", "cpu", "--seed", "1")
    assert r.exit_code == 2 and "--overwrite" in r.stderr
    assert {a["format"] for a in json.loads((out / "export.json").read_text())["artifacts"]} == set(FORMATS)
    r, manifest = export(zoo, "convnet", out, "--onnx", "--device", "cpu", "--seed", "1", "--overwrite")
    assert r.exit_code == 0, r
    assert [a["format"] for a in manifest["artifacts"]] == ["onnx"]
    assert not (out / "classifier.torchscript").exists()  # the other weights' files went with their listing


# --------------------------------------------------------------------------- native runtimes (zoo.export.runtimes)


@pytest.mark.slow
def test_verify_in_native_runtimes(zoo, tmp_path, build_cache, monkeypatch):
    """`zoo verify --runtime all`: TorchScript in zoo-run (C++), ONNX in Node, beside Python."""
    monkeypatch.setenv("ZOO_BUILD_CACHE", str(build_cache))
    out = tmp_path / "out"
    r, manifest = export(zoo, "convnet", out, "--device", "cpu")
    assert r.exit_code == 0, r
    r = zoo("verify", out, "--runtime", "all", "--device", "cpu", "--json")
    assert r.exit_code == 0, r
    report = r.json()
    seen = {(row["runtime"], row["format"]) for row in report["parity"] if row["status"] == "passed"}
    assert seen == {("python", "torchscript"), ("python", "onnx"), ("cpp", "torchscript"), ("node", "onnx")}
    assert {"cpp:torchscript", "node:onnx"} <= {row["runtime"] for row in report["latency"]}
