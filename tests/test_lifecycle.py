"""The training lifecycle through the public contract only, as third parties use it:
Progress, epoch hooks, LR schedules, trainer state, logged values, plugins without an
optimizer, and resume that is bit-identical wherever a run stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import one_line_error, registry_plugins

# A ResNet-style fine-tuning recipe: a convolutional stage frozen (batch norm included)
# for the first --frozen-epochs, a cosine learning rate over the whole run, a counter of
# its own in the trainer's state, and the phase and schedule logged each epoch.
FINETUNE = """
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, Schedule, TensorSpec, Trainer, TrainConfig, hparam


@dataclass
class Config(TrainConfig):
    epochs: int = hparam(4, "passes")
    batch_size: int = hparam(500, "samples per step: 1,497 digits make 3 steps an epoch")
    lr: float = hparam(0.05, "peak SGD learning rate")
    frozen_epochs: int = hparam(2, "epochs with the stage frozen", at_least=0)


class Net(nn.Module):
    def __init__(self, config, data):
        super().__init__()
        self.stage = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4 * 6 * 6, data.num_classes)  # the classes come from the data

    def forward(self, image):
        return self.head(self.stage(image).flatten(1))


class FineTune(Trainer):
    def configure_optimizers(self):
        sgd = torch.optim.SGD(self.model.parameters(), lr=self.config.lr, momentum=0.9)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=self.plan.total_steps)
        self.steps_seen = 0
        return {"sgd": sgd}, {"cosine": Schedule(cosine, interval="step")}

    def on_epoch_start(self, progress):
        frozen = progress.epoch <= self.config.frozen_epochs
        self.model.stage.requires_grad_(not frozen)
        if frozen:
            self.model.stage.eval()  # batch-norm statistics stay as they are too
        self.log("phase", "frozen" if frozen else "training")
        self.log("planned_steps", progress.total_steps)
        self.log("steps_per_epoch", progress.steps_per_epoch)
        self.log("started_at", progress.step_in_epoch)

    def train_step(self, batch, optimizers, progress):
        assert progress.step == self.steps_seen, (progress, self.steps_seen)
        loss = F.cross_entropy(self.model(batch["image"]), batch["label"])
        optimizers["sgd"].zero_grad()
        loss.backward()
        optimizers["sgd"].step()
        self.steps_seen += 1
        return {"loss": loss.detach()}

    def on_epoch_end(self, progress, metrics):
        self.log("fraction", progress.fraction)

    def evaluate(self, batches):
        right = total = 0
        for batch in batches:
            right += int((self.model(batch["image"]).argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
        return {"val_accuracy": right / total}

    def state_dict(self):
        return {"steps_seen": self.steps_seen}

    def load_state_dict(self, state):
        self.steps_seen = state["steps_seen"]


plugin = Plugin(
    name="finetune-test",
    summary="frozen stage, cosine schedule",
    config_class=Config,
    build=Net,
    trainer_class=FineTune,
    data_request=lambda config: DataRequest.images(size=8, channels=1, num_classes=10),
    default_dataset="digits",
    datasets=("digits",),
    export_targets=(
        ExportTarget(
            name="classifier",
            module=lambda model: model,
            inputs=(TensorSpec("image", value_range=(0.0, 1.0)),),
            outputs=(TensorSpec("logits"),),
            example_inputs=lambda config, batch, gen: (torch.rand(batch, 1, 8, 8, generator=gen),),
        ),
    ),
)
"""

# Training without an optimizer: a nearest-centroid classifier "trains" by summing the
# images of each class into buffers.
CENTROIDS = """
from dataclasses import dataclass

import torch
from torch import nn

from zoo import DataRequest, Plugin, Trainer, TrainConfig, hparam


@dataclass
class Config(TrainConfig):
    epochs: int = hparam(1, "one pass stores the training set")
    batch_size: int = hparam(256, "samples per step")


class Centroids(nn.Module):
    def __init__(self, config, data):
        super().__init__()
        self.register_buffer("sums", torch.zeros(data.num_classes, 64))
        self.register_buffer("counts", torch.zeros(data.num_classes))

    def forward(self, image):
        centroids = self.sums / self.counts.clamp(min=1).unsqueeze(1)
        return -torch.cdist(image.flatten(1), centroids)  # nearer centroid, higher score


class Store(Trainer):
    def configure_optimizers(self):
        return {}

    def train_step(self, batch, optimizers, progress):
        x, y = batch["image"].flatten(1), batch["label"]
        self.model.sums.index_add_(0, y, x)
        self.model.counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float32))
        return {}

    def evaluate(self, batches):
        right = total = 0
        for batch in batches:
            right += int((self.model(batch["image"]).argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
        return {"val_accuracy": right / total}


plugin = Plugin(name="centroids-test", summary="nearest centroid", config_class=Config, build=Centroids, trainer_class=Store,
                data_request=lambda config: DataRequest.images(size=8, channels=1, num_classes=10),
                default_dataset="digits", datasets=("digits",))
"""


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def untimed(rows: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "samples_per_second", "first_step_seconds", "started_at")} for row in rows
    ]


def load(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    """Model, optimizers, schedules and trainer state bit-identical."""
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for name, opt in b["optimizers"].items():
        for index, state in opt["state"].items():
            for k, v in state.items():
                other = a["optimizers"][name]["state"][index][k]
                assert torch.equal(other, v) if isinstance(v, torch.Tensor) else other == v, (name, index, k)
        assert [g["lr"] for g in a["optimizers"][name]["param_groups"]] == [g["lr"] for g in opt["param_groups"]]
    assert a.get("schedules") == b.get("schedules")
    assert a.get("trainer") == b.get("trainer")


@pytest.fixture
def finetune(install_dist):
    install_dist("zoo-finetune-test", "0.1", {"zoo_finetune_test": FINETUNE}, {"finetune-test": "zoo_finetune_test:plugin"})
    return "finetune-test"


def train(zoo, *args):
    r = zoo("train", *[str(a) for a in args], "--progress", "none")
    assert r.exit_code == 0, r
    return r


def test_frozen_stage_stays_bit_identical_until_it_is_unfrozen(zoo, finetune, tmp_path):
    from zoo import get_plugin
    from zoo.data import DataInfo
    from zoo.engine import rng

    plugin = get_plugin(finetune)
    rng.seed_everything(0)  # the engine seeds, then builds: the initial weights of seed 0
    initial = plugin.instantiate(plugin.config(), DataInfo(num_classes=10)).state_dict()
    run = tmp_path / "run"
    stages = []
    for epoch in (1, 2, 3, 4):  # one epoch at a time, each resumed from the last: 3 steps an epoch
        where = ["--out", run] if epoch == 1 else ["--resume", run / "last.pt"]
        train(zoo, finetune, "--max-steps", 3 * epoch, *where)
        stages.append({k: v for k, v in load(run)["model"].items() if k.startswith("stage.")})
    for frozen in stages[:2]:
        for key, value in frozen.items():
            assert torch.equal(value, initial[key]), key  # weights and batch-norm statistics
    changed = [k for k in stages[2] if not torch.equal(stages[2][k], initial[k])]
    assert "stage.0.weight" in changed and "stage.1.running_mean" in changed
    assert not torch.equal(stages[3]["stage.0.weight"], stages[2]["stage.0.weight"])
    rows = records(run)
    assert [r["phase"] for r in rows] == ["frozen", "frozen", "training", "training"]
    assert all(r["planned_steps"] == 12 and r["steps_per_epoch"] == 3 for r in rows)
    assert [r["fraction"] for r in rows] == [0.25, 0.5, 0.75, 1.0]
    # The cosine schedule, stepped by the engine after every step and logged as `lr`.
    import math

    for row in rows:
        assert row["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * row["step"] / 12)) / 2, abs=1e-12)
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("stop", [6, 7, 4], ids=["epoch-boundary", "mid-epoch", "mid-epoch-while-frozen"])
def test_stopped_anywhere_and_resumed_is_bit_identical(zoo, finetune, tmp_path, stop):
    train(zoo, finetune, "--out", tmp_path / "straight")
    train(zoo, finetune, "--out", tmp_path / "split", "--max-steps", stop)
    stopped = load(tmp_path / "split")
    assert stopped["step"] == stop and stopped["epoch_complete"] == (stop % 3 == 0)
    if stop % 3:
        assert stopped["step_in_epoch"] == stop % 3 and records(tmp_path / "split")[-1]["epoch_complete"] is False
    r = train(zoo, finetune, "--resume", tmp_path / "split" / "last.pt")
    assert_same_state(load(tmp_path / "split"), load(tmp_path / "straight"))
    # metrics.jsonl of the resumed run is the uninterrupted one's: the early stop's row of
    # its epoch is replaced by the whole epoch's, whose mean loss covers every step.
    assert untimed(records(tmp_path / "split")) == untimed(records(tmp_path / "straight"))
    assert "note:" not in r.stdout


def test_more_epochs_on_resume_do_not_rescale_a_saved_schedule(zoo, finetune, tmp_path):
    train(zoo, finetune, "--epochs", 2, "--out", tmp_path / "r")
    assert load(tmp_path / "r")["schedules"]["cosine"]["T_max"] == 6
    r = train(zoo, finetune, "--epochs", 3, "--resume", tmp_path / "r" / "last.pt")
    assert "saved schedules continue as they were saved" in r.stdout
    state = load(tmp_path / "r")
    assert state["schedules"]["cosine"]["T_max"] == 6  # still the 2-epoch cosine, not stretched to 9 steps
    rows = records(tmp_path / "r")
    assert rows[-1]["planned_steps"] == 9  # what progress.total_steps says now
    # Past T_max a cosine rises again, as torch defines it: the lr after step 9 is that of step 3.
    assert rows[-1]["lr"] == pytest.approx(0.05 * (1 + __import__("math").cos(__import__("math").pi * 9 / 6)) / 2, abs=1e-12)


def test_a_plugin_without_an_optimizer_trains(zoo, install_dist, tmp_path):
    install_dist("zoo-centroids-test", "0.1", {"zoo_centroids_test": CENTROIDS}, {"centroids-test": "zoo_centroids_test:plugin"})
    train(zoo, "centroids-test", "--out", tmp_path / "r")
    state = load(tmp_path / "r")
    assert state["optimizers"] == {} and int(state["model"]["counts"].sum()) == 1497
    (row,) = records(tmp_path / "r")
    assert row["val_accuracy"] > 0.8  # nearest class mean on 8x8 digits; chance is 0.1
    assert set(row) >= {"epoch", "step", "val_accuracy"} and not any(k.startswith("loss") for k in row)


def test_a_resumed_run_may_not_change_its_data_or_seed(zoo, finetune, tmp_path):
    train(zoo, finetune, "--epochs", 1, "--out", tmp_path / "r")
    before = (tmp_path / "r" / "last.pt").read_bytes()
    one_line_error(zoo("train", finetune, "--epochs", 2, "--resume", tmp_path / "r" / "last.pt", "--seed", "3"), 2, "--seed 3")
    one_line_error(zoo("train", finetune, "--epochs", 2, "--resume", tmp_path / "r" / "last.pt", "--data", "mnist:/x"), 2, "--data")
    assert (tmp_path / "r" / "last.pt").read_bytes() == before


# Small hyperparameters for the registry-wide resume test; plugins not listed train at
# their defaults (a new plugin is tested without touching this file).
SMALL = {
    "pix2pix": ["--ngf", "8", "--ndf", "8"],
    "gan": ["--generator-hidden", "64", "--maxout-units", "16"],
    "cgan": [
        "--noise-hidden",
        "16",
        "--label-hidden",
        "16",
        "--joint-hidden",
        "32",
        "--image-units",
        "16",
        "--label-units",
        "8",
        "--joint-units",
        "16",
    ],
    "dcgan": ["--generator-width", "8", "--discriminator-width", "8"],
    "vae": ["--hidden", "32"],
    "convnet": ["--hidden", "16"],
}


@pytest.mark.parametrize("name", registry_plugins())
def test_every_plugin_resumes_mid_epoch_bit_identically(zoo, name, tmp_path):
    """Stopped by --max-steps in the middle of an epoch and resumed, every plugin (GANs
    and pix2pix with their noise, dropout and jitter included) ends where an
    uninterrupted run ends."""
    small = SMALL.get(name, [])
    train(zoo, name, *small, "--batch-size", "64" if name != "pix2pix" else "1", "--max-steps", 5, "--out", tmp_path / "straight")
    train(zoo, name, *small, "--batch-size", "64" if name != "pix2pix" else "1", "--max-steps", 3, "--out", tmp_path / "split")
    assert load(tmp_path / "split")["epoch_complete"] is False  # really in the middle of an epoch
    train(zoo, name, "--max-steps", 5, "--resume", tmp_path / "split" / "last.pt")
    assert_same_state(load(tmp_path / "split"), load(tmp_path / "straight"))


def test_trainer_frozen_passes_gradients_through_a_module_without_computing_its_own():
    import torch

    from zoo import Trainer

    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    inner[1].bias.requires_grad_(False)  # frozen before: stays frozen after
    trainer = Trainer(inner, None, torch.device("cpu"))
    x = torch.randn(5, 3, requires_grad=True)
    with trainer.frozen(inner):
        inner(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in inner.parameters())
    assert [p.requires_grad for p in inner.parameters()] == [True, True, True, False]
    # The same gradient reaches the input as without freezing.
    y = x.detach().clone().requires_grad_(True)
    inner(y).sum().backward()
    assert torch.equal(x.grad, y.grad) and inner[0].weight.grad is not None
