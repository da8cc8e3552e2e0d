"""`export.json`: what an export directory holds and what was proven about it.

Its records (one per artifact, with sha256 and shapes), its parity rows (artifact x
runtime x device x batch x axis sizes) and latency rows are read, checked and merged
here; `pipeline` writes it and `verify` re-runs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, ZooError
from zoo.export import vectors as zvectors

MANIFEST = "export.json"
MANIFEST_VERSION = 1


def read(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    if not path.is_file():
        raise UsageError(f"{directory} has no {MANIFEST}; make one with `zoo export PLUGIN --out {directory}`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ZooError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list) or "plugin" not in manifest:
        raise ZooError(f"{path} is not a zoo export manifest (no plugin/artifacts)")
    problem = _problem(directory, manifest)
    if problem:
        raise ZooError(f"{path}: {problem} (edited by hand? export again to rewrite it)")
    return manifest


def _is_number(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _problem(directory: Path, manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's shape, in words (None: nothing): every value zoo
    will use is of the kind it must be, and every path stays inside the directory."""
    from zoo.export import format as zformat

    if not isinstance(manifest["plugin"], str) or not manifest["plugin"]:
        return f"plugin must be a plugin's name, not {manifest['plugin']!r}"
    if "source" in manifest and not isinstance(manifest["source"], dict):
        return "source must be an object saying where the weights came from"
    sizes = manifest.get("batch_sizes")
    if sizes is not None and (
        not isinstance(sizes, list) or not sizes or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes)
    ):
        return f"batch_sizes must be a list of integers of at least 1, not {sizes!r}"
    skipped = manifest.get("skipped_formats")
    if skipped is not None and (
        not isinstance(skipped, list)
        or not all(isinstance(s, dict) and all(isinstance(s.get(k), str) for k in ("target", "format", "reason")) for s in skipped)
    ):
        return "skipped_formats must be a list of objects with target, format and reason"
    known = zformat.names()
    for index, record in enumerate(manifest["artifacts"]):
        if not isinstance(record, dict):
            return f"artifact {index} must be an object, not {type(record).__name__}"
        name = record.get("path") if isinstance(record.get("path"), str) else f"artifact {index}"
        if not isinstance(record.get("path"), str) or not record["path"]:
            return f"artifact {index} has no path (a relative file name)"
        if inside(directory, record["path"]) is None:
            return f"artifact path {record['path']!r} is outside {directory}"
        if not _is_sha256(record.get("sha256")):
            return f"{name} has no sha256 (64 hex digits), it has {record.get('sha256')!r}"
        if not isinstance(record.get("target"), str):
            return f"{name} names no target"
        if record.get("format") not in known:
            return f"{name} is in format {record.get('format')!r}, which is not installed (installed: {', '.join(known)})"
        for key in ("rtol", "atol"):
            if not _is_number(record.get(key)):
                return f"{name}: {key} must be a number of at least 0, not {record.get(key)!r}"
        for entry in zvectors.files(record.get(zvectors.KEY)) if isinstance(record.get(zvectors.KEY), dict) else []:
            if not isinstance(entry, dict) or inside(directory, entry.get("path")) is None or not _is_sha256(entry.get("sha256")):
                return f"{name}: a test vector entry has no path inside {directory} or no sha256"
    return None


def check_artifacts(directory: Path, manifest: dict[str, Any]) -> None:
    """Every listed artifact, and every test vector it names, exists and has the bytes it had at export."""
    from zoo.checkpoint import sha256_file

    if not manifest["artifacts"]:
        raise ZooError(f"{directory / MANIFEST} lists no artifacts")
    for record in manifest["artifacts"]:
        path = directory / record["path"]
        if not path.is_file():
            raise ZooError(f"artifact {path} listed in {MANIFEST} is missing")
        actual = sha256_file(path)
        if actual != record["sha256"]:
            raise ZooError(
                f"artifact {path} was modified after export (sha256 {actual[:12]}..., {MANIFEST} says {record['sha256'][:12]}...); "
                "refusing to verify it"
            )
        _check_tolerances(path, record)
        zvectors.check(directory, record.get(zvectors.KEY), MANIFEST)


def _check_tolerances(path: Path, record: dict[str, Any]) -> None:
    """The tolerances parity uses are the artifact's own (its sha256 covers them): an
    export.json that says otherwise was edited, and is refused rather than obeyed."""
    from zoo.export import format as zformat

    try:
        embedded = zformat.get(record["format"]).read_metadata(path)
    except Exception:  # noqa: BLE001 - an unreadable file fails its parity rows, saying why
        return
    for key in ("rtol", "atol"):
        if key in embedded and float(embedded[key]) != float(record[key]):
            raise ZooError(
                f"{MANIFEST} says {key} {record[key]:g} for {path.name}, the artifact says {float(embedded[key]):g}: "
                f"{MANIFEST} was edited; export again"
            )


def artifact_record(directory: Path, path: Path, metadata: dict[str, Any], seconds: float, record_keys: tuple[str, ...]) -> dict[str, Any]:
    from zoo.checkpoint import sha256_file

    def brief(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": s["name"], "shape": s.get("shape"), "dtype": s.get("dtype")} for s in specs]

    record = {
        "target": metadata["target"],
        "format": metadata["format"],
        "path": os.path.relpath(path, directory),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "inputs": brief(metadata["inputs"]),
        "outputs": brief(metadata["outputs"]),
        "exported_with": metadata["exported_with"],
        "rtol": metadata["rtol"],
        "atol": metadata["atol"],
        "seconds": round(seconds, 2),
    }
    for key in record_keys:
        if key in metadata:
            record[key] = metadata[key]
    if zvectors.KEY in metadata:
        record[zvectors.KEY] = metadata[zvectors.KEY]  # its test vectors: paths, sha256, tolerances
    return record


def row(
    record: dict[str, Any], runtime: str, device: str, batch: int | None, axes: dict[str, int] | None = None, **fields: Any
) -> dict[str, Any]:
    """One parity row; `status` follows `passed` (None: skipped, with the reason)."""
    out = {
        "target": record["target"],
        "format": record["format"],
        "runtime": runtime,
        "device": device,
        "batch": batch,
        "axes": dict(axes or {}),
        "max_abs": None,
        "max_rel": None,
        "rtol": record["rtol"],
        "atol": record["atol"],
        "passed": None,
        "status": "skipped",
        "reason": "",
    }
    return with_status(out, fields)


def with_status(row: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """`row` updated with `fields`, its `status` following `passed` (None: skipped).
    Parity rows and task-parity rows alike."""
    row.update(fields)
    if row["passed"] is not None:
        row["status"] = "passed" if row["passed"] else "failed"
    return row


def skipped_rows(
    skipped: list[dict[str, Any]], runtimes: list[Any], device_plan: list[tuple[str, Any, str | None]]
) -> list[dict[str, Any]]:
    """Rows for formats a target opts out of (`skip_formats`): skipped with the
    target's reason, on every device, in every runtime that would have run them."""
    rows = []
    for entry in skipped:
        for device_name, _device, _skip in device_plan:
            for runtime in runtimes:
                if runtime.runs(entry["format"]):
                    rows.append(row(entry, runtime.name, device_name, None, reason=f"target opts out: {entry['reason']}"))
    return rows


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from zoo.export import format as zformat
    from zoo.export import runtime as zruntime

    runtimes = zruntime.names()

    def key(r: dict[str, Any]) -> tuple:
        runtime = runtimes.index(r["runtime"]) if r["runtime"] in runtimes else len(runtimes)
        axes = tuple(sorted((r.get("axes") or {}).items()))
        return (r["target"], zformat.order_key(r["format"]), runtime, r["device"], r["batch"] or 0, axes)

    return sorted(rows, key=key)


def overall_passed(rows: list[dict[str, Any]], task_rows: list[dict[str, Any]] = ()) -> bool:
    """At least one parity check ran and none failed, and no task-parity row failed."""
    ran = [r for r in rows if r["status"] != "skipped"]
    return bool(ran) and all(r["passed"] for r in ran) and all(r["status"] != "failed" for r in task_rows)


def _key(record: dict[str, Any]) -> tuple:
    return (record["target"], record["format"], record.get("device"))


def merge_previous(
    directory: Path, plugin_name: str, state_sha256: str, new: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """`new` (artifacts, parity, latency, skipped_formats) plus what an earlier export
    into the same directory from the same weights holds for (target, format) pairs not
    exported this time, whose files are untouched: `zoo export vae` then
    `zoo export vae --pt2` leaves one manifest listing all three formats."""
    from zoo.checkpoint import sha256_file

    path = directory / MANIFEST
    if not path.is_file():
        return new
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return new
    if old.get("plugin") != plugin_name or (old.get("source") or {}).get("state_sha256") != state_sha256:
        return new
    done = {_key(r) for r in new["artifacts"]}
    skipped_now = {(s["target"], s["format"]) for s in new["skipped_formats"]}
    kept = []
    for record in old.get("artifacts", []):
        file = directory / record.get("path", "")
        if _key(record) in done or (record["target"], record["format"]) in skipped_now or not file.is_file():
            continue
        if sha256_file(file) == record.get("sha256") and zvectors.intact(directory, record.get(zvectors.KEY)):
            kept.append(record)
    exported_now = {(r["target"], r["format"]) for r in new["artifacts"]}
    skipped = [s for s in old.get("skipped_formats", []) if (s.get("target"), s.get("format")) not in skipped_now | exported_now]
    skipped_pairs = {(s["target"], s["format"]) for s in skipped}

    def of_kept(r: dict[str, Any]) -> bool:
        """A row of a kept record (a per-device record's rows are those of its device), or of a kept skip."""
        if (r.get("target"), r.get("format")) in skipped_pairs:
            return True
        return any(
            (k["target"], k["format"]) == (r.get("target"), r.get("format")) and k.get("device") in (None, r.get("device")) for k in kept
        )

    return {
        "artifacts": kept + new["artifacts"],
        "parity": sort_rows([r for r in old.get("parity", []) if of_kept(r)] + new["parity"]),
        "latency": [r for r in old.get("latency", []) if of_kept(r)] + new["latency"],
        "task_parity": [r for r in old.get("task_parity", []) if of_kept(r)] + new.get("task_parity", []),
        "skipped_formats": skipped + new["skipped_formats"],
    }


def describe_source(source: Any) -> str:
    """Where an export's weights came from, in words (from its `source` record)."""
    if not isinstance(source, dict):
        return "from an unknown source"
    kind = source.get("kind")
    if kind == "checkpoint":
        return f"from checkpoint {source.get('path')}"
    if kind == "weights":
        return f"from weights {source.get('name') or source.get('path')}"
    if kind == "random-init":
        return f"random init, seed {source.get('seed')}"
    return "from an unknown source"


def inside(directory: Path, relative: Any) -> Path | None:
    """`directory / relative` when `relative` is a relative path that stays inside `directory`, else None."""
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
        return None
    path = (directory / relative).resolve()
    root = directory.resolve()
    return path if path == root or root in path.parents else None


def remove_export(directory: Path, manifest: dict[str, Any] | None) -> int:
    """Remove the files an export wrote (its artifacts, their test vectors and export.json),
    leaving anything else in the directory; returns how many were removed."""
    records = (manifest or {}).get("artifacts") or []
    paths = []
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, dict):
            continue
        paths.append(record.get("path"))
        paths += [entry.get("path") for entry in zvectors.files(record.get(zvectors.KEY)) if isinstance(entry, dict)]
    removed = 0
    for relative in [*paths, MANIFEST]:
        path = inside(directory, relative)
        if path is not None and path.is_file():
            path.unlink()
            removed += 1
    vectors = directory / zvectors.DIRECTORY
    for folder in sorted((p for p in vectors.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) if vectors.is_dir() else []:
        if not any(folder.iterdir()):
            folder.rmdir()
    if vectors.is_dir() and not any(vectors.iterdir()):
        vectors.rmdir()
    return removed
