"""CIFAR-10 in torchvision's layout: `PATH/cifar-10-batches-py/` (or that directory
itself) with `data_batch_1..5`, `test_batch` and `batches.meta`; the test batch is the
validation split. `--download` fetches it through torchvision (the archive's MD5 is
checked there). The batches are unpickled by an unpickler that allows numpy arrays
only, so a crafted file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.data import DataInfo, DataRequest, Dataset, DataSplits, Images, Labels, StreamingSplit, TensorData, choose_mode, to_request
from zoo.datasets._images import ArrayImages
from zoo.errors import DataError

if TYPE_CHECKING:
    import numpy as np


class _ArrayUnpickler(pickle.Unpickler):
    """Reads the CIFAR-10 python batches (dicts of numpy arrays, lists, strings) and
    refuses every other global, so a crafted file cannot run code (torchvision's CIFAR10
    class unpickles with plain `pickle.load`)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        import importlib

        if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core
            try:
                return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def _read_cifar_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"--data cifar10: {path} is missing (expected the cifar-10-batches-py layout; --download fetches it)")
    try:
        with open(path, "rb") as fh:
            # latin1: the batches were pickled by Python 2 (numpy buffers are byte strings)
            entry = _ArrayUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 batch ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (a {type(entry).__name__}, not a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    entry = _read_cifar_file(path)
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: not a CIFAR-10 batch (no 'data' array and 'labels' list)")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: CIFAR-10 'data' must be uint8 rows of 3072 values, not {data.dtype} {data.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    # Rows are the red, green and blue 32x32 planes one after the other.
    return data.reshape(-1, 3, 32, 32), labels


def load(path: Path, request: DataRequest, download: bool = False, mode: str = "auto") -> DataSplits:
    import numpy as np
    import torch

    root = path / "cifar-10-batches-py"
    if not root.is_dir() and path.name == "cifar-10-batches-py":
        root = path
    if not root.is_dir() and download:
        from torchvision.datasets import CIFAR10

        from zoo import paths

        if paths.offline():
            raise DataError(
                f"--data cifar10:{path} --download: {paths.ENV_OFFLINE}=1 forbids network access; copy cifar-10-batches-py there"
            )

        try:
            CIFAR10(str(path), train=True, download=True)
        except Exception as exc:
            raise DataError(f"--data cifar10:{path}: download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
        root = path / "cifar-10-batches-py"
    if not root.is_dir():
        raise DataError(f"--data cifar10:{path}: no cifar-10-batches-py directory there (--download fetches it)")
    meta = _read_cifar_file(root / "batches.meta")
    names = meta.get("label_names") or [str(i) for i in range(10)]
    classes = [c.decode("latin1") if isinstance(c, bytes) else str(c) for c in names]

    splits = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("val", ["test_batch"])):
        parts = [_cifar_batch(root / name) for name in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if len(labels) == 0:
            raise DataError(f"--data cifar10:{path}: the {split} split is empty")
        spec = request["image"]
        chosen = choose_mode(mode, 60_000 * (spec.channels or 3) * (spec.size or 32) ** 2 * 4)
        if chosen == "stream":
            splits[split] = StreamingSplit(ArrayImages(images, labels if request.wants("label") else None, spec))
            continue
        tensors = {"image": to_request(torch.from_numpy(images), spec)}
        if request.wants("label"):
            tensors["label"] = torch.from_numpy(labels)
        splits[split] = TensorData(tensors)
    return DataSplits(
        "cifar10",
        splits["train"],
        splits["val"],
        info=DataInfo(num_classes=10, class_names=tuple(classes)),
        details={"root": str(root), "train": len(splits["train"]), "val": len(splits["val"]), "data_mode": chosen},
    )


dataset = Dataset(
    name="cifar10",
    summary="CIFAR-10: 50,000 training and 10,000 test (validation) 32x32 colour images of 10 classes",
    load=load,
    yields=(Images("image", channels=3), Labels("label", num_classes=10)),
    needs_path=True,
    downloads=True,
    path_help="a directory holding torchvision's cifar-10-batches-py/ (or that directory itself)",
    streams=True,
)
