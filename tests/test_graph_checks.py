"""No training-mode operation survives into an exported graph: dropout still dropping,
batch norm on the batch's statistics, or sampling inside the graph fail the export in
one line naming the operation and its module, in every format; eval-mode dropout, batch
norm and instance norm (pix2pix) pass."""

from __future__ import annotations

import json

import pytest

FORMATS = ("torchscript", "onnx", "pt2")

TRAINS_MODULE = """
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Trainer, hparam


@dataclass
class TrainsConfig(TrainConfig):
    fault: str = hparam("none", "what the exported graph does wrong", choices=("none", "dropout", "batch-stats", "sampling"))


class Head(nn.Module):
    def __init__(self, fault):
        super().__init__()
        self.fault = fault
        self.linear = nn.Linear(6, 6)
        self.norm = nn.BatchNorm1d(6)

    def forward(self, x):
        x = self.linear(x)
        if self.fault == "dropout":
            return F.dropout(x, 0.5, training=True)
        if self.fault == "batch-stats":
            return F.batch_norm(x, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias, True)
        if self.fault == "sampling":
            return x + torch.randn_like(x)
        return x


class Trains(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5))  # eval mode: harmless
        self.head = Head(config.fault)

    def forward(self, x):
        return self.head(self.stem(x))


plugin = Plugin(
    name="trains",
    summary="a graph that still trains, in one way or another",
    config_class=TrainsConfig,
    build=Trains,
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
            example_inputs=lambda config, batch, gen: (torch.randn(batch, 4, generator=gen),),
        ),
    ),
)
"""

FAULTS = {
    "dropout": "dropout in training mode",
    "batch-stats": "batch norm with the batch's statistics",
    "sampling": "random sampling inside the graph",
}


@pytest.fixture
def trains(install_dist):
    install_dist("zoo-trains", "1.0", {"zoo_trains": TRAINS_MODULE}, {"trains": "zoo_trains:plugin"})


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_graph_that_still_trains_is_refused_naming_the_operation(zoo, trains, tmp_path, fault, fmt):
    out = tmp_path / "out"
    args = ("export", "trains", "--random-init", "--config", f"fault={fault}", f"--{fmt}", "--device", "cpu", "--no-latency")
    r = zoo(*args, "--no-task-parity", "--out", out)
    assert r.exit_code == 1, r
    (error,) = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in r.stderr
    assert f"the {fmt} graph of trains:net still trains" in error and FAULTS[fault] in error, error
    assert "head" in error, error  # the module it happens in
    assert not list(out.glob("net.*")), "the bad artifact is not left behind"


@pytest.mark.parametrize("fmt", FORMATS)
def test_eval_mode_dropout_and_batch_norm_pass(zoo, trains, tmp_path, fmt):
    out = tmp_path / "out"
    r = zoo("export", "trains", "--random-init", f"--{fmt}", "--device", "cpu", "--no-latency", "--no-task-parity", "--out", out)
    assert r.exit_code == 0, r
    assert json.loads((out / "export.json").read_text())["passed"] is True
