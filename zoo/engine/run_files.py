"""The files of a run directory besides the checkpoint: config.json, metrics.jsonl and
the per-epoch samples. Every write is atomic or an fsync'd append."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zoo import checkpoint

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "last.pt"
SAMPLES = "samples"


def append_record(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return out


def truncate_records(path: Path, epoch: int, epoch_complete: bool) -> None:
    """On resume, keep the records up to the checkpoint: through `epoch` when it was
    complete, before it when the checkpoint is in its middle (that epoch's record of the
    early stop is replaced by the full epoch's)."""
    if not path.is_file():
        return
    keep = [r for r in read_records(path) if r.get("epoch", 0) < epoch or (epoch_complete and r.get("epoch", 0) == epoch)]
    checkpoint.atomic_write(path, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in keep)), mode="w")


def save_grid(grid: Any, path: Path) -> None:
    from torchvision.utils import save_image

    checkpoint.atomic_write(path, lambda fh: save_image(grid.float().cpu(), fh, format="png"))


def save_text(text: str, path: Path) -> None:
    checkpoint.atomic_write(path, lambda fh: fh.write(text if text.endswith("\n") else text + "\n"), mode="w")
