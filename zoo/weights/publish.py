"""Writing weights to publish: deterministic safetensors bytes and the table entry's source.

`zoo weights export` writes `PLUGIN-NAME-<sha256[:8]>.safetensors` (`file_name`) with
these bytes (`write_verified`) and prints `entry_source(entry)`, a `Weights(...)` literal
to paste into the plugin's `weights=(...)`; `zoo weights import` writes its cache files
the same way. `stored_at` rounds the floating-point tensors to the dtype a file stores
them in (`--dtype float16` halves a file; the meta records it as 'stored_dtype').
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, UsageError
from zoo.plugin import Weights
from zoo.weights.meta import STORED_DTYPES


def stored_at(tensors: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """`tensors` with every floating-point one rounded to `dtype` (one of STORED_DTYPES);
    integer buffers (batch norm's step counter) stay as they are. A value that would
    overflow the dtype (float16 ends at 65504) is refused rather than stored as inf."""
    import torch

    if dtype not in STORED_DTYPES:
        raise UsageError(f"dtype {dtype!r}: weights are stored as one of {', '.join(STORED_DTYPES)}")
    target = getattr(torch, dtype)
    out = {}
    for key, value in tensors.items():
        if not value.is_floating_point() or value.dtype == target:
            out[key] = value
            continue
        cast = value.to(target)
        if not torch.isfinite(cast).all() and torch.isfinite(value).all():
            largest = float(value.abs().max())
            raise UsageError(f"{key} holds {largest:g}, beyond what {dtype} can store; store these weights as bfloat16 or float32")
        out[key] = cast
    return out


def stored_dtype(tensors: Mapping[str, Any]) -> str:
    """The dtype `tensors` store their floating-point values in, when they share one of
    STORED_DTYPES; float32 otherwise (mixed, none, or float64)."""
    found = {str(v.dtype).replace("torch.", "") for v in tensors.values() if v.is_floating_point()}
    return found.pop() if len(found) == 1 and found <= set(STORED_DTYPES) else "float32"


def file_name(plugin: str, name: str, sha256: str) -> str:
    """The published file's name: plugin, table name and the sha256's first 8 hex digits."""
    return f"{plugin}-{name.lower()}-{sha256[:8]}.safetensors"


def safetensors_bytes(tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
    """A safetensors file's bytes with the zoo meta in its metadata. Same tensors and
    meta give the same bytes, so re-exporting a checkpoint gives the same sha256."""
    from safetensors.torch import save

    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return save(plain, metadata={"zoo": json.dumps(meta, sort_keys=True)})


def _literal(value: Any, indent: str, width: int = 100) -> str:
    """A Python literal for JSON-like `value`: inline when it fits, one key a line otherwise."""
    flat = repr(value)
    if len(indent) + len(flat) <= width or not isinstance(value, dict) or not value:
        return flat
    inner = indent + "    "
    lines = [f"{inner}{key!r}: {_literal(item, inner, width)}," for key, item in value.items()]
    return "{\n" + "\n".join(lines) + f"\n{indent}}}"


def entry_source(entry: Weights, indent: str = "") -> str:
    """`entry` as Python source to paste into a plugin's weights table."""
    inner = indent + "    "
    return (
        f"{indent}Weights(\n"
        f"{inner}name={entry.name!r},\n"
        f"{inner}source={entry.source!r},\n"
        f"{inner}sha256={entry.sha256!r},\n"
        f"{inner}meta={_literal(dict(entry.meta), inner)},\n"
        f"{indent}),"
    )


def write_verified(data: bytes, path: Path) -> str:
    """Write `data` atomically, readable by everyone the umask allows, and check that the
    file on disk hashes like the bytes; returns their sha256."""
    from zoo import checkpoint

    sha = hashlib.sha256(data).hexdigest()
    checkpoint.atomic_write(path, lambda fh: fh.write(data), size_hint=len(data))
    # mkstemp makes files 0600; weights are meant to be shared (packaged, hosted, cached).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    on_disk = checkpoint.sha256_file(path)
    if on_disk != sha:
        path.unlink()
        raise CheckpointError(f"{path} did not read back as written (sha256 {on_disk}, expected {sha}); the disk may be failing")
    return sha
