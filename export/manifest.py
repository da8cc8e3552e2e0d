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
    return manifest


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
        zvectors.check(directory, record.get(zvectors.KEY), MANIFEST)


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
    out.update(fields)
    if out["passed"] is not None:
        out["status"] = "passed" if out["passed"] else "failed"
    return out


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


def overall_passed(rows: list[dict[str, Any]]) -> bool:
    ran = [r for r in rows if r["status"] != "skipped"]
    return bool(ran) and all(r["passed"] for r in ran)


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
        "skipped_formats": skipped + new["skipped_formats"],
    }
