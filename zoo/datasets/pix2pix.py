"""Aligned image pairs in the layout of the pix2pix datasets (facades, maps,
edges2shoes): `train/`, `val/` (or `test/` when there is no `val/`), each image A and B
side by side. A and B become tensors "A" and "B", each resized to the requested size.
pix2pix asks for its jitter load size (286/256 of its crop) and crops in
`Trainer.augment`. Pairs are held as float32, 2 x 3 x size**2 x 4 bytes each: the 400
facades at 286 px take 0.8 GB, edges2shoes (50k pairs) fits only at small sizes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo.data import DataRequest, Dataset, DataSplits, Images, StreamingSplit, TensorData, choose_mode, to_request
from zoo.datasets._images import IMAGE_EXTENSIONS, image_files, open_image, to_uint8
from zoo.errors import DataError

if TYPE_CHECKING:
    import torch


def _decode_pairs(files: list[Path], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A|B side-by-side images -> A and B, each resized to size x size (bicubic, the
    reference's resize that ignores the aspect ratio)."""
    from PIL import Image

    a_images, b_images = [], []
    for f in files:
        img = open_image(f, "RGB")
        width, height = img.size
        if width % 2:
            raise DataError(f"{f}: an A|B pair needs an even width (A left, B right), but it is {width} px wide")
        half = width // 2
        for side, box in ((a_images, (0, 0, half, height)), (b_images, (half, 0, width, height))):
            side.append(img.crop(box).resize((size, size), Image.Resampling.BICUBIC))
    return to_uint8(a_images), to_uint8(b_images)


class PairFiles:
    """The A|B files of one split, decoded one at a time."""

    def __init__(self, files: list[Path], request: DataRequest):
        self.files = files
        self.a_spec, self.b_spec = request["A"], request["B"]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        a, b = _decode_pairs([self.files[i]], self.a_spec.size)
        return {"A": to_request(a, self.a_spec)[0], "B": to_request(b, self.b_spec)[0]}


def load(path: Path, request: DataRequest, download: bool = False, mode: str = "auto") -> DataSplits:
    a_spec, b_spec = request["A"], request["B"]
    if a_spec.size != b_spec.size:
        raise DataError(f"--data pix2pix: A and B are cut from one image, so they come at one size, not {a_spec.size} and {b_spec.size}")
    if not (path / "train").is_dir():
        raise DataError(f"--data pix2pix:{path}: no train/ directory (expected train/, val/ or test/ of A|B images)")
    val_dir = path / "val" if (path / "val").is_dir() else path / "test"
    if not val_dir.is_dir():
        raise DataError(f"--data pix2pix:{path}: no val/ or test/ directory for validation")
    listed = {}
    for split, directory in (("train", path / "train"), ("val", val_dir)):
        files = image_files(directory)
        if not files:
            raise DataError(f"--data pix2pix:{path}: {directory.name}/ has no images ({', '.join(IMAGE_EXTENSIONS)})")
        listed[split] = files
    decoded = sum(len(f) for f in listed.values()) * 2 * 3 * (a_spec.size or 256) ** 2 * 4
    chosen = choose_mode(mode, decoded)
    splits = {}
    for split, files in listed.items():
        if chosen == "stream":
            splits[split] = StreamingSplit(PairFiles(files, request))
        else:  # decoded together: the same operations as PairFiles, a batch at a time
            a, b = _decode_pairs(files, a_spec.size)
            splits[split] = TensorData({"A": to_request(a, a_spec), "B": to_request(b, b_spec)})
    return DataSplits(
        "pix2pix",
        splits["train"],
        splits["val"],
        details={"root": str(path), "val_dir": val_dir.name, "train": len(splits["train"]), "val": len(splits["val"]), "data_mode": chosen},
    )


dataset = Dataset(
    name="pix2pix",
    summary="aligned image pairs, A left and B right in each file, in the layout of the pix2pix datasets",
    load=load,
    yields=(Images("A"), Images("B")),
    needs_path=True,
    path_help="a directory with train/ and val/ (or test/) of A|B side-by-side images (facades, maps, edges2shoes)",
    streams=True,
)
