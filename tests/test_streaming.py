"""Data larger than memory: the on-disk datasets decoded lazily by DataLoader workers
give the same batches as the in-memory path (same order, same values), resume from the
exact batch, and `--data-mode auto` streams when the decoded data exceeds the budget."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import one_line_error
from PIL import Image


def write_folder(root, classes=3, per_class=12):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")


def write_pairs(root, n_train=10, n_val=4):
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(root / split / f"{i}.jpg")


def write_mnist(root, train=40, test=12):
    rng = np.random.default_rng(2)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes((0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes())


def write_cifar(root, per_batch=6, test=8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(x) for x in rng.integers(0, 10, n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2))


CASES = {
    "folder": (write_folder, ["dcgan", "--channels", "3", "--generator-width", "8", "--discriminator-width", "8", "--batch-size", "8"]),
    "pix2pix": (write_pairs, ["pix2pix", "--ngf", "8", "--ndf", "8", "--batch-size", "2"]),
    "mnist": (write_mnist, ["convnet", "--hidden", "16", "--batch-size", "8"]),
    "cifar10": (write_cifar, ["dcgan", "--channels", "3", "--generator-width", "8", "--discriminator-width", "8", "--batch-size", "8"]),
}


def final_state(run):
    return torch.load(run / "last.pt", weights_only=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_streaming_trains_exactly_as_in_memory(zoo, tmp_path, name, monkeypatch):
    monkeypatch.setenv("ZOO_DATA_WORKERS", "2")
    write, argv = CASES[name]
    write(tmp_path / "data")
    common = [*argv, "--data", f"{name}:{tmp_path / 'data'}", "--epochs", "2", "--progress", "none"]
    for mode in ("memory", "stream"):
        r = zoo("train", *common, "--data-mode", mode, "--out", tmp_path / mode)
        assert r.exit_code == 0, r
        assert json.loads((tmp_path / mode / "config.json").read_text())["data_details"]["data_mode"] == mode
    a, b = final_state(tmp_path / "memory"), final_state(tmp_path / "stream")
    assert a["step"] == b["step"] > 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # Stopped in the middle of an epoch and resumed, streaming ends where memory ended.
    r = zoo("train", *common, "--data-mode", "stream", "--max-steps", "3", "--out", tmp_path / "split")
    assert r.exit_code == 0, r
    assert final_state(tmp_path / "split")["epoch_complete"] is False
    r = zoo("train", argv[0], "--epochs", "2", "--resume", tmp_path / "split" / "last.pt", "--data-mode", "stream", "--progress", "none")
    assert r.exit_code == 0, r
    c = final_state(tmp_path / "split")
    assert all(torch.equal(c["model"][k], v) for k, v in a["model"].items())


def test_auto_streams_what_exceeds_the_memory_budget(zoo, tmp_path, monkeypatch):
    write_folder(tmp_path / "data")
    monkeypatch.setenv("ZOO_DATA_MEMORY", "1K")  # far less than 36 images decoded
    r = zoo(
        "train",
        "dcgan",
        "--channels",
        "3",
        "--data",
        f"folder:{tmp_path / 'data'}",
        "--max-steps",
        "1",
        "--out",
        tmp_path / "r",
        "--progress",
        "none",
    )
    assert r.exit_code == 0, r
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data_details"]["data_mode"] == "stream"


def test_a_dataset_that_cannot_stream_says_so(zoo, tmp_path):
    one_line_error(zoo("train", "convnet", "--data-mode", "stream", "--out", tmp_path / "r"), 2, "dataset 'digits' loads into memory only")
