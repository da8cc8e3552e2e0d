"""Checkpoints that can be trusted: written atomically, loaded without unpickling code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
`torch.load(weights_only=True)` reads it; anything else is refused.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError

FORMAT_VERSION = 1


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb", size_hint: int | None = None) -> Path:
    """Write through a temp file in the same directory, then `os.replace`: a reader (or a
    crash) sees either the old file or the complete new one, never half of it. A full
    disk is one `DiskFull` line naming the path and the space needed; the temp file is
    removed and the previous file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if size_hint is not None:
        free = free_bytes(path.parent)
        if free is not None and free < size_hint:
            raise disk_full(path, size_hint, free)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions an ordinary open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        free = free_bytes(path.parent)  # before the temp file goes: a full disk shows as ~0 free
        try:
            written = os.path.getsize(tmp)
            os.unlink(tmp)
        except FileNotFoundError:
            written = 0
        if out_of_space(exc, free):
            raise disk_full(path, max(size_hint or 0, written + DISK_FULL_SLACK), free_bytes(path.parent)) from None
        raise
    return path


def out_of_space(exc: BaseException, free: int | None) -> bool:
    """Whether a failed write ran out of room: ENOSPC/EDQUOT, or any I/O error with under
    DISK_FULL_SLACK free (torch's and onnx's writers re-raise ENOSPC as other errors)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, (OSError, RuntimeError, ValueError)) and free is not None and free < DISK_FULL_SLACK


def disk_full(path: str | os.PathLike, needed: int, free: int | None = None, done: str = "nothing was changed") -> Exception:
    """The one-line DiskFull error for `path`: what it needs, what is free, what was kept."""
    from zoo.errors import DiskFull

    free = free_bytes(Path(path).parent) if free is None else free
    have = f"{_mb(free)} free" if free is not None else "the free space is unknown"
    return DiskFull(
        f"no space left to write {path}: it needs about {_mb(needed)}, {have} there; {done} (free some space and run the command again)"
    )


# Below this much free space, a failed write is taken to have run out of room (torch's
# zip writer reports ENOSPC as a RuntimeError).
DISK_FULL_SLACK = 1 << 20


def free_bytes(directory: str | os.PathLike) -> int | None:
    """Free bytes on `directory`'s filesystem (None when it cannot be asked)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def state_bytes(value: Any) -> int:
    """The bytes of the tensors in a nested state (about what torch.save writes)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(state_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(state_bytes(v) for v in value)
    return 0


def save(state: dict[str, Any], path: str | os.PathLike) -> Path:
    import torch

    state = {"format_version": FORMAT_VERSION, **state}
    check_plain(state)
    return atomic_write(path, lambda fh: torch.save(state, fh), size_hint=state_bytes(state) + (64 << 10))


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Refuse, before writing, anything `torch.load(weights_only=True)` would refuse to
    read back (a numpy string in a trainer's state, a custom object): a checkpoint that
    cannot be loaded is no checkpoint."""
    import torch

    if type(value) in (bool, int, float, str, bytes, type(None)) or isinstance(
        value, (torch.Tensor, torch.dtype, torch.device, torch.Size)
    ):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise CheckpointError(f"cannot save {where}: its key {key!r} is a {type(key).__name__}; use strings or ints")
            check_plain(item, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"cannot save {where}: it is a {type(value).__module__}.{type(value).__qualname__}, which a weights-only load "
        "refuses; keep checkpointed state to tensors, numbers, strings, lists and dicts"
    )


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=2) + "\n"), mode="w")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# What `zoo train --resume` needs of a checkpoint, with the type each entry must have.
TRAINING_KEYS: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "data": str,
    "epoch": int,
    "step": int,
    "optimizers": dict,
    "rng": dict,
}
RNG_KEYS = ("torch", "python", "data", "augment")


def load(path: str | os.PathLike, plugin: str | None = None, map_location: Any = "cpu", training: bool = False) -> dict[str, Any]:
    """Load a zoo checkpoint safely; with `plugin`, refuse one written by another plugin;
    with `training`, refuse one that lacks what resuming needs. Every failure is one
    `CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.is_dir() else f"checkpoint {path} is a directory, not a file")
    state = torch_load(path, map_location=map_location, what="checkpoint")
    if not isinstance(state, dict) or "model" not in state or "plugin" not in state:
        raise CheckpointError(f"{path} is not a zoo training checkpoint (no 'plugin'/'model' entries)")
    if not isinstance(state["plugin"], str):
        raise CheckpointError(f"{path} is not a zoo training checkpoint (its 'plugin' entry is not a name)")
    if plugin is not None and state["plugin"] != plugin:
        raise CheckpointError(f"checkpoint {path} was written by plugin {state['plugin']!r}, not {plugin!r}")
    import torch

    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise CheckpointError(f"checkpoint {path}: its 'model' entry is not a state dict of tensors")
    if "config" in state and not isinstance(state["config"], dict):
        raise CheckpointError(f"checkpoint {path}: its 'config' entry is not a dict of hyperparameters")
    if training:
        for key, kind in TRAINING_KEYS.items():
            if key not in state:
                raise CheckpointError(f"checkpoint {path} has no {key!r}, so training cannot resume from it")
            if not isinstance(state[key], kind) or isinstance(state[key], bool):
                raise CheckpointError(
                    f"checkpoint {path}: its {key!r} entry is a {type(state[key]).__name__}, not a {getattr(kind, '__name__', kind)}"
                )
        missing = [k for k in RNG_KEYS if k not in state["rng"]]
        if missing:
            raise CheckpointError(
                f"checkpoint {path}: its random-generator state lacks {', '.join(missing)}, so training cannot resume exactly"
            )
    return state


def torch_load(path: Path, map_location: Any = "cpu", what: str = "file") -> Any:
    """`torch.load(weights_only=True)` with one-line errors: a pickle that would build
    arbitrary objects (or run code) is refused before anything in it executes, and the
    message names the global it asked for."""
    import pickle
    import warnings
    import zipfile

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol chatter would break the one-line error
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global or opcode it does not know: the file wants to
        # build arbitrary objects (or run code), which zoo never writes, or it is garbage.
        detail = unpickler_detail(exc)
        if detail.startswith("it would build"):
            raise CheckpointError(f"{what} {path} is refused: {detail}") from None
        holds = _not_a_torch_file(path)
        if holds:
            raise CheckpointError(f"{what} {path} is not a file torch.save wrote: {holds}") from None
        raise CheckpointError(f"{what} {path} is unreadable: {detail}") from None
    except MemoryError:
        raise CheckpointError(f"{what} {path} is corrupt (it asks for more memory than this machine has)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
        holds = _not_a_torch_file(path)
        if holds:
            raise CheckpointError(f"{what} {path} is not a file torch.save wrote: {holds}") from None
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({type(exc).__name__}{': ' + detail if detail else ''})") from None


def _not_a_torch_file(path: Path) -> str | None:
    """What a file torch cannot read holds instead, when it is plainly not a torch file
    (`echo hi > x.pt`): empty, or text. None when it may be a damaged one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if not head:
        return "it is empty"
    try:  # incremental: a character cut at the 256th byte is no reason to call text binary
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:  # binary: a damaged checkpoint, or something else entirely
        return None
    if any(not (c.isprintable() or c in "\t\r\n") for c in text):
        return None
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"it holds text ({first[:40]!r}{'...' if len(first) > 40 else ''})"


def unpickler_detail(exc: Exception) -> str:
    """What torch's weights-only unpickler refused, in one sentence: the global it was
    asked to build (e.g. `posix.system`), or the opcode, or that the bytes are no pickle."""
    import re

    text = str(exc)
    found = re.search(r"\bGLOBAL ([A-Za-z_][\w.]*)", text)  # upper case: not "an allowed global by default"
    if found:
        return f"it would build the Python object {found.group(1)}, which a plain checkpoint of tensors never holds (it may run code)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return f"it is corrupt or not a checkpoint of tensors ({rest[:120].rstrip('. ')})"
    return f"it is corrupt or not a checkpoint of tensors ({(lines[0] if lines else type(exc).__name__)[:120]})"


def load_state_dict_strict(module: Any, state_dict: dict[str, Any], what: str = "state dict") -> None:
    """`load_state_dict(strict=True)` with one readable message listing missing,
    unexpected and shape-mismatched keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
            if keys:
                shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{what} does not fit this model: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)
