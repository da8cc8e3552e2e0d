"""Writing an artifact so that a crash never leaves half a file behind a real name."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """A path with `final`'s name inside a fresh hidden directory beside it; renamed
    onto `final` when the block succeeds, removed when it fails (a writer that names
    things after its file sees the real name)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp = tmpdir / final.name
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_atomically(final: Path, data: bytes | memoryview) -> None:
    """Bytes serialised in memory, written to `final` through `atomic_file` by Python.
    torch's zip writer aborts the process when the disk fills under it (TorchScript,
    .pt2); a Python write raises ENOSPC like any other error, and leaves no partial file."""
    with atomic_file(final) as tmp:
        tmp.write_bytes(data)
