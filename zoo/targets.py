"""Export targets checked against what they really compute, and described as data.

`check_target` runs a target's `example_inputs` (at two batch sizes) and, given the
module, the module itself, and refuses in one line what the exporters and runtimes
could not honour: an input count that differs from the declaration, a declared
dtype the examples do not have, a batch axis that is not where `TensorSpec.batch_axis`
says, outputs that are nested or not tensors. `target_io` gives the input and output
specs with shapes read off real tensors (`batch` and the other dynamic axes named),
the document every artifact's metadata starts from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoo.errors import ZooError
from zoo.plugin import BATCH_AXIS, ExportTarget, TensorSpec

CHECK_BATCHES = (2, 3)  # two sizes, so the axis that follows the batch shows itself


class TargetError(ZooError):
    """An export target whose declaration does not match what it computes."""


def _dtype(t: Any) -> str:
    return str(t.dtype).replace("torch.", "")


def flat_outputs(target: ExportTarget, result: Any) -> tuple[Any, ...]:
    """A module's result as a flat tuple of tensors, or a one-line TargetError."""
    import torch

    items = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    for i, item in enumerate(items):
        if isinstance(item, (tuple, list, dict)):
            names = ", ".join(s.name for s in target.outputs)
            raise TargetError(
                f"target {target.name!r}: output {i} is a {type(item).__name__}, not a tensor; exported graphs return a flat "
                f"tuple of tensors, one per declared output ({names}): return them flat, e.g. (logits, h, c) for (logits, (h, c))"
            )
        if not isinstance(item, torch.Tensor):
            raise TargetError(f"target {target.name!r}: output {i} is a {type(item).__name__}, not a tensor")
    if len(items) != len(target.outputs):
        names = ", ".join(s.name for s in target.outputs)
        raise TargetError(f"target {target.name!r} returns {len(items)} tensors but declares {len(target.outputs)} outputs ({names})")
    return items


def _changed_dims(a: Sequence[int], b: Sequence[int]) -> list[int]:
    return [d for d, (x, y) in enumerate(zip(a, b)) if x != y]


def _check_specs(target: ExportTarget, kind: str, specs: Sequence[TensorSpec], small: Sequence[Any], large: Sequence[Any]) -> None:
    for spec, t_small, t_large in zip(specs, small, large):
        if _dtype(t_small) != spec.dtype:
            raise TargetError(
                f"target {target.name!r} {kind} {spec.name!r} is declared {spec.dtype} but the example gives {_dtype(t_small)}"
            )
        if t_small.dim() != t_large.dim():
            raise TargetError(f"target {target.name!r} {kind} {spec.name!r} changes rank with the batch size")
        changed = _changed_dims(t_small.shape, t_large.shape)
        want = [] if spec.batch_axis is None else [spec.batch_axis]
        if changed != want:
            where = f"dimension {changed[0]}" if len(changed) == 1 else ("no dimension" if not changed else f"dimensions {changed}")
            declared = "no batch axis" if spec.batch_axis is None else f"batch_axis={spec.batch_axis}"
            hint = f"; set TensorSpec({spec.name!r}, batch_axis={changed[0]})" if len(changed) == 1 else ""
            raise TargetError(
                f"target {target.name!r} {kind} {spec.name!r}: the size that follows the batch is {where}, "
                f"but the spec says {declared}{hint}"
            )


def check_target(target: ExportTarget, config: Any, module: Any = None, data_info: Any = None) -> None:
    """Refuse, in one line, a target whose declaration its examples (and module) contradict."""
    import torch

    examples = []
    for batch in CHECK_BATCHES:
        try:
            inputs = target.make_inputs(config, batch, torch.Generator().manual_seed(0), data=data_info)
        except ZooError:
            raise
        except Exception as exc:
            raise TargetError(f"target {target.name!r}: example_inputs failed ({type(exc).__name__}: {exc})") from None
        if len(inputs) != len(target.inputs) or not all(isinstance(t, torch.Tensor) for t in inputs):
            names = ", ".join(s.name for s in target.inputs)
            raise TargetError(
                f"target {target.name!r}: example_inputs gives {len(inputs)} values for {len(target.inputs)} declared inputs ({names})"
            )
        examples.append(inputs)
    _check_specs(target, "input", target.inputs, examples[0], examples[1])
    if module is None:
        return
    outputs = []
    with torch.no_grad():
        for inputs in examples:
            try:
                result = module(*inputs)
            except ZooError:
                raise
            except Exception as exc:
                raise TargetError(
                    f"target {target.name!r}: the module fails on its example inputs ({type(exc).__name__}: {str(exc)[:200]})"
                ) from None
            outputs.append(flat_outputs(target, result))
    _check_specs(target, "output", target.outputs, outputs[0], outputs[1])


def _shape(t: Any, spec: TensorSpec, dynamic: dict[int, str]) -> list[int | str]:
    shape: list[int | str] = list(t.shape)
    if spec.batch_axis is not None and shape:
        shape[spec.batch_axis] = BATCH_AXIS
    for dim, name in dynamic.items():
        shape[int(dim)] = name
    return shape


def target_io(
    target: ExportTarget, config: Any, module: Any = None, batch: int = 2, data_info: Any = None
) -> dict[str, list[dict[str, Any]]]:
    """Input and output specs of an export target with shapes read off real tensors
    (the batch axis named ``batch``; other dynamic dims named by the target's
    `dynamic_dims`, outputs' too) and integer ranges resolved for this config and data."""
    import torch

    inputs = target.make_inputs(config, batch, torch.Generator().manual_seed(0), data=data_info)
    ins = [
        {**spec.to_json(config, data_info), "shape": _shape(t, spec, dict(target.dynamic_dims.get(spec.name, {}))), "dtype": _dtype(t)}
        for spec, t in zip(target.inputs, inputs)
    ]
    outs: list[dict[str, Any]] = [spec.to_json(config, data_info) for spec in target.outputs]
    if module is not None:
        with torch.no_grad():
            results = flat_outputs(target, module(*inputs))
        outs = [
            {**spec.to_json(config, data_info), "shape": _shape(t, spec, dict(target.dynamic_dims.get(spec.name, {}))), "dtype": _dtype(t)}
            for spec, t in zip(target.outputs, results)
        ]
    return {"inputs": ins, "outputs": outs}
