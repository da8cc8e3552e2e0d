"""`zoo export` and `zoo verify` (loaded lazily by cli.py; torch is imported inside).

The format flags (`--torchscript`, `--onnx`, `--pt2`, one per installed format) and
the `--runtime` choices come from the `zoo.formats` and `zoo.runtimes` registries.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from zoo.errors import UsageError, ZooError


def _batch_sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(f"--batch-sizes {text!r}: give positive integers separated by commas, e.g. 1,2,5")
    return sorted(set(sizes))


def _log(message: str) -> None:
    click.echo(message, err=True)


def _fmt_num(value: Any) -> str:
    return "-" if value is None else f"{value:.2e}"


def _axes(row: dict[str, Any]) -> str:
    axes = row.get("axes") or {}
    return " ".join(f"{axis}={size}" for axis, size in axes.items()) or "-"


def _table(rows: list[tuple[str, ...]], last_free: bool) -> list[str]:
    """Columns padded to their widest cell (the last one left as it is)."""
    count = len(rows[0]) - (1 if last_free else 0)
    widths = [max(len(str(r[i])) for r in rows) for i in range(count)]
    lines = []
    for r in rows:
        cells = "  ".join(str(c).ljust(w) for c, w in zip(r, widths))
        lines.append((cells + "  " + r[-1]) if last_free else cells.rstrip())
    return lines


def _metric_value(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}"


def _task_table(rows: list[dict[str, Any]]) -> list[str]:
    """Task-level parity: each artifact's metric on real data beside eager PyTorch's."""
    if not rows:
        return []
    table = [
        ("TARGET", "FORMAT", "RUNTIME", "DEVICE", "METRIC", "SAMPLES", "EAGER", "ARTIFACT", "REL_CHANGE", "BOUND", "AGREEMENT", "RESULT")
    ]
    for row in rows:
        if row["status"] == "skipped":
            result = f"skipped: {row['reason']}"
        elif row["passed"]:
            result = "pass"
        else:
            result = f"FAIL: {row['reason']}"
        agreement = "-" if row.get("agreement") is None else f"{row['agreement']:.2%}"
        table.append(
            (
                row["target"],
                row["format"],
                row["runtime"],
                row["device"],
                row["metric"],
                "-" if row.get("samples") is None else str(row["samples"]),
                _metric_value(row["eager"]),
                _metric_value(row["artifact"]),
                _fmt_num(row["delta"]),
                f"{row['bound']:g}",
                agreement,
                result,
            )
        )
    head = "task-level parity: each target's metric on its data, through eager PyTorch and through the artifact:"
    return ["", head, *_table(table, last_free=True)]


def render(report: dict[str, Any]) -> str:
    """The parity table (format x runtime x device x batch [x axis sizes]) and the latency table."""
    with_axes = any(row.get("axes") for row in report["parity"])
    header = ("TARGET", "FORMAT", "RUNTIME", "DEVICE", "BATCH", *(("AXES",) if with_axes else ()), "MAX_ABS", "MAX_REL", "RTOL", "ATOL")
    table = [(*header, "RESULT")]
    for row in report["parity"]:
        if row["status"] == "skipped":
            result = f"skipped: {row['reason']}"
        elif row["passed"]:
            result = "pass"
        else:
            result = f"FAIL: {row['reason']}"
        table.append(
            (
                row["target"],
                row["format"],
                row["runtime"],
                row["device"],
                "-" if row["batch"] is None else str(row["batch"]),
                *((_axes(row),) if with_axes else ()),
                _fmt_num(row["max_abs"]),
                _fmt_num(row["max_rel"]),
                f"{row['rtol']:g}",
                f"{row['atol']:g}",
                result,
            )
        )
    lines = _table(table, last_free=True)
    lines += _task_table(report.get("task_parity") or [])
    if report.get("localization"):
        from zoo.export.localize import describe

        lines += ["", "where the artifacts depart from eager PyTorch (per submodule, on the CPU):"]
        lines += [f"  {describe(entry)}" for entry in report["localization"]]

    latency = report.get("latency") or []
    if latency:
        runtimes: list[str] = []
        for r in latency:  # the runner emits eager first, then runtimes and formats in registry order
            if r["runtime"] not in runtimes:
                runtimes.append(r["runtime"])
        lines.append("")
        lines.append("median latency at batch 1, ms (ratio to eager PyTorch):")
        rows = [("TARGET", "DEVICE", *[rt.upper() for rt in runtimes])]
        groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for r in latency:
            groups.setdefault((r["target"], r["device"]), {})[r["runtime"]] = r
        for (target, device), by_runtime in groups.items():
            cells = []
            for rt in runtimes:
                r = by_runtime.get(rt)
                if r is None:
                    cells.append("-")
                elif rt == "eager":
                    cells.append(f"{r['median_ms']:.3f}")
                else:
                    cells.append(f"{r['median_ms']:.3f} ({r['ratio_to_eager']:.2f}x)")
            rows.append((target, device, *cells))
        lines += _table(rows, last_free=False)
    return "\n".join(lines)


def _summary(report: dict[str, Any], where: str) -> str:
    rows = report["parity"]
    ran = [r for r in rows if r["status"] != "skipped"]
    failed = [r for r in ran if not r["passed"]]
    # One clause per skipped device (its first reason) and per format a target opts out of.
    skipped: dict[str, str] = {}
    for r in rows:
        if r["status"] == "skipped":
            label = f"{r['target']} {r['format']}" if r["reason"].startswith("target opts out") else r["device"]
            skipped.setdefault(label, r["reason"])
    tail = "".join(f"; {label} rows skipped: {reason}" for label, reason in skipped.items())
    tasks = report.get("task_parity") or []
    task_ran = [r for r in tasks if r["status"] != "skipped"]
    task_failed = [r for r in task_ran if not r["passed"]]
    task_skipped = len(tasks) - len(task_ran)
    task_note = f", task parity {len(task_ran) - len(task_failed)} of {len(task_ran)} passed" if tasks else ""
    if task_skipped:
        task_note += f" ({task_skipped} skipped)"
    if report["passed"]:
        return f"parity passed: {len(ran)} checks{task_note}{tail}"
    if not ran:
        return f"no parity check ran{tail}"
    if not failed:
        return f"task parity FAILED: {len(task_failed)} of {len(task_ran)} ({where}){tail}"
    return f"parity FAILED: {len(failed)} of {len(ran)} checks{task_note} ({where}){tail}"


class ExportCommand(click.Command):
    """`zoo export`, with one `--NAME` flag per installed export format."""

    _flags: dict[tuple[str, ...], list[click.Option]] = {}

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from zoo.export import format as zformat

        params = super().get_params(ctx)
        taken = {opt for p in params for opt in getattr(p, "opts", ())}
        formats = [f for f in zformat.installed() if f"--{f.name}" not in taken]
        key = tuple(f.name for f in formats)
        if key not in self._flags:  # the same objects on every call: click compares parameters by identity
            self._flags[key] = [
                click.Option([f"--{f.name}", f"format_flag_{f.name}"], is_flag=True, help=f.summary or f"export {f.name}") for f in formats
            ]
        return params[:1] + self._flags[key] + params[1:]


def _chosen_formats(flags: dict[str, bool], all_formats: bool, format_names: tuple[str, ...]) -> list[str] | None:
    """The formats asked for by flags, --format and --all-formats, in export order (None: the defaults)."""
    from zoo.export import format as zformat

    chosen = [key.removeprefix("format_flag_") for key, value in flags.items() if value]
    for name in format_names:
        chosen.append(zformat.get(name.lower()).name)
    if all_formats:
        chosen = zformat.names()
    return [f for f in zformat.names() if f in chosen] or None


@click.command("export", cls=ExportCommand)
@click.argument("plugin_name", metavar="PLUGIN")
@click.option("--all-formats", is_flag=True, help="every installed format (torchscript, onnx and pt2)")
@click.option("--format", "format_names", multiple=True, metavar="NAME", help="a format by name (torchscript, onnx, pt2, ...); repeatable")
@click.option("--target", "targets", multiple=True, metavar="NAME", help="export only this target (repeatable) [default: every target]")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="a `zoo train` checkpoint (last.pt)")
@click.option("--weights", default=None, metavar="NAME|PATH", help="pretrained weights: a name from the plugin's table, or a file")
@click.option("--random-init", is_flag=True, help="export untrained weights (seeded by --seed); for trying the toolchain")
@click.option(
    "--config",
    "config_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="with --random-init: a hyperparameter other than its default (repeatable)",
)
@click.option("--seed", type=click.INT, default=0, show_default=True, help="seed of --random-init weights")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="output directory [default: exports/PLUGIN]")
@click.option(
    "--overwrite",
    is_flag=True,
    help="replace an export of other weights in --out (its files are removed first; files of your own stay)",
)
@click.option("--opset", type=click.INT, default=None, help="ONNX opset [default: the newest both torch.onnx and onnxruntime support]")
@click.option(
    "--batch-sizes",
    default="1,2,5",
    show_default=True,
    help="batch sizes of the parity checks (1, 2 and an odd size; a target's declared largest batch is added)",
)
@click.option(
    "--export-batch",
    type=click.INT,
    default=2,
    show_default=True,
    help="batch of the example inputs the graph is captured with (>= 2: torch.export specializes 0 and 1)",
)
@click.option(
    "--device",
    default="all",
    show_default=True,
    help="parity devices: cpu, cuda, cuda:N or all (CUDA rows show as skipped where there is none)",
)
@click.option("--no-latency", is_flag=True, help="skip the batch-1 latency measurements")
@click.option(
    "--data",
    default=None,
    metavar="SPEC",
    help="dataset whose validation split judges each artifact (task parity) [default: the plugin's]",
)
@click.option("--no-task-parity", is_flag=True, help="skip task-level parity (the plugin's metric on real data, eager vs artifact)")
@click.option("--json", "as_json", is_flag=True, help="print the manifest (export.json) instead of the table")
def export_command(
    plugin_name: str,
    all_formats: bool,
    format_names: tuple[str, ...],
    targets: tuple[str, ...],
    checkpoint: str | None,
    weights: str | None,
    random_init: bool,
    config_pairs: tuple[str, ...],
    seed: int,
    out: str | None,
    overwrite: bool,
    opset: int | None,
    batch_sizes: str,
    export_batch: int,
    device: str,
    no_latency: bool,
    data: str | None,
    no_task_parity: bool,
    as_json: bool,
    **format_flags: bool,
) -> None:
    """Export PLUGIN's targets and prove each file computes what PyTorch computes.

    \b
    Formats: with no format option, TorchScript and ONNX. `--pt2` (or --all-formats)
    adds AOTInductor .pt2 packages, which compile C++ and take about half a minute
    per target. A target may opt out of a format (shown as skipped, with its reason).
    Weights: --checkpoint, --weights or --random-init; with none, the newest
    `zoo train` run of PLUGIN. Every artifact is reloaded and compared with eager
    PyTorch on each device, batch size and size of every other dynamic axis; exit 0
    only if every check passed, 1 on a mismatch (files and export.json stay, marked
    failed), 2 on bad usage. Exporting again into a directory holding an export of
    the same weights adds to its export.json (e.g. a later --pt2), so `zoo verify DIR`
    checks them all.
    """
    from zoo import _registry
    from zoo import config as zconfig
    from zoo.export import pipeline

    started = time.perf_counter()
    plugin = _registry.get_plugin(plugin_name)
    formats = pipeline.resolve_formats(_chosen_formats(format_flags, all_formats, format_names))
    if opset is not None and not any("opset" in f.options for f in formats):
        from zoo.export import format as zformat

        takers = [f.name for f in zformat.installed() if "opset" in f.options]
        raise UsageError(f"--opset applies to {', '.join(takers)}; add --{takers[0] if takers else 'onnx'} (or drop the format options)")
    for name in targets:
        plugin.target(name)
    sizes = _batch_sizes(batch_sizes)
    plan = pipeline.plan_devices(device)
    overrides = zconfig.parse_pairs(plugin.config_class, config_pairs, plugin=plugin.name)
    out_dir = Path(out) if out else Path("exports") / plugin.name

    built = pipeline.build_model(
        plugin, checkpoint=checkpoint, weights=weights, random_init=random_init, seed=seed, overrides=overrides, log=_log
    )
    manifest = pipeline.export(
        plugin,
        built.model,
        built.config,
        built.source,
        targets=list(targets) or None,
        formats=[f.name for f in formats],
        out_dir=out_dir,
        opset=opset,
        batch_sizes=sizes,
        device_plan=plan,
        export_batch=export_batch,
        latency=not no_latency,
        data_info=built.data_info,
        task_parity=not no_task_parity,
        data=data or built.trained_on,
        explicit_data=data is not None,
        overwrite=overwrite,
        log=_log,
    )
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        click.echo(render(manifest))
        click.echo("")
        click.echo(
            f"wrote {len(manifest['artifacts'])} artifacts and {pipeline.MANIFEST} to {out_dir} in {time.perf_counter() - started:.1f} s"
        )
    summary = _summary(manifest, f"files kept in {out_dir}; {pipeline.MANIFEST} says failed")
    if not manifest["passed"]:
        raise ZooError(summary)
    if not as_json:
        click.echo(summary)


def _runtimes(spec: str) -> list[str]:
    """`--runtime python,cpp` or `all` -> registered runtime names, in registry order."""
    from zoo.export import runtime as zruntime

    known = zruntime.names()
    names = [r.strip().lower() for r in spec.split(",") if r.strip()]
    if "all" in names:
        names = known
    unknown = [r for r in names if r not in known]
    if unknown or not names:
        raise UsageError(f"--runtime {spec!r}: choose from {', '.join(known)}, all")
    return [r for r in known if r in names]


@click.command("verify")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--device", default="all", show_default=True, help="cpu, cuda, cuda:N or all (CUDA rows show as skipped where there is none)")
@click.option(
    "--runtime",
    "runtime_spec",
    default="python",
    show_default=True,
    help="python (in-process), cpp (zoo-run: TorchScript, .pt2), node (onnxruntime-node: ONNX), any other installed runtime, "
    "all, or a comma list",
)
@click.option("--batch-sizes", default=None, help="batch sizes [default: those in export.json]")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="where the export's checkpoint is now, if it moved (its sha256 must match)",
)
@click.option("--weights", default=None, metavar="NAME|PATH", help="where the export's weights are now, if they moved")
@click.option("--no-latency", is_flag=True, help="skip the batch-1 latency measurements")
@click.option(
    "--data",
    default=None,
    metavar="SPEC",
    help="dataset whose validation split judges each artifact (task parity) [default: the one recorded at export]",
)
@click.option("--no-task-parity", is_flag=True, help="skip task-level parity (the plugin's metric on real data, eager vs artifact)")
@click.option(
    "--localize",
    is_flag=True,
    help="compare every submodule's output in each artifact with eager PyTorch and name the first that diverges "
    "(always done for a failed check)",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def verify_command(
    directory: str,
    device: str,
    runtime_spec: str,
    batch_sizes: str | None,
    checkpoint: str | None,
    weights: str | None,
    no_latency: bool,
    data: str | None,
    no_task_parity: bool,
    localize: bool,
    as_json: bool,
) -> None:
    """Re-run the parity checks of an export directory (DIR/export.json).

    Rebuilds the eager model from the recorded checkpoint or weights, refuses any
    artifact whose sha256 changed since export, and compares every artifact with
    eager PyTorch on each device, batch size, axis size and runtime. Exit 0 only if
    every check passed; 1 on a mismatch or a modified artifact; 2 on bad usage."""
    from zoo.export import verify
    from zoo.export.parity_runner import plan_devices

    runtimes = _runtimes(runtime_spec)
    sizes = _batch_sizes(batch_sizes)
    plan = plan_devices(device)
    report = verify.verify(
        Path(directory),
        device_plan=plan,
        runtimes=runtimes,
        batch_sizes=sizes,
        checkpoint=checkpoint,
        weights=weights,
        latency=not no_latency,
        task_parity=not no_task_parity,
        data=data,
        localize=localize,
        log=_log,
    )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render(report))
        click.echo("")
    summary = _summary(report, f"in {directory}")
    if not report["passed"]:
        raise ZooError(summary)
    if not as_json:
        click.echo(summary)
