"""The `zoo` command line (installed as `zoo.cli`; `zoo/cli.py` links to this file).

torch is imported only inside commands, so `zoo --help` stays fast. Every failure a
user can cause ends as one line on stderr and a non-zero exit: 2 for usage errors,
1 for failures, 130 for Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import sys
from typing import Any

import click

from zoo.errors import UsageError, ZooError

# Commands that live beside the code they drive; imported only when invoked or listed.
LAZY_COMMANDS: dict[str, str] = {
    "export": "zoo.commands.export:export_command",
    "verify": "zoo.commands.export:verify_command",
    "sample": "zoo.commands.use:sample_command",
    "predict": "zoo.commands.use:predict_command",
    "weights": "zoo.commands.weights:weights_group",
    "evaluate": "zoo.commands.use:evaluate_command",
}


class OneLineError(click.ClickException):
    """Shown as `error: ...` with no usage block."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _available_lazy() -> dict[str, str]:
    out = {}
    for name, target in LAZY_COMMANDS.items():
        module = target.split(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is not installed
            found = False
        if found:
            out[name] = target
    return out


class ZooGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_available_lazy()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        target = _available_lazy().get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise OneLineError(exc.format_message(), 2) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ZooError as exc:
            raise OneLineError(str(exc), exc.exit_code) from None
        except click.UsageError as exc:
            raise OneLineError(exc.format_message(), exc.exit_code) from None
        except KeyboardInterrupt:
            raise OneLineError("interrupted", 130) from None


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zoo", prog_name="zoo")
def cli() -> None:
    """zoo: train PyTorch models from plugins, export them to TorchScript, ONNX and
    .pt2, and prove the exported files compute what PyTorch computes."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. Commands may return an int exit status."""
    try:
        rv = cli.main(args=argv, prog_name="zoo", standalone_mode=False)
    except click.ClickException as exc:
        from zoo.engine.launch import report_error

        if not report_error(exc.format_message(), exc.exit_code):  # a process of --nproc: the launcher prints it once
            exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, in zoo or in a plugin: one line, the traceback on request
        if os.environ.get("ZOO_DEBUG"):
            raise
        from zoo.engine.launch import report_error

        text = str(exc).strip().splitlines()
        message = f"unexpected {type(exc).__name__}: {text[0][:300] if text else ''} (ZOO_DEBUG=1 shows the traceback)"
        if not report_error(message, 1):
            click.echo(f"error: {message}", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


# --------------------------------------------------------------------------- list / info / datasets


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the last column runs free."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + str(row[-1]) for row in rows]


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of a table")
def list_command(as_json: bool) -> None:
    """Every installed plugin, where it comes from, and whether it loads."""
    from zoo import _registry
    from zoo.capabilities import capabilities

    rows = []
    for name, entry in _registry.plugins.entries().items():
        p = entry.obj
        rows.append(
            {
                "name": name,
                "summary": p.summary if p else "",
                "task": (p.task or ", ".join(capabilities(p))) if p else "",
                "capabilities": capabilities(p) if p else [],
                "distribution": entry.distribution,
                "version": entry.version,
                "entry_point": entry.value,
                "status": entry.status,
                "error": entry.error,
                "default_dataset": p.default_dataset if p else None,
                "datasets": list(p.datasets) if p else [],
                "export_targets": [t.name for t in p.export_targets] if p else [],
                "weights": [w.name for w in p.weights] if p else [],
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no plugins installed (entry-point group 'zoo.plugins')")
        return
    table = [("NAME", "STATUS", "FROM", "TASK", "DATA", "TARGETS", "SUMMARY")]
    for r in rows:
        table.append(
            (
                r["name"],
                r["status"],
                f"{r['distribution']} {r['version']}",
                r["task"] or "-",
                r["default_dataset"] or "-",
                ",".join(r["export_targets"]) or "-",
                r["summary"] if r["status"] == "ok" else f"error: {r['error']}",
            )
        )
    for line in _table(table):
        click.echo(line)


@cli.command("datasets")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of a table")
def datasets_command(as_json: bool) -> None:
    """Every installed dataset: where it comes from, what it yields, whether it needs a
    path, and whether it loads."""
    from zoo import _registry
    from zoo.describe import describe_dataset

    rows = [describe_dataset(entry) for entry in _registry.datasets.entries().values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no datasets installed (entry-point group 'zoo.datasets')")
        return
    table = [("NAME", "STATUS", "FROM", "--data", "YIELDS", "SUMMARY")]
    for r in rows:
        usage = f"{r['name']}:PATH" if r["needs_path"] else r["name"]
        yields = ", ".join(f"{t['name']} {t['dtype']}[{','.join(map(str, t['shape']))}]" for t in r["yields"]) or "-"
        table.append(
            (
                r["name"],
                r["status"],
                f"{r['distribution']} {r['version']}",
                usage,
                yields,
                r["summary"] if r["status"] == "ok" else f"error: {r['error']}",
            )
        )
    for line in _table(table):
        click.echo(line)


@cli.command("info")
@click.argument("plugin_name", metavar="PLUGIN")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def info_command(plugin_name: str, as_json: bool) -> None:
    """Hyperparameters, data, weights and export targets of PLUGIN."""
    from zoo import _registry
    from zoo.describe import describe

    defaults = None
    try:  # the installed export formats, where zoo.export is installed
        from zoo.export import format as export_format

        defaults = {f.name: f.default_exporter for f in export_format.installed()}
    except ImportError:
        pass
    d = describe(_registry.get_plugin(plugin_name), format_defaults=defaults)
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    click.echo(f"{d['name']} ({d['distribution']} {d['version']}): {d['summary']}")
    click.echo(f"task: {d['task'] or '-'}    can: {', '.join(d['capabilities'])}    reference: {d['reference']}")
    click.echo(f"datasets: {', '.join(d['datasets'])} (default: {d['default_dataset']})")
    click.echo("data: " + ", ".join(f"{t['name']} ({t['kind']}: {t['dtype']} {t['shape']})" for t in d["data_request"]["tensors"]))
    click.echo("hyperparameters:")
    rows = []
    for h in d["hyperparameters"]:
        extra = f" {{{'|'.join(map(str, h['choices']))}}}" if "choices" in h else (f" {h['range']}" if h.get("range") else "")
        rows.append((h["option"], h["type"], f"default {h['default']!s}{extra}", h["help"]))
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    click.echo("weights:" + ("" if d["weights"] else " none"))
    for w in d["weights"]:
        alias = "  (DEFAULT)" if w["name"] == d["default_weights"] else ""
        click.echo(f"  {w['name']}{alias}  sha256 {w['sha256'][:12]}  {w['source']}")
    click.echo("export targets:" + ("" if d["export_targets"] else " none"))
    for t in d["export_targets"]:
        ins = ", ".join(
            f"{i['name']} {i['dtype']}{i['shape']}"
            + (f" in {i['value_range']}" if i.get("value_range") and i["dtype"].startswith(("int", "uint")) else "")
            for i in t["inputs"]
        )
        outs = ", ".join(f"{o['name']} {o.get('dtype', '')}{o.get('shape', '')}" for o in t["outputs"])
        click.echo(f"  {t['name']}: {ins} -> {outs}" + (f"    ({t['description']})" if t["description"] else ""))
        notes = [f"{fmt} via {how}" for fmt, how in t["exporters"].items() if how != t["default_exporters"].get(fmt)]
        notes += [f"no {fmt}: {why}" for fmt, why in t["skip_formats"].items()]
        if t["axis_sizes"]:
            notes.append("parity at " + ", ".join(f"{axis} {sizes}" for axis, sizes in t["axis_sizes"].items()))
        if t.get("max_sizes"):
            notes.append("at most " + ", ".join(f"{axis} {size}" for axis, size in t["max_sizes"].items()))
        if t.get("task_check"):
            task = t["task_check"]
            agree = ""
            if task.get("decisions"):
                agree = f"; {task['decisions']}" + ("" if task["min_agreement"] is None else f", {task['min_agreement']:.0%} agreeing")
            notes.append(f"task parity: {task['metric']} within {task['max_change']:g} relative{agree} ({task.get('description', '')})")
        for note in notes:
            click.echo(f"    {note}")


# --------------------------------------------------------------------------- train

GENERIC_HPARAMS = ("epochs", "batch_size", "lr")


class FieldType(click.ParamType):
    """A hyperparameter's value parsed by `zoo.config` (ints, floats, strings, lists
    such as 256,128), so the CLI and recorded commands read values the same way."""

    def __init__(self, field: Any):
        self.field = field
        # click's own names, so --help reads `--hidden INTEGER` as for click.INT
        self.name = {int: "integer", float: "float", str: "text"}.get(field.kind, "list")

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from zoo import config as zconfig

        if not isinstance(value, str):
            return value
        try:
            parsed = zconfig.parse_value(self.field, value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.field.choices and parsed not in self.field.choices:
            self.fail(f"{value!r} is not one of {', '.join(map(str, self.field.choices))}", param, ctx)
        return parsed


def hparam_options(plugin: Any) -> list[click.Option]:
    """One real click option per config field, with its type, default, range and help.
    Defaults stay None so only what the user typed overrides a resumed config."""
    from zoo import config as zconfig

    options = []
    for f in zconfig.fields(plugin.config_class):
        if f.name in GENERIC_HPARAMS:
            continue
        bounds = f" {f.describe_range()}" if f.bounds else ""
        if f.kind is bool:
            options.append(
                click.Option(
                    [f"{f.option}/--no-{f.option[2:]}", f.name], default=None, help=f"{f.help} [default: {'on' if f.default else 'off'}]"
                )
            )
        else:
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            choices = f" {{{'|'.join(map(str, f.choices))}}}" if f.choices else ""
            options.append(
                click.Option([f.option, f.name], type=FieldType(f), default=None, help=f"{f.help} [default: {shown}{choices}{bounds}]")
            )
    return options


class TrainCommand(click.Command):
    """`zoo train PLUGIN ...`: the plugin's hyperparameters become options once the
    plugin is known, so `zoo train vae --help` shows them with types and defaults."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.base_params = list(self.params)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from zoo import _registry

        self.params = list(self.base_params)
        ctx.meta["zoo.argv"] = list(args)  # for --nproc, which starts processes with the same arguments
        name = next((a for a in args if not a.startswith("-")), None)
        plugin = None
        if name is not None:
            plugin = _registry.get_plugin(name)
            self.params += hparam_options(plugin)
            defaults = plugin.config()
            for p in self.params:
                if p.name in GENERIC_HPARAMS and isinstance(p, click.Option):
                    p.help = (p.help or "").split(" [default")[0] + f" [default: {getattr(defaults, p.name)}]"
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if plugin is None:
                raise
            valid = ", ".join("--" + f.name.replace("_", "-") for f in dataclasses.fields(plugin.config_class))
            raise UsageError(f"{exc.format_message()}; hyperparameters of {plugin.name}: {valid}") from None


@cli.command("train", cls=TrainCommand, context_settings={"show_default": False})
@click.argument("plugin_name", metavar="PLUGIN")
@click.option("--epochs", type=click.INT, default=None, help="passes over the training split")
@click.option(
    "--max-steps", type=click.INT, default=None, help="stop after this many optimisation steps in all (a schedule stays the full run's)"
)
@click.option("--batch-size", "batch_size", type=click.INT, default=None, help="samples per step")
@click.option("--lr", type=click.FLOAT, default=None, help="learning rate")
@click.option("--data", default=None, help="dataset: NAME or NAME:PATH, e.g. digits, mnist:PATH (see zoo datasets) [default: the plugin's]")
@click.option("--download", is_flag=True, help="download the dataset if it is missing (datasets that can; needs internet)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option(
    "--seed", type=click.INT, default=None, help="seed for weights, batch order and noise [default: 0; a resumed run keeps its own]"
)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="run directory [default: a new runs/PLUGIN/NNN]")
@click.option("--resume", type=click.Path(dir_okay=False), default=None, help="continue from a last.pt checkpoint")
@click.option("--overwrite", is_flag=True, help="replace the run an existing --out directory holds (refused otherwise)")
@click.option("--weights", default=None, help="initialise from pretrained weights: a NAME of the plugin's table or a file PATH")
@click.option("--progress", type=click.Choice(["auto", "bar", "lines", "none"]), default="auto", show_default=True, help="progress display")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="training processes on this machine (data-parallel; --batch-size is per process; several machines: torchrun)",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16-mixed", "fp16-mixed"]),
    default=None,
    help="autocast precision of the steps; weights and checkpoints stay fp32 [default: fp32; on --resume, the run's]",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    default=None,
    help="torch.compile the trained modules (the first step compiles: first_step_seconds) [on --resume: as the run did]",
)
@click.option(
    "--channels-last", is_flag=True, default=None, help="NHWC memory order for convolutional plugins [on --resume: as the run did]"
)
@click.option(
    "--data-mode",
    type=click.Choice(["auto", "memory", "stream"]),
    default="auto",
    show_default=True,
    help="hold the decoded data in memory, or decode it lazily in DataLoader workers (auto: by size, ZOO_DATA_MEMORY)",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for torch [default: torch's, one per core; cores / N for each of --nproc N]; 1 on a machine others are using",
)
def train_command(
    plugin_name: str,
    nproc: int,
    precision: str | None,
    compile_: bool | None,
    channels_last: bool | None,
    data_mode: str,
    overwrite: bool,
    max_steps: int | None,
    data: str | None,
    download: bool,
    device: str,
    seed: int | None,
    out: str | None,
    resume: str | None,
    weights: str | None,
    progress: str,
    threads: int | None,
    **hparams: Any,
) -> None:
    """Train PLUGIN; writes last.pt, config.json and metrics.jsonl to the run directory.

    The plugin's own hyperparameters are options too: see `zoo train PLUGIN --help`."""
    from zoo import _registry, checkpoint, engine
    from zoo import config as zconfig

    plugin = _registry.get_plugin(plugin_name)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from zoo.engine.launch import launch

        argv = list(click.get_current_context().meta.get("zoo.argv", []))
        launch(["train", *_without_option(argv, "--nproc")], nproc, threads)
        return
    threads = threads or (int(os.environ["ZOO_PROCESS_THREADS"]) if "ZOO_PROCESS_THREADS" in os.environ else None)
    if threads is not None:
        import torch

        # torch's default, one thread per core, slows down badly when other processes
        # want those cores too (pix2pix: 66 s an epoch idle, up to twice that shared).
        torch.set_num_threads(threads)
    given = {k: v for k, v in hparams.items() if v is not None}
    if resume is not None:
        state = checkpoint.load(resume, plugin=plugin.name, training=True)
        base = dict(state["config"])
        changed = sorted(
            k
            for k in given
            if k not in ("epochs",) and zconfig.coerce(_field(plugin, k), given[k]) != zconfig.coerce(_field(plugin, k), base.get(k))
        )
        if changed:
            raise UsageError(
                f"--resume keeps the checkpoint's hyperparameters; only --epochs may change (got {', '.join('--' + c.replace('_', '-') for c in changed)})"
            )
        base.update(given)
        config = zconfig.from_dict(plugin.config_class, base, plugin=plugin.name)
    else:
        config = zconfig.from_dict(plugin.config_class, given, plugin=plugin.name)
    result = engine.train(
        plugin,
        config,
        data=data,
        device=device,
        seed=seed,
        out=out,
        resume=resume,
        max_steps=max_steps,
        weights=weights,
        download=download,
        progress=progress,
        overwrite=overwrite,
        precision=precision,
        compile=compile_,
        channels_last=channels_last,
        data_mode=data_mode,
    )
    if os.environ.get("RANK", "0") == "0":  # one line from a data-parallel run too
        click.echo(f"wrote {result.out_dir} (checkpoint {result.checkpoint})")


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == option:
            skip = True
        elif not word.startswith(option + "="):
            out.append(word)
    return out


def _field(plugin: Any, name: str) -> Any:
    from zoo import config as zconfig

    return next(f for f in zconfig.fields(plugin.config_class) if f.name == name)


if __name__ == "__main__":
    main()
