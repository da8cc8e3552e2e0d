"""Reading weights without running any pickled code.

Files are safetensors whose metadata holds the zoo meta as JSON under "zoo" (plugin,
config, components, ...). zoo training checkpoints (`last.pt`) and foreign state dicts
(`.pth`, a plain dict of tensors) are read with `torch.load(weights_only=True)`, so a
pickle that would run code is refused. torch is imported inside functions only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import checkpoint
from zoo.errors import CheckpointError
from zoo.plugin import Plugin
from zoo.weights._text import one_line
from zoo.weights.entries import SUFFIXES, resolve_labelled
from zoo.weights.hashing import file_sha256

# What of a training checkpoint describes its weights (the rest is for resuming).
CHECKPOINT_META = ("plugin", "config", "data", "data_info", "seed", "epoch", "step", "metrics", "plugin_version", "zoo_version")


@dataclass
class LoadedWeights:
    state_dict: dict[str, Any]
    # The hyperparameters the weights were trained with (None when the file has none).
    config: dict[str, Any] | None
    sha256: str
    path: Path
    meta: dict[str, Any]
    # "zoo" (safetensors with zoo meta), "checkpoint" (a zoo last.pt) or "foreign"
    # (a plain state dict, or safetensors without zoo meta).
    kind: str = "zoo"
    # Top-level children the file declares it holds (None: not declared, i.e. the whole
    # model for zoo's files; whatever the plugin's filter yields for foreign ones).
    declared: list[str] | None = None
    # After `load_into`: the top-level children loaded from the file.
    components: list[str] | None = None
    # After `load_into`: top-level children that kept the model's own values.
    left_as_built: list[str] = field(default_factory=list)
    # What to call the weights in messages: "vae:DIGITS_V1" or the path.
    label: str = ""


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    if path.suffix in SUFFIXES:
        return False
    # No telling suffix: safetensors starts with an 8-byte header length and then '{'.
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def torch_load_safely(path: Path) -> Any:
    """`torch.load(weights_only=True)` with one-line errors (see `zoo.checkpoint.torch_load`)."""
    return checkpoint.torch_load(path, what="weights")


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _components_of(meta: Mapping[str, Any], path: Path) -> list[str] | None:
    value = meta.get("components")
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value) or len(set(value)) != len(value):
        raise CheckpointError(f"weights {path}: meta 'components' must be a non-empty list of distinct module names, not {value!r}")
    return list(value)


def _read_safetensors(plugin: Plugin, path: Path, sha: str, label: str) -> LoadedWeights:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"weights {path} are truncated or corrupt ({one_line(exc, 160)})") from None
    raw = header.get("zoo")
    if raw is None:
        return LoadedWeights(state, None, sha, path, {}, kind="foreign", label=label)
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"weights {path}: the 'zoo' metadata is not a JSON object")
    if meta.get("plugin") not in (None, plugin.name):
        raise CheckpointError(f"weights {path} are for plugin {meta.get('plugin')!r}, not {plugin.name!r}")
    config = meta.get("config")
    if config is not None and not isinstance(config, dict):
        raise CheckpointError(f"weights {path}: meta 'config' is not a dict")
    declared = _components_of(meta, path)
    return LoadedWeights(state, config, sha, path, meta, kind="zoo", declared=declared, components=declared, label=label)


def read(plugin: Plugin, name_or_path: str | LoadedWeights) -> LoadedWeights:
    """Read weights (safetensors, a zoo checkpoint or a foreign state dict) without running
    any pickled code. Names resolve through the table, downloading when needed."""
    if isinstance(name_or_path, LoadedWeights):
        return name_or_path
    path, label = resolve_labelled(plugin, name_or_path)
    sha = file_sha256(path)
    if _is_safetensors(path):
        return _read_safetensors(plugin, path, sha, label)
    obj = torch_load_safely(path)
    if isinstance(obj, dict) and "model" in obj and "plugin" in obj:
        if obj["plugin"] != plugin.name:
            raise CheckpointError(f"checkpoint {path} was written by plugin {obj['plugin']!r}, not {plugin.name!r}")
        if not _is_state_dict(obj["model"]):
            raise CheckpointError(f"checkpoint {path}: its 'model' entry is not a state dict of tensors")
        meta = {k: obj[k] for k in CHECKPOINT_META if k in obj}
        return LoadedWeights(dict(obj["model"]), obj.get("config"), sha, path, meta, kind="checkpoint", label=label)
    if _is_state_dict(obj):
        return LoadedWeights(dict(obj), None, sha, path, {}, kind="foreign", label=label)
    held = f"a dict with keys {', '.join(map(repr, list(obj)[:6]))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise CheckpointError(f"{path} is neither a zoo checkpoint nor a state dict of tensors (it holds {held})")
