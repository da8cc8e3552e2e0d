"""Decoding image files once into uint8 tensors, shared by the on-disk image datasets.

Every image is decoded with PIL exactly once, resized, stacked as uint8, and handed to
`zoo.data.to_request`; nothing is decoded per epoch. Bad files give one-line
`DataError`s that name the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.data import Images
from zoo.errors import DataError

if TYPE_CHECKING:
    import torch
    from PIL import Image

# torchvision's ImageFolder extensions, so `folder:` accepts exactly what ImageFolder does.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def open_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """Decode an image fully (so truncation shows now), converted to `mode`."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except MemoryError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable or truncated image ({reason})") from None


def to_uint8(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of one size and mode -> (N, C, H, W) uint8."""
    import numpy as np
    import torch

    arrays = [np.asarray(img, dtype=np.uint8) for img in images]
    stacked = np.stack(arrays)
    if stacked.ndim == 3:  # grayscale: (N, H, W)
        stacked = stacked[:, None]
    else:
        stacked = stacked.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def mode(spec: Images) -> str:
    return "L" if spec.channels == 1 else "RGB"


def image_files(directory: Path) -> list[Path]:
    """Image files under `directory`, recursively, in a fixed (sorted) order."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs.sort()
        found += [Path(root) / f for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


class ArrayImages:
    """Images held as a uint8 array (N, C, H, W), prepared one at a time for the
    streaming path: the raw bytes stay, the float images at the requested size and
    range are made per step. The in-memory path prepares them all at once, alike."""

    def __init__(self, images: Any, labels: Any, spec: Images):
        self.images = images
        self.labels = labels
        self.spec = spec

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        import numpy as np
        import torch

        from zoo.data import to_request

        out = {"image": to_request(torch.from_numpy(np.array(self.images[i : i + 1])), self.spec)[0]}
        if self.labels is not None:
            out["label"] = torch.tensor(int(self.labels[i]), dtype=torch.int64)
        return out

    def column(self, name: str) -> torch.Tensor | None:
        import numpy as np
        import torch

        return torch.tensor(np.array(self.labels), dtype=torch.int64) if name == "label" and self.labels is not None else None
