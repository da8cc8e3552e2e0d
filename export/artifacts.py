"""Load any file `zoo export` wrote and run it: `zoo.export.artifacts.load(path)`.

The format is read from the file's content, not its name: each installed format
(`zoo.export.format`) says whether it recognises the bytes. Every failure (missing,
truncated, foreign, wrong device, wrong inputs, an integer out of its declared range)
is one `ZooError` line.

    art = load("exports/vae/decoder.onnx")
    art.metadata["inputs"]        # [{"name": "z", "shape": ["batch", 20], ...}]
    (image,) = art(z)             # numpy arrays (or torch tensors) in, numpy out
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.export import format as zformat
from zoo.export.metadata import METADATA_KEY

__all__ = ["Artifact", "METADATA_KEY", "load", "read_metadata", "sniff"]

NUMPY_DTYPES = {
    "float32": "float32",
    "float64": "float64",
    "float16": "float16",
    "int64": "int64",
    "int32": "int32",
    "int16": "int16",
    "int8": "int8",
    "bool": "bool",
    "uint8": "uint8",
}
INTEGER_DTYPES = ("int64", "int32", "int16", "int8", "uint8")


def probe(path: Path) -> zformat.Probe:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head:
        raise ZooError(f"{path} is empty")
    names = None
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ZooError(f"{path} is truncated or corrupt ({exc})") from None
    return zformat.Probe(path, head, names)


def format_of(path: Path) -> zformat.Format:
    """The installed format that recognises `path`'s bytes."""
    found = probe(path)
    for fmt in zformat.installed():
        if fmt.sniff(found):
            return fmt
    kind = "a zip archive" if found.names is not None else "a file"
    raise ZooError(f"{path} is {kind} that no installed format recognises (formats: {', '.join(zformat.names())})")


def sniff(path: str | Path) -> str:
    """The name of the format whose file `path` is (`torchscript`, `onnx`, `pt2`, ...)."""
    return format_of(Path(path)).name


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The `zoo.json` document of an artifact without loading its code."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"artifact {path} does not exist")
    fmt = format_of(path)
    try:
        return fmt.read_metadata(path)
    except ZooError:
        raise
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ZooError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None


class Artifact:
    """One loaded artifact on one device: call it with inputs in metadata order."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        metadata: dict[str, Any],
        device: str,
        run: Callable[[list], Sequence[Any]],
        to_native: Callable[[Any, str], Any],
    ):
        self.path = path
        self.format = fmt
        self.metadata = metadata
        self.device = device
        self._run = run
        self._to_native = to_native

    @property
    def input_names(self) -> list[str]:
        return [spec["name"] for spec in self.metadata["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [spec["name"] for spec in self.metadata["outputs"]]

    def __repr__(self) -> str:
        return f"<Artifact {self.format} {self.metadata.get('plugin')}:{self.metadata.get('target')} on {self.device} from {self.path}>"

    def prepare(self, *inputs: Any) -> list[Any]:
        """Check inputs against the metadata (count, dtype, rank, fixed sizes, the
        valid range of integers) and convert them to what the runtime takes (tensors
        on the device, or numpy)."""
        specs = self.metadata["inputs"]
        if len(inputs) != len(specs):
            names = ", ".join(self.input_names)
            raise ZooError(f"{self.path.name} takes {len(specs)} input(s) ({names}), got {len(inputs)}")
        prepared = []
        for spec, value in zip(specs, inputs):
            shape = tuple(value.shape)
            dtype = str(value.dtype).replace("torch.", "")
            want = spec["shape"]
            if dtype != spec["dtype"]:
                raise ZooError(f"input {spec['name']!r} of {self.path.name} must be {spec['dtype']}, got {dtype}")
            if len(shape) != len(want) or any(isinstance(w, int) and w != s for w, s in zip(want, shape)):
                raise ZooError(f"input {spec['name']!r} of {self.path.name} must have shape {want}, got {list(shape)}")
            _check_range(spec, value, self.path.name)
            prepared.append(self._to_native(value, spec["dtype"]))
        return prepared

    def run_prepared(self, prepared: list[Any]) -> tuple[Any, ...]:
        """Run on inputs from `prepare`; outputs stay in the runtime's own type."""
        try:
            outputs = self._run(prepared)
        except ZooError:
            raise
        except Exception as exc:
            from zoo.export._quiet import one_line

            raise ZooError(f"{self.path.name} failed to run: {one_line(exc)}") from None
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)

    def __call__(self, *inputs: Any) -> tuple[Any, ...]:
        """Run the artifact; returns numpy arrays in metadata output order."""
        outputs = self.run_prepared(self.prepare(*inputs))
        return tuple(_to_numpy(o) for o in outputs)


def _check_range(spec: dict[str, Any], value: Any, file: str) -> None:
    """Integer inputs (class labels, token ids) must lie in their declared range:
    an embedding lookup outside it reads another row (ONNX wraps -1 to the last) or crashes."""
    bounds = spec.get("value_range")
    if bounds is None or spec["dtype"] not in INTEGER_DTYPES or _numel(value) == 0:
        return
    lo, hi = int(bounds[0]), int(bounds[1])
    smallest, largest = int(value.min()), int(value.max())
    if smallest < lo or largest > hi:
        bad = smallest if smallest < lo else largest
        raise ZooError(f"input {spec['name']!r} of {file} must be in [{lo}, {hi}], got {bad}")


def _numel(value: Any) -> int:
    size = getattr(value, "size", None)
    return int(value.numel()) if callable(size) else int(size)


def _to_numpy(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()


def _tensor_converter(device: Any) -> Callable[[Any, str], Any]:
    import numpy as np
    import torch

    def convert(value: Any, dtype: str) -> Any:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        return value.to(device)

    return convert


def _numpy_converter(value: Any, dtype: str) -> Any:
    import numpy as np

    if not isinstance(value, np.ndarray):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=NUMPY_DTYPES.get(dtype, dtype))


def load(path: str | Path, device: str = "cpu") -> Artifact:
    """Load an artifact written by `zoo export` onto `device` (`cpu`, `cuda`, `cuda:N`, or
    `auto`: CUDA when present, and a per-device artifact such as a `.pt2` on the
    device it was compiled for)."""
    from zoo import devices

    path = Path(path)
    metadata = read_metadata(path)
    fmt = format_of(path)
    if metadata.get("format") not in (None, fmt.name):
        raise ZooError(f"{path}: its metadata says format {metadata.get('format')!r} but the file is {fmt.name}")
    if device == "auto" and fmt.per_device:
        device = metadata.get("device", "cpu")  # it holds code for one device kind
    dev = devices.resolve(device)
    try:
        loaded = fmt.load(path, metadata, dev)
    except ZooError:
        raise
    except Exception as exc:
        from zoo.export._quiet import one_line

        raise ZooError(f"{path} cannot be loaded as {fmt.name} (truncated or corrupt?): {one_line(exc)}") from None
    convert = _numpy_converter if loaded.takes == "numpy" else _tensor_converter(dev)
    return Artifact(path, fmt.name, metadata, str(dev), loaded.run, convert)
