"""Images in torchvision's ImageFolder layout: one subfolder per class. With
`PATH/train/` and `PATH/val/` those are the splits; otherwise a fixed, seeded 10% of
each class is held out for validation (the same images whatever --seed is). Images
are resized on their shorter side and centre-cropped, decoded once."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.data import (
    DataInfo,
    DataRequest,
    Dataset,
    DataSplits,
    Images,
    Labels,
    StreamingSplit,
    TensorData,
    choose_mode,
    materialise,
    to_request,
)
from zoo.datasets._images import IMAGE_EXTENSIONS, mode, open_image, to_uint8
from zoo.errors import DataError

if TYPE_CHECKING:
    import torch

# Fixed validation split of image folders without train/ and val/: independent of --seed.
FOLDER_SPLIT_SEED = 20240602
FOLDER_VAL_FRACTION = 0.1


def _list_image_folder(directory: Path, class_to_idx: dict[str, int] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) pairs and class names, exactly as torchvision's ImageFolder sees them."""
    from torchvision.datasets.folder import find_classes, make_dataset

    try:
        classes, found = find_classes(str(directory))
        mapping = class_to_idx if class_to_idx is not None else found
        if class_to_idx is not None:
            extra = sorted(set(classes) - set(class_to_idx))
            if extra:
                raise DataError(f"--data folder: {directory} has classes that train/ lacks: {', '.join(extra[:5])}")
        samples = make_dataset(str(directory), {c: mapping[c] for c in classes}, extensions=IMAGE_EXTENSIONS)
    except FileNotFoundError as exc:
        raise DataError(f"--data folder:{directory}: {str(exc).splitlines()[0]} (expected one subfolder of images per class)") from None
    return samples, classes


def _decode_folder_images(paths: Iterable[str], spec: Images) -> torch.Tensor:
    from PIL import Image, ImageOps

    images = []
    for p in paths:
        # Resize the shorter side and centre-crop (torchvision's Resize + CenterCrop).
        img = open_image(p, mode(spec))
        if spec.size is not None:
            img = ImageOps.fit(img, (spec.size, spec.size), method=Image.Resampling.BICUBIC)
        images.append(img)
    return to_uint8(images)


def _folder_split(samples: list[tuple[str, int]]) -> tuple[list[int], list[int]]:
    """Seeded, per-class split: 10% of each class (at least one image of a class with
    two or more) for validation."""
    import torch

    gen = torch.Generator().manual_seed(FOLDER_SPLIT_SEED)
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(samples):
        by_class.setdefault(label, []).append(i)
    train, val = [], []
    for label in sorted(by_class):
        members = by_class[label]
        order = [members[j] for j in torch.randperm(len(members), generator=gen).tolist()]
        n_val = max(1, round(FOLDER_VAL_FRACTION * len(members))) if len(members) >= 2 else 0
        val += order[:n_val]
        train += order[n_val:]
    return sorted(train), sorted(val)


class FolderImages:
    """The images of one split, decoded one at a time (for the streaming path, in
    DataLoader workers; the in-memory path decodes them all the same way)."""

    def __init__(self, samples: list[tuple[str, int]], request: DataRequest):
        self.samples = samples
        self.spec = request["image"]
        self.with_labels = request.wants("label")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        import torch

        path, label = self.samples[i]
        out = {"image": to_request(_decode_folder_images([path], self.spec), self.spec)[0]}
        if self.with_labels:
            out["label"] = torch.tensor(label, dtype=torch.int64)
        return out

    def column(self, name: str) -> torch.Tensor | None:
        import torch

        return torch.tensor([label for _, label in self.samples], dtype=torch.int64) if name == "label" and self.with_labels else None


def load(path: Path, request: DataRequest, download: bool = False, mode: str = "auto") -> DataSplits:
    import torch

    if not path.is_dir():
        raise DataError(f"--data folder:{path}: not a directory")
    if (path / "train").is_dir() and (path / "val").is_dir():
        train_samples, classes = _list_image_folder(path / "train")
        val_samples, _ = _list_image_folder(path / "val", {c: i for i, c in enumerate(classes)})
        split_by = "train/ and val/"
    else:
        samples, classes = _list_image_folder(path)
        train_idx, val_idx = _folder_split(samples)
        train_samples = [samples[i] for i in train_idx]
        val_samples = [samples[i] for i in val_idx]
        split_by = f"seeded {FOLDER_VAL_FRACTION:.0%} per class"
    for name, samples in (("train", train_samples), ("validation", val_samples)):
        if not samples:
            raise DataError(f"--data folder:{path}: the {name} split has no images")

    spec = request["image"]
    decoded = (len(train_samples) + len(val_samples)) * (spec.channels or 3) * (spec.size or 256) ** 2 * 4
    chosen = choose_mode(mode, decoded)

    def split(samples: list[tuple[str, int]]) -> TensorData | StreamingSplit:
        source = FolderImages(samples, request)
        return StreamingSplit(source) if chosen == "stream" else materialise(source)

    del torch
    return DataSplits(
        "folder",
        split(train_samples),
        split(val_samples),
        info=DataInfo(num_classes=len(classes), class_names=tuple(classes)),
        details={"root": str(path), "split": split_by, "train": len(train_samples), "val": len(val_samples), "data_mode": chosen},
    )


dataset = Dataset(
    name="folder",
    summary="images in torchvision's ImageFolder layout, one subfolder per class (train/ and val/, or a seeded 10% held out)",
    load=load,
    yields=(Images("image"), Labels("label")),
    needs_path=True,
    path_help="a directory with one subfolder of images per class, or train/ and val/ each laid out so",
    streams=True,
)
