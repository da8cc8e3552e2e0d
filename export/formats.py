"""Writing one export target to one file: TorchScript, ONNX or an AOTInductor `.pt2`.

Every artifact carries the same JSON metadata document under the key `zoo.json`
(TorchScript extra file, ONNX `metadata_props`, AOTInductor package metadata), so
any runtime can learn input names, shapes, dtypes and value ranges from the file
alone. Files are written under a temporary name in the output directory and renamed
into place, so a crash never leaves half an artifact behind a real name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import UsageError, ZooError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from zoo.plugin import ExportTarget, Plugin

# Formats in the order they are exported and shown. `pt2` compiles C++ (about half a
# minute for a small model on two cores), so a plain `zoo export` leaves it out.
FORMATS = ("torchscript", "onnx", "pt2")
DEFAULT_FORMATS = ("torchscript", "onnx")
METADATA_KEY = "zoo.json"

# Oldest opset accepted (ONNX Runtime loads nothing older). The exporter's operator
# library targets opset 18; older opsets go through onnx's version converter, which
# lacks adapters for many operators, and the error then names the operator.
LOWEST_OPSET = 7


def artifact_name(target: str, fmt: str, device: str = "cpu") -> str:
    """`decoder.torchscript`, `decoder.onnx`, `decoder.cpu.pt2` / `decoder.cuda.pt2`
    (an AOTInductor package holds machine code for one device kind)."""
    if fmt == "pt2":
        return f"{target}.{device}.pt2"
    return f"{target}.{fmt}"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The most specific line of an exception chain: exporters wrap the real cause
    (an unsupported operator, a data-dependent branch) in generic 'step 1/3' errors."""
    chain = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for err in reversed(chain):
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        # Skip banner lines that only say which step failed or link to docs.
        useful = [ln for ln in lines if not ln.startswith(("Failed to export", "For detailed", "Please ", "Traceback", "##"))]
        # TorchScript's interpreter wraps the real error ("RuntimeError: shape ...") last.
        nested = [ln for ln in useful[1:] if re.match(r"^[A-Za-z_.]*(Error|Exception): ", ln)]
        if nested:
            useful = [nested[-1].split(": ", 1)[1]]
        if useful:
            text = useful[0]
            where = next((ln for ln in lines if ln.startswith('File "')), None)
            if where is not None:
                m = re.match(r'File "([^"]+)", line (\d+)', where)
                if m:
                    text += f" ({Path(m.group(1)).name}:{m.group(2)})"
            return f"{type(err).__name__}: {text}"[:limit]
    return type(chain[0]).__name__ if chain else "unknown error"


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """A path with `final`'s name inside a fresh hidden directory beside it; renamed
    onto `final` when the block succeeds, removed when it fails. Keeping the real
    name matters for `.pt2`: the package's inner folder is named after the file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp = tmpdir / final.name
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------- metadata


def base_metadata(
    plugin: Plugin, target: ExportTarget, io: dict[str, Any], checkpoint_sha256: str | None, config: Any = None, data_info: Any = None
) -> dict[str, Any]:
    """The part of `zoo.json` that every format of one target shares. `config` (the
    hyperparameters) lets a consumer such as `zoo sample --artifact` shape its inputs."""
    import torch

    from zoo.config import to_dict as config_to_dict
    from zoo.versions import plugin_version, zoo_version

    return {
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


# --------------------------------------------------------------------------- dynamic shapes


def dynamic_shapes(target: ExportTarget, inputs: Sequence[torch.Tensor]) -> tuple[dict[int, Any], ...]:
    """torch.export dims: dimension 0 of every input is the shared `batch`; the
    target's `dynamic_dims` name any others (one Dim per distinct name)."""
    from torch.export import Dim

    named: dict[str, Any] = {"batch": Dim("batch", min=1)}
    shapes = []
    for spec, tensor in zip(target.inputs, inputs):
        dims: dict[int, Any] = {}
        if tensor.dim() > 0:
            dims[0] = named["batch"]
        for index, axis in dict(target.dynamic_dims.get(spec.name, {})).items():
            dims[int(index)] = named.setdefault(axis, Dim(axis, min=1))
        shapes.append(dims)
    return tuple(shapes)


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


def torch_export(module: nn.Module, target: ExportTarget, inputs: tuple[torch.Tensor, ...]) -> Any:
    """`torch.export.export` with the dynamic dims, as one line on failure.

    Where the model only works at some sizes of a dynamic axis (a U-Net needs
    multiples of its downsampling factor), torch.export says so as a suggested
    fix (`height = 64*_height`); it is applied. A fix that pins a declared
    dynamic axis to one number is refused: the artifact would not be dynamic."""
    import torch
    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes

    from zoo.export._quiet import quiet

    shapes = dynamic_shapes(target, inputs)
    for _attempt in range(3):
        try:
            with quiet():
                return torch.export.export(module, inputs, dynamic_shapes=shapes, strict=False)
        except Exception as exc:
            fixes = _suggested_fixes(str(exc))
            if fixes is None:
                raise ZooError(f"torch.export of target {target.name!r} failed: {one_line(exc)}") from None
            try:
                refined = refine_dynamic_shapes_from_suggested_fixes(fixes, shapes)
            except Exception:
                raise ZooError(f"torch.export of target {target.name!r} failed: {one_line(exc)}") from None
            for spec, before, after in zip(target.inputs, shapes, refined):
                for dim, value in after.items():
                    if isinstance(value, int) and before.get(dim) is not None:
                        axis = "batch" if dim == 0 else target.dynamic_dims.get(spec.name, {}).get(dim, str(dim))
                        raise ZooError(
                            f"torch.export cannot keep axis {axis!r} of input {spec.name!r} (target {target.name!r}) dynamic: "
                            f"at the example size it specializes to {value} (torch.export treats an intermediate size of 1 as "
                            f"special); give example_inputs a size where no intermediate dimension is 1"
                        ) from None
            shapes = refined
    raise ZooError(f"torch.export of target {target.name!r} failed: the suggested dynamic-shape fixes did not converge")


def symbolic_io(program: Any, target: ExportTarget, io: dict[str, Any]) -> dict[str, Any]:
    """`io` with every dynamic dimension named from the exported program: an output
    dim that is the same symbol as an input axis gets that axis's name (pix2pix's
    output is `height` x `width` like its input); other symbolic dims keep their
    expression. `describe.target_io` knows only what the target declares (dimension 0
    and `dynamic_dims`); the program is the authority for what was exported."""
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


def _name_onnx_axes(proto: Any, metadata: dict[str, Any]) -> None:
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


# --------------------------------------------------------------------------- TorchScript


def export_torchscript(
    module: nn.Module, target: ExportTarget, export_inputs: tuple, check_inputs: tuple, path: Path, metadata: dict[str, Any]
) -> dict[str, Any]:
    """`torch.jit.script`, or `torch.jit.trace` where the target declares it; a trace
    is re-run at a second batch size and must reproduce eager outputs there."""
    import torch

    from zoo.export._quiet import quiet

    how = "trace" if target.trace else "script"
    metadata = {**metadata, "format": "torchscript", "exported_with": how}
    try:
        with quiet():
            if target.trace:
                compiled = torch.jit.trace(module, export_inputs, check_trace=True, check_inputs=[check_inputs], strict=True)
            else:
                compiled = torch.jit.script(module)
    except Exception as exc:
        if target.trace:
            hint = f" (the trace, taken at batch {len(export_inputs[0])}, was re-run at batch {len(check_inputs[0])})"
        else:
            hint = "; make it scriptable, or declare ExportTarget(trace=True) if tracing is faithful"
        raise ZooError(f"torch.jit.{how} of target {target.name!r} failed: {one_line(exc)}{hint}") from None
    with atomic_file(path) as tmp, quiet():
        torch.jit.save(compiled, str(tmp), _extra_files={METADATA_KEY: json.dumps(metadata)})
    return metadata


# --------------------------------------------------------------------------- ONNX


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


def _downgrade(proto: Any, opset: int) -> Any:
    """Convert an exported model to an older opset, naming the operator that has no
    form there (or that onnx's converter cannot take down)."""
    import onnx
    from onnx import version_converter

    current = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
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


def export_onnx(
    module: nn.Module,
    target: ExportTarget,
    export_inputs: tuple,
    path: Path,
    metadata: dict[str, Any],
    opset: int,
    exported_program: Any = None,
) -> dict[str, Any]:
    """`torch.onnx.export(dynamo=True)` with a dynamic batch, in one self-contained file,
    at exactly `opset`, checked with `onnx.checker.check_model(full_check=True)`."""
    import onnx
    import torch

    from zoo.export._quiet import quiet

    metadata = {**metadata, "format": "onnx", "exported_with": "torch.export", "opset": opset}
    # The exporter's operator library targets one opset; it converts upward itself
    # (onnxscript), and zoo converts downward so a failure can name the operator.
    try:
        from torch.onnx._internal.exporter import _constants

        library_opset = int(_constants.TORCHLIB_OPSET)
    except (ImportError, AttributeError):
        library_opset = 18
    source = exported_program if exported_program is not None else module
    try:
        with quiet():
            program = torch.onnx.export(
                source,
                export_inputs,
                None,
                dynamo=True,
                external_data=False,
                dynamic_shapes=None if exported_program is not None else dynamic_shapes(target, export_inputs),
                input_names=[s.name for s in target.inputs],
                output_names=[s.name for s in target.outputs],
                opset_version=max(opset, library_opset),
                verbose=False,
                optimize=True,
            )
            proto = program.model_proto
    except Exception as exc:
        raise ZooError(f"ONNX export of target {target.name!r} failed: {one_line(exc)}") from None
    achieved = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if achieved > opset:
        with quiet():
            proto = _downgrade(proto, opset)
        achieved = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if achieved != opset:
        raise ZooError(f"ONNX export of target {target.name!r} produced opset {achieved}, not the requested {opset}")
    _name_onnx_axes(proto, metadata)
    del proto.metadata_props[:]
    flat = {
        METADATA_KEY: json.dumps(metadata),
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
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ZooError(f"ONNX model of target {target.name!r} fails onnx.checker: {one_line(exc)}") from None
    with atomic_file(path) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    return metadata


# --------------------------------------------------------------------------- .pt2 (AOTInductor)


def export_pt2(exported_program: Any, target: ExportTarget, path: Path, metadata: dict[str, Any], device: str) -> dict[str, Any]:
    """AOTInductor: compile a torch.export program for `device` into a `.pt2` package.
    The metadata goes into the package (`aot_inductor.metadata`), where
    `AOTIModelPackageLoader::get_metadata()` returns it in Python and C++."""
    import torch._inductor

    from zoo.export._quiet import quiet

    metadata = {**metadata, "format": "pt2", "exported_with": "torch.export", "device": device}
    try:
        with atomic_file(path) as tmp, quiet():
            torch._inductor.aoti_compile_and_package(
                exported_program,
                package_path=str(tmp),
                inductor_configs={"aot_inductor.metadata": {METADATA_KEY: json.dumps(metadata)}},
            )
    except ZooError:
        raise
    except Exception as exc:
        raise ZooError(f"AOTInductor compile of target {target.name!r} for {device} failed: {one_line(exc)}") from None
    return metadata
