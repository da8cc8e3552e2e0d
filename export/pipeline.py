"""The workflow behind `zoo export`, usable without the CLI.

`export` checks each target against what it computes, writes every (target, format)
artifact through the format registry (`zoo.export.format`), runs parity
(`zoo.export.parity_runner`) and writes `export.json` (`zoo.export.manifest`).
`zoo verify` lives in `zoo.export.verify`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, ZooError
from zoo.export import format as zformat
from zoo.export import manifest as zmanifest
from zoo.export.manifest import MANIFEST, MANIFEST_VERSION
from zoo.export.parity_runner import DevicePlan, plan_devices, run_parity
from zoo.plugin import ExportTarget, Plugin

__all__ = ["MANIFEST", "build_model", "export", "plan_devices", "prepare_out_dir", "resolve_formats"]

Log = Callable[[str], None]


def _quiet_log(message: str) -> None:
    pass


def build_model(plugin: Plugin, **kwargs: Any) -> Any:
    """The model to export: `zoo.models.build_model` (one way to a ready model for every command)."""
    from zoo import models

    return models.build_model(plugin, **kwargs)


def prepare_out_dir(out: Path) -> Path:
    """Create `out` and prove it is writable before any slow work starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return out


def resolve_formats(names: Sequence[str] | None) -> list[zformat.Format]:
    """The named formats in export order (None: those a plain `zoo export` writes)."""
    if names is None:
        names = zformat.default_names()
    chosen = {zformat.get(name).name for name in names}
    return [f for f in zformat.installed() if f.name in chosen]


def claim_out_dir(out_dir: Path, plugin: Plugin, source: Any, overwrite: bool, log: Log) -> None:
    """Refuse (or, with `overwrite`, clear) a directory holding an export of other weights;
    remove temp files a killed export left."""
    from zoo import locks

    for temp in locks.stale_temps(out_dir):
        temp.unlink(missing_ok=True)
    path = out_dir / MANIFEST
    if not path.is_file():
        return
    try:
        old = zmanifest.read(out_dir)
        same = old.get("plugin") == plugin.name and (old.get("source") or {}).get("state_sha256") == source.state_sha256
        what = f"plugin {old.get('plugin')}, {zmanifest.describe_source(old.get('source'))}"
    except ZooError:
        old, same, what = None, False, "an export.json zoo cannot read"
    if same:
        return  # the same weights: this export adds to it (e.g. a later --pt2)
    if not overwrite:
        raise UsageError(
            f"--out {out_dir} holds an export of other weights ({what}); pass --overwrite to replace it, or choose another --out"
        )
    removed = zmanifest.remove_export(out_dir, old)
    log(f"--overwrite: removed the previous export in {out_dir} ({removed} files)")


def _check_room(
    out_dir: Path, model: Any, chosen: list[ExportTarget], fmts: list[zformat.Format], device_plan: Any, overwrite: bool
) -> None:
    """Refuse before anything is written when the files cannot fit: each artifact takes
    about its target's weights plus its format's overhead. Files of an export that
    --overwrite removes count as room; an export added to keeps its files until each new
    one is complete, so there they do not."""
    from zoo import checkpoint

    free = checkpoint.free_bytes(out_dir)
    if free is None:
        return
    needed = 1 << 20  # export.json, test vectors
    for target in chosen:
        module = target.module(model)
        weights = checkpoint.state_bytes(module.state_dict())
        for fmt in fmts:
            if fmt.name in target.skip_formats:
                continue
            copies = sum(1 for _name, _dev, skip in device_plan if skip is None) if fmt.per_device else 1
            needed += copies * (weights + fmt.size_overhead)
    reclaimed = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) if overwrite else 0
    if free + reclaimed < needed:
        raise checkpoint.disk_full(out_dir, needed, free, done="nothing was written")


def _raise_if_out_of_space(exc: BaseException, path: Path) -> None:
    """A format's writer that ran out of room, as the one-line DiskFull error."""
    from zoo import checkpoint
    from zoo.errors import DiskFull

    if isinstance(exc, DiskFull):
        return
    free = checkpoint.free_bytes(path.parent)
    if checkpoint.out_of_space(exc, free):
        have = f"the {free / 1e6:.1f} MB free there" if free is not None else "what is free there"
        raise DiskFull(
            f"no space left to write {path}: it needs more than {have}; no partial file was left and the files already "
            "there are as they were (an artifact is renamed into place only when complete; free some space and run the command again)"
        ) from None


def _remove_created(directory: Path) -> None:
    """Remove the directory a failed first export created: everything in it (test vectors,
    finished artifacts of other formats, the lock) was written by this export, under its
    lock, and is no export without its export.json."""
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def _target_io(
    target: ExportTarget,
    config: Any,
    module: Any,
    data_info: Any,
    job_program: Callable[[], Any],
    needed: list[str],
    active: bool,
    log: Log,
) -> dict[str, Any]:
    """The target's inputs and outputs as the metadata describes them. Output axes are
    named from the torch.export program where there is one (it is the authority on
    what is dynamic); a target no format needs the program for falls back to its
    declaration when torch.export cannot capture it."""
    from zoo.export.program import symbolic_io
    from zoo.targets import target_io

    io = target_io(target, config, module, data_info=data_info)
    if needed:
        return symbolic_io(job_program(), target, io)
    if target.dynamic_dims and active:
        try:
            return symbolic_io(job_program(), target, io)
        except ZooError:
            log(f"note: output axes of {target.name} are named from its dynamic_dims (torch.export cannot capture it)")
    return io


def export(
    plugin: Plugin,
    model: Any,
    config: Any,
    source: Any,
    *,
    targets: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
    out_dir: Path,
    opset: int | None = None,
    batch_sizes: Sequence[int] = (1, 2, 5),
    device_plan: DevicePlan | None = None,
    export_batch: int = 2,
    latency: bool = True,
    data_info: Any = None,
    task_parity: bool = True,
    data: str | None = None,
    explicit_data: bool | None = None,
    overwrite: bool = False,
    log: Log = _quiet_log,
) -> dict[str, Any]:
    """Write every (target, format) artifact into `out_dir`, run parity, write and
    return the manifest (`export.json`). A format a target opts out of
    (`skip_formats`) is listed as skipped with the target's reason. With
    `task_parity`, every target with a `task_check` is also judged on the validation
    split of `data` (default: the plugin's dataset) through eager PyTorch and each
    artifact (`zoo.export.task_parity`); data that cannot be loaded or cannot judge the
    model fails the export when `explicit_data` (default: whenever `data` is given),
    else its rows are skipped with the reason (the dataset a checkpoint was trained on,
    whose files may have moved).

    `out_dir` is locked while the export writes. A directory holding an export of other
    weights (or another plugin) is refused unless `overwrite`, which first removes that
    export's files (files of your own stay); an export of the same weights is added to."""
    from zoo import locks

    if not plugin.export_targets:
        raise UsageError(f"plugin {plugin.name!r} declares no export targets")
    chosen = [plugin.target(name) for name in targets] if targets else list(plugin.export_targets)
    fmts = resolve_formats(formats)
    if export_batch < 2:
        raise UsageError(f"--export-batch {export_batch}: use 2 or more (torch.export specializes sizes 0 and 1)")
    device_plan = device_plan if device_plan is not None else plan_devices("all")
    options: dict[str, Any] = {}
    for fmt in fmts:
        options.update(fmt.prepare({"opset": opset}))
    created = not out_dir.exists()
    out_dir = prepare_out_dir(out_dir)
    try:
        with locks.hold(out_dir, f"zoo export {plugin.name}"):
            _check_room(out_dir, model, chosen, fmts, device_plan, overwrite)
            claim_out_dir(out_dir, plugin, source, overwrite, log)
            return _export_into(
                plugin,
                model,
                config,
                source,
                chosen,
                fmts,
                out_dir,
                options,
                batch_sizes,
                device_plan,
                export_batch,
                latency,
                data_info,
                task_parity,
                data,
                data is not None if explicit_data is None else explicit_data,
                log,
            )
    except BaseException:
        if created:
            _remove_created(out_dir)  # a failed first export leaves no directory behind
        raise


def _export_into(
    plugin: Plugin,
    model: Any,
    config: Any,
    source: Any,
    chosen: list[ExportTarget],
    fmts: list[zformat.Format],
    out_dir: Path,
    options: dict[str, Any],
    batch_sizes: Sequence[int],
    device_plan: DevicePlan,
    export_batch: int,
    latency: bool,
    data_info: Any,
    task_parity: bool,
    data: str | None,
    explicit_data: bool,
    log: Log,
) -> dict[str, Any]:
    """The export proper, with `out_dir` held and claimed."""
    import torch

    from zoo import config as zconfig
    from zoo import versions
    from zoo.checkpoint import write_json
    from zoo.export import runtime as zruntime
    from zoo.export import vectors as zvectors
    from zoo.export.metadata import base_metadata
    from zoo.targets import check_target

    records: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for target in chosen:
        module = target.module(model).eval()
        check_target(target, config, module, data_info)
        active = [f for f in fmts if f.name not in target.skip_formats]
        skipped += [
            {"target": target.name, "format": f.name, "reason": target.skip_formats[f.name], "rtol": target.rtol, "atol": target.atol}
            for f in fmts
            if f.name in target.skip_formats
        ]
        for fmt in active:
            fmt.exporter_for(target)  # a choice the format does not offer is refused before any work
        needed = [f.name for f in active if f.needs_program(target)]
        export_inputs = target.make_inputs(config, export_batch, torch.Generator().manual_seed(0), data=data_info)
        check_inputs = target.make_inputs(config, export_batch + 1, torch.Generator().manual_seed(1), data=data_info)
        job = zformat.ExportJob(plugin, target, model, module, config, data_info, export_inputs, check_inputs, {}, options)
        purpose = f"for {' and '.join(needed)}" if needed else ""
        io = _target_io(target, config, module, data_info, lambda: job.program(purpose=purpose), needed, bool(active), log)
        job.metadata = base_metadata(plugin, target, io, source.sha256, config, data_info)
        job.metadata[zvectors.KEY] = zvectors.write(out_dir, job)  # test vectors: written before any artifact names them
        for fmt in active:
            devices = [(name, dev) for name, dev, skip in device_plan if skip is None] if fmt.per_device else [("cpu", torch.device("cpu"))]
            for device_name, device in devices:
                path = out_dir / fmt.file_name(target.name, device_name)
                started = time.perf_counter()
                try:
                    final = fmt.export(job, path, device)
                except Exception as exc:
                    _raise_if_out_of_space(exc, path)
                    raise
                training = fmt.training_ops(job, path, device)
                if training:  # an inference graph must be a pure function of its inputs
                    path.unlink(missing_ok=True)
                    more = f" (and {len(training) - 2} more)" if len(training) > 2 else ""
                    raise ZooError(
                        f"the {fmt.name} graph of {plugin.name}:{target.name} still trains: {'; '.join(training[:2])}{more}; "
                        "call eval() on that module or pass training=self.training, and feed noise as an input"
                    )
                records.append(zmanifest.artifact_record(out_dir, path, final, time.perf_counter() - started, fmt.record_keys))
            log(f"exported {plugin.name}:{target.name} as {fmt.name}")

    log("checking parity")
    rows, latency_rows = run_parity(
        plugin, model, config, out_dir, records, batch_sizes, device_plan, latency=latency, data_info=data_info, log=log
    )
    task_rows: list[dict[str, Any]] = []
    if task_parity:
        from zoo.export.task_parity import run_task_parity

        task_rows = run_task_parity(
            plugin, model, config, out_dir, records, device_plan, data=data, explicit_data=explicit_data, data_info=data_info, log=log
        )
    from zoo.export.localize import localize_records

    localization = localize_records(plugin, model, config, out_dir, records, rows, data_info)  # only where parity failed
    python = [zruntime.get("python")]
    rows += zmanifest.skipped_rows(skipped, python, device_plan)
    for fmt in fmts:
        if not fmt.per_device:
            continue
        for target in chosen:
            if fmt.name in target.skip_formats:
                continue
            for device_name, _device, skip in device_plan:
                if skip is not None:
                    stub = {"target": target.name, "format": fmt.name, "rtol": target.rtol, "atol": target.atol}
                    rows.append(zmanifest.row(stub, "python", device_name, None, reason=f"{skip}: no {device_name} {fmt.name} compiled"))
    merged = zmanifest.merge_previous(
        out_dir,
        plugin.name,
        source.state_sha256,
        {
            "artifacts": records,
            "parity": zmanifest.sort_rows(rows),
            "latency": latency_rows,
            "skipped_formats": skipped,
            "task_parity": task_rows,
        },
    )
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "plugin": plugin.name,
        "plugin_version": versions.plugin_version(plugin),
        "zoo_version": versions.zoo_version(),
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": source.to_json(),
        "config": zconfig.to_dict(config),
        "data_info": data_info.to_json() if data_info is not None else {},
        "batch_sizes": list(batch_sizes),
        "export_batch": export_batch,
        "artifacts": merged["artifacts"],
        "skipped_formats": merged["skipped_formats"],
        "parity": merged["parity"],
        "latency": merged["latency"],
        "task_data": data or plugin.default_dataset,
        "task_parity": merged["task_parity"],
        "localization": localization,
        "passed": zmanifest.overall_passed(merged["parity"], merged["task_parity"]),
        **options,
    }
    write_json(manifest, out_dir / MANIFEST)
    return manifest
