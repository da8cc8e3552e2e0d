"""The data contract: what a plugin asks for, what a dataset yields, and the splits the
engine trains on.

- A plugin asks for named tensors: `DataRequest(Images("image", size=28, channels=1),
  Labels("label", num_classes=10))`, or `DataRequest(Tokens("tokens", length=65))`.
- A dataset is one `Dataset` object registered in the `zoo.datasets` entry-point group
  (zoo's own, in `zoo.datasets`, exactly like a third party's). It says what it
  `yields` (the same spec classes, without sizes: it adapts to the request) and loads a
  `DataSplits`: a train and a validation split, and a `DataInfo` of what the data
  knows (classes, class names, a vocabulary) that reaches the plugin before its model
  is built and travels with the model into checkpoints, weights and exported files.
- A split is a `TensorData` (named in-memory tensors batched by index on the device:
  the fast default) or anything with the same three methods (`__len__`,
  `num_batches`, `batches`), such as a streaming split for data larger than memory.

`zoo.datasets.load(spec, request)` resolves `--data SPEC` (`digits`, `mnist:PATH`, ...)
through the registry and refuses, in one line naming both, a dataset that cannot give
the plugin what it asks for (`check_request`), and data that does not fit it (wrong
shapes, labels out of range: `check_splits`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from zoo.errors import DataError, UsageError

if TYPE_CHECKING:
    import torch

# Bump when the preparation of a cached dataset changes, so stale caches are not used.
CACHE_VERSION = 1


# --------------------------------------------------------------------------- tensor specs


@dataclass(frozen=True)
class DataSpec:
    """One named tensor of a sample. Subclasses set `kind` and `dtype`; `shape()` is the
    per-sample shape, with a name in place of any size not fixed (yet)."""

    name: str
    kind: ClassVar[str] = "tensor"
    dtype: ClassVar[str] = "float32"

    def shape(self) -> tuple[int | str, ...]:
        return ()

    def describe(self) -> str:
        shape = "[" + ", ".join(map(str, self.shape())) + "]"
        return f"{self.name} ({self.kind}: {self.dtype} {shape})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "shape": list(self.shape())}


@dataclass(frozen=True)
class Images(DataSpec):
    """float32 images (channels, size, size) with pixel values mapped linearly from [0, 1]
    into `value_range`. A dataset declares `Images("image")` and resizes to the request."""

    name: str = "image"
    size: int | None = None
    channels: int | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    # Black border: images are resized to size - 2 * pad and padded to size (28x28 digits
    # in a 32x32 frame, as LeNet-5 read MNIST and the CIFAR ResNets expect 32x32).
    pad: int = 0
    kind: ClassVar[str] = "images"
    dtype: ClassVar[str] = "float32"

    def shape(self) -> tuple[int | str, ...]:
        side = self.size if self.size is not None else "size"
        return (self.channels if self.channels is not None else "channels", side, side)

    def describe(self) -> str:
        lo, hi = self.value_range
        return f"{super().describe()[:-1]} in [{lo:g}, {hi:g}])"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "value_range": list(self.value_range)}


@dataclass(frozen=True)
class Labels(DataSpec):
    """int64 class indices, one per sample. A plugin sets `num_classes` to the classes its
    model predicts: data with more classes, or labels outside 0..num_classes-1, is refused."""

    name: str = "label"
    num_classes: int | None = None
    kind: ClassVar[str] = "labels"
    dtype: ClassVar[str] = "int64"

    def describe(self) -> str:
        classes = f", 0..{self.num_classes - 1}" if self.num_classes else ""
        return f"{self.name} ({self.kind}: {self.dtype} []{classes})"

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.num_classes is not None:
            out["num_classes"] = self.num_classes
        return out


@dataclass(frozen=True)
class Tokens(DataSpec):
    """int64 token ids, `length` per sample (a language model asks for block_size + 1: the
    inputs and, shifted by one, the targets). Ids index `DataInfo.vocabulary`."""

    name: str = "tokens"
    length: int | None = None
    # "random": windows at random offsets of the text; "consecutive": `lanes` contiguous
    # streams, batch j holding window j of each (truncated backpropagation through time).
    windows: str = "random"
    lanes: int | None = None
    kind: ClassVar[str] = "tokens"
    dtype: ClassVar[str] = "int64"

    def __post_init__(self) -> None:
        if self.windows not in ("random", "consecutive"):
            raise ValueError(f"Tokens windows must be 'random' or 'consecutive', not {self.windows!r}")

    def shape(self) -> tuple[int | str, ...]:
        return (self.length if self.length is not None else "length",)


class DataRequest:
    """What a plugin needs from a dataset: named tensor specs, and whether training
    batches come in a seeded random order (`shuffle`, the default) or in order (for
    data whose order matters, such as consecutive text windows).

    `DataRequest(size=28, channels=1, value_range=(0.0, 1.0), labels=True)` is shorthand
    for `DataRequest.images(...)`: `image` tensors and their `label`."""

    def __init__(
        self,
        *tensors: DataSpec,
        shuffle: bool = True,
        size: int | None = None,
        channels: int = 1,
        value_range: tuple[float, float] = (0.0, 1.0),
        labels: bool = True,
    ):
        if not tensors and size is not None:
            # Shorthand for the common case, `DataRequest(size=28, channels=1)`: see `images`.
            tensors = DataRequest.images(size, channels, value_range, labels).tensors
        names = [t.name for t in tensors]
        if not tensors or len(set(names)) != len(names):
            raise ValueError(f"a DataRequest needs one or more tensors with distinct names, got {names}")
        for t in tensors:
            if not isinstance(t, DataSpec):
                raise TypeError(f"a DataRequest holds zoo.data specs (Images, Labels, Tokens...), not {type(t).__name__}")
        self.tensors: tuple[DataSpec, ...] = tuple(tensors)
        self.shuffle = shuffle

    @classmethod
    def images(
        cls,
        size: int,
        channels: int = 1,
        value_range: tuple[float, float] = (0.0, 1.0),
        labels: bool = True,
        num_classes: int | None = None,
    ) -> DataRequest:
        """The common case: `image` tensors, and (with `labels`) their `label`."""
        specs: list[DataSpec] = [Images("image", size=size, channels=channels, value_range=tuple(value_range))]
        if labels:
            specs.append(Labels("label", num_classes=num_classes))
        return cls(*specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    def get(self, name: str) -> DataSpec | None:
        return next((t for t in self.tensors if t.name == name), None)

    def __getitem__(self, name: str) -> DataSpec:
        spec = self.get(name)
        if spec is None:
            raise KeyError(name)
        return spec

    def wants(self, name: str) -> bool:
        return self.get(name) is not None

    def describe(self) -> str:
        return ", ".join(t.describe() for t in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {"tensors": [t.to_json() for t in self.tensors], "shuffle": self.shuffle}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataRequest) and (self.tensors, self.shuffle) == (other.tensors, other.shuffle)

    def __hash__(self) -> int:
        return hash((self.tensors, self.shuffle))

    def __repr__(self) -> str:
        return f"DataRequest({', '.join(map(repr, self.tensors))}, shuffle={self.shuffle})"


@dataclass(frozen=True)
class DataInfo:
    """What the data knows that a model (and whoever deploys it) needs: the number of
    classes and their names, or the vocabulary (token id -> text). Recorded in
    checkpoints, weights and every artifact's metadata as `data_info`."""

    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    vocabulary: tuple[str, ...] | None = None
    # Samples in the training split (set by the engine): what a model that stores its
    # training set, such as a k-nearest-neighbour classifier, allocates.
    train_size: int | None = None

    def __post_init__(self) -> None:
        # Plain Python values only (a dataset may hand over numpy strings): they go into
        # checkpoints, which hold nothing a weights-only load refuses.
        for key in ("num_classes", "train_size"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, int(getattr(self, key)))
        for key in ("class_names", "vocabulary"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(str(v) for v in value))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.num_classes is not None:
            out["num_classes"] = self.num_classes
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        if self.vocabulary is not None:
            out["vocabulary"] = list(self.vocabulary)
        if self.train_size is not None:
            out["train_size"] = self.train_size
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DataInfo:
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"data_info must be a JSON object, not {type(data).__name__}")
        num, size = data.get("num_classes"), data.get("train_size")
        names, vocab = data.get("class_names"), data.get("vocabulary")
        for key, value in (("num_classes", num), ("train_size", size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"data_info {key} must be a positive int, not {value!r}")
        for key, value in (("class_names", names), ("vocabulary", vocab)):
            if value is not None and (not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value)):
                raise ValueError(f"data_info {key} must be a list of strings")
        return cls(num, tuple(names) if names is not None else None, tuple(vocab) if vocab is not None else None, size)


# --------------------------------------------------------------------------- splits


class Split(Protocol):
    """What the engine needs of a split: its size, and batches in a seeded order. Under
    data-parallel training the engine also passes `rank` and `world` (see `sharded`);
    a split that runs in one process only may leave them out."""

    def __len__(self) -> int: ...

    def num_batches(self, batch_size: int, world: int = 1) -> int: ...

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, start: int = 0, rank: int = 0, world: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]: ...


def sharded(order: torch.Tensor, batch_size: int, start: int = 0, rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
    """The sample indices of each step of process `rank` of `world`: the steps take
    global batches of `batch_size * world` from `order` (from step `start` on) and each
    process its near-equal slice, so N processes at batch B see what one process sees
    at batch N x B. A last global batch with fewer samples than processes is dropped:
    every process takes the same number of steps."""
    step = batch_size * world
    for begin in range(start * step, len(order), step):
        rows = order[begin : begin + step]
        if world > 1:
            if len(rows) < world:
                return
            rows = rows.tensor_split(world)[rank]
        yield rows


def count_steps(samples: int, batch_size: int, world: int = 1) -> int:
    """How many steps `sharded` gives."""
    full, rest = divmod(samples, batch_size * world)
    return full + (1 if rest and rest >= world else 0)


@dataclass
class TensorData:
    """Named tensors sharing their first dimension (e.g. ``image`` N x C x H x W, ``label``
    N), held on the training device and batched by indexing."""

    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        sizes = {name: len(t) for name, t in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise DataError("the tensors of a split disagree on the number of samples: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def to(self, device: Any) -> TensorData:
        return TensorData({k: v.to(device, non_blocking=True) for k, v in self.tensors.items()})

    def index(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, start: int = 0, rank: int = 0, world: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches in a shuffled order drawn from `generator` (in order without one),
        from batch number `start` on: the order is drawn whole either way, so a run
        resumed in the middle of an epoch sees the rest of the same order. With `world`
        processes, each takes its shard of every step (`sharded`)."""
        import torch

        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(next(iter(self.tensors.values())).device)
        for rows in sharded(order, batch_size, start, rank, world):
            yield self.index(rows)

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        return count_steps(len(self), batch_size, world)


class StreamingSplit:
    """A split decoded lazily, a step at a time, by a DataLoader with worker processes:
    for data larger than memory. `source[i]` gives sample i as a dict of tensors
    (without the batch axis) already shaped as the request asks; the order, the shards
    and the resume point are those of `TensorData`, and the per-sample preparation is
    the in-memory path's, so both give the same batches for the same data."""

    def __init__(self, source: Any, workers: int | None = None, device: Any = "cpu"):
        self.source = source
        self.workers = default_workers() if workers is None else workers
        self.device = device

    def __len__(self) -> int:
        return len(self.source)

    def to(self, device: Any) -> StreamingSplit:
        return StreamingSplit(self.source, self.workers, device)

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        return count_steps(len(self), batch_size, world)

    def peek(self) -> dict[str, torch.Tensor]:
        """The first sample as a batch of one (what `check_splits` inspects)."""
        return _stack([self.source[0]])

    def column(self, name: str) -> torch.Tensor | None:
        """All values of a tensor the source knows without decoding (labels), or None."""
        get = getattr(self.source, "column", None)
        return get(name) if get is not None else None

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, start: int = 0, rank: int = 0, world: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]:
        import torch
        from torch.utils.data import DataLoader

        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        steps = [rows.tolist() for rows in sharded(order, batch_size, start, rank, world)]
        if not steps:
            return
        # Its own generator: a DataLoader seeds its workers from the global one otherwise,
        # which would shift a GAN's noise and make streaming differ from memory.
        loader = DataLoader(
            self.source,
            batch_sampler=steps,
            num_workers=self.workers,
            collate_fn=_stack,
            generator=torch.Generator(),
            worker_init_fn=_one_thread if self.workers else None,
            pin_memory=str(self.device).startswith("cuda"),
        )
        for batch in loader:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


def _stack(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    import torch

    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def _one_thread(worker: int) -> None:
    import torch

    torch.set_num_threads(1)  # the workers share the cores with training


def default_workers() -> int:
    import os

    raw = os.environ.get("ZOO_DATA_WORKERS")
    return int(raw) if raw and raw.isdigit() else min(4, os.cpu_count() or 1)


DATA_MODES = ("auto", "memory", "stream")


def memory_budget() -> int:
    """Bytes of decoded data zoo holds in memory before it streams: ZOO_DATA_MEMORY
    (e.g. 2G, 500M), else 40% of this machine's memory, at most 8 GB."""
    import os

    raw = os.environ.get("ZOO_DATA_MEMORY", "").strip().upper()
    if raw:
        scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(raw[-1], 1)
        try:
            return int(float(raw[:-1] if raw[-1] in "KMG" else raw) * scale)
        except ValueError:
            raise UsageError(f"ZOO_DATA_MEMORY={raw!r} is not a size such as 2G or 500M") from None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 10**9
    return int(min(8e9, 0.4 * total))


def choose_mode(mode: str, decoded_bytes: int) -> str:
    """ "memory" or "stream" for `--data-mode` (auto: memory when the decoded data fits the budget)."""
    if mode not in DATA_MODES:
        raise UsageError(f"--data-mode {mode!r}: choose {', '.join(DATA_MODES)}")
    if mode != "auto":
        return mode
    return "memory" if decoded_bytes <= memory_budget() else "stream"


def materialise(source: Any) -> TensorData:
    """A sample source decoded whole into a TensorData (the in-memory path)."""
    return TensorData(_stack([source[i] for i in range(len(source))]))


@dataclass
class DataSplits:
    """A dataset loaded for one request: training and validation splits, what the data
    knows (`info`), and where it came from (`details`, recorded in config.json)."""

    name: str
    train: Any  # a Split
    val: Any  # a Split
    info: DataInfo = field(default_factory=DataInfo)
    details: dict[str, Any] = field(default_factory=dict)

    def to(self, device: Any) -> DataSplits:
        return DataSplits(self.name, self.train.to(device), self.val.to(device), self.info, self.details)


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    """One dataset, registered in the `zoo.datasets` entry-point group.

    `load(path, request, *, download)` returns the `DataSplits` for `request`; `path` is
    the PATH of `--data NAME:PATH` (None for datasets that need none). `yields` lists
    the tensors it can give, as specs without sizes (`Images("image")`,
    `Labels("label")`); zoo refuses a plugin whose request names a tensor the dataset
    does not yield before anything is loaded."""

    name: str
    summary: str
    load: Callable[..., DataSplits]
    yields: tuple[DataSpec, ...]
    needs_path: bool = False
    # `--download` fetches the data into PATH when it is missing.
    downloads: bool = False
    # What PATH must hold, for messages and `zoo datasets`.
    path_help: str = ""
    # `load` takes `mode="memory" | "stream" | "auto"` (`--data-mode`) and can return
    # `StreamingSplit`s for data larger than memory.
    streams: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum() or self.name != self.name.lower():
            raise ValueError(f"dataset name {self.name!r} must be lower-case letters, digits, - and _")
        if not self.yields or not all(isinstance(t, DataSpec) for t in self.yields):
            raise ValueError(f"dataset {self.name!r}: yields must list the zoo.data specs it gives (Images, Labels, ...)")

    def problems_with(self, request: DataRequest, shapes: bool = True) -> list[str]:
        """Why this dataset cannot serve `request` (empty when it can). Without `shapes`,
        only what no config could change: missing tensors and other kinds."""
        yields = {t.name: t for t in self.yields}
        out = []
        for need in request.tensors:
            have = yields.get(need.name)
            if have is None:
                out.append(f"no {need.name!r}")
            elif have.kind != need.kind:
                out.append(f"{need.name!r} is {have.kind}, not {need.kind}")
            elif (
                shapes
                and isinstance(need, Images)
                and isinstance(have, Images)
                and have.channels
                and need.channels
                and need.channels < have.channels
            ):
                out.append(f"{need.name!r} has {have.channels} channels; turning colour into grey would lose it")
        return out

    def describe_yields(self) -> str:
        return ", ".join(f"{t.name} ({t.kind})" for t in self.yields)


def check_request(dataset: Dataset, request: DataRequest, plugin: str = "the plugin") -> None:
    problems = dataset.problems_with(request)
    if problems:
        raise UsageError(
            f"--data {dataset.name}: dataset {dataset.name!r} yields {dataset.describe_yields()} ({'; '.join(problems)}), "
            f"but {plugin} needs {request.describe()}"
        )


def check_splits(spec: str, splits: DataSplits, request: DataRequest, plugin: str = "the plugin") -> None:
    """Refuse data that does not fit the request: missing tensors, other dtypes or
    shapes, labels outside the plugin's classes. One line naming the tensor."""
    info = splits.info
    for need in request.tensors:
        if isinstance(need, Labels) and need.num_classes is not None and info.num_classes is not None:
            if info.num_classes > need.num_classes:
                raise DataError(f"--data {spec} has {info.num_classes} classes, but {plugin} predicts {need.num_classes}")
    for split_name, split in (("training", splits.train), ("validation", splits.val)):
        if len(split) == 0:
            raise DataError(f"--data {spec}: the {split_name} split is empty")
        tensors = getattr(split, "tensors", None)
        if tensors is None:
            if not hasattr(split, "peek"):
                continue  # a split of the plugin's own kind checks its own samples
            peeked = split.peek()
            tensors = {k: (split.column(k) if split.column(k) is not None else v) for k, v in peeked.items()}
        for need in request.tensors:
            if need.name not in tensors:
                raise DataError(f"--data {spec}: the {split_name} split has no tensor {need.name!r} ({plugin} needs {need.describe()})")
            t = tensors[need.name]
            dtype = str(t.dtype).replace("torch.", "")
            if dtype != need.dtype:
                raise DataError(f"--data {spec}: {need.name!r} is {dtype}, {plugin} needs {need.dtype}")
            want = need.shape()
            got = tuple(t.shape[1:])
            if len(got) != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want, got)):
                raise DataError(f"--data {spec}: {need.name!r} samples have shape {list(got)}, {plugin} needs {list(want)}")
            if isinstance(need, Labels) and need.num_classes is not None and t.numel():
                low, high = int(t.min()), int(t.max())
                if low < 0 or high >= need.num_classes:
                    raise DataError(
                        f"--data {spec}: {split_name} labels run {low}..{high}, but {plugin} predicts "
                        f"{need.num_classes} classes (labels 0..{need.num_classes - 1})"
                    )


# --------------------------------------------------------------------------- helpers for datasets


def to_request(images: torch.Tensor, spec: Images) -> torch.Tensor:
    """uint8 or [0, 1] float images N x C x H x W -> float32 in spec.value_range, resized
    to spec.size and converted to spec.channels (grey <-> RGB)."""
    import torch
    import torch.nn.functional as F

    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    channels = spec.channels if spec.channels is not None else x.shape[1]
    if x.shape[1] != channels:
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)  # grey replicated: nothing is lost
        else:
            raise DataError(
                f"the images have {x.shape[1]} channels and the plugin takes {channels}; zoo does not turn "
                "colour into grey (it loses information): pick a plugin or option for colour images"
            )
    inner = spec.size - 2 * spec.pad if spec.size is not None else None
    if inner is not None and x.shape[-2:] != (inner, inner):
        x = F.interpolate(x, size=(inner, inner), mode="bilinear", align_corners=False, antialias=True)
    x = x.clamp(0.0, 1.0)
    if spec.pad:
        x = F.pad(x, (spec.pad,) * 4)
    lo, hi = spec.value_range
    return (x * (hi - lo) + lo).contiguous()


def cached(name: str, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
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
        pass  # a read-only (or full) cache directory only costs the preparation time
    return tensors
