"""Dataset loaders on small files in their real formats."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import data, datasets, get_plugin
from zoo.plugin import DataRequest


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """The IDX format of MNIST: big-endian magic (0x08 = uint8, then the rank), dims, bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def make_mnist(root: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """A tiny MNIST in torchvision's layout, from real handwritten digits (scikit-learn's)
    scaled to 28x28 uint8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images[: n_train + n_test], dtype=torch.float32).unsqueeze(1) / 16
    images = torch.nn.functional.interpolate(images, size=(28, 28), mode="bilinear").squeeze(1)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    labels = bunch.target[: n_train + n_test].astype(np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", images[:n_train])
    write_idx(raw / "train-labels-idx1-ubyte", labels[:n_train])
    write_idx(raw / "t10k-images-idx3-ubyte", images[n_train:])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[n_train:])
    return root


def test_digits_are_real_split_and_cached(monkeypatch):
    from zoo import paths

    request = DataRequest(size=28)
    splits = datasets.load("digits", request)
    assert len(splits.train) == 1497 and len(splits.val) == 300 and splits.info.num_classes == 10
    x = splits.train.tensors["image"]
    assert x.shape == (1497, 1, 28, 28) and x.dtype == torch.float32
    # Ink values 0..16 scaled by 16: blank background is 0, full ink 1 (not 0..16 or 0..1/255).
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert sorted(splits.val.tensors["label"].unique().tolist()) == list(range(10))
    cache = list((paths.home() / "data").glob("digits-28-*.pt"))
    assert len(cache) == 1
    # The split does not depend on the training seed and the cache gives the same tensors.
    again = datasets.load("digits", request)
    assert torch.equal(again.val.tensors["image"], splits.val.tensors["image"])
    # value range and size follow the request
    other = datasets.load("digits", DataRequest(size=32, value_range=(-1.0, 1.0)))
    assert other.train.tensors["image"].shape[-1] == 32 and float(other.train.tensors["image"].min()) == -1.0


def test_corrupt_cache_is_rebuilt():
    from zoo import paths

    datasets.load("digits", DataRequest(size=16))
    (cache,) = (paths.home() / "data").glob("digits-16-*.pt")
    cache.write_bytes(b"garbage")
    assert len(datasets.load("digits", DataRequest(size=16)).train) == 1497


def test_batches_cover_every_sample_once():
    td = data.TensorData({"x": torch.arange(10)})
    seen = torch.cat([b["x"] for b in td.batches(3, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))
    assert td.num_batches(3) == 4
    # A run resumed in the middle of an epoch sees the rest of the same order.
    full = [b["x"].tolist() for b in td.batches(3, generator=torch.Generator().manual_seed(7))]
    rest = [b["x"].tolist() for b in td.batches(3, generator=torch.Generator().manual_seed(7), start=2)]
    assert rest == full[2:] and len(rest) == 2


def test_mnist_layout_trains(zoo, tmp_path):
    root = make_mnist(tmp_path / "mnist")
    splits = datasets.load(f"mnist:{root}", DataRequest(size=28))
    assert len(splits.train) == 64 and len(splits.val) == 32
    r = zoo("train", "convnet", "--data", f"mnist:{root}", "--epochs", "1", "--out", tmp_path / "run", "--progress", "none")
    assert r.exit_code == 0, r
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["step"] == 1
    # The recorded accuracy is the checkpoint's on the 32 test images, recomputed here.
    from zoo import models

    model = models.build_model(get_plugin("convnet"), checkpoint=str(tmp_path / "run" / "last.pt")).model
    with torch.no_grad():
        predicted = model(splits.val.tensors["image"]).argmax(1)
    assert record["val_accuracy"] == float((predicted == splits.val.tensors["label"]).float().mean())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == f"mnist:{root}"


def test_mnist_missing_files_is_one_line(zoo, tmp_path):
    (tmp_path / "empty").mkdir()
    r = zoo("train", "convnet", "--data", f"mnist:{tmp_path / 'empty'}")
    assert r.exit_code == 1 and "--download" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_data_needs_a_path():
    from zoo.errors import UsageError

    with pytest.raises(UsageError, match="needs a path"):
        datasets.load("mnist", DataRequest(size=28))
