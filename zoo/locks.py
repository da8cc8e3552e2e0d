"""Exclusive use of a run or export directory while a command writes into it.

`hold(directory, what)` takes an advisory `flock` on `DIRECTORY/.zoo.lock` for the
life of the block and records who holds it (pid, command, start time) in that file.
A second process gets one line naming the holder instead of interleaving its
writes; the lock goes with the process, so a killed run never leaves it stuck.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from zoo.errors import ZooError

LOCK_FILE = ".zoo.lock"


class Busy(ZooError):
    """Another process is writing into the directory."""


@contextlib.contextmanager
def hold(directory: Path, what: str) -> Iterator[None]:
    """Hold `directory` for writing; `what` says for what, e.g. "zoo train vae"."""
    import fcntl

    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{directory} is in use by {_holder(path)}; wait for it to finish or choose another directory") from None
        record = {"pid": os.getpid(), "command": what, "argv": sys.argv[1:], "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record.get("pid"):
        return "another zoo process"
    return f"{record.get('command', 'zoo')} (pid {record['pid']}, since {record.get('since', '?')})"


def stale_temps(directory: Path) -> list[Path]:
    """Temp files zoo's atomic writes leave when a process is killed mid-write
    (`.last.pt.XXXX.tmp`, `.epoch_003.png.XXXX.tmp`), in the directory and its samples/."""
    found = []
    for folder in (directory, directory / "samples"):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()]
    return sorted(found)
