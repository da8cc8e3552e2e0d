"""Pretrained weights: resolve a NAME or PATH to a verified local file and load it.

Weights are stored as safetensors with a JSON meta (the config they were trained
with among it); zoo training checkpoints (`last.pt`) are accepted too and read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import checkpoint
from zoo.errors import CheckpointError, UsageError
from zoo.plugin import Plugin


@dataclass
class LoadedWeights:
    state_dict: dict[str, Any]
    # The hyperparameters the weights were trained with (None when the file has none).
    config: dict[str, Any] | None
    sha256: str
    path: Path
    meta: dict[str, Any]


def resolve(plugin: Plugin, name_or_path: str) -> Path:
    """A local file for `name_or_path`: an existing path, or an entry of the plugin's table."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    if "/" in name_or_path or name_or_path.endswith((".pt", ".pth", ".safetensors")):
        raise UsageError(f"--weights {name_or_path}: no such file")
    entry = plugin.get_weights(name_or_path)
    if entry.source.startswith("package:"):
        from importlib.resources import files

        path = Path(str(files("zoo.plugins") / "weights" / entry.source.split(":", 1)[1]))
        if not path.is_file():
            raise CheckpointError(f"weights {plugin.name}:{entry.name}: packaged file {path} is missing")
        actual = checkpoint.sha256_file(path)
        if actual != entry.sha256:
            raise CheckpointError(f"weights {plugin.name}:{entry.name}: {path} has sha256 {actual}, expected {entry.sha256}")
        return path
    raise CheckpointError(f"weights {plugin.name}:{entry.name} come from {entry.source}; downloading is not available in this build")


def read(plugin: Plugin, name_or_path: str) -> LoadedWeights:
    """Read weights (safetensors or a zoo checkpoint) without running any pickled code."""
    path = resolve(plugin, name_or_path)
    sha = checkpoint.sha256_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorsError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            state = load_file(str(path))
        except (SafetensorsError, OSError, ValueError) as exc:
            raise CheckpointError(f"weights {path} are truncated or corrupt ({exc})") from None
        meta = json.loads(header.get("zoo", "{}"))
        if meta.get("plugin") not in (None, plugin.name):
            raise CheckpointError(f"weights {path} are for plugin {meta.get('plugin')!r}, not {plugin.name!r}")
        return LoadedWeights(state, meta.get("config"), sha, path, meta)
    state = checkpoint.load(path, plugin=plugin.name)
    return LoadedWeights(state["model"], state["config"], sha, path, {"epoch": state.get("epoch"), "metrics": state.get("metrics")})


def load_into(plugin: Plugin, model: Any, name_or_path: str, config: Any = None) -> LoadedWeights:
    """Load weights into `model` strictly, through the plugin's filter for foreign layouts."""
    loaded = read(plugin, name_or_path)
    state = loaded.state_dict
    if plugin.checkpoint_filter is not None:
        state = plugin.checkpoint_filter(state, model)
    checkpoint.load_state_dict_strict(model, state, what=f"weights {loaded.path}")
    return loaded
