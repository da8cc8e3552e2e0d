"""Which ONNX opset an export targets: the newest that both the exporter and the
installed onnxruntime support unless `--opset` says otherwise, and conversion down
to an older one that names the operator standing in the way."""

from __future__ import annotations

import functools
import re
from typing import Any

from zoo.errors import UsageError, ZooError
from zoo.export._quiet import one_line

# Oldest opset accepted (ONNX Runtime loads nothing older). The exporter's operator
# library targets opset 18; older opsets go through onnx's version converter, which
# lacks adapters for many operators, and the error then names the operator.
LOWEST_OPSET = 7


@functools.cache
def exporter_max_opset() -> int:
    """Newest opset the installed torch.onnx exporter reaches with its own converter
    (onnxscript's version converter, bounded by the installed onnx)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    try:
        from onnxscript.version_converter import _version_converter

        newest = min(newest, int(_version_converter.SUPPORTED_MAX_ONNX_OPSET))
    except (ImportError, AttributeError):
        from torch.onnx._internal.exporter import _constants

        newest = min(newest, int(_constants.TORCHLIB_OPSET))
    return newest


@functools.cache
def onnxruntime_max_opset() -> int:
    """Newest default-domain opset the installed onnxruntime loads, found by loading
    a one-node model at each opset from the newest down (milliseconds)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    options = ort.SessionOptions()
    options.log_severity_level = 4
    for opset in range(onnx.defs.onnx_opset_version() + 2, LOWEST_OPSET - 1, -1):
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "opset_probe",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return opset
        except Exception:
            continue
    raise ZooError(f"onnxruntime {ort.__version__} loads no ONNX opset >= {LOWEST_OPSET}")


def default_opset() -> int:
    """Newest opset both the exporter and onnxruntime support."""
    return min(exporter_max_opset(), onnxruntime_max_opset())


def check_opset(opset: int | None) -> int:
    if opset is None:
        return default_opset()
    newest = default_opset()
    if opset < LOWEST_OPSET or opset > newest:
        raise UsageError(
            f"--opset {opset}: choose {LOWEST_OPSET}..{newest} (newest supported by torch.onnx: {exporter_max_opset()}, "
            f"by onnxruntime: {onnxruntime_max_opset()})"
        )
    return opset


def opset_of(proto: Any) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def upgrade(proto: Any, opset: int) -> Any:
    """Convert an exported model up to `opset` (the TorchScript-based exporter stops short of the newest)."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, opset)
    except Exception as exc:
        raise ZooError(f"onnx cannot convert the graph from opset {opset_of(proto)} up to {opset}: {one_line(exc)}") from None


def downgrade(proto: Any, opset: int) -> Any:
    """Convert an exported model to an older opset, naming the operator that has no
    form there (or that onnx's converter cannot take down)."""
    import onnx
    from onnx import version_converter

    current = opset_of(proto)
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx"):
            try:
                onnx.defs.get_schema(node.op_type, opset, "")
            except onnx.defs.SchemaError:
                since = onnx.defs.get_schema(node.op_type, current, "").since_version
                raise UsageError(f"--opset {opset} is too low for operator {node.op_type} (it exists from opset {since})") from None
    try:
        return version_converter.convert_version(proto, opset)
    except Exception as exc:
        m = re.search(r"Version \$?(\d+) for (\w+)", str(exc))
        if m:
            raise UsageError(
                f"--opset {opset} is too low for operator {m.group(2)} (the graph uses {m.group(2)}-{m.group(1)} and onnx "
                f"cannot convert it to opset {opset}); use --opset {int(m.group(1))} or newer"
            ) from None
        raise UsageError(f"--opset {opset}: onnx cannot convert the graph from opset {current}: {one_line(exc)}") from None
