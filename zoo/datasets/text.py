"""Character-level text for language models.

- `text:PATH`: a UTF-8 file (the layout of tiny-shakespeare's `input.txt`) or a folder of
  `.txt` files (read in sorted order, joined by blank lines).
- `pydoc` (offline, the language models' default): the English documentation that ships
  with every CPython, `pydoc_data.topics` (about 465,000 characters, 103 distinct),
  its topics joined in sorted order.

Splits: the text is cut into blocks of 2,048 characters and every tenth block is held
out for validation, so both splits are alike (the tail of a corpus is often not). The
vocabulary is the training split's characters in sorted order; validation characters
the training split never shows are dropped (counted in the run's details).

What a plugin gets, per `Tokens(name, length, windows, lanes)`:
- `windows="random"`: each training batch holds windows of `length` token ids starting
  at random offsets (drawn for the whole epoch at its start, so a resumed epoch sees the
  rest of the same draw); an epoch is about one pass over the training text.
- `windows="consecutive"`: for truncated backpropagation through time. The text is cut
  into `lanes` contiguous streams; batch j holds window j of every stream, so a
  recurrent state carried from batch j to j + 1 continues the same text. Batches must
  come in order (the plugin's request says `shuffle=False`) and hold `lanes` windows.
Validation windows follow the same layout (random mode: consecutive windows in order).
Windows overlap by one token, the target of one position being the input of the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.data import DataInfo, DataRequest, Dataset, DataSplits, TensorData, Tokens, count_steps, sharded
from zoo.errors import DataError

if TYPE_CHECKING:
    import torch

BLOCK = 2048  # characters per block of the interleaved split
HOLD_OUT_EVERY = 10  # every tenth block is validation


def split_text(text: str) -> tuple[str, str]:
    """(training text, validation text): every tenth block of 2,048 characters held out.
    A text of fewer than ten blocks is cut into ten equal blocks instead."""
    block = BLOCK if len(text) >= BLOCK * HOLD_OUT_EVERY else max(1, len(text) // HOLD_OUT_EVERY)
    blocks = [text[i : i + block] for i in range(0, len(text), block)]
    val = "".join(b for i, b in enumerate(blocks) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1)
    train = "".join(b for i, b in enumerate(blocks) if i % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1)
    return train, val


def read_text(path: Path) -> str:
    """A UTF-8 file, or the .txt files of a folder in sorted order; one-line errors
    naming the file (and the byte offset of text that is not UTF-8)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"--data text:{path}: the folder has no .txt files")
        return "\n\n".join(_read_one(f) for f in files)
    return _read_one(path)


def _read_one(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start} is not valid UTF-8)") from None
    return text.removeprefix("\ufeff")


class RandomWindows:
    """Training windows at random offsets of one token stream (a split for the engine)."""

    def __init__(self, stream: torch.Tensor, length: int, name: str = "tokens"):
        self.stream = stream
        self.length = length
        self.name = name
        self.count = max(1, (len(stream) - 1) // (length - 1))  # windows per epoch: about one pass

    def __len__(self) -> int:
        return self.count

    def num_batches(self, batch_size: int, world: int = 1) -> int:
        return count_steps(self.count, batch_size, world)

    def to(self, device: Any) -> RandomWindows:
        return RandomWindows(self.stream.to(device), self.length, self.name)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, start: int = 0, rank: int = 0, world: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]:
        import torch

        high = len(self.stream) - self.length + 1
        if generator is not None:
            starts = torch.randint(0, high, (self.count,), generator=generator)
        else:
            starts = torch.arange(self.count) * (self.length - 1) % high
        offsets = torch.arange(self.length)
        starts = starts.to(self.stream.device)
        offsets = offsets.to(self.stream.device)
        for chosen in sharded(starts, batch_size, start, rank, world):
            rows = chosen[:, None] + offsets  # (B, length) indices into the stream
            yield {self.name: self.stream[rows]}


def consecutive_windows(stream: torch.Tensor, length: int, lanes: int) -> torch.Tensor:
    """(windows, length) token ids laid out for truncated BPTT: row j * lanes + i is
    window j of stream i, the streams being `lanes` contiguous pieces of the text."""
    import torch

    per_lane = (len(stream) - 1) // lanes  # tokens each lane advances through
    steps = per_lane // (length - 1)
    if steps < 1:
        raise DataError(f"the text has {len(stream)} characters, too few for {lanes} streams of windows of {length}")
    rows = []
    for j in range(steps):
        for i in range(lanes):
            begin = i * per_lane + j * (length - 1)
            rows.append(stream[begin : begin + length])
    return torch.stack(rows)


def _splits(name: str, text: str, request: DataRequest, source: dict[str, Any]) -> DataSplits:
    import torch

    spec = next((t for t in request.tensors if isinstance(t, Tokens)), None)
    if spec is None or spec.length is None:
        raise DataError(f"--data {name}: the plugin asks for no Tokens(length=...)")
    if not text:
        raise DataError(f"--data {name}: the text is empty")
    train_text, val_text = split_text(text)
    vocabulary = tuple(sorted(set(train_text)))
    index = {c: i for i, c in enumerate(vocabulary)}
    unseen = sum(1 for c in val_text if c not in index)
    val_text = "".join(c for c in val_text if c in index)
    for split, part in (("training", train_text), ("validation", val_text)):
        if len(part) < spec.length:
            raise DataError(
                f"--data {name}: the {split} split has {len(part)} characters, fewer than the {spec.length} "
                f"of one window (--block-size + 1); use more text or a smaller --block-size"
            )

    def ids(part: str) -> torch.Tensor:
        return torch.tensor([index[c] for c in part], dtype=torch.int64)

    train_ids, val_ids = ids(train_text), ids(val_text)
    if spec.windows == "consecutive":
        lanes = spec.lanes or 1
        train: Any = TensorData({spec.name: consecutive_windows(train_ids, spec.length, lanes)})
        val = TensorData({spec.name: consecutive_windows(val_ids, spec.length, lanes)})
    else:
        train = RandomWindows(train_ids, spec.length, spec.name)
        stride = spec.length - 1
        val = TensorData({spec.name: torch.stack([val_ids[b : b + spec.length] for b in range(0, len(val_ids) - spec.length + 1, stride)])})
    details = {
        **source,
        "characters": len(text),
        "train_characters": len(train_text),
        "val_characters": len(val_text),
        "val_characters_unseen_in_training": unseen,
        "vocabulary_size": len(vocabulary),
    }
    return DataSplits(name, train, val, info=DataInfo(vocabulary=vocabulary), details=details)


def load_text(path: Path, request: DataRequest, download: bool = False) -> DataSplits:
    return _splits(f"text:{path}", read_text(path), request, {"path": str(path)})


def pydoc_text() -> str:
    """CPython's bundled documentation topics, joined in sorted order."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[key] for key in sorted(topics))


def load_pydoc(path: None, request: DataRequest, download: bool = False) -> DataSplits:
    import sys

    return _splits("pydoc", pydoc_text(), request, {"source": f"pydoc_data.topics of CPython {sys.version.split()[0]}"})


text = Dataset(
    name="text",
    summary="character-level text: a UTF-8 file (tiny-shakespeare's input.txt) or a folder of .txt files",
    load=load_text,
    yields=(Tokens("tokens"),),
    needs_path=True,
    path_help="a UTF-8 text file, or a folder of .txt files",
)

pydoc = Dataset(
    name="pydoc",
    summary="the English documentation bundled with CPython (pydoc_data.topics): 465,000 characters, offline",
    load=load_pydoc,
    yields=(Tokens("tokens"),),
)
