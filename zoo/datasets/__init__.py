"""zoo's built-in datasets, each one module ending in a `Dataset` object registered in
the `zoo.datasets` entry-point group (see pyproject.toml), exactly as a third
party's would be:

- `digits` (the default of the digit plugins): scikit-learn's bundled handwritten digits.
- `mnist:PATH`: torchvision's MNIST layout.
- `cifar10:PATH`: torchvision's CIFAR-10 layout.
- `folder:PATH`: torchvision's ImageFolder layout.
- `pix2pix:PATH`: aligned A|B image folders (facades, maps, edges2shoes).
- `colorization`, `edges`: offline A|B pairs cut from scikit-image's bundled photographs.

`load(spec, request)` resolves `--data NAME[:PATH]` through the `zoo.datasets` registry,
checks the dataset can give what the request asks for, loads it and checks the data
fits. Importing this package imports nothing heavy (not the built-in modules either:
the registry imports each when asked for it); they import torch inside their loaders.
"""

from __future__ import annotations

from pathlib import Path

from zoo.data import DataRequest, Dataset, DataSplits, check_request, check_splits
from zoo.errors import DataError, UsageError


def parse_spec(spec: str) -> tuple[Dataset, str | None]:
    """`--data NAME[:PATH]` -> (the registered dataset, PATH or None)."""
    from zoo import _registry

    name, _, path = spec.partition(":")
    name = name.strip().lower()
    dataset = _registry.datasets.get(name, what=f"--data {spec!r}: unknown dataset", example="e.g. mnist:PATH")
    if dataset.needs_path and not path:
        raise UsageError(f"--data {name} needs a path: --data {name}:PATH ({dataset.path_help or 'see zoo datasets'})")
    if path and not dataset.needs_path:
        raise UsageError(f"--data {name} takes no path (it ships with zoo or its dependencies); use --data {name}")
    return dataset, (path or None)


def load(spec: str, request: DataRequest, *, download: bool = False, plugin: str = "the plugin", mode: str = "auto") -> DataSplits:
    """Load the dataset named by `spec` shaped the way `request` asks, checked against it.
    `mode` (`--data-mode`): decode everything into memory, stream it, or choose by size
    (auto); datasets that cannot stream load into memory, and refuse `stream`."""
    from zoo.data import DATA_MODES

    if mode not in DATA_MODES:
        raise UsageError(f"--data-mode {mode!r}: choose {', '.join(DATA_MODES)}")
    dataset, path = parse_spec(spec)
    check_request(dataset, request, plugin)
    location = None
    if path is not None:
        location = Path(path).expanduser()
        if not location.exists() and not (download and dataset.downloads):
            hint = "; --download fetches it" if dataset.downloads else ""
            raise DataError(f"--data {spec}: {location} does not exist{hint}")
    if dataset.streams:
        splits = dataset.load(location, request, download=download, mode=mode)
    elif mode == "stream":
        raise UsageError(f"--data-mode stream: dataset {dataset.name!r} loads into memory only (it is small, or cannot be read lazily)")
    else:
        splits = dataset.load(location, request, download=download)
    if not isinstance(splits, DataSplits):
        raise DataError(f"--data {spec}: dataset {dataset.name!r} returned a {type(splits).__name__}, not zoo.data.DataSplits")
    check_splits(spec, splits, request, plugin)
    return splits
