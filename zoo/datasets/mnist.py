"""MNIST in torchvision's layout under PATH (`MNIST/raw/*-idx?-ubyte`); the test split
is the validation split. `--download` fetches it through torchvision (needs internet)."""

from __future__ import annotations

from pathlib import Path

from zoo.data import DataInfo, DataRequest, Dataset, DataSplits, Images, Labels, TensorData, to_request
from zoo.errors import DataError

CLASSES = tuple(str(d) for d in range(10))


def load(path: Path, request: DataRequest, download: bool = False) -> DataSplits:
    from torchvision.datasets import MNIST

    image = request.get("image")
    splits = {}
    for train in (True, False):
        try:
            ds = MNIST(str(path), train=train, download=download)
        except RuntimeError as exc:
            raise DataError(
                f"--data mnist:{path}: {str(exc).splitlines()[0]} (expected {path}/MNIST/raw/train-images-idx3-ubyte "
                "and the other IDX files; --download fetches them)"
            ) from None
        except (AssertionError, ValueError, OSError, IndexError) as exc:
            raise DataError(f"--data mnist:{path}: malformed IDX files ({type(exc).__name__}: {exc})") from None
        if len(ds.data) == 0:
            raise DataError(f"--data mnist:{path}: the {'train' if train else 'test'} split is empty")
        tensors = {"image": to_request(ds.data.unsqueeze(1), image)}
        if request.wants("label"):
            tensors["label"] = ds.targets.long()
        splits[train] = TensorData(tensors)
    return DataSplits("mnist", splits[True], splits[False], info=DataInfo(num_classes=10, class_names=CLASSES), details={"root": str(path)})


dataset = Dataset(
    name="mnist",
    summary="MNIST handwritten digits (60,000 train, 10,000 test as validation) in torchvision's layout",
    load=load,
    yields=(Images("image", channels=1), Labels("label", num_classes=10)),
    needs_path=True,
    downloads=True,
    path_help="a directory holding torchvision's MNIST/raw/*-idx?-ubyte files",
)
