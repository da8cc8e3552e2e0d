"""When parity fails, name where: the first submodule whose output in the artifact
differs from eager PyTorch's beyond the target's tolerance.

Eager values come from forward hooks on the target's module (every submodule's inputs
and output, in the order they finish: a child before its parent). The artifact's are
read per format:
- ONNX: the dynamo exporter names each value after its FX node and records the module
  path of every node (`pkg.torch.onnx.name_scopes`); the last value each submodule
  produces is added as a graph output and ONNX Runtime computes them all in one run.
- TorchScript: the scripted file keeps the module tree, so each submodule is run on the
  eager inputs of that submodule and compared with its eager output.
- Other formats (AOTInductor compiles intermediate values away) report that they cannot
  be localized. Each format says which through `Format.intermediate_values`.

Errors propagate, so the first submodule to finish with a divergent output is the
culprit: `first divergence: blocks.2.conv (aten.convolution) max_abs 3.1e-2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError


@dataclass
class Seen:
    """One submodule's first call in eager PyTorch."""

    path: str
    kind: str  # its class name
    inputs: tuple
    output: Any  # the first tensor it returned


def eager_trace(module: Any, inputs: Sequence[Any]) -> list[Seen]:
    """Every submodule's first call (path, class, inputs, first output tensor), in finishing order."""
    import torch

    seen: dict[str, Seen] = {}
    handles = []

    def hook_for(path: str, sub: Any):
        def hook(_module: Any, args: tuple, output: Any) -> None:
            first = output if isinstance(output, torch.Tensor) else next((o for o in flat(output) if isinstance(o, torch.Tensor)), None)
            if path not in seen and first is not None:
                seen[path] = Seen(
                    path, type(sub).__name__, tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args), first.detach()
                )

        return hook

    for path, sub in module.named_modules():
        if path:
            handles.append(sub.register_forward_hook(hook_for(path, sub)))
    try:
        with torch.inference_mode():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.values())


def flat(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in flat(v)]
    return [value]


def _error(want: Any, got: Any) -> tuple[float, float]:
    import numpy as np

    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    diff = np.abs(got - want)
    scale = np.abs(want)
    max_abs = float(diff.max()) if diff.size else 0.0
    big = scale > 0
    max_rel = float((diff[big] / scale[big]).max()) if big.any() else 0.0
    return max_abs, max_rel


def first_divergence(pairs: list[tuple[Seen, Any, str]], rtol: float, atol: float) -> dict[str, Any]:
    """The first (eager, artifact value, op) pair beyond the tolerance, else the largest error."""
    import numpy as np

    worst: dict[str, Any] | None = None
    for seen, got, op in pairs:
        want = seen.output.cpu().numpy()
        got = np.asarray(got)
        if got.shape != want.shape:
            continue  # a fused value that is not this module's output
        max_abs, max_rel = _error(want, got)
        entry = {"module": seen.path, "op": op or seen.kind, "max_abs": max_abs, "max_rel": max_rel}
        if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            return {**entry, "diverges": True, "compared": len(pairs)}
        if worst is None or max_abs > worst["max_abs"]:
            worst = entry
    return {**(worst or {"module": None, "op": None, "max_abs": None, "max_rel": None}), "diverges": False, "compared": len(pairs)}


def localize(plugin: Any, model: Any, directory: Path, record: dict[str, Any], inputs: Sequence[Any]) -> dict[str, Any]:
    """Where the artifact of `record` first departs from eager PyTorch on `inputs` (CPU)."""
    target = plugin.target(record["target"])
    module = target.module(model.cpu()).eval()
    inputs = [x.cpu() for x in inputs]
    base = {"target": record["target"], "format": record["format"], "runtime": "python", "device": "cpu"}
    trace = eager_trace(module, inputs)
    from zoo.export import format as zformat

    path = directory / record["path"]
    try:
        pairs = zformat.get(record["format"]).intermediate_values(path, trace, inputs, [s.name for s in target.inputs])
    except ZooError as exc:
        return {**base, "localized": False, "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a file that does not load: its parity rows say so too
        from zoo.export._quiet import one_line

        return {**base, "localized": False, "reason": f"{path.name} does not load ({one_line(exc)})"}
    found = first_divergence(pairs, record["rtol"], record["atol"])
    return {**base, "localized": True, **found}


def describe(entry: dict[str, Any]) -> str:
    """One line for the table: where the artifact first diverges, or why zoo cannot say."""
    head = f"{entry['target']} {entry['format']}: "
    if not entry.get("localized"):
        return head + f"not localized ({entry['reason']})"
    if entry["module"] is None:
        return head + f"no submodule output to compare ({entry['compared']} compared)"
    where = f"{entry['module']} ({entry['op']}) max_abs {entry['max_abs']:.2g} max_rel {entry['max_rel']:.2g}"
    if entry["diverges"]:
        return head + f"first divergence: {where}"
    return head + f"every submodule within tolerance ({entry['compared']} compared); largest error at {where}"


def localize_records(
    plugin: Any,
    model: Any,
    config: Any,
    directory: Path,
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    data_info: Any = None,
    every: bool = False,
) -> list[dict[str, Any]]:
    """Localize each artifact with a failed parity row, on the inputs of its first failed
    case (`every`: every artifact, on its batch-1 case at the export sizes)."""
    import torch

    from zoo.export.parity import PARITY_SEED

    out = []
    for record in records:
        failed = [
            r
            for r in rows
            if (r["target"], r["format"]) == (record["target"], record["format"]) and r["status"] == "failed" and r["batch"] is not None
        ]
        if not failed and not every:
            continue
        target = plugin.target(record["target"])
        batch, sizes = (failed[0]["batch"], failed[0]["axes"] or None) if failed else (1, None)
        inputs = target.make_inputs(config, batch, torch.Generator().manual_seed(PARITY_SEED), sizes=sizes, data=data_info)
        entry = localize(plugin, model, directory, record, inputs)
        out.append({**entry, "batch": batch, "axes": dict(sizes or {})})
    return out
