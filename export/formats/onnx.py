"""ONNX: one self-contained `.onnx` file at exactly the chosen opset, checked with
`onnx.checker.check_model(full_check=True)`, `zoo.json` in its `metadata_props`.
Runs in ONNX Runtime (Python here, Node through the Node runner, and everywhere else).

Two exporters: `dynamo` (default), `torch.onnx.export(dynamo=True)` from the target's
`torch.export` program; and `torchscript`, torch's TorchScript-based exporter
(`dynamo=False` with `dynamic_axes`), which keeps a time axis dynamic through
nn.LSTM/GRU/RNN by emitting ONNX's own recurrent operators where torch.export
unrolls them.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.export import metadata as zmeta
from zoo.export._files import atomic_file
from zoo.export._quiet import one_line, quiet
from zoo.export.format import ExportJob, Format, Loaded, Probe
from zoo.export.formats import _opset
from zoo.plugin import BATCH_AXIS

_ORT_PRELOADED = False


class Onnx(Format):
    name = "onnx"
    summary = "export ONNX (<target>.onnx)"
    exporters = {"dynamo": "torch.export", "torchscript": "torchscript"}
    default_exporter = "dynamo"
    order = 20
    options = ("opset",)
    record_keys = ("opset",)
    latency_name = "onnxruntime"

    def prepare(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"opset": _opset.check_opset(options.get("opset"))}

    def skip_reason(self, device: str) -> str | None:
        if device != "cuda":
            return None
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return None
        return f"onnxruntime {ort.__version__} here has no CUDA provider (providers: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"

    def needs_program(self, target: Any) -> bool:
        return self.exporter_for(target) == "dynamo"

    def export(self, job: ExportJob, path: Path, device: Any) -> dict[str, Any]:
        import onnx

        target = job.target
        how = self.exporter_for(target)
        opset = job.options.get("opset") or _opset.default_opset()
        metadata = {**job.metadata, "format": self.name, "exported_with": self.exporters[how], "opset": opset}
        proto = _export_dynamo(job, opset) if how == "dynamo" else _export_torchscript(job, opset)
        achieved = _opset.opset_of(proto)
        if achieved > opset:
            with quiet():
                proto = _opset.downgrade(proto, opset)
        elif achieved < opset:
            with quiet():
                proto = _opset.upgrade(proto, opset)
        achieved = _opset.opset_of(proto)
        if achieved != opset:
            raise ZooError(f"ONNX export of target {target.name!r} produced opset {achieved}, not the requested {opset}")
        _name_axes(proto, metadata)
        _write_metadata(proto, metadata)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:
            raise ZooError(f"ONNX model of target {target.name!r} fails onnx.checker: {one_line(exc)}") from None
        with atomic_file(path) as tmp:
            onnx.save_model(proto, str(tmp), save_as_external_data=False)
        return metadata

    def training_ops(self, job: ExportJob, path: Path, device: Any) -> list[str]:
        import onnx

        from zoo.export.graph_checks import fx_training_ops, onnx_training_ops

        found = fx_training_ops(job.program()) if self.exporter_for(job.target) == "dynamo" else []
        return found + [op for op in onnx_training_ops(onnx.load(str(path))) if op not in found]

    def intermediate_values(self, path: Path, trace: list, inputs: Any, input_names: Any) -> list:
        """The dynamo exporter names each value after its FX node and records every node's
        module path (`pkg.torch.onnx.name_scopes`): the last value of each submodule is
        added as a graph output and computed in one ONNX Runtime run."""
        return _intermediate_values(path, trace, inputs, input_names)

    def sniff(self, probe: Probe) -> bool:
        # A ModelProto's first field is ir_version: protobuf tag 0x08.
        return probe.names is None and probe.head[:1] == b"\x08"

    def read_metadata(self, path: Path) -> dict[str, Any]:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise ZooError(f"{path} is not a readable ONNX model (truncated or corrupt?): {first}") from None
        props = {p.key: p.value for p in model.metadata_props}
        return zmeta.parse(props.get(zmeta.METADATA_KEY, ""), path)

    def load(self, path: Path, metadata: dict[str, Any], device: Any) -> Loaded:
        session = onnxruntime_session(path, device)
        input_names = [spec["name"] for spec in metadata["inputs"]]
        output_names = [spec["name"] for spec in metadata["outputs"]]
        graph_inputs = [i.name for i in session.get_inputs()]
        if graph_inputs != input_names:
            raise ZooError(f"{path.name}: graph inputs {graph_inputs} differ from its metadata {input_names}")

        def run(inputs: list) -> Any:
            return session.run(output_names, dict(zip(input_names, inputs)))

        return Loaded(run, takes="numpy")


def _export_dynamo(job: ExportJob, opset: int) -> Any:
    """`torch.onnx.export(dynamo=True)` of the target's torch.export program. The
    exporter's operator library targets one opset and converts upward itself
    (onnxscript); zoo converts downward so a failure can name the operator."""
    import torch

    try:
        from torch.onnx._internal.exporter import _constants

        library_opset = int(_constants.TORCHLIB_OPSET)
    except (ImportError, AttributeError):
        library_opset = 18
    program = job.program(purpose="for ONNX's default exporter")
    target = job.target
    try:
        with quiet():
            onnx_program = torch.onnx.export(
                program,
                job.export_inputs,
                None,
                dynamo=True,
                external_data=False,
                input_names=[s.name for s in target.inputs],
                output_names=[s.name for s in target.outputs],
                opset_version=max(opset, library_opset),
                verbose=False,
                optimize=True,
            )
            return onnx_program.model_proto
    except Exception as exc:
        raise ZooError(f"ONNX export of target {target.name!r} failed: {one_line(exc)}") from None


def _torchscript_exporter_max_opset() -> int:
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return 17


def dynamic_axes(target: Any) -> dict[str, dict[int, str]]:
    """{tensor: {dim: axis name}} for torch.onnx's TorchScript-based exporter: each
    tensor's batch axis and its `dynamic_dims`, outputs included."""
    axes: dict[str, dict[int, str]] = {}
    for spec in target.inputs + target.outputs:
        dims = {} if spec.batch_axis is None else {spec.batch_axis: BATCH_AXIS}
        dims.update({int(d): name for d, name in dict(target.dynamic_dims.get(spec.name, {})).items()})
        if dims:
            axes[spec.name] = dims
    return axes


def _export_torchscript(job: ExportJob, opset: int) -> Any:
    """torch.onnx's TorchScript-based exporter: it traces the module once, so parity at
    other sizes of every dynamic axis is what proves the graph follows them."""
    import onnx
    import torch

    target = job.target
    buffer = io.BytesIO()
    try:
        with quiet():
            torch.onnx.export(
                job.module,
                job.export_inputs,
                buffer,
                dynamo=False,
                input_names=[s.name for s in target.inputs],
                output_names=[s.name for s in target.outputs],
                dynamic_axes=dynamic_axes(target),
                opset_version=min(opset, _torchscript_exporter_max_opset()),
            )
    except Exception as exc:
        raise ZooError(f"ONNX export (TorchScript-based exporter) of target {target.name!r} failed: {one_line(exc)}") from None
    return onnx.load_from_string(buffer.getvalue())


def _name_axes(proto: Any, metadata: dict[str, Any]) -> None:
    """Give the graph's symbolic dims the metadata's axis names (`batch`, `height`)
    instead of torch's symbol names (`s40`, `64*s56`)."""
    rename: dict[str, str] = {}
    specs = {s["name"]: s for s in metadata["inputs"] + metadata["outputs"]}
    for value in list(proto.graph.input) + list(proto.graph.output):
        spec = specs.get(value.name)
        if spec is None or not value.type.HasField("tensor_type"):
            continue
        for d, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param and d < len(spec["shape"]) and isinstance(spec["shape"][d], str):
                rename.setdefault(dim.dim_param, spec["shape"][d])
    for value in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        if not value.type.HasField("tensor_type"):
            continue
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]


def _write_metadata(proto: Any, metadata: dict[str, Any]) -> None:
    """`zoo.json` and a few flat keys for tools that show metadata_props as a table."""
    del proto.metadata_props[:]
    flat = {
        zmeta.METADATA_KEY: zmeta.dumps(metadata),
        "zoo.plugin": metadata["plugin"],
        "zoo.plugin_version": metadata["plugin_version"],
        "zoo.target": metadata["target"],
        "zoo.checkpoint_sha256": metadata["checkpoint_sha256"] or "",
    }
    for spec in metadata["inputs"] + metadata["outputs"]:
        if spec.get("range"):
            flat[f"zoo.range.{spec['name']}"] = spec["range"]
    for key, value in flat.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name = "zoo"


def _intermediate_values(path: Path, trace: list, inputs: Any, input_names: Any) -> list:
    """For each submodule, the artifact's value of its last ONNX node, computed in one run."""
    import onnx

    proto = onnx.load(str(path))
    last: dict[str, tuple[str, str]] = {}  # module path -> (value name, aten op)
    for node in proto.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = _literal(props.get("pkg.torch.onnx.name_scopes", "[]"))
        except (ValueError, SyntaxError):
            continue
        op = _aten_op(props.get("pkg.torch.onnx.fx_node", ""))
        for scope in scopes[1:-1]:
            if node.output and node.output[0]:
                last[scope] = (node.output[0], op)
    wanted = [(seen, last[seen.path]) for seen in trace if seen.path in last]
    if not wanted:
        raise ZooError(f"{path.name} records no module paths (exported without the dynamo exporter?); it cannot be localized")
    outputs = {o.name for o in proto.graph.output}
    for _, (value, _op) in wanted:
        if value not in outputs:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
            outputs.add(value)
    tmp = path.with_name(f".{path.name}.localize.onnx")
    try:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        import torch

        session = onnxruntime_session(tmp, torch.device("cpu"))
        names = [value for _, (value, _op) in wanted]
        got = session.run(names, {name: x.cpu().numpy() for name, x in zip(input_names, inputs)})
    finally:
        tmp.unlink(missing_ok=True)
    return [(seen, value, op) for (seen, (_, op)), value in zip(wanted, got)]


def _aten_op(fx_node: str) -> str:
    """'%relu = call_function[target=torch.ops.aten.relu.default](...)' -> 'aten.relu'."""
    marker = "target=torch.ops."
    if marker not in fx_node:
        return ""
    name = fx_node.split(marker, 1)[1].split("]", 1)[0]
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else name


def _literal(text: str) -> Any:
    import ast

    return ast.literal_eval(text)


def onnxruntime_session(path: Path, device: Any) -> Any:
    """An InferenceSession on the CPU, or on CUDA with TF32 off (parity is fp32)."""
    import onnxruntime as ort

    global _ORT_PRELOADED
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if "torch" in sys.modules:
        import torch

        # Same thread budget as eager PyTorch, so latency comparisons are fair.
        options.intra_op_num_threads = torch.get_num_threads()
    if device.type == "cuda":
        if not _ORT_PRELOADED and hasattr(ort, "preload_dlls"):
            # Finds the CUDA and cuDNN libraries that the torch wheel installed.
            ort.preload_dlls()
            _ORT_PRELOADED = True
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0, "use_tf32": 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    if device.type == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise ZooError(
            f"onnxruntime {ort.__version__} cannot use CUDA here (providers: {', '.join(session.get_providers())}); "
            "install onnxruntime-gpu built for this CUDA"
        )
    return session


format = Onnx()
