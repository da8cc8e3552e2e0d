"""The parity runner: every artifact x runtime x device x case compared with eager
PyTorch, and batch-1 latency beside eager.

A case is a batch size at given sizes of the target's other dynamic axes: every
batch size at the export sizes, then, at the smallest batch, each other valid size
of each axis (`ExportTarget.sizes_of_axes`), so a graph that froze an axis fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, ZooError
from zoo.export import format as zformat
from zoo.export import manifest as zmanifest
from zoo.export import runtime as zruntime
from zoo.plugin import BATCH_AXIS, ExportTarget, Plugin

NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"
DevicePlan = list[tuple[str, Any, str | None]]
Log = Callable[[str], None]


def _quiet_log(message: str) -> None:
    pass


def plan_devices(spec: str) -> DevicePlan:
    """[(row name, torch device or None, skip reason)] for --device cpu|cuda|cuda:N|all."""
    import torch

    from zoo import devices

    spec = (spec or "all").strip().lower()
    if spec == "all":
        plan: DevicePlan = [("cpu", torch.device("cpu"), None)]
        if torch.cuda.is_available():
            plan.append(("cuda", torch.device("cuda", 0), None))
        else:
            plan.append(("cuda", None, NO_CUDA))
        return plan
    if spec == "auto":
        raise UsageError("--device: use cpu, cuda, cuda:N or all")
    dev = devices.resolve(spec)
    return [(dev.type, dev, None)]


@dataclass(frozen=True)
class Case:
    batch: int
    axes: tuple[tuple[str, int], ...] = ()

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.axes)


def parity_cases(target: ExportTarget, config: Any, batch_sizes: Sequence[int]) -> list[Case]:
    """Every batch size (and the largest batch the target declares) at the export sizes,
    then each other valid size of each other axis at the smallest batch."""
    export_sizes = target.axes(config)
    largest = target.max_sizes_of(config).get(BATCH_AXIS)
    sizes = sorted({*batch_sizes, *([largest] if largest else [])} - ({b for b in batch_sizes if b > largest} if largest else set()))
    cases = [Case(b, tuple(export_sizes.items())) for b in sizes]
    smallest = min(sizes)
    for axis, sizes in target.sizes_of_axes(config).items():
        for size in sizes[1:]:
            case = Case(smallest, tuple({**export_sizes, axis: size}.items()))
            if case not in cases:
                cases.append(case)
    return cases


def repeat_verdicts(outputs: list[list[Any]], names: Sequence[str], rtol: float, atol: float) -> list[dict[str, Any]]:
    """A failing verdict when calls on the same input disagree beyond the tolerance."""
    from zoo.export.parity import compare

    for later in outputs[1:]:
        verdict = compare(outputs[0], later, names, names, rtol, atol)
        if not verdict["passed"]:
            return [
                {
                    **verdict,
                    "passed": False,
                    "reason": f"two calls on the same input differ ({verdict['reason']}): the graph is not a pure function of its "
                    "inputs (dropout in training mode, or sampling inside it?)",
                }
            ]
    return []


def name_frozen_axes(rows: list[dict[str, Any]], target: ExportTarget, config: Any, cases: list[Case]) -> list[dict[str, Any]]:
    """Where every check at the export sizes passed and a check at another size of one
    axis failed, say that the axis behaves as if fixed: the exporter froze it."""
    export_sizes = target.axes(config)
    at_export = [r for r, c in zip(rows, cases) if c.sizes == export_sizes]
    if not at_export or not all(r["passed"] for r in at_export):
        return rows
    holders = {axis: (spec.name, dim) for spec in target.inputs for dim, axis in dict(target.dynamic_dims.get(spec.name, {})).items()}
    out = []
    for r, case in zip(rows, cases):
        changed = [axis for axis, size in case.sizes.items() if export_sizes.get(axis) != size]
        if r["passed"] is False and len(changed) == 1 and changed[0] in holders:
            axis = changed[0]
            tensor = holders[axis][0]
            note = (
                f"axis {axis!r} of input {tensor!r} behaves as if fixed at {export_sizes[axis]}: every check at "
                f"{axis}={export_sizes[axis]} passes, at {axis}={case.sizes[axis]} this fails"
            )
            r = {**r, "reason": f"{note} ({r['reason']})" if r["reason"] else note}
        out.append(r)
    return out


def resolve_runtimes(names: Sequence[str]) -> list[zruntime.Runtime]:
    """The named runtimes, each checked to be available here."""
    chosen = [zruntime.get(name) for name in names]
    for runtime in chosen:
        ok, reason = runtime.available()
        if not ok:
            raise ZooError(f"runtime {runtime.name} is not available: {reason}")
    return chosen


def _worst(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The first failing verdict, else the one with the largest error."""
    failed = [v for v in verdicts if not v["passed"]]
    if failed:
        return failed[0]
    return max(verdicts, key=lambda v: (v.get("max_abs") or 0.0, v.get("max_rel") or 0.0))


def record_format(record: dict[str, Any]) -> zformat.Format | None:
    try:
        return zformat.get(record["format"])
    except ZooError:
        return None


def runs_on(record: dict[str, Any], fmt: zformat.Format | None, device_name: str) -> bool:
    """Whether this artifact exists for the device at all (a per-device one holds code for one)."""
    return fmt is None or not fmt.per_device or record.get("device") == device_name


def run_parity(
    plugin: Plugin,
    model: Any,
    config: Any,
    directory: Path,
    records: list[dict[str, Any]],
    batch_sizes: Sequence[int],
    device_plan: DevicePlan,
    runtimes: Sequence[str] = ("python",),
    latency: bool = True,
    data_info: Any = None,
    log: Log = _quiet_log,
) -> tuple[list[dict], list[dict]]:
    """Parity rows (every record x runtime x device x case) and batch-1 latency rows.

    Inputs are the target's seeded example inputs; eager outputs are computed once per
    device and case (TF32 off on CUDA) and every artifact is compared with them."""
    import copy

    import torch

    from zoo.export.parity import PARITY_SEED, compare, median_ms, strict_fp32
    from zoo.export_support import as_tuple

    chosen = resolve_runtimes(runtimes)
    models = {"cpu": model}
    rows: list[dict[str, Any]] = []
    latency_rows: list[dict[str, Any]] = []
    by_target: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_target.setdefault(record["target"], []).append(record)

    for target_name, target_records in by_target.items():
        target = plugin.target(target_name)
        cases = parity_cases(target, config, batch_sizes)
        inputs_at = {
            c: target.make_inputs(config, c.batch, torch.Generator().manual_seed(PARITY_SEED), sizes=c.sizes, data=data_info) for c in cases
        }
        latency_inputs = target.make_inputs(config, 1, torch.Generator().manual_seed(PARITY_SEED), data=data_info)
        output_names = [s.name for s in target.outputs]
        for device_name, device, skip in device_plan:
            if skip is not None:
                rows += [
                    zmanifest.row(record, runtime.name, device_name, None, reason=skip)
                    for record in target_records
                    for runtime in chosen
                    if runtime.runs(record["format"]) and runs_on(record, record_format(record), device_name)
                ]
                continue
            if device_name not in models:
                models[device_name] = copy.deepcopy(model).to(device)
            module = target.module(models[device_name]).eval()

            def eager(inputs: tuple) -> tuple:
                with torch.inference_mode():
                    return as_tuple(module(*[t.to(device) for t in inputs]))

            with strict_fp32(device.type):
                expected = {c: tuple(o.detach().cpu().numpy() for o in eager(inputs_at[c])) for c in cases}
                times: dict[tuple[int, int], tuple[str, str | None, float]] = {}
                for record in target_records:
                    fmt = record_format(record)
                    if not runs_on(record, fmt, device_name):
                        continue
                    for rank, runtime in enumerate(chosen):
                        if not runtime.runs(record["format"]):
                            continue

                        def row(case: Case | None, **fields: Any) -> dict[str, Any]:
                            batch, axes = (None, None) if case is None else (case.batch, case.sizes)
                            return zmanifest.row(record, runtime.name, device_name, batch, axes, **fields)

                        reason = runtime.skip_reason(device_name) or (runtime.format_skip_reason(fmt, device_name) if fmt else None)
                        if reason is not None:
                            rows.append(row(None, reason=reason))
                            continue
                        if fmt is None:
                            rows += [row(c, passed=False, reason=f"format {record['format']!r} is not installed") for c in cases]
                            continue
                        try:
                            session = runtime.open(directory / record["path"], device)
                        except ZooError as exc:
                            rows += [row(c, passed=False, reason=str(exc)) for c in cases]
                            continue
                        artifact_rows = []
                        for index, case in enumerate(cases):
                            verdicts, outputs = [], []
                            # The first case runs at least twice: an inference graph gives the same
                            # output for the same input (dropout or sampling left inside does not).
                            for _ in range(max(2 if index == 0 else 1, runtime.checks_per_case(fmt))):
                                try:
                                    got = session.run(inputs_at[case])
                                    outputs.append(list(got.values()))
                                    verdicts.append(
                                        compare(expected[case], list(got.values()), output_names, list(got), record["rtol"], record["atol"])
                                    )
                                except ZooError as exc:
                                    verdicts.append({"passed": False, "reason": str(exc)})
                            verdicts += repeat_verdicts(outputs, output_names, record["rtol"], record["atol"])
                            artifact_rows.append(row(case, **_worst(verdicts)))
                        rows += name_frozen_axes(artifact_rows, target, config, cases)
                        if latency:
                            try:
                                ms = session.latency_ms(latency_inputs)
                                times[(rank, zformat.order_key(fmt.name))] = (runtime.latency_label(fmt), fmt.name, ms)
                            except ZooError as exc:
                                log(f"latency of {record['path']} in {runtime.name} not measured: {exc}")

                if latency:
                    sync = torch.cuda.synchronize if device.type == "cuda" else None
                    on_device = tuple(t.to(device) for t in latency_inputs)
                    eager_ms = median_ms(lambda: eager(on_device), sync=sync)
                    measured = [("eager", None, eager_ms)] + [times[k] for k in sorted(times)]
                    for label, fmt_name, ms in measured:
                        latency_rows.append(
                            {
                                "target": target_name,
                                "device": device_name,
                                "runtime": label,
                                "format": fmt_name,
                                "batch": 1,
                                "median_ms": float(f"{ms:.4g}"),
                                "ratio_to_eager": float(f"{ms / eager_ms:.4g}") if eager_ms > 0 else None,
                            }
                        )
    return zmanifest.sort_rows(rows), latency_rows
