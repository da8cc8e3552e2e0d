"""Plugins and datasets described as plain data: for `zoo list`, `zoo info`,
`zoo datasets` and exported metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo import config as zconfig
from zoo.capabilities import capabilities
from zoo.plugin import Plugin
from zoo.targets import check_target, target_io

# How zoo's own formats export by default (a target's `exporters` may choose another);
# the caller that knows the installed formats (`zoo info`) passes theirs instead.
DEFAULT_EXPORTERS = {"torchscript": "script", "onnx": "dynamo", "pt2": "aotinductor"}


def hyperparameters(plugin: Plugin) -> list[dict[str, Any]]:
    return [f.to_json() for f in zconfig.fields(plugin.config_class)]


def describe_target(
    target: Any, config: Any, model: Any = None, data_info: Any = None, format_defaults: Mapping[str, str] | None = None
) -> dict[str, Any]:
    module = target.module(model) if model is not None else None
    if module is not None:
        check_target(target, config, module, data_info)
    io = target_io(target, config, module, data_info=data_info) if model is not None else {}
    return {
        "name": target.name,
        "description": target.description,
        "trace": target.trace,
        "rtol": target.rtol,
        "atol": target.atol,
        "exporters": {fmt: target.exporter(fmt, default) for fmt, default in (format_defaults or DEFAULT_EXPORTERS).items()},
        "default_exporters": dict(format_defaults or DEFAULT_EXPORTERS),
        "skip_formats": dict(target.skip_formats),
        "axis_sizes": {axis: list(sizes) for axis, sizes in target.sizes_of_axes(config).items()},
        "max_sizes": target.max_sizes_of(config),
        "task_check": target.task_check.to_json() if target.task_check is not None else None,
        **io,
    }


def describe(plugin: Plugin, with_shapes: bool = True, format_defaults: Mapping[str, str] | None = None) -> dict[str, Any]:
    from zoo import _registry

    entry = _registry.plugins.entries().get(plugin.name)
    config = plugin.config()
    model = None
    info = None
    if with_shapes and plugin.export_targets:
        import torch

        from zoo.models import data_info_for

        info = data_info_for(plugin, config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = plugin.instantiate(config, info).eval()
    targets = [describe_target(t, config, model, info, format_defaults) for t in plugin.export_targets]
    weights = [{"name": w.name, "source": w.source, "sha256": w.sha256, "meta": dict(w.meta)} for w in plugin.weights]
    request = plugin.data_request(config)
    return {
        "name": plugin.name,
        "summary": plugin.summary,
        "task": plugin.task,
        "capabilities": capabilities(plugin),
        "reference": plugin.reference,
        "distribution": entry.distribution if entry else None,
        "version": entry.version if entry else None,
        "default_dataset": plugin.default_dataset,
        "datasets": list(plugin.datasets),
        "data_request": request.to_json(),
        "hyperparameters": hyperparameters(plugin),
        "weights": weights,
        "default_weights": plugin.default_weights,
        "export_targets": targets,
        "sample_target": plugin.sample_target,
        "predict_target": plugin.predict_target,
    }


def describe_dataset(entry: Any) -> dict[str, Any]:
    """One `zoo.datasets` entry as data (`zoo datasets --json`)."""
    ds = entry.obj
    return {
        "name": entry.name,
        "summary": ds.summary if ds else "",
        "distribution": entry.distribution,
        "version": entry.version,
        "entry_point": entry.value,
        "status": entry.status,
        "error": entry.error,
        "needs_path": ds.needs_path if ds else None,
        "downloads": ds.downloads if ds else None,
        "path_help": ds.path_help if ds else "",
        "yields": [t.to_json() for t in ds.yields] if ds else [],
    }
