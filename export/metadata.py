"""The `zoo.json` document every artifact carries, whatever its format.

TorchScript keeps it as an extra file, ONNX in `metadata_props`, AOTInductor in the
package metadata; a format writes it and reads it back, and any runtime learns input
names, shapes, dtypes and value ranges from the file alone.

`test_vectors` (written by `zoo.export.vectors`) names the seeded inputs and eager
outputs saved beside the artifact: paths relative to the artifact's directory, sha256,
shape, dtype, and the tolerances they are compared with (`zoo-run FILE --self-test`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.plugin import ExportTarget, Plugin

METADATA_KEY = "zoo.json"
TEST_VECTORS_KEY = "test_vectors"  # {"rtol", "atol", "seed", "batch", "inputs": [...], "outputs": [...]}


def base_metadata(
    plugin: Plugin, target: ExportTarget, io: dict[str, Any], checkpoint_sha256: str | None, config: Any = None, data_info: Any = None
) -> dict[str, Any]:
    """The part of `zoo.json` that every format of one target shares. `config` (the
    hyperparameters) lets a consumer such as `zoo sample --artifact` shape its inputs."""
    import torch

    from zoo.config import to_dict as config_to_dict
    from zoo.versions import plugin_version, zoo_version

    meta = {
        "plugin": plugin.name,
        "plugin_version": plugin_version(plugin),
        "target": target.name,
        "description": target.description,
        "zoo_version": zoo_version(),
        "torch_version": torch.__version__,
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "checkpoint_sha256": checkpoint_sha256,
        "rtol": target.rtol,
        "atol": target.atol,
        "config": config_to_dict(config) if config is not None else None,
        # What the data knew (class names, a vocabulary), so a runtime can decode outputs.
        "data_info": data_info.to_json() if data_info is not None else {},
    }
    if target.skip_formats:
        meta["skip_formats"] = dict(target.skip_formats)
    limits = target.max_sizes_of(config)
    if limits:
        meta["max_sizes"] = limits  # e.g. {"seq": 128}: a Transformer's context
    return meta


def parse(text: str | bytes, path: Path) -> dict[str, Any]:
    """A `zoo.json` document read out of `path`, checked to be one, or a one-line ZooError."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text:
        raise ZooError(f"{path} has no zoo metadata ({METADATA_KEY}); it was not written by `zoo export`")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path}: its {METADATA_KEY} metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "inputs" not in meta or "outputs" not in meta:
        raise ZooError(f"{path}: its {METADATA_KEY} metadata lacks inputs/outputs")
    return meta


def dumps(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata)
