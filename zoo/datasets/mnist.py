"""MNIST in torchvision's layout under PATH (`MNIST/raw/*-idx?-ubyte`, or gzipped); the
test split is the validation split. `--download` fetches the files through
torchvision (needs internet; refused under ZOO_OFFLINE=1).

The IDX files are read here, not by torchvision, so a bad one is one line naming the
file and what is wrong with it (magic number, header, size, label count or values)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.data import DataInfo, DataRequest, Dataset, DataSplits, Images, Labels, StreamingSplit, TensorData, choose_mode, to_request
from zoo.datasets._images import ArrayImages
from zoo.errors import DataError

if TYPE_CHECKING:
    import numpy as np

CLASSES = tuple(str(d) for d in range(10))
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte), the rank.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def _raw_dir(path: Path) -> Path:
    for candidate in (path / "MNIST" / "raw", path / "raw", path):
        if any((candidate / name).exists() or (candidate / f"{name}.gz").exists() for name in FILES[True]):
            return candidate
    return path / "MNIST" / "raw"


def _read_bytes(path: Path) -> bytes:
    gz = path.with_name(path.name + ".gz")
    try:
        if path.is_file():
            return path.read_bytes()
        if gz.is_file():
            with gzip.open(gz, "rb") as fh:
                return fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path if path.is_file() else gz}: unreadable ({exc})") from None
    raise DataError(f"--data mnist: {path} is missing (expected torchvision's MNIST/raw layout; --download fetches it)")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file's array, or a DataError saying what is wrong with which file."""
    import numpy as np

    data = _read_bytes(path)
    rank = magic & 0xFF
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes; an IDX file of rank {rank} starts with {header})")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        what = "images" if magic == IMAGES_MAGIC else "labels"
        raise DataError(f"{path}: not an MNIST {what} file (magic number 0x{found:08x}, expected 0x{magic:08x})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - header != expected:
        raise DataError(f"{path}: header says {'x'.join(map(str, dims))} = {expected} bytes of data, the file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load(path: Path, request: DataRequest, download: bool = False, mode: str = "auto") -> DataSplits:
    import torch

    raw = _raw_dir(path)
    if download and not all((raw / n).exists() or (raw / f"{n}.gz").exists() for names in FILES.values() for n in names):
        _download(path)
        raw = _raw_dir(path)
    image = request.get("image")
    side = image.size if isinstance(image, Images) and image.size else 28
    chosen = choose_mode(mode, 70_000 * (image.channels or 1) * side * side * 4)
    splits = {}
    for train, (images_name, labels_name) in FILES.items():
        images = read_idx(raw / images_name, IMAGES_MAGIC)
        labels = read_idx(raw / labels_name, LABELS_MAGIC)
        if images.ndim != 3:
            raise DataError(f"{raw / images_name}: MNIST images have rank 3 (count, rows, columns), this file has rank {images.ndim}")
        if len(labels) != len(images):
            raise DataError(f"{raw / labels_name}: {len(labels)} labels for the {len(images)} images of {images_name}")
        if len(labels) and int(labels.max()) > 9:
            raise DataError(f"{raw / labels_name}: labels must be digits 0..9, found {int(labels.max())}")
        if len(images) == 0:
            raise DataError(f"--data mnist:{path}: the {'train' if train else 'test'} split is empty")
        if chosen == "stream":
            splits[train] = StreamingSplit(ArrayImages(images[:, None], labels if request.wants("label") else None, image))
            continue
        tensors = {"image": to_request(torch.from_numpy(images.copy()).unsqueeze(1), image)}
        if request.wants("label"):
            tensors["label"] = torch.from_numpy(labels.astype("int64"))
        splits[train] = TensorData(tensors)
    return DataSplits(
        "mnist",
        splits[True],
        splits[False],
        info=DataInfo(num_classes=10, class_names=CLASSES),
        details={"root": str(raw), "data_mode": chosen},
    )


def _download(path: Path) -> None:
    from zoo import paths

    if paths.offline():
        raise DataError(f"--data mnist:{path} --download: {paths.ENV_OFFLINE}=1 forbids network access; copy the IDX files there")
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(str(path), train=train, download=True)
    except Exception as exc:
        raise DataError(
            f"--data mnist:{path}: download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
        ) from None


dataset = Dataset(
    name="mnist",
    summary="MNIST handwritten digits (60,000 train, 10,000 test as validation) in torchvision's layout",
    load=load,
    yields=(Images("image", channels=1), Labels("label", num_classes=10)),
    needs_path=True,
    downloads=True,
    path_help="a directory holding torchvision's MNIST/raw/*-idx?-ubyte files",
    streams=True,
)
