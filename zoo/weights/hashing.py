"""sha256 of weights files, computed as rarely as safety allows.

A file is hashed once per process while its stat fingerprint (size, mtime, ctime,
inode) is unchanged. A cached download is re-verified before every use; a sidecar
`.NAME.verified.json` beside it records the fingerprint it had when it last hashed to
the expected sha256, so an unchanged file is not hashed again in the next process.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo import checkpoint

# sha256 of files already hashed in this process, keyed by path and stat fingerprint.
_hash_memo: dict[tuple[str, tuple[int, ...]], str] = {}


def _fingerprint(path: Path) -> tuple[int, ...]:
    # ctime changes on every write and on utime, so a rewrite that restores the
    # mtime still shows; the inode changes when a file is replaced.
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_sha256(path: Path) -> str:
    """sha256 of `path`, hashed once per process while the file is unchanged."""
    key = (str(path.resolve()), _fingerprint(path))
    if key not in _hash_memo:
        _hash_memo[key] = checkpoint.sha256_file(path)
    return _hash_memo[key]


def sidecar(path: Path) -> Path:
    """Where the record of `path`'s last verification is kept."""
    return path.with_name(f".{path.name}.verified.json")


def verified_sha256(path: Path, expected: str) -> str:
    """The sha256 of a cached file, read from its sidecar when the file has not changed
    since it was last verified to be `expected`, hashed (and the sidecar renewed) otherwise."""
    fingerprint = list(_fingerprint(path))
    side = sidecar(path)
    try:
        record = json.loads(side.read_text())
        if record.get("fingerprint") == fingerprint and record.get("sha256") == expected:
            return expected
    except (OSError, ValueError, AttributeError):
        pass
    actual = checkpoint.sha256_file(path)
    if actual == expected:
        try:
            checkpoint.write_json({"file": path.name, "fingerprint": fingerprint, "sha256": actual}, side)
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
        _hash_memo[(str(path.resolve()), tuple(fingerprint))] = actual
    return actual


def remove_verified(path: Path) -> None:
    """Delete a cached file and its sidecar (either may be missing)."""
    for p in (path, sidecar(path)):
        p.unlink(missing_ok=True)
