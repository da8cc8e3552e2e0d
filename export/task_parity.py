"""Task-level parity: each artifact judged on real data by its target's `TaskCheck`.

For every artifact whose target declares a `task_check` (`zoo.tasks.TaskCheck`),
the check's metric is computed over the validation split of the plugin's data (or a
fixed set of noise inputs) twice, through the eager module and through the artifact
in each runtime and device checked. A row passes when the metric moved by at most the
check's relative bound and, where the check has decisions (predicted classes), when
enough of them agree. Rows land in export.json as `task_parity`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, ZooError
from zoo.export import runtime as zruntime
from zoo.export.manifest import with_status
from zoo.export.parity_runner import DevicePlan, record_format, runs_on
from zoo.plugin import ExportTarget, Plugin
from zoo.tasks import Measure, TaskCheck, TaskContext

Log = Callable[[str], None]
NOISE_SEED = 0


def _quiet_log(message: str) -> None:
    pass


def row(target: str, fmt: str, runtime: str, device: str, check: TaskCheck, **fields: Any) -> dict[str, Any]:
    """One task-parity row; `status` follows `passed` (None: skipped, with the reason)."""
    out: dict[str, Any] = {
        "target": target,
        "format": fmt,
        "runtime": runtime,
        "device": device,
        "metric": check.metric,
        "eager": None,
        "artifact": None,
        "delta": None,
        "bound": check.max_change,
        "agreement": None,
        "min_agreement": check.min_agreement,
        "samples": None,
        "passed": None,
        "status": "skipped",
        "reason": "",
    }
    return with_status(out, fields)


def overall_passed(rows: Sequence[dict[str, Any]]) -> bool:
    """No task row failed (skipped rows and no rows at all do not fail an export)."""
    return all(r["passed"] is not False for r in rows)


class Batches:
    """The inputs a check runs on, on the CPU: validation batches or fixed noise."""

    def __init__(self, plugin: Plugin, config: Any, data_info: Any, data: str | None, explicit: bool):
        self.plugin, self.config, self.data_info = plugin, config, data_info
        self.data, self.explicit = data or plugin.default_dataset, explicit
        self._val: Any = None
        self._error: str | None = None

    def validation(self) -> Any:
        """The validation split, or a ZooError saying why there is none to use."""
        from zoo import datasets

        if self._val is None and self._error is None:
            try:
                splits = datasets.load(self.data, self.plugin.data_request(self.config), plugin=self.plugin.name)
            except ZooError as exc:
                if self.explicit:
                    raise
                self._error = f"--data {self.data} could not be loaded ({exc}); pass --data SPEC"
            else:
                mismatch = _mismatch(self.data_info, splits.info)
                if mismatch:
                    self._error = f"--data {self.data}: {mismatch}"
                    if self.explicit:
                        raise UsageError(self._error)
                else:
                    self._val = splits.val
        if self._error is not None:
            raise ZooError(self._error)
        return self._val

    def for_check(self, target: ExportTarget, check: TaskCheck) -> list[dict[str, Any]]:
        import torch

        if check.source == "noise":
            if self.plugin.sample_inputs is None:
                raise ZooError(f"plugin {self.plugin.name!r} has no sample_inputs to draw the noise of the task check from")
            inputs = self.plugin.sample_inputs(self.config, check.samples, None, torch.Generator().manual_seed(NOISE_SEED))
            names = [s.name for s in target.inputs]
            return [
                dict(zip(names, (t[begin : begin + check.batch_size] for t in inputs)))
                for begin in range(0, int(check.samples), check.batch_size)
            ]
        split = self.validation()
        out, taken = [], 0
        for batch in split.batches(check.batch_size):
            if check.samples is not None and taken >= check.samples:
                break
            if check.samples is not None and taken + len(next(iter(batch.values()))) > check.samples:
                batch = {k: v[: check.samples - taken] for k, v in batch.items()}
            taken += len(next(iter(batch.values())))
            out.append({k: v.cpu() for k, v in batch.items()})
        return out


def _mismatch(model_info: Any, data_info: Any) -> str | None:
    """Why the data cannot judge this model (another vocabulary, more classes), or None."""
    if model_info is None:
        return None
    if model_info.vocabulary and data_info.vocabulary and tuple(model_info.vocabulary) != tuple(data_info.vocabulary):
        return "its vocabulary differs from the one the model was trained on"
    if model_info.num_classes and data_info.num_classes and data_info.num_classes > model_info.num_classes:
        return f"it has {data_info.num_classes} classes, the model {model_info.num_classes}"
    return None


def make_judge(plugin: Plugin, target: ExportTarget, config: Any, data_info: Any, check: TaskCheck, device: Any) -> Callable:
    """`judge(images) -> class scores`: the check's classifier, its input made from the
    generator's images (their value range mapped to [0, 1], then to what it asks for)."""
    import torch

    from zoo import _registry, models
    from zoo.data import Images, to_request

    judge_plugin = _registry.get_plugin(check.judge[0])
    try:
        built = models.build_model(judge_plugin, weights=check.judge[1])
    except ZooError as exc:
        raise ZooError(f"the judge {check.judge[0]} {check.judge[1]} is not available: {exc}") from None
    judge_target = judge_plugin.target(judge_plugin.predict_target)
    module = judge_target.module(built.model.to(device)).eval()
    spec = judge_plugin.data_request(built.config).get(judge_target.inputs[0].name)
    if not isinstance(spec, Images):
        raise ZooError(f"the judge {judge_plugin.name} does not take images")
    lo, hi = target.outputs[0].resolved_range(config, data_info) or (0.0, 1.0)

    def judge(images: torch.Tensor) -> torch.Tensor:
        unit = ((images.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
        return module(to_request(unit, spec))

    return judge


def _metric(measures: list[Measure]) -> tuple[float, int, Any]:
    import torch

    total = sum(m.total for m in measures)
    count = sum(m.count for m in measures)
    decisions = [m.decisions for m in measures if m.decisions is not None]
    return total / count if count else math.nan, count, (torch.cat([d.flatten().cpu() for d in decisions]) if decisions else None)


def measure_all(check: TaskCheck, run: Callable[..., tuple], batches: list[dict[str, Any]], context: TaskContext, device: Any):
    import torch

    with torch.inference_mode():
        return _metric([check.measure(run, {k: v.to(device) for k, v in b.items()}, context) for b in batches])


def judge_row(check: TaskCheck, eager: tuple[float, int, Any], artifact: tuple[float, int, Any]) -> dict[str, Any]:
    """The fields of a row comparing the eager metric with the artifact's."""
    e, count, e_decisions = eager
    a, _, a_decisions = artifact
    delta = abs(a - e) / abs(e) if e else abs(a - e)
    fields: dict[str, Any] = {"eager": e, "artifact": a, "delta": delta, "samples": count}
    problems = []
    if not math.isfinite(a) or not delta <= check.max_change:
        problems.append(f"{check.metric} moved from {e:.6g} to {a:.6g} (relative {delta:.2g} > {check.max_change:g})")
    if e_decisions is not None and a_decisions is not None:
        agreement = float((e_decisions == a_decisions).float().mean()) if len(e_decisions) == len(a_decisions) else 0.0
        fields["agreement"] = agreement
        if check.min_agreement is not None and agreement < check.min_agreement:
            differ = int((e_decisions != a_decisions).sum()) if len(e_decisions) == len(a_decisions) else len(e_decisions)
            problems.append(f"{differ} of {len(e_decisions)} decisions differ (agreement {agreement:.4%} < {check.min_agreement:.2%})")
    fields["passed"] = not problems
    fields["reason"] = "; ".join(problems)
    return fields


def run_task_parity(
    plugin: Plugin,
    model: Any,
    config: Any,
    directory: Path,
    records: list[dict[str, Any]],
    device_plan: DevicePlan,
    runtimes: Sequence[str] = ("python",),
    data: str | None = None,
    explicit_data: bool = False,
    data_info: Any = None,
    log: Log = _quiet_log,
) -> list[dict[str, Any]]:
    """Task-parity rows for every record whose target declares a `TaskCheck`, in every
    runtime that runs it and every device of the plan."""
    import copy

    import torch

    from zoo.export.parity import strict_fp32
    from zoo.export_support import as_tuple

    chosen = [zruntime.get(name) for name in runtimes]
    batches_of = Batches(plugin, config, data_info, data, explicit_data)
    rows: list[dict[str, Any]] = []
    by_target: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_target.setdefault(record["target"], []).append(record)
    models = {"cpu": model}
    for target_name, target_records in by_target.items():
        target = plugin.target(target_name)
        check = target.task_check
        if check is None:
            continue
        pairs = [(r, rt) for r in target_records for rt in chosen if rt.runs(r["format"])]
        try:
            batches = batches_of.for_check(target, check)
        except ZooError as exc:
            if explicit_data and check.source == "validation":
                raise  # the data the user named cannot judge this model: say so, do not skip
            rows += [row(target_name, r["format"], rt.name, d, check, reason=str(exc)) for r, rt in pairs for d, _dev, _s in device_plan]
            continue
        log(f"task parity of {target_name}: {check.metric} on {check.source} ({sum(len(next(iter(b.values()))) for b in batches)} samples)")
        for device_name, device, skip in device_plan:
            here = [(r, rt) for r, rt in pairs if runs_on(r, record_format(r), device_name)]
            if skip is not None:
                rows += [row(target_name, r["format"], rt.name, device_name, check, reason=skip) for r, rt in here]
                continue
            if device_name not in models:
                models[device_name] = copy.deepcopy(model).to(device)
            eager_model = models[device_name].eval()
            module = target.module(eager_model).eval()
            with strict_fp32(device.type):
                try:
                    judge = make_judge(plugin, target, config, data_info, check, device) if check.judge else None
                    context = TaskContext(eager_model, config, data_info, judge)
                    eager = measure_all(check, lambda *xs: as_tuple(module(*xs)), batches, context, device)
                except ZooError as exc:  # no judge here, or data it cannot take: nothing to compare
                    rows += [row(target_name, r["format"], rt.name, device_name, check, reason=str(exc)) for r, rt in here]
                    continue
                for record, runtime in here:
                    base = {"target": target_name, "fmt": record["format"], "runtime": runtime.name, "device": device_name}
                    fmt = record_format(record)
                    reason = runtime.skip_reason(device_name) or (runtime.format_skip_reason(fmt, device_name) if fmt else None)
                    if reason is not None:
                        rows.append(row(**base, check=check, reason=reason))
                        continue
                    try:
                        session = runtime.open(directory / record["path"], device)

                        def run(*inputs: Any, session: Any = session) -> tuple:
                            outputs = session.run(list(inputs))
                            return tuple(torch.as_tensor(o).to(device) for o in outputs.values())

                        artifact = measure_all(check, run, batches, context, device)
                    except ZooError as exc:
                        rows.append(row(**base, check=check, passed=False, reason=str(exc)))
                        continue
                    rows.append(row(**base, check=check, **judge_row(check, eager, artifact)))
    return sort_rows(rows)


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In the parity table's order: target, format, runtime, device."""
    from zoo.export import format as zformat

    order = zruntime.names()

    def key(r: dict[str, Any]) -> tuple:
        return (
            r["target"],
            zformat.order_key(r["format"]),
            order.index(r["runtime"]) if r["runtime"] in order else len(order),
            r["device"],
        )

    return sorted(rows, key=key)
