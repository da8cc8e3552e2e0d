"""`zoo train` through the CLI: outputs, determinism, resume, and every bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import one_line_error, registry_plugins

from zoo.capabilities import sample_kind


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def optimizer_names(plugin) -> set[str]:
    """The names of the optimizers the plugin's trainer configures, through the public contract."""
    from zoo.models import data_info_for

    config = plugin.config(batch_size=2)
    trainer = plugin.trainer_class(plugin.instantiate(config, data_info_for(plugin, config)), config, torch.device("cpu"))
    configured = trainer.configure_optimizers()
    optimizers = configured[0] if isinstance(configured, tuple) else configured
    return set(optimizers)


@pytest.mark.parametrize("name", registry_plugins())
def test_every_plugin_trains_and_writes_its_run(zoo, name, tmp_path):
    from zoo import get_plugin

    plugin = get_plugin(name)
    r = zoo("train", name, "--max-steps", "2", "--batch-size", "2", "--progress", "none")
    assert r.exit_code == 0, r
    run = Path(os.environ["ZOO_RUNS"]) / name / "001"
    assert {"last.pt", "config.json", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    (record,) = records(run)
    assert record["epoch"] == 1 and record["step"] == 2
    assert record["samples_per_second"] > 0 and record["seconds"] > 0
    assert any(k.startswith("val_") for k in record), record
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["plugin"] == name and state["step"] == 2 and state["plugin_version"]
    # Every optimizer the trainer configures is checkpointed (a k-NN has none).
    assert "torch" in state["rng"] and set(state["optimizers"]) == optimizer_names(plugin)
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["batch_size"] == 2 and config["plugin"] == name
    kind = sample_kind(plugin)
    if kind is not None:
        assert (run / "samples" / ("epoch_001.png" if kind == "images" else "epoch_001.txt")).is_file()
    # a second run gets the next number
    assert zoo("train", name, "--max-steps", "1", "--batch-size", "2", "--progress", "none").exit_code == 0
    assert (run.parent / "002" / "last.pt").is_file()


@pytest.mark.parametrize("name", registry_plugins())
def test_help_shows_the_plugins_hyperparameters(zoo, name):
    import dataclasses

    from zoo import get_plugin

    r = zoo("train", name, "--help")
    assert r.exit_code == 0
    for f in dataclasses.fields(get_plugin(name).config_class):
        assert "--" + f.name.replace("_", "-") in r.stdout
        assert "[default: " in r.stdout


def test_plugin_hyperparameters_reach_the_model(zoo, tmp_path):
    r = zoo("train", "vae", "--latent-dim", "7", "--hidden", "33", "--max-steps", "1", "--out", tmp_path / "r", "--progress", "none")
    assert r.exit_code == 0, r
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert state["config"]["latent_dim"] == 7 and state["model"]["fc21.weight"].shape == (7, 33)
    r = zoo("train", "convnet", "--no-batch-norm", "--dropout", "0.3", "--max-steps", "1", "--out", tmp_path / "c", "--progress", "none")
    assert r.exit_code == 0, r
    state = torch.load(tmp_path / "c" / "last.pt", weights_only=True)
    assert state["config"]["batch_norm"] is False and not any(k.startswith("bn1.") for k in state["model"])


def test_same_seed_gives_identical_losses(zoo, tmp_path):
    for run in ("a", "b"):
        r = zoo("train", "convnet", "--epochs", "2", "--seed", "3", "--out", tmp_path / run, "--progress", "none")
        assert r.exit_code == 0, r
    strip = lambda recs: [
        {k: v for k, v in rec.items() if k not in ("seconds", "samples_per_second", "first_step_seconds")} for rec in recs
    ]
    assert strip(records(tmp_path / "a")) == strip(records(tmp_path / "b"))
    r = zoo("train", "convnet", "--epochs", "1", "--seed", "4", "--out", tmp_path / "c", "--progress", "none")
    assert records(tmp_path / "c")[0]["loss"] != records(tmp_path / "a")[0]["loss"]


@pytest.mark.parametrize("name", ["vae", "convnet"])
def test_resume_matches_an_uninterrupted_run(zoo, tmp_path, name):
    common = ("--batch-size", "256", "--progress", "none")
    assert zoo("train", name, "--epochs", "2", "--out", tmp_path / "split", *common).exit_code == 0
    r = zoo("train", name, "--epochs", "4", "--resume", tmp_path / "split" / "last.pt", "--progress", "none")
    assert r.exit_code == 0, r
    assert zoo("train", name, "--epochs", "4", "--out", tmp_path / "straight", *common).exit_code == 0
    a = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4 and a["step"] == b["step"]
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [rec["epoch"] for rec in records(tmp_path / "split")] == [1, 2, 3, 4]


def test_resume_refuses_changed_hyperparameters(zoo, tmp_path):
    assert zoo("train", "vae", "--epochs", "1", "--out", tmp_path / "r", "--progress", "none").exit_code == 0
    r = zoo("train", "vae", "--epochs", "2", "--latent-dim", "5", "--resume", tmp_path / "r" / "last.pt")
    assert r.exit_code == 2 and "--latent-dim" in r.stderr
    r = zoo("train", "vae", "--resume", tmp_path / "r" / "last.pt", "--epochs", "1")
    assert r.exit_code == 2 and "already finished epoch 1" in r.stderr


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_epochs_must_be_positive(zoo, epochs):
    assert "--epochs must be at least 1" in one_line_error(zoo("train", "vae", "--epochs", epochs), 2)


def test_unknown_hyperparameter_names_the_valid_ones(zoo):
    line = one_line_error(zoo("train", "vae", "--latent", "3"), 2)
    assert "--latent" in line and "--latent-dim" in line and "--hidden" in line


def test_wrong_type_is_a_usage_error(zoo):
    assert "'--lr'" in one_line_error(zoo("train", "vae", "--lr", "fast"), 2)
    assert "--hidden" in one_line_error(zoo("train", "vae", "--hidden", "1.5"), 2)


def test_missing_data_directory(zoo, tmp_path):
    line = one_line_error(zoo("train", "convnet", "--data", f"mnist:{tmp_path / 'nope'}"), 1)
    assert "does not exist" in line


def test_malformed_mnist_directory(zoo, tmp_path):
    (tmp_path / "bad" / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "bad" / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"junk")
    line = one_line_error(zoo("train", "convnet", "--data", f"mnist:{tmp_path / 'bad'}"), 1)
    assert "mnist" in line


def test_unknown_dataset_scheme(zoo):
    assert "unknown dataset" in one_line_error(zoo("train", "vae", "--data", "imagenet:/x"), 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; the error case needs a CPU-only machine")
def test_cuda_without_gpu_names_the_devices(zoo):
    line = one_line_error(zoo("train", "vae", "--device", "cuda"), 2)
    assert "CUDA is not available" in line and "cpu" in line


def test_bad_device_string(zoo):
    assert "not a device" in one_line_error(zoo("train", "vae", "--device", "tpu"), 2)


def test_resume_missing_file(zoo, tmp_path):
    assert "does not exist" in one_line_error(zoo("train", "vae", "--resume", tmp_path / "none.pt"), 1)


def test_resume_truncated_and_corrupt_files(zoo, tmp_path):
    assert zoo("train", "vae", "--max-steps", "1", "--out", tmp_path / "r", "--progress", "none").exit_code == 0
    data = (tmp_path / "r" / "last.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in one_line_error(zoo("train", "vae", "--resume", tmp_path / "trunc.pt"), 1)
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    assert "corrupt" in one_line_error(zoo("train", "vae", "--resume", tmp_path / "junk.pt"), 1)


def test_resume_another_plugins_checkpoint(zoo, tmp_path):
    assert zoo("train", "convnet", "--max-steps", "1", "--out", tmp_path / "c", "--progress", "none").exit_code == 0
    line = one_line_error(zoo("train", "vae", "--resume", tmp_path / "c" / "last.pt"), 1)
    assert "'convnet'" in line and "'vae'" in line


def test_resume_refuses_a_pickle_that_runs_code(zoo, tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"plugin": "vae", "model": Exploit()}, fh)
    line = one_line_error(zoo("train", "vae", "--resume", tmp_path / "evil.pt"), 1)
    assert "refused" in line or "corrupt" in line
    assert not marker.exists()


FAULTY = """
from dataclasses import dataclass
import torch
from torch import nn
from zoo import DataRequest, Plugin, Trainer, TrainConfig, hparam


@dataclass
class Config(TrainConfig):
    epochs: int = hparam(3, "passes")
    batch_size: int = hparam(500, "samples per step")
    fail_at: int = hparam(5, "step at which the fault happens")
    fault: str = hparam("nan", "what goes wrong", choices=("nan", "interrupt"))


class Faulty(Trainer):
    def configure_optimizers(self):
        return {"sgd": torch.optim.SGD(self.model.parameters(), lr=self.config.lr)}

    def train_step(self, batch, optimizers, progress):
        loss = nn.functional.cross_entropy(self.model(batch["image"].flatten(1)), batch["label"])
        optimizers["sgd"].zero_grad(); loss.backward(); optimizers["sgd"].step()
        if progress.step + 1 == self.config.fail_at:
            if self.config.fault == "interrupt":
                raise KeyboardInterrupt
            loss = loss * float("nan")
        return {"loss": loss.detach()}

    def evaluate(self, batches):
        return {"val_loss": 0.0}


plugin = Plugin(name="faulty", summary="fails on purpose", task="classification", config_class=Config,
                build=lambda c: nn.Linear(64, 10), trainer_class=Faulty,
                data_request=lambda c: DataRequest(size=8), default_dataset="digits", datasets=("digits",))
"""


@pytest.mark.parametrize("fault,code,message", [("nan", 1, "became nan at step 5"), ("interrupt", 130, "interrupted at step 4")])
def test_faults_keep_the_last_good_checkpoint(zoo, install_dist, tmp_path, fault, code, message):
    install_dist("zoo-faulty", "0.1", {"zoo_faulty": FAULTY}, {"faulty": "zoo_faulty:plugin"})
    # 1,497 training digits at 500 a batch: 3 steps an epoch, so step 5 is in epoch 2.
    line = one_line_error(zoo("train", "faulty", "--fault", fault, "--out", tmp_path / "r", "--progress", "none"), code)
    assert message in line and str(tmp_path / "r" / "last.pt") in line
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 3
    assert [rec["epoch"] for rec in records(tmp_path / "r")] == [1]
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_failed_checkpoint_write_keeps_the_previous_one(zoo, tmp_path, monkeypatch):
    assert zoo("train", "vae", "--epochs", "1", "--out", tmp_path / "r", "--progress", "none").exit_code == 0
    before = (tmp_path / "r" / "last.pt").read_bytes()

    def broken_save(obj, fh, *a, **k):
        fh.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    r = zoo("train", "vae", "--epochs", "2", "--resume", tmp_path / "r" / "last.pt", "--progress", "none")
    one_line_error(r, 1, "no space left to write", "stopped at step", f"the last good checkpoint {tmp_path / 'r' / 'last.pt'} is intact")
    assert (tmp_path / "r" / "last.pt").read_bytes() == before
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_unwritable_out_directory(zoo, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = one_line_error(zoo("train", "vae", "--out", blocker / "run"), 2)
    assert "cannot write" in line


def test_progress_lines_when_not_a_terminal(zoo, tmp_path):
    r = zoo("train", "convnet", "--epochs", "2", "--out", tmp_path / "r")
    assert r.exit_code == 0
    epoch_lines = [line for line in r.stdout.splitlines() if line.startswith("epoch=")]
    assert len(epoch_lines) == 2 and "val_accuracy=" in epoch_lines[0]


def test_threads_option_sets_torch_threads(zoo, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1  # differs from the current count, so ignoring --threads fails
    seen = []
    from zoo import engine

    real_train = engine.train

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_train(*args, **kwargs)

    monkeypatch.setattr(engine, "train", spy)
    try:
        r = zoo("train", "vae", "--threads", str(wanted), "--max-steps", "1", "--out", tmp_path / "r", "--progress", "none")
        assert r.exit_code == 0, r
        assert seen == [wanted]
    finally:
        torch.set_num_threads(before)
    assert "--threads" in one_line_error(zoo("train", "vae", "--threads", "0"), 2)
