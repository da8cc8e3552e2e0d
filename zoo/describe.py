"""Plugins described as plain data: for `zoo list`, `zoo info` and exported metadata."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from zoo.plugin import ExportTarget, Plugin

BATCH_AXIS = "batch"


def hyperparameters(plugin: Plugin) -> list[dict[str, Any]]:
    hints = typing.get_type_hints(plugin.config_class)
    out = []
    for f in dataclasses.fields(plugin.config_class):
        kind = hints.get(f.name, str)
        out.append(
            {
                "name": f.name,
                "option": "--" + f.name.replace("_", "-"),
                "type": getattr(kind, "__name__", str(kind)),
                "default": f.default if f.default is not dataclasses.MISSING else None,
                "help": f.metadata.get("help", ""),
                **({"choices": list(f.metadata["choices"])} if "choices" in f.metadata else {}),
            }
        )
    return out


def _shape(t: Any, dynamic: dict[int, str]) -> list[int | str]:
    shape: list[int | str] = list(t.shape)
    if shape:
        shape[0] = BATCH_AXIS
    for dim, name in dynamic.items():
        shape[dim] = name
    return shape


def _dtype(t: Any) -> str:
    return str(t.dtype).replace("torch.", "")


def target_io(target: ExportTarget, config: Any, module: Any = None, batch: int = 2) -> dict[str, list[dict[str, Any]]]:
    """Input and output specs of an export target with shapes read off real tensors
    (dimension 0 named ``batch``; other dynamic dims named by the target's
    `dynamic_dims`, outputs' too)."""
    import torch

    from zoo.export_support import as_tuple

    inputs = target.example_inputs(config, batch, torch.Generator().manual_seed(0))
    ins = [
        {**spec.to_json(), "shape": _shape(t, dict(target.dynamic_dims.get(spec.name, {}))), "dtype": _dtype(t)}
        for spec, t in zip(target.inputs, inputs)
    ]
    outs: list[dict[str, Any]] = [spec.to_json() for spec in target.outputs]
    if module is not None:
        with torch.no_grad():
            results = as_tuple(module(*inputs))
        outs = [
            {**spec.to_json(), "shape": _shape(t, dict(target.dynamic_dims.get(spec.name, {}))), "dtype": _dtype(t)}
            for spec, t in zip(target.outputs, results)
        ]
    return {"inputs": ins, "outputs": outs}


def describe(plugin: Plugin, with_shapes: bool = True) -> dict[str, Any]:
    from zoo import _registry

    entry = _registry.discover().get(plugin.name)
    config = plugin.config()
    targets = []
    model = None
    if with_shapes and plugin.export_targets:
        import torch

        torch.manual_seed(0)
        model = plugin.build(config).eval()
    for t in plugin.export_targets:
        io = target_io(t, config, t.module(model) if model is not None else None) if with_shapes else {}
        targets.append({"name": t.name, "description": t.description, "trace": t.trace, "rtol": t.rtol, "atol": t.atol, **io})
    weights = [{"name": w.name, "source": w.source, "sha256": w.sha256, "meta": dict(w.meta)} for w in plugin.weights]
    return {
        "name": plugin.name,
        "summary": plugin.summary,
        "task": plugin.task,
        "reference": plugin.reference,
        "distribution": entry.distribution if entry else None,
        "version": entry.version if entry else None,
        "default_dataset": plugin.default_dataset,
        "datasets": list(plugin.datasets),
        "hyperparameters": hyperparameters(plugin),
        "weights": weights,
        "default_weights": plugin.default_weights,
        "export_targets": targets,
    }
