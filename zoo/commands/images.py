"""Image files in and out of `zoo sample`, `zoo predict` and `zoo evaluate`.

Reading goes through the datasets' own decoder (`zoo.datasets._images`) and
`zoo.data.to_request`, so an image file is resized and scaled exactly as training
images were; writing is torchvision's `make_grid` and `save_image`, atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# Files a run or an export is made of, and model files: what a sample or a prediction
# written over them would destroy. zoo's commands never replace them.
RUN_FILES = ("last.pt", "config.json", "metrics.jsonl")
MANIFEST = "export.json"
MODEL_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".onnx", ".torchscript", ".pt2")


def check_output(out: str | Path, flag: str = "-o") -> Path:
    """Where a command will write its result, checked before any work: not a directory,
    not under a file, and not a file of a run, an export or a model (one line each)."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"{flag} {out} is a directory; name the file to write")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UsageError(f"cannot write {out}: {blocker} is a file, not a directory")
    if path.is_file():
        what = None
        if path.suffix.lower() in MODEL_SUFFIXES:
            what = "a model file"
        elif path.name == MANIFEST:
            what = "the manifest of an export"
        elif path.name in RUN_FILES and any((path.parent / f).is_file() for f in RUN_FILES[:2]):
            what = f"a file of the run in {path.parent}"
        if what is not None:
            raise UsageError(f"{flag} {out} is {what}; zoo never writes over runs, exports or models: name another file")
    return path


def write_png(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """A (C, H, W) image or an (N, C, H, W) batch laid out as a grid, in [0, 1], written atomically."""
    from torchvision.utils import make_grid, save_image

    if images.dim() == 4:
        images = make_grid(images, nrow=nrow or 8, padding=2)
    _write(path, lambda fh: save_image(images, fh, format="png"), "wb")


def write_text(text: str, path: str | Path) -> None:
    """A text result (a language model's sample, a classifier's results), written atomically."""
    _write(Path(path), lambda fh: fh.write(text), "w")


def _write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    from zoo import checkpoint

    check_output(path)
    try:
        checkpoint.atomic_write(path, write, mode=mode)
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
        elif not p.is_file():
            raise DataError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
        else:
            paths.append(p)
    return paths


def load_batch(paths: Sequence[Path], request: Images) -> torch.Tensor:
    """Images resized and scaled the way the plugin trained: (N, C, size, size) in its range."""
    import torch

    from zoo.data import to_request

    return torch.cat([to_request(read_image(p, request.channels), request) for p in paths])
