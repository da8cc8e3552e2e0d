"""`zoo weights`: list, download, import and export pretrained weights.

`cli.py` imports this module only when `zoo weights` runs; torch is imported inside
the commands.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import click

from zoo import config as zconfig
from zoo.errors import UsageError
from zoo.weights.meta import STORED_DTYPES


@click.group("weights")
def weights_group() -> None:
    """Pretrained weights: list the tables, download, import a checkpoint (zoo's or a
    foreign one) into the cache, export a run as a table entry to publish.

    `--weights NAME|PATH` on train, export, sample, predict and evaluate takes a NAME from the
    plugin's table (DEFAULT included) or from `zoo weights import`, or a file."""


def _plugin(name: str) -> Any:
    from zoo import _registry

    return _registry.get_plugin(name)


def _metrics_summary(metrics: Any) -> str:
    if not isinstance(metrics, dict):
        return "-"
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(metrics.items())[:3]) or "-"


# --------------------------------------------------------------------------- list


@weights_group.command("list")
@click.argument("plugin_name", metavar="[PLUGIN]", required=False)
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def list_command(plugin_name: str | None, as_json: bool) -> None:
    """Weights of PLUGIN (or of every plugin): name, DEFAULT, source, sha256, whether
    they are on this machine, and what they are."""
    from zoo import _registry
    from zoo import weights as zweights

    names = [plugin_name] if plugin_name else _registry.list_plugins()
    rows = []
    for name in names:
        plugin = _plugin(name)
        for entry, origin in zweights.all_entries(plugin):
            status = zweights.status(plugin, entry)
            meta = dict(entry.meta)
            rows.append(
                {
                    "plugin": plugin.name,
                    "name": entry.name,
                    "default": entry.name == plugin.default_weights,
                    "origin": origin,
                    "source": meta.get("imported_from", entry.source) if origin == "imported" else entry.source,
                    "sha256": entry.sha256,
                    "status": status,
                    "available": status in ("packaged", "cached", "imported"),
                    "path": str(zweights.local_path(plugin, entry)),
                    "dataset": meta.get("dataset"),
                    "num_params": meta.get("num_params"),
                    "components": meta.get("components"),
                    "metrics": meta.get("metrics"),
                    "meta": meta,
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        where = f"plugin {plugin_name}" if plugin_name else "any installed plugin"
        click.echo(f"no weights for {where} (publish: zoo weights export; import: zoo weights import PLUGIN FILE)")
        return
    header = ("PLUGIN", "NAME", "STATUS", "SHA256", "PARAMS", "DATASET", "METRICS", "SOURCE")
    table = [header]
    for r in rows:
        name = r["name"] + (" (DEFAULT)" if r["default"] else "")
        params = f"{r['num_params']:,}" if isinstance(r["num_params"], int) else "-"
        if r["components"]:
            params += f" ({','.join(r['components'])})"
        table.append(
            (r["plugin"], name, r["status"], r["sha256"][:12], params, r["dataset"] or "-", _metrics_summary(r["metrics"]), r["source"])
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + str(row[-1]))


# --------------------------------------------------------------------------- download


@weights_group.command("download")
@click.argument("plugin_name", metavar="PLUGIN")
@click.argument("name", default="DEFAULT", required=False)
def download_command(plugin_name: str, name: str) -> None:
    """Fetch weights NAME of PLUGIN (default: DEFAULT) into the cache, verified by sha256,
    so they work offline (ZOO_OFFLINE=1) afterwards. Prints the local path."""
    from zoo import weights as zweights

    plugin = _plugin(plugin_name)
    entry = zweights.find_entry(plugin, name)
    path = zweights.fetch(plugin, entry)
    kind = {"package:": "packaged with the plugin", "imported:": "imported"}.get(entry.source.split(":", 1)[0] + ":", "cached")
    click.echo(f"{plugin.name}:{entry.name} ({kind}, sha256 {entry.sha256[:12]} verified): {path}")


# --------------------------------------------------------------------------- shared


def _parse_components(raw: tuple[str, ...], children: list[str]) -> list[str] | None:
    names = [c.strip() for item in raw for c in item.split(",") if c.strip()]
    if not names:
        return None
    unknown = [c for c in names if c not in children]
    if unknown:
        raise UsageError(f"--components {','.join(unknown)}: the model's top-level modules are {', '.join(children)}")
    return [c for c in children if c in names]


COMPONENTS_HELP = "keep only these top-level modules, comma-separated or repeated (e.g. generator, all sampling and export need)"
DTYPE_HELP = (
    "store the floating-point tensors in this dtype: float16 and bfloat16 halve the file (integer buffers stay as they "
    "are; loading casts them back to the model's dtype)"
)


# --------------------------------------------------------------------------- import


@weights_group.command("import")
@click.argument("plugin_name", metavar="PLUGIN")
@click.argument("file", metavar="FILE")
@click.option("--name", default=None, help="name to load it by with --weights NAME [default: from the file name]")
@click.option(
    "--config",
    "config_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="hyperparameters of a foreign state dict (zoo files bring their own), e.g. --config kernel_size=4",
)
@click.option("--components", "components_raw", multiple=True, metavar="NAMES", help=COMPONENTS_HELP)
@click.option("--dtype", type=click.Choice(STORED_DTYPES), default=None, help=DTYPE_HELP + " [default: the dtype FILE stores them in]")
@click.option("--force", is_flag=True, help="replace an imported entry of the same name")
def import_command(
    plugin_name: str,
    file: str,
    name: str | None,
    config_pairs: tuple[str, ...],
    components_raw: tuple[str, ...],
    dtype: str | None,
    force: bool,
) -> None:
    """Convert FILE into a verified safetensors entry in the cache: a zoo checkpoint
    (last.pt), a safetensors file, or a foreign state dict (e.g. pytorch/examples,
    junyanz pix2pix) through the plugin's filter. It loads strictly first, so what is
    imported is known to fit; afterwards `--weights NAME` finds it. A float16 file stays
    float16 unless --dtype says otherwise."""
    from zoo import checkpoint, models
    from zoo import weights as zweights

    plugin = _plugin(plugin_name)
    path = Path(file).expanduser()
    if path.is_dir():
        raise UsageError(f"{file} is a directory; give the checkpoint or weights file in it (e.g. {Path(file) / 'last.pt'})")
    if not path.is_file():
        raise UsageError(f"{file}: no such file")
    overrides = zconfig.parse_pairs(plugin.config_class, config_pairs, plugin=plugin.name)
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem).strip("._-").upper() or "IMPORTED"
    if not zweights.IMPORT_NAME.match(name) or name == plugin.DEFAULT:
        raise UsageError(f"--name {name!r}: use letters, digits, '_', '.', '-' (and not {plugin.DEFAULT})")
    if any(w.name == name for w in plugin.weights):
        raise UsageError(f"--name {name}: {plugin.name}'s weights table has an entry of that name; choose another")
    index = zweights.imported_entries(plugin)
    if name in index and not force:
        raise UsageError(
            f"{plugin.name}:{name} was imported already (from {index[name].get('meta', {}).get('imported_from')}); pass --force to replace it, or --name"
        )

    # Zoo's files bring their hyperparameters; a foreign state dict takes them from --config.
    brings_config = zweights.read(plugin, str(path)).config is not None
    if brings_config and overrides:
        raise UsageError(f"--config applies to foreign state dicts only; {file} brings its own hyperparameters")
    config = None if brings_config else zconfig.from_dict(plugin.config_class, overrides, plugin=plugin.name)
    # It loads strictly first, so what is imported is known to fit; the summary line says what it holds.
    built = models.build_model(plugin, weights=str(path), config=config, quiet=True)
    model, config, info, loaded = built.model, built.config, built.data_info, built.loaded
    children = zweights.top_level_children(model)
    held = list(loaded.components or [])
    components = _parse_components(components_raw, children) or held
    missing = [c for c in components if c not in held]
    if missing:
        raise UsageError(f"--components {','.join(missing)}: {file} holds only {', '.join(held)}")
    meta: dict[str, Any] = {
        "plugin": plugin.name,
        "name": name,
        "config": zconfig.to_dict(config),
        "components": components,
        "num_params": zweights.num_params(model, components),
        "input": zweights.input_spec(plugin, config),
        "imported_from": str(path.resolve()),
        "imported_sha256": loaded.sha256,
        "imported_kind": loaded.kind,
    }
    if info.to_json():
        meta["data_info"] = info.to_json()
    # The model holds the file's values cast to its own dtype; store them as the file did.
    dtype = dtype or zweights.stored_dtype(loaded.state_dict)
    if dtype != "float32":
        meta["stored_dtype"] = dtype
    source_meta = loaded.meta or {}
    for key in ("dataset", "metrics", "command", "license", "epoch", "step", "seed"):
        if key in source_meta:
            meta[key] = source_meta[key]
    if loaded.kind == "checkpoint":
        meta["dataset"] = source_meta.get("data")
        meta["metrics"] = {k: v for k, v in (source_meta.get("metrics") or {}).items() if k.startswith("val_")}
    data = zweights.safetensors_bytes(zweights.stored_at(zweights.component_tensors(model, components), dtype), meta)
    sha = hashlib.sha256(data).hexdigest()
    dest = zweights.cache_dir(plugin) / f"{name}-{sha[:8]}.safetensors"
    zweights.write_verified(data, dest)
    zweights.verified_sha256(dest, sha)
    # Load it back the way `--weights NAME` will, so a bad import fails here and now.
    models.build_model(plugin, weights=str(dest), quiet=True)
    previous = index.get(name)
    index = zweights.imported_entries(plugin)  # re-read: another import may have landed meanwhile
    index[name] = {"file": dest.name, "sha256": sha, "meta": meta}
    checkpoint.write_json(index, zweights.cache_dir(plugin) / zweights.IMPORTED_INDEX)
    if previous and previous.get("file") != dest.name:
        zweights.remove_verified(zweights.cache_dir(plugin) / previous["file"])
    partial = f" ({', '.join(components)} only)" if components != children else ""
    click.echo(f"imported {plugin.name}:{name}{partial} -> {dest}")
    click.echo(f"sha256 {sha}; load it with --weights {name}")


# --------------------------------------------------------------------------- export


def _run_info(plugin: Any, ckpt_path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """data, seed and device of the run: from its config.json when present, else the checkpoint."""
    info = {"data": state.get("data") or plugin.default_dataset, "seed": int(state.get("seed", 0)), "device": None}
    config_json = ckpt_path.parent / "config.json"
    if config_json.is_file():
        try:
            recorded = json.loads(config_json.read_text())
            if recorded.get("config") == state.get("config"):
                info["data"] = recorded.get("data", info["data"])
                info["seed"] = int(recorded.get("seed", info["seed"]))
                device = str(recorded.get("device") or "")
                info["device"] = device.split(":")[0] or None
        except (OSError, ValueError):
            pass
    return info


def _max_steps(plugin: Any, config: Any, data: str, state: dict[str, Any]) -> int | None:
    """--max-steps for the command when the run stopped before its epochs were done
    (a --max-steps run, or one interrupted and not resumed)."""
    step, epoch = int(state.get("step", 0)), int(state.get("epoch", 0))
    try:
        from zoo import datasets

        splits = datasets.load(data, plugin.data_request(config))
        full = config.epochs * splits.train.num_batches(config.batch_size)
    except Exception:
        return step if epoch < config.epochs else None
    return step if step < full else None


@weights_group.command("export")
@click.argument("plugin_name", metavar="PLUGIN")
@click.option(
    "--checkpoint", "checkpoint_path", required=True, metavar="P", help="a zoo training checkpoint (last.pt) or its run directory"
)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="directory for the safetensors file")
@click.option("--name", default=None, help="table name [default: DATASET_V1, e.g. DIGITS_V1]")
@click.option("--components", "components_raw", multiple=True, metavar="NAMES", help=COMPONENTS_HELP)
@click.option(
    "--base-url",
    default=None,
    help="where the file will be hosted; the entry's source becomes URL/FILE [default: package:FILE, shipped with the plugin]",
)
@click.option("--license", "license_", default=None, help="license of the weights [default: the plugin package's license]")
@click.option("--description", default=None, help="one line on what they are good for")
@click.option("--dtype", type=click.Choice(STORED_DTYPES), default="float32", show_default=True, help=DTYPE_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the file and the entry as JSON")
def export_command(
    plugin_name: str,
    checkpoint_path: str,
    out: str,
    name: str | None,
    components_raw: tuple[str, ...],
    base_url: str | None,
    license_: str | None,
    description: str | None,
    dtype: str,
    as_json: bool,
) -> None:
    """Write a sha256-named safetensors file of a run and print the `Weights(...)` entry
    to paste into the plugin's table, meta filled from the run: config, metrics,
    parameter count, dataset and the `zoo train` command that reproduces it. With
    --dtype float16 or bfloat16 the meta says so ('stored_dtype'); its metrics stay the
    run's, measured in float32."""
    from zoo import checkpoint, models
    from zoo import weights as zweights
    from zoo.plugin import Weights

    plugin = _plugin(plugin_name)
    ckpt_path = Path(checkpoint_path).expanduser()
    if ckpt_path.is_dir():
        ckpt_path = ckpt_path / "last.pt"
    state = checkpoint.load(ckpt_path, plugin=plugin.name)  # the run's metrics, epoch and step
    built = models.build_model(plugin, checkpoint=str(ckpt_path))
    model, config, info_data = built.model, built.config, built.data_info
    children = zweights.top_level_children(model)
    components = _parse_components(components_raw, children) or children
    partial = components != children

    info = _run_info(plugin, ckpt_path, state)
    data = info["data"]
    if name is None:
        name = re.sub(r"[^A-Z0-9]+", "_", data.split(":", 1)[0].upper()).strip("_") + "_V1"
    if license_ is None:
        license_ = _distribution_license(plugin)
    metrics = {k: float(v) for k, v in (state.get("metrics") or {}).items() if k.startswith("val_") and isinstance(v, (int, float))}
    command = zweights.train_command(
        plugin, config, data=data, seed=info["seed"], device=info["device"], max_steps=_max_steps(plugin, config, data, state)
    )
    table_meta: dict[str, Any] = {
        "dataset": data,
        "metrics": metrics,
        "input": zweights.input_spec(plugin, config),
        "num_params": zweights.num_params(model, components),
        "license": license_,
        "command": command,
        "config": zconfig.to_dict(config),
    }
    if info_data.to_json():
        table_meta["data_info"] = info_data.to_json()
    if partial:
        table_meta["components"] = components
    if description:
        table_meta["description"] = description
    if dtype != "float32":  # float32 files carry no 'stored_dtype', so they export as they always have
        table_meta["stored_dtype"] = dtype
    file_meta = {
        "plugin": plugin.name,
        "name": name,
        **table_meta,
        "components": components,
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "seed": info["seed"],
        "plugin_version": state.get("plugin_version"),
        "zoo_version": state.get("zoo_version"),
    }
    blob = zweights.safetensors_bytes(zweights.stored_at(zweights.component_tensors(model, components), dtype), file_meta)
    sha = hashlib.sha256(blob).hexdigest()
    file_name = zweights.file_name(plugin.name, name, sha)
    source = f"{base_url.rstrip('/')}/{file_name}" if base_url else f"package:{file_name}"
    entry = Weights(name=name, source=source, sha256=sha, meta=table_meta)
    problems = zweights.validate_entry(plugin, entry)
    if problems:
        raise UsageError("the entry would not be valid: " + "; ".join(problems))
    dest = Path(out) / file_name
    zweights.write_verified(blob, dest)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "path": str(dest),
                    "bytes": len(blob),
                    "sha256": sha,
                    "entry": {"name": name, "source": source, "sha256": sha, "meta": table_meta},
                },
                indent=2,
            )
        )
        return
    click.echo(f"# wrote {dest} ({len(blob):,} bytes, sha256 {sha})")
    click.echo(f"# add to {plugin.name}'s Plugin(weights=(...)); default_weights={name!r} makes it DEFAULT")
    click.echo(zweights.entry_source(entry))


def _distribution_license(plugin: Any) -> str:
    from importlib.metadata import PackageNotFoundError, metadata

    from zoo import _registry

    entry = _registry.plugins.entries().get(plugin.name)
    try:
        md = metadata(entry.distribution) if entry is not None else None
    except PackageNotFoundError:
        md = None
    value = (md.get("License-Expression") or md.get("License")) if md is not None else None
    if not value:
        raise UsageError(f"the license of {plugin.name}'s weights is unknown; pass --license")
    return value.strip()
