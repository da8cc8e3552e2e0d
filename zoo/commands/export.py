"""`zoo export` and `zoo verify` (loaded lazily by cli.py; torch is imported inside)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from zoo.errors import UsageError, ZooError

FORMAT_NAMES = ("torchscript", "onnx", "pt2")


def _batch_sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(f"--batch-sizes {text!r}: give positive integers separated by commas, e.g. 1,4")
    return sorted(set(sizes))


def _log(message: str) -> None:
    click.echo(message, err=True)


def _fmt_num(value: Any) -> str:
    return "-" if value is None else f"{value:.2e}"


def render(report: dict[str, Any]) -> str:
    """The parity table (format x runtime x device x batch) and the latency table."""
    lines = []
    header = ("TARGET", "FORMAT", "RUNTIME", "DEVICE", "BATCH", "MAX_ABS", "MAX_REL", "RTOL", "ATOL", "RESULT")
    table = [header]
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
                _fmt_num(row["max_abs"]),
                _fmt_num(row["max_rel"]),
                f"{row['rtol']:g}",
                f"{row['atol']:g}",
                result,
            )
        )
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header) - 1)]
    for r in table:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])

    latency = report.get("latency") or []
    if latency:
        known = ("eager", "torchscript", "onnxruntime", "aotinductor", "cpp:torchscript", "cpp:pt2", "node:onnx")
        present = {r["runtime"] for r in latency}
        runtimes = [rt for rt in known if rt in present] + sorted(present - set(known))
        lines.append("")
        lines.append("median latency at batch 1, ms (ratio to eager PyTorch):")
        table = [("TARGET", "DEVICE", *[rt.upper() for rt in runtimes])]
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
            table.append((target, device, *cells))
        widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
        for r in table:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _summary(report: dict[str, Any], where: str) -> str:
    rows = report["parity"]
    ran = [r for r in rows if r["status"] != "skipped"]
    failed = [r for r in ran if not r["passed"]]
    skipped: dict[str, str] = {}
    for r in rows:
        if r["status"] == "skipped":
            skipped.setdefault(r["device"], r["reason"])
    tail = "".join(f"; {device} rows skipped: {reason}" for device, reason in skipped.items())
    if report["passed"]:
        return f"parity passed: {len(ran)} checks{tail}"
    if not ran:
        return f"no parity check ran{tail}"
    return f"parity FAILED: {len(failed)} of {len(ran)} checks ({where}){tail}"


@click.command("export")
@click.argument("plugin_name", metavar="PLUGIN")
@click.option("--torchscript", is_flag=True, help="export TorchScript (<target>.torchscript)")
@click.option("--onnx", is_flag=True, help="export ONNX (<target>.onnx)")
@click.option(
    "--pt2",
    is_flag=True,
    help="export AOTInductor packages (<target>.cpu.pt2, <target>.cuda.pt2 where CUDA exists); compiles C++, ~30 s per target",
)
@click.option("--all-formats", is_flag=True, help="torchscript, onnx and pt2")
@click.option("--format", "format_names", multiple=True, metavar="NAME", help="a format by name (torchscript, onnx, pt2); repeatable")
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
@click.option("--opset", type=click.INT, default=None, help="ONNX opset [default: the newest both torch.onnx and onnxruntime support]")
@click.option("--batch-sizes", default="1,4", show_default=True, help="batch sizes of the parity checks")
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
@click.option("--json", "as_json", is_flag=True, help="print the manifest (export.json) instead of the table")
def export_command(
    plugin_name: str,
    torchscript: bool,
    onnx: bool,
    pt2: bool,
    all_formats: bool,
    format_names: tuple[str, ...],
    targets: tuple[str, ...],
    checkpoint: str | None,
    weights: str | None,
    random_init: bool,
    config_pairs: tuple[str, ...],
    seed: int,
    out: str | None,
    opset: int | None,
    batch_sizes: str,
    export_batch: int,
    device: str,
    no_latency: bool,
    as_json: bool,
) -> None:
    """Export PLUGIN's targets and prove each file computes what PyTorch computes.

    \b
    Formats: with no format option, TorchScript and ONNX. `--pt2` (or --all-formats)
    adds AOTInductor .pt2 packages, which compile C++ and take about half a minute
    per target. Weights: --checkpoint, --weights or --random-init; with none, the
    newest `zoo train` run of PLUGIN. Every artifact is reloaded and compared with
    eager PyTorch on each device and batch size; exit 0 only if every check passed,
    1 on a mismatch (files and export.json stay, marked failed), 2 on bad usage.
    Exporting again into a directory holding an export of the same weights adds
    to its export.json (e.g. a later --pt2), so `zoo verify DIR` checks them all.
    """
    from zoo import _registry
    from zoo import config as zconfig
    from zoo.export import pipeline

    started = time.perf_counter()
    plugin = _registry.get_plugin(plugin_name)
    formats = [name for name, flag in zip(FORMAT_NAMES, (torchscript, onnx, pt2)) if flag]
    for name in format_names:
        if name.lower() not in FORMAT_NAMES:
            raise UsageError(f"unknown format {name!r} (formats: {', '.join(FORMAT_NAMES)})")
        formats.append(name.lower())
    if all_formats:
        formats = list(FORMAT_NAMES)
    if not formats:
        from zoo.export.formats import DEFAULT_FORMATS

        formats = list(DEFAULT_FORMATS)
    formats = [f for f in FORMAT_NAMES if f in formats]
    if opset is not None and "onnx" not in formats:
        raise UsageError("--opset applies to ONNX; add --onnx (or drop the format options)")
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
        formats=formats,
        out_dir=out_dir,
        opset=opset,
        batch_sizes=sizes,
        device_plan=plan,
        export_batch=export_batch,
        latency=not no_latency,
        data_info=built.data_info,
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


@click.command("verify")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--device", default="all", show_default=True, help="cpu, cuda, cuda:N or all (CUDA rows show as skipped where there is none)")
@click.option(
    "--runtime",
    "runtime_spec",
    default="python",
    show_default=True,
    help="python (in-process), cpp (zoo-run: TorchScript, .pt2), node (onnxruntime-node: ONNX), all, or a comma list",
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
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def verify_command(
    directory: str,
    device: str,
    runtime_spec: str,
    batch_sizes: str | None,
    checkpoint: str | None,
    weights: str | None,
    no_latency: bool,
    as_json: bool,
) -> None:
    """Re-run the parity checks of an export directory (DIR/export.json).

    Rebuilds the eager model from the recorded checkpoint or weights, refuses any
    artifact whose sha256 changed since export, and compares every artifact with
    eager PyTorch on each device, batch size and runtime. Exit 0 only if every check
    passed; 1 on a mismatch or a modified artifact; 2 on bad usage."""
    from zoo.export import pipeline

    names = [r.strip().lower() for r in runtime_spec.split(",") if r.strip()]
    if "all" in names:
        names = list(pipeline.RUNTIMES)
    unknown = [r for r in names if r not in pipeline.RUNTIMES]
    if unknown or not names:
        raise UsageError(f"--runtime {runtime_spec!r}: choose from {', '.join(pipeline.RUNTIMES)}, all")
    runtimes = [r for r in pipeline.RUNTIMES if r in names]
    sizes = _batch_sizes(batch_sizes)
    plan = pipeline.plan_devices(device)
    report = pipeline.verify(
        Path(directory),
        device_plan=plan,
        runtimes=runtimes,
        batch_sizes=sizes,
        checkpoint=checkpoint,
        weights=weights,
        latency=not no_latency,
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
