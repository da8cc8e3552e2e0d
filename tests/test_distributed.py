"""Data-parallel training on torch.distributed (gloo on the CPU): two processes through
`zoo train --nproc 2` and through torchrun, the equivalence with one process at the
same global batch, resume, and failures that end in one line instead of a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
TIMEOUT = 300  # a hang would fail here, not stall CI

FAILS_ON_RANK_1 = """
import os
from dataclasses import dataclass
import torch
import torch.nn.functional as F
from torch import nn
from zoo import DataRequest, Plugin, Trainer, TrainConfig, hparam

@dataclass
class Config(TrainConfig):
    epochs: int = hparam(3, "passes")
    batch_size: int = hparam(100, "per process")
    die_at: int = hparam(3, "step at which process 1 kills itself")

class Dies(Trainer):
    def configure_optimizers(self):
        return {"sgd": torch.optim.SGD(self.model.parameters(), lr=0.1)}
    def train_step(self, batch, optimizers, progress):
        if os.environ.get("RANK") == "1" and progress.step == self.config.die_at:
            os.kill(os.getpid(), 9)
        loss = F.cross_entropy(self.model(batch["image"].flatten(1)), batch["label"])
        optimizers["sgd"].zero_grad(); loss.backward(); optimizers["sgd"].step()
        return {"loss": loss.detach()}

plugin = Plugin(name="dies", summary="process 1 dies", config_class=Config, build=lambda c: nn.Linear(64, 10), trainer_class=Dies,
                data_request=lambda c: DataRequest.images(size=8, num_classes=10), default_dataset="digits", datasets=("digits",))
"""


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    out.update({"ZOO_HOME": str(tmp_path / "home"), "ZOO_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1", **extra})
    return out


def zoo_cli(tmp_path: Path, *args: str | Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zoo", *map(str, args)], env=env(tmp_path, **extra), capture_output=True, text=True, timeout=TIMEOUT
    )


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    # No batch norm and no dropout: the averaged gradients of two halves are the whole
    # batch's, so the losses agree up to float summation order (and the last, odd
    # global batch of 1,497 digits, split 45 + 44).
    common = ["--no-batch-norm", "--epochs", "2", "--progress", "none"]
    one = zoo_cli(tmp_path, "train", "convnet", *common, "--batch-size", "128", "--out", tmp_path / "one")
    two = zoo_cli(tmp_path, "train", "convnet", *common, "--batch-size", "64", "--nproc", "2", "--out", tmp_path / "two")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    assert two.stdout.count("wrote ") == 1  # rank 0 speaks for the run
    a, b = records(tmp_path / "one"), records(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [12, 24]
    for x, y in zip(a, b):
        assert y["world_size"] == 2 and y["global_batch_size"] == 128 and x["world_size"] == 1
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)
        assert abs(y["val_accuracy"] - x["val_accuracy"]) <= 2 / 300  # a digit or two either way
    # Written by two processes, the checkpoint loads in one, with plain keys.
    from zoo import get_plugin, models

    built = models.build_model(get_plugin("convnet"), checkpoint=str(tmp_path / "two" / "last.pt"))
    assert built.model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_a_gan_trains_each_player_under_ddp_and_resumes_exactly(tmp_path):
    small = ["--generator-hidden", "32", "--maxout-units", "16", "--batch-size", "50", "--progress", "none"]
    straight = zoo_cli(tmp_path, "train", "gan", *small, "--nproc", "2", "--max-steps", "12", "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    split = zoo_cli(tmp_path, "train", "gan", *small, "--nproc", "2", "--max-steps", "7", "--out", tmp_path / "split")
    assert split.returncode == 0, split.stderr
    state = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2 and not state["epoch_complete"]
    assert not any(".module." in k for k in state["model"])
    refused = zoo_cli(tmp_path, "train", "gan", "--max-steps", "12", "--resume", tmp_path / "split" / "last.pt")
    assert refused.returncode == 2 and "written by 2 process(es); resume it with --nproc 2" in refused.stderr
    resumed = zoo_cli(
        tmp_path, "train", "gan", "--nproc", "2", "--max-steps", "12", "--resume", tmp_path / "split" / "last.pt", "--progress", "none"
    )
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], v) for k, v in b.items())


def test_torchrun_starts_the_same_training(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--standalone",
            "-m",
            "zoo",
            "train",
            "vae",
            "--hidden",
            "16",
            "--max-steps",
            "4",
            "--out",
            str(tmp_path / "run"),
            "--progress",
            "none",
        ],
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = records(tmp_path / "run")
    assert row["world_size"] == 2 and row["global_batch_size"] == 256


def test_a_process_that_dies_takes_the_others_down_in_one_line(tmp_path, install_dist):
    site = install_dist("zoo-dies", "0.1", {"zoo_dies": FAILS_ON_RANK_1}, {"dies": "zoo_dies:plugin"})
    done = zoo_cli(
        tmp_path,
        "train",
        "dies",
        "--nproc",
        "2",
        "--out",
        tmp_path / "run",
        "--progress",
        "none",
        PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "training process 1 of 2 was killed by SIGKILL" in lines[0], done.stderr


def test_every_process_failing_alike_is_still_one_line(tmp_path):
    done = zoo_cli(tmp_path, "train", "vae", "--nproc", "2", "--latent-dim", "-5")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == ["error: --latent-dim must be at least 1, not -5"], done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_process_whose_peers_never_join_times_out_in_one_line(tmp_path):
    done = zoo_cli(
        tmp_path,
        "train",
        "vae",
        "--max-steps",
        "1",
        "--out",
        tmp_path / "run",
        RANK="0",
        WORLD_SIZE="2",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        ZOO_DIST_TIMEOUT="3",
    )
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "process 0 of 2 could not join the gloo process group" in lines[0], done.stderr
