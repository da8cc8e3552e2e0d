"""The meta of a weights table entry: its schema, what it must agree with, and the
`zoo train` command it records.

`validate_entry` is what the tests run over every table of the registry (torchvision's
schema test): the meta has every field of `META_FIELDS`, its config and command give
the same hyperparameters, its input matches the plugin's data request and its
`num_params` is what the config builds.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from typing import Any

from zoo import config as zconfig
from zoo.errors import UsageError, ZooError
from zoo.plugin import Plugin, Weights
from zoo.weights.entries import SOURCE_SCHEMES
from zoo.weights.loading import meta_model, num_params, top_level_children

# Table names follow torchvision's convention (IMAGENET1K_V1): upper case, data then version.
TABLE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What a file may store its floating-point tensors in (timm and Hugging Face ship
# float16 to halve downloads and packages); loading casts them to the model's dtype.
# float32 is what training gives, and what a file without 'stored_dtype' holds.
STORED_DTYPES = ("float32", "float16", "bfloat16")

# The meta of a table entry: what every key means. `validate_entry` enforces it.
META_FIELDS: dict[str, str] = {
    "dataset": "the --data spec the weights were trained on, e.g. 'digits'",
    "metrics": "validation metrics of the final epoch, {name: number}",
    "input": "the images trained on (the plugin's DataRequest): {'shape': [C, H, W], 'value_range': [lo, hi], 'normalization': text}",
    "num_params": "number of parameters the file holds (of the listed components; buffers excluded)",
    "license": "license of the weights",
    "command": "the exact `zoo train PLUGIN ...` command that produced them",
    "config": "every hyperparameter, as dataclasses.asdict(config); equal to what `command` gives",
}
OPTIONAL_META_FIELDS: dict[str, str] = {
    "components": "top-level child modules the file holds (default: the whole model), e.g. ['generator']",
    "description": "one line on what they are good for",
    "data_info": "what the training data knew that the model needs: {'num_classes', 'class_names', 'vocabulary'}",
    "bytes": "the file's size: a download never reads more",
    "stored_dtype": f"the dtype the file stores its floating-point tensors in, one of {', '.join(STORED_DTYPES)} (absent: float32); "
    "integer buffers stay as they are, and loading casts the rest to the model's dtype",
    "judged": "figures a model outside the file can recompute (a generator's samples judged by a classifier): "
    "{'by': 'PLUGIN:WEIGHTS', 'samples': n, 'seed': s, 'metrics': {name: number}}",
}


def input_spec(plugin: Plugin, config: Any) -> dict[str, Any]:
    """What the weights were trained on, for the meta's 'input': an image plugin's
    {shape, value_range, normalization}; for other data, the requested tensors."""
    from zoo.data import Images

    request = plugin.data_request(config)
    image = next((t for t in request.tensors if isinstance(t, Images)), None)
    if image is None:
        return {"tensors": request.to_json()["tensors"], "normalization": "none"}
    lo, hi = (float(v) for v in image.value_range)
    return {
        "shape": [image.channels, image.size, image.size],
        "value_range": [lo, hi],
        "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation"
        if (lo, hi) == (0.0, 1.0)
        else f"pixel intensities in [0, 1] mapped linearly to [{lo:g}, {hi:g}]",
    }


def train_command(plugin: Plugin, config: Any, *, data: str, seed: int, device: str | None = None, max_steps: int | None = None) -> str:
    """The `zoo train` command that reproduces a run: every hyperparameter spelled out,
    so later changes to the plugin's defaults do not change what it means."""
    parts = ["zoo", "train", plugin.name, "--data", shlex.quote(data), "--seed", str(seed)]
    if device:
        parts += ["--device", device]
    if max_steps is not None:
        parts += ["--max-steps", str(max_steps)]
    for name, value in zconfig.to_dict(config).items():
        parts.append(zconfig.flag(name, value))
    return " ".join(parts)


def parse_train_command(plugin: Plugin, command: str) -> dict[str, Any]:
    """What a recorded `zoo train` command means: {"config": full config dict, "data":
    spec or None, "seed": int or None}, parsed by `zoo.config` the way the CLI parses it."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"command {command!r} does not parse: {exc}") from None
    if words[:3] != ["zoo", "train", plugin.name]:
        raise UsageError(f"command {command!r} does not start with 'zoo train {plugin.name}'")
    try:
        values, options = zconfig.parse_train_words(plugin.config_class, words[3:], plugin=plugin.name)
    except UsageError as exc:
        raise UsageError(f"command {command!r}: {exc}") from None
    config = zconfig.from_dict(plugin.config_class, values, plugin=plugin.name)
    seed = options.get("seed")
    return {
        "config": zconfig.to_dict(config),
        "data": options.get("data"),
        "seed": int(seed) if isinstance(seed, str) and seed.lstrip("-").isdigit() else seed,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_fields(meta: Mapping[str, Any]) -> list[str]:
    problems = [f"meta has no {key!r} ({META_FIELDS[key]})" for key in META_FIELDS if key not in meta]
    known = ", ".join([*META_FIELDS, *OPTIONAL_META_FIELDS])
    problems += [
        f"meta has an unknown key {key!r} (known: {known})" for key in meta if key not in META_FIELDS and key not in OPTIONAL_META_FIELDS
    ]
    return problems


def _check_dataset(plugin: Plugin, dataset: Any) -> list[str]:
    from zoo import datasets

    if not isinstance(dataset, str) or not dataset:
        return ["meta 'dataset' must be a --data spec such as 'digits'"]
    try:
        found, _ = datasets.parse_spec(dataset)
    except ZooError as exc:
        return [f"meta 'dataset': {exc}"]
    if found.name not in plugin.datasets:
        return [f"meta 'dataset' {dataset!r} is not one of the plugin's datasets {plugin.datasets}"]
    return []


def _check_scalars(meta: Mapping[str, Any]) -> list[str]:
    problems = []
    metrics = meta["metrics"]
    if not isinstance(metrics, Mapping) or not metrics or not all(isinstance(k, str) and _is_number(v) for k, v in metrics.items()):
        problems.append("meta 'metrics' must be a non-empty {name: finite number} dict")
    # 0 is a real count: a model whose state is all buffers (knn stores its training images) has no parameters.
    if not isinstance(meta["num_params"], int) or isinstance(meta["num_params"], bool) or meta["num_params"] < 0:
        problems.append("meta 'num_params' must be a non-negative int")
    if not isinstance(meta["license"], str) or not meta["license"].strip():
        problems.append("meta 'license' must name a license")
    return problems


def _components(meta: Mapping[str, Any]) -> tuple[list[str] | None, list[str]]:
    components = meta.get("components")
    if components is None:
        return None, []
    if (
        not isinstance(components, (list, tuple))
        or not components
        or not all(isinstance(c, str) for c in components)
        or len(set(components)) != len(components)
    ):
        return None, ["meta 'components' must be a non-empty list of distinct module names"]
    return list(components), []


def _config(plugin: Plugin, meta: Mapping[str, Any]) -> tuple[Any, list[str]]:
    if not isinstance(meta["config"], Mapping):
        return None, ["meta 'config' must be the full hyperparameter dict"]
    try:
        config = zconfig.from_dict(plugin.config_class, dict(meta["config"]), plugin=plugin.name)
    except (ZooError, TypeError) as exc:
        return None, [f"meta 'config': {exc}"]
    missing = [k for k in zconfig.to_dict(config) if k not in meta["config"]]
    return config, [f"meta 'config' lacks {', '.join(missing)} (record every hyperparameter)"] if missing else []


def _check_command(plugin: Plugin, command: Any, config: Any, dataset: Any) -> list[str]:
    if not isinstance(command, str):
        return ["meta 'command' must be the `zoo train` command line"]
    if config is None:
        return []
    try:
        parsed = parse_train_command(plugin, command)
    except ZooError as exc:
        return [f"meta 'command': {exc}"]
    problems = []
    recorded = zconfig.to_dict(config)
    if parsed["config"] != recorded:
        diff = sorted(k for k, v in parsed["config"].items() if recorded[k] != v)
        problems.append(f"meta 'command' gives other hyperparameters than meta 'config': {', '.join(diff)}")
    trained_on = parsed["data"] or plugin.default_dataset
    if isinstance(dataset, str) and trained_on != dataset:
        problems.append(f"meta 'command' trains on {trained_on!r}, meta 'dataset' says {dataset!r}")
    return problems


def _check_input(plugin: Plugin, spec: Any, config: Any) -> list[str]:
    if config is None:
        return []
    expected = input_spec(plugin, config)
    if not isinstance(spec, Mapping) or not isinstance(spec.get("normalization"), str) or not spec.get("normalization"):
        return [f"meta 'input' must be {{'shape', 'value_range', 'normalization'}}, e.g. {expected}"]
    if "tensors" in expected:  # not images (token windows): the requested tensors as data
        same = spec.get("tensors") == expected["tensors"]
    else:
        same = (
            list(spec.get("shape", [])) == expected["shape"] and [float(v) for v in spec.get("value_range", [])] == expected["value_range"]
        )
    if not same:
        return [f"meta 'input' {dict(spec)} disagrees with the plugin's data request for this config {expected}"]
    return []


def _check_model(plugin: Plugin, meta: Mapping[str, Any], config: Any, info: Any, components: list[str] | None) -> list[str]:
    """Build the model the config describes (on the meta device) and recount its parameters."""
    model = meta_model(plugin, config, info)
    children = top_level_children(model)
    unknown = [c for c in components or () if c not in children]
    if unknown:
        return [f"meta 'components' {unknown} are not top-level children of the model ({', '.join(children)})"]
    if isinstance(meta["num_params"], int):
        counted = num_params(model, components)
        if counted != meta["num_params"]:
            return [f"meta 'num_params' is {meta['num_params']}, the model (components {components or 'all'}) has {counted}"]
    return []


def _check_judged(judged: Any) -> list[str]:
    """The optional 'judged' figures: who judged, on how many samples of which seed, what they scored."""
    if judged is None:
        return []
    if (
        not isinstance(judged, Mapping)
        or not isinstance(judged.get("by"), str)
        or not isinstance(judged.get("samples"), int)
        or judged.get("samples", 0) < 1
        or not isinstance(judged.get("seed"), int)
        or not isinstance(judged.get("metrics"), Mapping)
        or not judged["metrics"]
        or not all(isinstance(k, str) and _is_number(v) for k, v in judged["metrics"].items())
    ):
        return ["meta 'judged' must be {'by': 'PLUGIN:WEIGHTS', 'samples': n >= 1, 'seed': int, 'metrics': {name: finite number}}"]
    return []


def _check_stored_dtype(meta: Mapping[str, Any]) -> list[str]:
    if "stored_dtype" not in meta or meta["stored_dtype"] in STORED_DTYPES:
        return []
    return [f"meta 'stored_dtype' {meta['stored_dtype']!r} must be one of {', '.join(STORED_DTYPES)}"]


def validate_meta(plugin: Plugin, meta: Mapping[str, Any], *, check_model: bool = True) -> list[str]:
    """Problems with a table entry's meta (empty when it is valid). With `check_model`,
    builds the model its config describes (on the meta device) to recount parameters."""
    from zoo import data as zdata

    problems = _check_fields(meta)
    if problems:
        return problems
    problems += _check_dataset(plugin, meta["dataset"])
    problems += _check_scalars(meta)
    components, found = _components(meta)
    problems += found
    config, found = _config(plugin, meta)
    problems += found
    problems += _check_command(plugin, meta["command"], config, meta["dataset"])
    problems += _check_input(plugin, meta["input"], config)
    problems += _check_judged(meta.get("judged"))
    problems += _check_stored_dtype(meta)
    info = None
    try:
        info = zdata.DataInfo.from_json(meta.get("data_info"))
    except ValueError as exc:
        problems.append(f"meta 'data_info': {exc}")
    if check_model and config is not None:
        problems += _check_model(plugin, meta, config, info, components)
    return problems


def validate_entry(plugin: Plugin, entry: Weights, *, check_model: bool = True) -> list[str]:
    """Problems with a table entry (empty when it is valid): name, source, sha256, meta."""
    problems = []
    if not TABLE_NAME.match(entry.name):
        problems.append(f"name {entry.name!r} must be upper case letters, digits and _ (e.g. DIGITS_V1)")
    if not entry.source.startswith(SOURCE_SCHEMES):
        problems.append(f"source {entry.source!r} must start with one of {', '.join(SOURCE_SCHEMES)}")
    if not SHA256.match(entry.sha256):
        problems.append(f"sha256 {entry.sha256!r} must be 64 lower-case hex digits")
    problems += validate_meta(plugin, meta=entry.meta, check_model=check_model)
    return [f"{plugin.name}:{entry.name}: {p}" for p in problems]
