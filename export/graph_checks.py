"""Operations that have no place in an exported inference graph: dropout still
dropping, batch norm still using the statistics of the batch, random sampling.

An exported graph must be a pure function of its inputs (noise enters as an input),
so each format scans what it wrote (`Format.training_ops`) with the helpers here and
the export fails naming the operation and the module it belongs to. Instance norm,
which normalises each image by its own statistics by design, is not flagged.
"""

from __future__ import annotations

from typing import Any

DROPOUTS = ("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout")
RANDOM = (
    "rand",
    "randn",
    "rand_like",
    "randn_like",
    "randint",
    "randint_like",
    "randperm",
    "bernoulli",
    "multinomial",
    "normal",
    "uniform",
    "exponential",
    "poisson",
)
# (op, index of its `training` argument) for the batch norms that can use batch statistics.
BATCH_NORMS = {"batch_norm": 5, "native_batch_norm": 5, "_native_batch_norm_legit": 5, "_native_batch_norm_legit_functional": 5}
ONNX_RANDOM = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial")


def _base(name: str) -> str:
    """'aten.dropout.default' / 'aten::dropout' / 'dropout_' -> 'dropout'."""
    name = name.split("::")[-1]
    parts = name.split(".")
    name = parts[1] if parts[0] == "aten" and len(parts) > 1 else parts[0]
    return name.rstrip("_") if name.endswith("_") and not name.startswith("_") else name


def describe(op: str, where: str, why: str) -> str:
    return f"{op} in {where or 'the module itself'} ({why})"


def classify(op: str, training_arg: Any) -> str | None:
    """Why the op (base name) does not belong in an inference graph, or None."""
    if op in DROPOUTS:
        return "dropout in training mode" if training_arg is not False else None
    if op in BATCH_NORMS:
        return "batch norm with the batch's statistics" if training_arg is not False else None
    if op in RANDOM:
        return "random sampling inside the graph; feed noise as an input"
    return None


def fx_training_ops(program: Any) -> list[str]:
    """Training-only operations of a `torch.export` program (before decompositions,
    where instance norm is still itself)."""
    found = []
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        op = _base(str(node.target))
        index = 2 if op in DROPOUTS else BATCH_NORMS.get(op)
        training = (
            node.args[index] if index is not None and len(node.args) > index else node.kwargs.get("train", node.kwargs.get("training"))
        )
        why = classify(op, training)
        if why:
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            found.append(describe(f"aten.{op}", stack[-1][0] if stack else "", why))
    return found


def torchscript_training_ops(module: Any) -> list[str]:
    """Training-only operations of a TorchScript module: submodules left in training
    mode, else the dropout, batch-norm and sampling calls that survive freezing
    (`torch.jit.freeze` folds the eval-mode `training` flags and the branches they
    decide, so what is left runs), each placed in the innermost submodule holding it."""
    import torch

    left_training = [f"{name or 'the module itself'} is in training mode" for name, m in module.named_modules() if m.training]
    if left_training:
        return left_training

    def surviving(sub: Any) -> list[tuple[str, str]]:
        """(op, why) of the training-only calls in `sub`'s frozen forward."""
        try:
            graph = torch.jit.freeze(sub, optimize_numerics=False).graph  # numerics passes fold even a training-mode batch norm
        except Exception:  # noqa: BLE001 - no forward (a container), or not freezable: nothing to place
            return []
        found = []
        for node in _walk(graph.nodes()):
            kind = node.kind()
            if not kind.startswith("aten::"):
                continue
            op = _base(kind)
            inputs = list(node.inputs())
            index = 2 if op in DROPOUTS else BATCH_NORMS.get(op)
            training: Any = None
            if index is not None and len(inputs) > index:
                value = inputs[index]
                training = value.toIValue() if value.node().kind() == "prim::Constant" else True
            why = classify(op, training)
            if why:
                found.append((kind, why))
        return found

    top = surviving(module)
    if not top:
        return []
    # Place each in the innermost submodule whose own frozen forward still has it.
    subs = sorted(((name, m) for name, m in module.named_modules() if name), key=lambda item: -item[0].count("."))
    out = []
    for kind, why in dict.fromkeys(top):
        where = next((name for name, sub in subs if (kind, why) in surviving(sub)), "")
        out.append(describe(kind, where, why))
    return out


def _walk(nodes: Any) -> Any:
    """Every node of a TorchScript graph, those inside `if` branches and loop bodies too."""
    for node in nodes:
        yield node
        for block in node.blocks():
            yield from _walk(block.nodes())


def onnx_training_ops(proto: Any) -> list[str]:
    """Training-only operations of an ONNX graph: Dropout with training_mode, batch
    normalization in training mode, and the random operators."""
    import onnx

    constants = {}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute:
            try:
                constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
            except Exception:  # noqa: BLE001 - a non-tensor constant is not a training flag
                pass
    for init in proto.graph.initializer:
        constants[init.name] = onnx.numpy_helper.to_array(init)
    found = []
    for node in proto.graph.node:
        where = node.name or node.op_type
        props = {p.key: p.value for p in node.metadata_props}
        where = props.get("namespace", where).split(": ")[0] if props.get("namespace") else where
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            flag = constants.get(node.input[2])
            if flag is None or bool(flag):
                found.append(describe("Dropout", where, "dropout in training mode"))
        elif node.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in node.attribute):
            found.append(describe("BatchNormalization", where, "batch norm with the batch's statistics"))
        elif node.op_type in ONNX_RANDOM:
            found.append(describe(node.op_type, where, "random sampling inside the graph; feed noise as an input"))
    return found
