"""When parity fails, zoo names where: the first submodule whose output in the artifact
departs from eager PyTorch, for ONNX and TorchScript; an axis the exporter froze is
named; calls that disagree on the same input fail parity."""

from __future__ import annotations

import json

import numpy as np

# `blocks.1.scale` computes something else once exported (TorchScript and torch.export):
# everything before it agrees, everything after it inherits its error.
SKEWED_MODULE = """
from dataclasses import dataclass

import torch
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Trainer, hparam


@dataclass
class SkewedConfig(TrainConfig):
    epochs: int = hparam(1, "passes")


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        if torch.jit.is_scripting():
            return x * self.factor
        if torch.compiler.is_exporting():
            return x * self.factor
        return x


class Block(nn.Module):
    def __init__(self, factor=1.0):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.scale = Scale(factor)

    def forward(self, x):
        return torch.relu(self.scale(self.linear(x)))


class Skewed(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.blocks = nn.Sequential(Block(), Block(1.01), Block())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.blocks(x))


plugin = Plugin(
    name="skewed",
    summary="one layer computes something else once exported",
    config_class=SkewedConfig,
    build=Skewed,
    trainer_class=Trainer,
    data_request=lambda config: DataRequest.images(size=2),
    default_dataset="digits",
    datasets=("digits",),
    export_targets=(
        ExportTarget(
            name="net",
            module=lambda model: model,
            inputs=(TensorSpec("x"),),
            outputs=(TensorSpec("y"),),
            example_inputs=lambda config, batch, gen: (torch.randn(batch, 8, generator=gen),),
        ),
    ),
)
"""


def test_a_failed_export_names_the_layer_that_diverges(zoo, install_dist, tmp_path):
    install_dist("zoo-skewed", "1.0", {"zoo_skewed": SKEWED_MODULE}, {"skewed": "zoo_skewed:plugin"})
    out = tmp_path / "out"
    r = zoo("export", "skewed", "--random-init", "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 1, r
    assert "first divergence: blocks.1.scale" in r.stdout
    found = {entry["format"]: entry for entry in json.loads((out / "export.json").read_text())["localization"]}
    assert set(found) == {"torchscript", "onnx"}
    for entry in found.values():
        assert entry["localized"] and entry["diverges"] and entry["module"] == "blocks.1.scale", entry
        assert 1e-4 < entry["max_rel"] < 0.02
    assert found["onnx"]["op"] == "aten.mul"
    # zoo verify localizes its failures too, and --localize on a faithful export finds nothing beyond tolerance.
    r = zoo("verify", out, "--device", "cpu", "--no-latency", "--no-task-parity", "--json")
    assert r.exit_code == 1 and {e["module"] for e in r.json()["localization"]} == {"blocks.1.scale"}


def test_verify_localize_on_a_faithful_export_reports_the_largest_error(zoo, tmp_path):
    out = tmp_path / "out"
    assert zoo("export", "convnet", "--random-init", "--device", "cpu", "--no-latency", "--no-task-parity", "--out", out).exit_code == 0
    r = zoo("verify", out, "--device", "cpu", "--no-latency", "--no-task-parity", "--localize", "--json")
    assert r.exit_code == 0, r
    entries = r.json()["localization"]
    assert {e["format"] for e in entries} == {"torchscript", "onnx"}
    for entry in entries:
        assert entry["localized"] and not entry["diverges"] and entry["compared"] >= 3, entry
    r = zoo("verify", out, "--device", "cpu", "--no-latency", "--no-task-parity", "--localize")
    assert "every submodule within tolerance" in r.stdout


# The TorchScript-based ONNX exporter traces `int(x.shape[1])` as a constant: the graph
# keeps a dynamic input axis and still works only at the size it was exported at.
FROZEN_MODULE = """
from dataclasses import dataclass

import torch
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Trainer, hparam


@dataclass
class FrozenConfig(TrainConfig):
    epochs: int = hparam(1, "passes")


class Positions(nn.Module):
    def forward(self, x):
        length = int(x.shape[1])
        return x + torch.arange(length, dtype=x.dtype)


plugin = Plugin(
    name="frozen",
    summary="a sequence axis the ONNX exporter freezes",
    config_class=FrozenConfig,
    build=lambda config: Positions(),
    trainer_class=Trainer,
    data_request=lambda config: DataRequest.images(size=2),
    default_dataset="digits",
    datasets=("digits",),
    export_targets=(
        ExportTarget(
            name="positions",
            module=lambda model: model,
            inputs=(TensorSpec("x"),),
            outputs=(TensorSpec("y"),),
            example_inputs=lambda config, batch, gen, sizes: (torch.randn(batch, sizes["seq"], generator=gen),),
            dynamic_dims={"x": {1: "seq"}, "y": {1: "seq"}},
            axis_sizes={"seq": (8, 5)},
            exporters={"onnx": "torchscript"},
        ),
    ),
)
"""


def test_an_axis_the_exporter_froze_is_named(zoo, install_dist, tmp_path):
    install_dist("zoo-frozen", "1.0", {"zoo_frozen": FROZEN_MODULE}, {"frozen": "zoo_frozen:plugin"})
    out = tmp_path / "out"
    r = zoo("export", "frozen", "--random-init", "--onnx", "--device", "cpu", "--no-latency", "--no-task-parity", "--out", out)
    assert r.exit_code == 1, r
    failed = [row for row in json.loads((out / "export.json").read_text())["parity"] if row["status"] == "failed"]
    assert [row["axes"] for row in failed] == [{"seq": 5}]
    assert "axis 'seq' of input 'x' behaves as if fixed at 8" in failed[0]["reason"]


def test_calls_that_disagree_on_the_same_input_fail():
    from zoo.export.parity_runner import repeat_verdicts

    same = [[np.ones((2, 3), dtype=np.float32)], [np.ones((2, 3), dtype=np.float32)]]
    assert repeat_verdicts(same, ["y"], 1e-4, 1e-5) == []
    differ = [[np.ones((2, 3), dtype=np.float32)], [np.full((2, 3), 0.5, dtype=np.float32)]]
    (verdict,) = repeat_verdicts(differ, ["y"], 1e-4, 1e-5)
    assert verdict["passed"] is False and "two calls on the same input differ" in verdict["reason"]
