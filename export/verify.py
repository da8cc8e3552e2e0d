"""The workflow behind `zoo verify`: re-run the parity checks of an export directory,
e.g. on a GPU machine after exporting on a laptop, or in the native runtimes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, UsageError, ZooError
from zoo.export import manifest as zmanifest
from zoo.export.parity_runner import DevicePlan, plan_devices, resolve_runtimes, run_parity
from zoo.plugin import Plugin

Log = Callable[[str], None]


def _quiet_log(message: str) -> None:
    pass


def rebuild_model(plugin: Plugin, manifest: dict[str, Any], checkpoint: str | None = None, weights: str | None = None) -> Any:
    """The eager model an export was made from (a `zoo.models.Built`), checked against the recorded digests."""
    from zoo import checkpoint as ckpt
    from zoo import config as zconfig
    from zoo.models import build_model

    recorded = manifest.get("source") or {}
    kind = recorded.get("kind")
    if checkpoint is not None and weights is not None:
        raise UsageError("--checkpoint and --weights: give the one this export was made from")
    if weights is not None and kind == "checkpoint":
        raise UsageError(f"--weights: this export was made from checkpoint {recorded.get('path')}; pass --checkpoint PATH if it moved")
    if checkpoint is not None and kind == "weights":
        raise UsageError(f"--checkpoint: this export was made from weights {recorded.get('name') or recorded.get('path')}; pass --weights")
    if (checkpoint is not None or weights is not None) and kind == "random-init":
        raise UsageError("this export was made from random init (its seed is in export.json): --checkpoint and --weights do not apply")
    seed = recorded.get("seed")
    if kind == "random-init" and seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ZooError(f"export.json: source seed must be an integer, not {seed!r}")
    if kind == "checkpoint" or checkpoint is not None:
        path = checkpoint or recorded.get("path")
        if not path or not Path(path).is_file():
            raise ZooError(f"the checkpoint this export was made from ({path}) is missing; pass --checkpoint PATH to where it is now")
        if recorded.get("sha256") and ckpt.sha256_file(path) != recorded["sha256"]:
            raise CheckpointError(f"checkpoint {path} is not the one this export was made from (sha256 differs from export.json)")
        built = build_model(plugin, checkpoint=path)
    elif kind == "weights" or weights is not None:
        spec = weights or recorded.get("name") or recorded.get("path")
        built = build_model(plugin, weights=spec)
        if recorded.get("sha256") and built.source.sha256 != recorded["sha256"]:
            raise CheckpointError(f"weights {spec} are not the ones this export was made from (sha256 differs from export.json)")
    elif kind == "random-init":
        config = zconfig.from_dict(plugin.config_class, manifest.get("config") or {}, plugin=plugin.name)
        built = build_model(plugin, random_init=True, seed=int(recorded.get("seed") or 0), overrides=zconfig.to_dict(config))
    else:
        raise ZooError(f"export.json does not say where its weights came from (source kind {kind!r})")
    if recorded.get("state_sha256") and built.source.state_sha256 != recorded["state_sha256"]:
        hint = (
            ": random init depends on the torch version and platform; export from a checkpoint to verify elsewhere"
            if kind == "random-init"
            else ""
        )
        raise ZooError(f"the rebuilt eager model differs from the exported one (state digest mismatch{hint})")
    return built


def verify(
    directory: Path,
    *,
    device_plan: DevicePlan | None = None,
    runtimes: Sequence[str] = ("python",),
    batch_sizes: Sequence[int] | None = None,
    checkpoint: str | None = None,
    weights: str | None = None,
    latency: bool = True,
    task_parity: bool = True,
    data: str | None = None,
    localize: bool = False,
    log: Log = _quiet_log,
) -> dict[str, Any]:
    """Re-run the parity checks of an export directory; refuses artifacts whose bytes
    changed since export. With `task_parity`, targets with a `task_check` are judged
    again on real data (`data`, default: the dataset recorded at export) in every
    runtime chosen. Returns a report shaped like the manifest (not written)."""
    from zoo import _registry

    manifest = zmanifest.read(directory)
    plugin = _registry.get_plugin(manifest["plugin"])
    zmanifest.check_artifacts(directory, manifest)
    chosen = resolve_runtimes(runtimes)
    built = rebuild_model(plugin, manifest, checkpoint=checkpoint, weights=weights)
    sizes = list(batch_sizes or manifest.get("batch_sizes") or (1, 2, 5))
    plan = device_plan if device_plan is not None else plan_devices("all")
    rows, latency_rows = run_parity(
        plugin,
        built.model,
        built.config,
        directory,
        manifest["artifacts"],
        sizes,
        plan,
        runtimes=[r.name for r in chosen],
        latency=latency,
        data_info=built.data_info,
        log=log,
    )
    skipped = manifest.get("skipped_formats") or []
    rows = zmanifest.sort_rows(rows + zmanifest.skipped_rows(skipped, chosen, plan))
    from zoo.export.localize import localize_records

    # Where parity failed, always; with `localize`, every artifact (the largest error where none fails).
    localization = localize_records(
        plugin, built.model, built.config, directory, manifest["artifacts"], rows, built.data_info, every=localize
    )
    task_rows: list[dict[str, Any]] = []
    if task_parity:
        from zoo.export.task_parity import run_task_parity

        recorded = manifest.get("task_data") if isinstance(manifest.get("task_data"), str) else None
        task_rows = run_task_parity(
            plugin,
            built.model,
            built.config,
            directory,
            manifest["artifacts"],
            plan,
            runtimes=[r.name for r in chosen],
            data=data or recorded,
            explicit_data=data is not None,
            data_info=built.data_info,
            log=log,
        )
    return {
        "directory": str(directory),
        "plugin": plugin.name,
        "source": manifest.get("source"),
        "batch_sizes": sizes,
        "runtimes": [r.name for r in chosen],
        "artifacts": manifest["artifacts"],
        "skipped_formats": skipped,
        "parity": rows,
        "latency": latency_rows,
        "task_data": data or manifest.get("task_data"),
        "task_parity": task_rows,
        "localization": localization,
        "passed": zmanifest.overall_passed(rows, task_rows),
    }
