"""Datasets as in-memory tensors, batched by index on the training device.

Every dataset zoo trains on here fits in memory, so it is decoded once into tensors,
moved to the device once, and batched by indexing: no per-sample PIL work and no
DataLoader workers each epoch. `--data SPEC` picks a loader: `digits` (the default,
scikit-learn's bundled handwritten digits), `mnist:PATH`, and the loaders listed in
`LOADERS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from zoo.errors import DataError, UsageError
from zoo.plugin import DataRequest

if TYPE_CHECKING:
    import torch

# Bump when the preparation of a cached dataset changes, so stale caches are not used.
CACHE_VERSION = 1
# The validation split of the bundled digits is fixed: the same images whatever --seed is.
SPLIT_SEED = 20240601
DIGITS_VAL = 300


@dataclass
class TensorData:
    """Named tensors sharing their first dimension (e.g. ``image`` N x C x H x W, ``label`` N)."""

    tensors: dict[str, "torch.Tensor"]

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def to(self, device: Any) -> "TensorData":
        return TensorData({k: v.to(device, non_blocking=True) for k, v in self.tensors.items()})

    def index(self, idx: "torch.Tensor") -> dict[str, "torch.Tensor"]:
        return {k: v[idx] for k, v in self.tensors.items()}

    def batches(
        self, batch_size: int, generator: "torch.Generator | None" = None, drop_last: bool = False
    ) -> Iterator[dict[str, "torch.Tensor"]]:
        """Shuffled (with `generator`) or in-order batches."""
        import torch

        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        device = next(iter(self.tensors.values())).device
        order = order.to(device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.index(order[start : start + batch_size])

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


@dataclass
class DataSplits:
    name: str
    train: TensorData
    val: TensorData
    num_classes: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: Any) -> "DataSplits":
        return DataSplits(self.name, self.train.to(device), self.val.to(device), self.num_classes, self.info)


# scheme -> "module:function"; imported only when asked for, so a loader's
# dependencies cost nothing until used (no registration by import side effects).
LOADERS: dict[str, str] = {
    "digits": "zoo.data:load_digits",
    "mnist": "zoo.data:load_mnist",
    "cifar10": "zoo.images:load_cifar10",
    "folder": "zoo.images:load_folder",
    "pix2pix": "zoo.images:load_pix2pix",
    "edges": "zoo.images:load_edges",
    "colorization": "zoo.images:load_colorization",
}
NEEDS_PATH = {"mnist", "cifar10", "folder", "pix2pix"}


def parse_spec(spec: str) -> tuple[str, str | None]:
    scheme, _, path = spec.partition(":")
    scheme = scheme.strip().lower()
    if scheme not in LOADERS:
        raise UsageError(f"--data {spec!r}: unknown dataset {scheme!r} (known: {', '.join(sorted(LOADERS))}; e.g. mnist:PATH)")
    if scheme in NEEDS_PATH and not path:
        raise UsageError(f"--data {scheme} needs a directory: --data {scheme}:PATH")
    return scheme, (path or None)


def load(spec: str, request: DataRequest, *, download: bool = False) -> DataSplits:
    """Load the dataset named by `spec` shaped the way `request` asks."""
    scheme, path = parse_spec(spec)
    module_name, func_name = LOADERS[scheme].split(":")
    loader: Callable[..., DataSplits] = getattr(importlib.import_module(module_name), func_name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists() and not (scheme == "mnist" and download):
            raise DataError(f"--data {spec}: directory {p} does not exist")
        return loader(p, request, download=download)
    return loader(None, request, download=download)


def to_request(images: "torch.Tensor", request: DataRequest) -> "torch.Tensor":
    """uint8 or [0, 1] float images N x C x H x W -> float32 in request.value_range at request.size."""
    import torch
    import torch.nn.functional as F

    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    if x.shape[1] != request.channels:
        if x.shape[1] == 1 and request.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and request.channels == 1:
            x = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        else:
            raise DataError(f"cannot turn {x.shape[1]}-channel images into {request.channels} channels")
    if x.shape[-2:] != (request.size, request.size):
        x = F.interpolate(x, size=(request.size, request.size), mode="bilinear", align_corners=False, antialias=True)
    x = x.clamp(0.0, 1.0)
    lo, hi = request.value_range
    return (x * (hi - lo) + lo).contiguous()


def _cached(name: str, build: Callable[[], dict[str, "torch.Tensor"]]) -> dict[str, "torch.Tensor"]:
    """Prepared tensors cached under $ZOO_HOME/data (written atomically, read weights_only)."""
    import torch

    from zoo import checkpoint, paths

    path = paths.home() / "data" / f"{name}-v{CACHE_VERSION}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            pass  # a damaged cache is rebuilt, never trusted
    tensors = build()
    try:
        checkpoint.atomic_write(path, lambda fh: torch.save(tensors, fh))
    except OSError:
        pass  # a read-only cache directory only costs the preparation time
    return tensors


def load_digits(path: None, request: DataRequest, download: bool = False) -> DataSplits:
    """scikit-learn's bundled handwritten digits (1,797 images of 8x8, values 0..16),
    upsampled to the requested size, with a fixed seeded train/validation split."""

    def build() -> dict[str, "torch.Tensor"]:
        import torch
        import torch.nn.functional as F
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N x 1 x 8 x 8 in [0, 1]
        images = F.interpolate(images, size=(request.size, request.size), mode="bilinear", align_corners=False)
        labels = torch.tensor(bunch.target, dtype=torch.int64)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
        images, labels = images[order].clamp(0, 1), labels[order]
        return {"image": images, "label": labels}

    t = _cached(f"digits-{request.size}", build)
    images = to_request(t["image"], request)
    labels = t["label"]
    val, train = slice(0, DIGITS_VAL), slice(DIGITS_VAL, None)
    return DataSplits(
        name="digits",
        train=TensorData({"image": images[train], "label": labels[train]}),
        val=TensorData({"image": images[val], "label": labels[val]}),
        num_classes=10,
        info={"source": "sklearn.datasets.load_digits", "train": len(labels) - DIGITS_VAL, "val": DIGITS_VAL},
    )


def load_mnist(path: Path, request: DataRequest, download: bool = False) -> DataSplits:
    """torchvision's MNIST layout under `path` (`MNIST/raw/*-idx?-ubyte`); the test split
    is the validation split. `download=True` fetches it (needs internet)."""
    from torchvision.datasets import MNIST

    splits = {}
    for train in (True, False):
        try:
            ds = MNIST(str(path), train=train, download=download)
        except RuntimeError as exc:
            raise DataError(f"--data mnist:{path}: {str(exc).splitlines()[0]} (expected {path}/MNIST/raw/train-images-idx3-ubyte and the other IDX files; --download fetches them)") from None
        except (AssertionError, ValueError, OSError, IndexError) as exc:
            raise DataError(f"--data mnist:{path}: malformed IDX files ({type(exc).__name__}: {exc})") from None
        if len(ds.data) == 0:
            raise DataError(f"--data mnist:{path}: the {'train' if train else 'test'} split is empty")
        images = to_request(ds.data.unsqueeze(1), request)
        splits[train] = TensorData({"image": images, "label": ds.targets.long()})
    return DataSplits("mnist", splits[True], splits[False], num_classes=10, info={"root": str(path)})
