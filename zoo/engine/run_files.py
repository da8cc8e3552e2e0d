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


# Files a run directory holds that make it "a run": training into it needs --resume or --overwrite.
RUN_FILES = (CHECKPOINT, METRICS, CONFIG)


class RunDir:
    """The directory a run writes to, held for the run's whole life.

    On entry: the directory is created (a new numbered `runs/PLUGIN/NNN` by default),
    locked against a second writer, checked (a directory that already holds a run is
    refused unless the run is resumed or `overwrite` is given, when zoo's own files of
    that run are removed first), and cleared of temp files left by a killed write. On
    a failure before the first checkpoint, what the run wrote is removed again, and the
    directory too if the run created it, so no empty run is left behind."""

    def __init__(self, plugin: str, out: Any, resume: Any, overwrite: bool, is_main: bool = True):
        self.plugin = plugin
        self.out = out
        self.resume = resume
        self.overwrite = overwrite
        self.is_main = is_main
        self.path: Path | None = None
        self.created = False
        self.checkpointed = False
        self._lock: Any = None

    def __enter__(self) -> Path:
        import contextlib

        from zoo import locks, paths
        from zoo.errors import UsageError

        path = Path(self.out) if self.out is not None else (Path(self.resume).parent if self.resume is not None else None)
        if not self.is_main:
            assert path is not None
            self.path = path
            return path
        if path is None:
            path = paths.new_run_dir(self.plugin)
            self.created = True
        try:
            self.created = self.created or not path.exists()
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".zoo-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None
        self.path = path
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(locks.hold(path, f"zoo train {self.plugin}"))
            held = [name for name in RUN_FILES if (path / name).exists()]
            if held and self.resume is None:
                if not self.overwrite:
                    what = f"a run ({', '.join(held)})"
                    raise UsageError(
                        f"--out {path} holds {what} already; pass --resume {path / CHECKPOINT} to continue it, or --overwrite to replace it"
                    )
                self._remove_run_files(path)
            for temp in locks.stale_temps(path):
                temp.unlink(missing_ok=True)
        except BaseException:
            self._lock.close()
            self._remove_if_created()
            raise
        return path

    @staticmethod
    def _remove_run_files(path: Path) -> None:
        for name in RUN_FILES:
            (path / name).unlink(missing_ok=True)
        samples = path / SAMPLES
        if samples.is_dir():
            for f in samples.iterdir():
                if f.name.startswith("epoch_") and f.suffix in (".png", ".txt"):
                    f.unlink()
            try:
                samples.rmdir()
            except OSError:
                pass  # the user's own files stay

    def _remove_if_created(self) -> None:
        from zoo.locks import LOCK_FILE

        if self.created and self.path is not None and self.path.is_dir():
            for name in (LOCK_FILE,):
                (self.path / name).unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                pass

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if not self.is_main or self.path is None:
            return
        failed = kind is not None
        if failed and not self.checkpointed and self.resume is None:
            self._remove_run_files(self.path)
            from zoo import locks

            for temp in locks.stale_temps(self.path):
                temp.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
        if failed and not self.checkpointed and self.resume is None:
            self._remove_if_created()
