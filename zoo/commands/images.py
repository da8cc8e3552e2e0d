"""Image files in and out of `zoo sample`, `zoo predict` and `zoo evaluate`.

Reading goes through the datasets' own decoder (`zoo.datasets._images`) and
`zoo.data.to_request`, so an image file is resized and scaled exactly as training
images were; writing is torchvision's `make_grid` and `save_image`, atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import DataError, UsageError

if TYPE_CHECKING:
    import torch

    from zoo.data import Images


def to_unit_range(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Images in `value_range` -> [0, 1] (clamped: a generator may overshoot a little)."""
    lo, hi = value_range
    return ((images.float() - lo) / (hi - lo)).clamp(0.0, 1.0)


def png_path(out: str, flag: str = "-o") -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise UsageError(f"{flag} {out}: images are written as PNG, so the name must end in .png")
    return path


def write_png(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """A (C, H, W) image or an (N, C, H, W) batch laid out as a grid, in [0, 1], written atomically."""
    from torchvision.utils import make_grid, save_image

    from zoo import checkpoint

    if images.dim() == 4:
        images = make_grid(images, nrow=nrow or 8, padding=2)
    try:
        checkpoint.atomic_write(path, lambda fh: save_image(images, fh, format="png"))
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror or exc})") from None


def read_image(path: Path, channels: int) -> torch.Tensor:
    """One image file -> uint8 (1, channels, H, W); a path that is not a readable image
    raises a one-line DataError naming it."""
    import numpy as np
    import torch

    from zoo.datasets._images import open_image

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    pixels = np.asarray(open_image(path, "L" if channels == 1 else "RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(pixels.copy())
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)  # (H, W[, C]) -> (C, H, W)
    return tensor.unsqueeze(0)


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given; a directory stands for the images directly inside it (the
    extensions torchvision's ImageFolder reads)."""
    from zoo.datasets._images import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{p}: no images in this directory ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        else:
            paths.append(p)
    return paths


def load_batch(paths: Sequence[Path], request: Images) -> torch.Tensor:
    """Images resized and scaled the way the plugin trained: (N, C, size, size) in its range."""
    import torch

    from zoo.data import to_request

    return torch.cat([to_request(read_image(p, request.channels), request) for p in paths])
