"""`torch.export` of an export target: its dynamic axes, errors that name their real
cause, and the exported program as the authority on which output dims are dynamic.

ONNX's default exporter and AOTInductor both start from this program.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.export._quiet import one_line, quiet
from zoo.plugin import BATCH_AXIS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from zoo.plugin import ExportTarget


def dynamic_shapes(target: ExportTarget, inputs: Sequence[torch.Tensor], config: Any = None) -> tuple[dict[int, Any], ...]:
    """torch.export dims: each input's `batch_axis` is the shared `batch`; the target's
    `dynamic_dims` name any others (one Dim per distinct name), bounded by its
    `max_sizes` where it declares one."""
    from torch.export import Dim

    limits = target.max_sizes_of(config)

    named: dict[str, Any] = {BATCH_AXIS: Dim(BATCH_AXIS, min=1, max=limits[BATCH_AXIS]) if BATCH_AXIS in limits else Dim(BATCH_AXIS, min=1)}
    shapes = []
    for spec, tensor in zip(target.inputs, inputs):
        dims: dict[int, Any] = {}
        if spec.batch_axis is not None and tensor.dim() > spec.batch_axis:
            dims[spec.batch_axis] = named[BATCH_AXIS]
        for index, axis in dict(target.dynamic_dims.get(spec.name, {})).items():
            dims[int(index)] = named.setdefault(axis, Dim(axis, min=1, max=limits[axis]) if axis in limits else Dim(axis, min=1))
        shapes.append(dims)
    return tuple(shapes)


def axis_name(target: ExportTarget, input_index: int, dim: int) -> str:
    spec = target.inputs[input_index]
    if dim == spec.batch_axis:
        return BATCH_AXIS
    return dict(target.dynamic_dims.get(spec.name, {})).get(dim, f"dimension {dim}")


def recurrent_layers(module: nn.Module) -> list[str]:
    """'nn.LSTM (rnn)' for every nn.RNNBase submodule (LSTM, GRU, RNN) of `module`."""
    from torch import nn

    return [f"nn.{type(m).__name__} ({name or 'the module itself'})" for name, m in module.named_modules() if isinstance(m, nn.RNNBase)]


def pinned_axis_message(target: ExportTarget, module: nn.Module, input_name: str, axis: str, value: int, purpose: str) -> str:
    """Why torch.export fixed a declared dynamic axis, as far as zoo can tell, and what to do."""
    why = [
        f"torch.export{f' ({purpose})' if purpose else ''} of target {target.name!r} cannot keep axis {axis!r} of input "
        f"{input_name!r} dynamic: it fixed the axis at {value}"
    ]
    layers = recurrent_layers(module)
    if layers and axis != BATCH_AXIS:
        why.append(
            f"the module contains {', '.join(layers)}, which torch.export unrolls over time, so the length becomes a constant; "
            f"declare exporters={{'onnx': 'torchscript'}} (ONNX's own recurrent operators keep the axis dynamic) "
            f"and skip_formats={{'pt2': 'why'}} on the target"
        )
    if value == 1:
        why.append(
            "torch.export treats a size of 1 as special (it may broadcast); give example_inputs a size where no intermediate dimension is 1"
        )
    if len(why) == 1:
        why.append("the module's code needs that one size there (a reshape to a fixed shape, or int() of a size); make it follow the input")
    return "; ".join(why)


def _suggested_fixes(message: str) -> str | None:
    """The 'Suggested fixes:' block of a torch.export constraint error, cut where the
    block ends (torch's own parser chokes on the advice text that follows it)."""
    head, found, rest = message.partition("Suggested fixes:")
    if not found:
        return None
    block = []
    for line in rest.splitlines()[1:]:
        if not line.strip():
            break
        block.append(line)
    return head + "Suggested fixes:\n" + "\n".join(block) if block else None


def torch_export(module: nn.Module, target: ExportTarget, inputs: tuple[torch.Tensor, ...], purpose: str = "", config: Any = None) -> Any:
    """`torch.export.export` with the dynamic dims, as one line on failure.

    Where the model only works at some sizes of a dynamic axis (a U-Net needs
    multiples of its downsampling factor), torch.export says so as a suggested
    fix (`height = 64*_height`); it is applied. A fix that pins a declared dynamic
    axis to one number is refused, naming the axis and, where zoo can see it, why."""
    import torch
    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes

    shapes = dynamic_shapes(target, inputs, config)
    label = f"torch.export{f' ({purpose})' if purpose else ''} of target {target.name!r}"
    for _attempt in range(3):
        try:
            with quiet():
                return torch.export.export(module, inputs, dynamic_shapes=shapes, strict=False)
        except Exception as exc:
            fixes = _suggested_fixes(str(exc))
            if fixes is None:
                raise ZooError(f"{label} failed: {one_line(exc)}") from None
            try:
                refined = refine_dynamic_shapes_from_suggested_fixes(fixes, shapes)
            except Exception:
                raise ZooError(f"{label} failed: {one_line(exc)}") from None
            for index, (spec, before, after) in enumerate(zip(target.inputs, shapes, refined)):
                for dim, value in after.items():
                    if isinstance(value, int) and before.get(dim) is not None:
                        message = pinned_axis_message(target, module, spec.name, axis_name(target, index, dim), value, purpose)
                        raise ZooError(message) from None
            shapes = refined
    raise ZooError(f"{label} failed: the suggested dynamic-shape fixes did not converge")


def symbolic_io(program: Any, target: ExportTarget, io: dict[str, Any]) -> dict[str, Any]:
    """`io` with every dynamic dimension named from the exported program: an output
    dim that is the same symbol as an input axis gets that axis's name (pix2pix's
    output is `height` x `width` like its input); other symbolic dims keep their
    expression. `zoo.targets.target_io` knows only what the target declares (the batch
    axis and `dynamic_dims`); the program is the authority for what was exported."""
    import torch

    names: dict[str, str] = {}
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user_inputs = list(program.graph_signature.user_inputs)
    inputs = []
    for spec, node_name in zip(io["inputs"], user_inputs):
        value = placeholders[node_name].meta.get("val")
        shape = list(spec["shape"])
        if value is not None:
            for d, size in enumerate(value.shape):
                if isinstance(size, torch.SymInt):
                    axis = shape[d] if isinstance(shape[d], str) else str(size.node.expr)
                    names.setdefault(str(size.node.expr), axis)
                    shape[d] = axis
        inputs.append({**spec, "shape": shape})
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    results = output_node.args[0] if isinstance(output_node.args[0], (tuple, list)) else (output_node.args[0],)
    outputs = []
    for spec, node in zip(io["outputs"], results):
        value = node.meta.get("val") if hasattr(node, "meta") else None
        if value is None or not hasattr(value, "shape"):
            outputs.append(spec)
            continue
        shape: list[Any] = []
        for size in value.shape:
            if isinstance(size, torch.SymInt):
                expr = str(size.node.expr)
                shape.append(names.get(expr, expr))
            else:
                shape.append(int(size))
        outputs.append({**spec, "shape": shape})
    return {"inputs": inputs, "outputs": outputs}
