"""The workflows behind `zoo export` and `zoo verify`, usable without the CLI.

`build_model` turns --checkpoint / --weights / --random-init into an eval-mode model
and a record of where it came from; `export` writes every (target, format) artifact
and runs parity; `verify` re-runs parity from an `export.json` manifest. Both return
the manifest-shaped dict the CLI prints.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, UsageError, ZooError
from zoo.export.formats import DEFAULT_FORMATS, FORMATS, artifact_name
from zoo.plugin import Plugin

MANIFEST = "export.json"
MANIFEST_VERSION = 1
RUNTIMES = ("python", "cpp", "node")
# Which exported formats each native runtime runs (zoo.export.runtimes).
NATIVE_FORMATS = {"cpp": ("torchscript", "pt2"), "node": ("onnx",)}
# Latency rows: in-process runtimes by format; native ones as "runtime:format".
LATENCY_NAMES = {"eager": "eager", "torchscript": "torchscript", "onnx": "onnxruntime", "pt2": "aotinductor"}
# Calls per parity check of a TorchScript file (its executor re-optimises after the first).
TORCHSCRIPT_RUNS = 3
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"

Log = Callable[[str], None]


def _quiet_log(message: str) -> None:
    pass


# --------------------------------------------------------------------------- the eager model


def build_model(plugin: Plugin, **kwargs: Any) -> Any:
    """The model to export: `zoo.models.build_model` (one way to a ready model for every command)."""
    from zoo import models

    return models.build_model(plugin, **kwargs)


def rebuild_model(plugin: Plugin, manifest: dict[str, Any], checkpoint: str | None = None, weights: str | None = None) -> Any:
    """The eager model an export was made from (a `zoo.models.Built`), checked against the recorded digests."""
    from zoo import checkpoint as ckpt
    from zoo import config as zconfig

    recorded = manifest.get("source") or {}
    kind = recorded.get("kind")
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
        raise ZooError(
            "the rebuilt eager model differs from the exported one (state digest mismatch"
            + (
                ": random init depends on the torch version and platform; export from a checkpoint to verify elsewhere)"
                if kind == "random-init"
                else ")"
            )
        )
    return built


# --------------------------------------------------------------------------- devices and directories


def plan_devices(spec: str) -> list[tuple[str, Any, str | None]]:
    """[(row name, torch device or None, skip reason)] for --device cpu|cuda|cuda:N|all."""
    import torch

    from zoo import devices

    spec = (spec or "all").strip().lower()
    if spec == "all":
        plan: list[tuple[str, Any, str | None]] = [("cpu", torch.device("cpu"), None)]
        if torch.cuda.is_available():
            plan.append(("cuda", torch.device("cuda", 0), None))
        else:
            plan.append(("cuda", None, NO_CUDA))
        return plan
    if spec == "auto":
        raise UsageError("--device: use cpu, cuda, cuda:N or all")
    dev = devices.resolve(spec)
    return [(dev.type, dev, None)]


def prepare_out_dir(out: Path) -> Path:
    """Create `out` and prove it is writable before any slow work starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return out


def read_manifest(directory: Path) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- parity


def _rows_sort_key(row: dict[str, Any]) -> tuple:
    fmt_order = {f: i for i, f in enumerate(FORMATS)}
    rt_order = {r: i for i, r in enumerate(RUNTIMES)}
    return (row["target"], fmt_order.get(row["format"], 9), rt_order.get(row["runtime"], 9), row["device"], row["batch"] or 0)


def _row(record: dict[str, Any], runtime: str, device: str, batch: int | None, **fields: Any) -> dict[str, Any]:
    row = {
        "target": record["target"],
        "format": record["format"],
        "runtime": runtime,
        "device": device,
        "batch": batch,
        "max_abs": None,
        "max_rel": None,
        "rtol": record["rtol"],
        "atol": record["atol"],
        "passed": None,
        "status": "skipped",
        "reason": "",
    }
    row.update(fields)
    if row["passed"] is not None:
        row["status"] = "passed" if row["passed"] else "failed"
    return row


def _load_runtimes(runtimes: Sequence[str]) -> Any:
    """`zoo.export.runtimes`, imported only when a native runtime is asked for."""
    native = [r for r in runtimes if r != "python"]
    if not native:
        return None
    try:
        from zoo.export import runtimes as runtime_module
    except ImportError as exc:
        raise ZooError(f"--runtime {','.join(native)} needs zoo.export.runtimes, which failed to import ({exc})") from None
    for name in native:
        ok, reason = runtime_module.available(name)
        if not ok:
            raise ZooError(f"runtime {name} is not available: {reason}")
    return runtime_module


def _check_in_python(
    record: dict[str, Any], art: Any, device_name: str, expected: dict[int, tuple], inputs_at: dict[int, tuple], output_names: list[str]
) -> list[dict[str, Any]]:
    from zoo.export.parity import compare

    # TorchScript's profiling executor swaps in an optimised (fused) graph after its
    # first runs: check the steady state too.
    runs = TORCHSCRIPT_RUNS if record["format"] == "torchscript" else 1
    rows = []
    for batch, inputs in inputs_at.items():
        verdicts = []
        for _ in range(runs):
            try:
                got = art(*inputs)
                verdicts.append(compare(expected[batch], got, output_names, art.output_names, record["rtol"], record["atol"]))
            except ZooError as exc:
                verdicts.append({"passed": False, "reason": str(exc)})
        rows.append(_row(record, "python", device_name, batch, **_worst(verdicts)))
    return rows


def _check_natively(
    runtime_module: Any,
    runtime: str,
    record: dict[str, Any],
    path: Path,
    device_name: str,
    target: Any,
    expected: dict[int, tuple],
    inputs_at: dict[int, tuple],
    output_names: list[str],
) -> list[dict[str, Any]]:
    import numpy as np

    from zoo.export.parity import compare

    rows = []
    for batch, inputs in inputs_at.items():
        feed = {spec.name: t.numpy() for spec, t in zip(target.inputs, inputs)}
        try:
            out = runtime_module.run(runtime, path, feed, device=device_name)
            got = tuple(np.asarray(v) for v in out.values())
            verdict = compare(expected[batch], got, output_names, list(out.keys()), record["rtol"], record["atol"])
        except ZooError as exc:
            verdict = {"passed": False, "reason": str(exc)}
        rows.append(_row(record, runtime, device_name, batch, **verdict))
    return rows


def _runs_on(record: dict[str, Any], runtime: str, device_name: str) -> bool:
    """Whether this (artifact, runtime, device) combination exists at all: a .pt2 holds
    code for one device; native runners take only their formats."""
    if record["format"] == "pt2" and record.get("device") != device_name:
        return False
    return runtime == "python" or record["format"] in NATIVE_FORMATS[runtime]


def run_parity(
    plugin: Plugin,
    model: Any,
    config: Any,
    directory: Path,
    records: list[dict[str, Any]],
    batch_sizes: Sequence[int],
    device_plan: list[tuple[str, Any, str | None]],
    runtimes: Sequence[str] = ("python",),
    latency: bool = True,
    log: Log = _quiet_log,
) -> tuple[list[dict], list[dict]]:
    """Parity rows (every record x runtime x device x batch) and batch-1 latency rows.

    Inputs are the target's seeded example inputs; eager outputs are computed once per
    device and batch (TF32 off on CUDA) and every artifact is compared with them."""
    import torch

    from zoo.export import artifacts
    from zoo.export.parity import PARITY_SEED, median_ms, strict_fp32
    from zoo.export_support import as_tuple

    runtime_module = _load_runtimes(runtimes)
    models = {"cpu": model}
    rows: list[dict[str, Any]] = []
    latency_rows: list[dict[str, Any]] = []
    by_target: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_target.setdefault(record["target"], []).append(record)

    for target_name, target_records in by_target.items():
        target = plugin.target(target_name)
        inputs_at = {b: target.make_inputs(config, b, torch.Generator().manual_seed(PARITY_SEED)) for b in batch_sizes}
        latency_inputs = target.make_inputs(config, 1, torch.Generator().manual_seed(PARITY_SEED))
        output_names = [s.name for s in target.outputs]
        for device_name, device, skip in device_plan:
            if skip is not None:
                rows += [
                    _row(record, runtime, device_name, None, reason=skip)
                    for record in target_records
                    for runtime in runtimes
                    if _runs_on(record, runtime, device_name)
                ]
                continue
            if device_name not in models:
                models[device_name] = copy.deepcopy(model).to(device)
            module = target.module(models[device_name]).eval()

            def eager(inputs: tuple) -> tuple:
                with torch.inference_mode():
                    return as_tuple(module(*[t.to(device) for t in inputs]))

            with strict_fp32(device.type):
                expected = {b: tuple(o.detach().cpu().numpy() for o in eager(inputs_at[b])) for b in batch_sizes}
                loaded: dict[str, Any] = {}
                times: dict[str, float] = {}
                for record in target_records:
                    path = directory / record["path"]
                    for runtime in runtimes:
                        if not _runs_on(record, runtime, device_name):
                            continue
                        if runtime == "python":
                            try:
                                loaded[record["format"]] = art = artifacts.load(path, device=str(device))
                            except ZooError as exc:
                                rows += [_row(record, runtime, device_name, b, passed=False, reason=str(exc)) for b in batch_sizes]
                                continue
                            rows += _check_in_python(record, art, device_name, expected, inputs_at, output_names)
                        elif runtime == "node" and device_name != "cpu":
                            rows.append(
                                _row(record, runtime, device_name, None, reason="the Node runner uses onnxruntime-node's CPU binaries")
                            )
                        else:
                            rows += _check_natively(
                                runtime_module, runtime, record, path, device_name, target, expected, inputs_at, output_names
                            )
                            if latency:
                                feed = {s.name: t.numpy() for s, t in zip(target.inputs, latency_inputs)}
                                try:
                                    summary = runtime_module.latency(
                                        runtime, path, feed, device=device_name, threads=torch.get_num_threads()
                                    )
                                    times[f"{runtime}:{record['format']}"] = float(summary["median_ms"])
                                except ZooError as exc:
                                    log(f"latency of {record['path']} in {runtime} not measured: {exc}")

                if latency:
                    sync = torch.cuda.synchronize if device.type == "cuda" else None
                    on_device = tuple(t.to(device) for t in latency_inputs)
                    times["eager"] = median_ms(lambda: eager(on_device), sync=sync)
                    for fmt, art in loaded.items():
                        # ONNX Runtime takes host arrays; torch runtimes take tensors on the device.
                        prepared = art.prepare(*latency_inputs) if fmt == "onnx" else art.prepare(*on_device)
                        times[fmt] = median_ms(lambda art=art, prepared=prepared: art.run_prepared(prepared), sync=sync)
                    for runtime_name, ms in sorted(times.items(), key=lambda kv: kv[0] != "eager"):
                        latency_rows.append(
                            {
                                "target": target_name,
                                "device": device_name,
                                "runtime": LATENCY_NAMES.get(runtime_name, runtime_name),
                                "format": None if runtime_name == "eager" else runtime_name.split(":")[-1],
                                "batch": 1,
                                "median_ms": float(f"{ms:.4g}"),
                                "ratio_to_eager": float(f"{ms / times['eager']:.4g}") if times["eager"] > 0 else None,
                            }
                        )
    rows.sort(key=_rows_sort_key)
    return rows, latency_rows


def _worst(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The first failing verdict, else the one with the largest error."""
    failed = [v for v in verdicts if not v["passed"]]
    if failed:
        return failed[0]
    return max(verdicts, key=lambda v: (v.get("max_abs") or 0.0, v.get("max_rel") or 0.0))


def overall_passed(rows: list[dict[str, Any]]) -> bool:
    ran = [r for r in rows if r["status"] != "skipped"]
    return bool(ran) and all(r["passed"] for r in ran)


# --------------------------------------------------------------------------- export


def artifact_record(directory: Path, path: Path, metadata: dict[str, Any], seconds: float) -> dict[str, Any]:
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
    if "opset" in metadata:
        record["opset"] = metadata["opset"]
    if "device" in metadata:
        record["device"] = metadata["device"]
    return record


def _key(record: dict[str, Any]) -> tuple:
    return (record["target"], record["format"], record.get("device"))


def _merge_previous(directory: Path, plugin: Plugin, source: Any, new_records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Artifacts of an earlier export into the same directory from the same weights,
    of (target, format) pairs not exported this time, whose files are untouched:
    `zoo export vae` then `zoo export vae --pt2` leaves one manifest with all three."""
    from zoo.checkpoint import sha256_file

    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if old.get("plugin") != plugin.name or (old.get("source") or {}).get("state_sha256") != source.state_sha256:
        return None
    done = {_key(r) for r in new_records}
    kept = []
    for record in old.get("artifacts", []):
        file = directory / record.get("path", "")
        if _key(record) in done or not file.is_file():
            continue
        if sha256_file(file) == record.get("sha256"):
            kept.append(record)
    if not kept:
        return None
    keys = {(r["target"], r["format"]) for r in kept}
    return {
        "artifacts": kept,
        "parity": [r for r in old.get("parity", []) if (r.get("target"), r.get("format")) in keys],
        "latency": [r for r in old.get("latency", []) if (r.get("target"), r.get("format")) in keys],
    }


def export(
    plugin: Plugin,
    model: Any,
    config: Any,
    source: Any,
    *,
    targets: Sequence[str] | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    out_dir: Path,
    opset: int | None = None,
    batch_sizes: Sequence[int] = (1, 4),
    device_plan: list[tuple[str, Any, str | None]] | None = None,
    export_batch: int = 2,
    latency: bool = True,
    data_info: Any = None,
    log: Log = _quiet_log,
) -> dict[str, Any]:
    """Write every (target, format) artifact into `out_dir`, run parity, write and
    return the manifest (`export.json`)."""
    import torch

    from zoo import config as zconfig
    from zoo import versions
    from zoo.checkpoint import write_json
    from zoo.export import formats as fmts
    from zoo.export.parity import strict_fp32
    from zoo.targets import check_target, target_io

    if not plugin.export_targets:
        raise UsageError(f"plugin {plugin.name!r} declares no export targets")
    chosen = [plugin.target(name) for name in targets] if targets else list(plugin.export_targets)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown format {unknown[0]!r} (formats: {', '.join(FORMATS)})")
    if export_batch < 2:
        raise UsageError(f"--export-batch {export_batch}: use 2 or more (torch.export specializes sizes 0 and 1)")
    device_plan = device_plan if device_plan is not None else plan_devices("all")
    onnx_opset = fmts.check_opset(opset) if "onnx" in formats else None
    out_dir = prepare_out_dir(out_dir)

    records: list[dict[str, Any]] = []
    for target in chosen:
        module = target.module(model).eval()
        gen_seed = 0
        check_target(target, config, module)
        export_inputs = target.make_inputs(config, export_batch, torch.Generator().manual_seed(gen_seed))
        check_inputs = target.make_inputs(config, export_batch + 1, torch.Generator().manual_seed(gen_seed + 1))
        io = target_io(target, config, module, data_info=data_info)
        program = None
        if "onnx" in formats or "pt2" in formats:
            # One torch.export serves ONNX and the CPU .pt2, and names every
            # dynamic output dim from the program itself (target_io knows only what the
            # target declares).
            program = fmts.torch_export(module, target, export_inputs)
            io = fmts.symbolic_io(program, target, io)
        elif target.dynamic_dims:
            try:
                io = fmts.symbolic_io(fmts.torch_export(module, target, export_inputs), target, io)
            except ZooError as exc:
                # TorchScript does not need torch.export; only the output axis names do.
                log(f"note: output axes of {target.name} named from the example only ({exc})")
        meta = fmts.base_metadata(plugin, target, io, source.sha256, config, data_info)
        for fmt in formats:
            if fmt == "torchscript":
                path = out_dir / artifact_name(target.name, fmt)
                t0 = time.perf_counter()
                final = fmts.export_torchscript(module, target, export_inputs, check_inputs, path, meta)
                records.append(artifact_record(out_dir, path, final, time.perf_counter() - t0))
            elif fmt == "onnx":
                path = out_dir / artifact_name(target.name, fmt)
                t0 = time.perf_counter()
                final = fmts.export_onnx(module, target, export_inputs, path, meta, onnx_opset, exported_program=program)
                records.append(artifact_record(out_dir, path, final, time.perf_counter() - t0))
            elif fmt == "pt2":
                for device_name, device, skip in device_plan:
                    if skip is not None:
                        continue
                    path = out_dir / artifact_name(target.name, fmt, device_name)
                    t0 = time.perf_counter()
                    if device.type == "cpu":
                        final = fmts.export_pt2(program, target, path, meta, device_name)
                    else:
                        # Compiled with TF32 off: Inductor fixes the matmul precision of
                        # its kernels at compile time, and parity is an fp32 promise.
                        with strict_fp32(device.type):
                            moved = target.module(copy.deepcopy(model).to(device)).eval()
                            device_program = fmts.torch_export(moved, target, tuple(t.to(device) for t in export_inputs))
                            final = fmts.export_pt2(device_program, target, path, meta, device_name)
                    records.append(artifact_record(out_dir, path, final, time.perf_counter() - t0))
            log(f"exported {plugin.name}:{target.name} as {fmt}")

    log("checking parity")
    rows, latency_rows = run_parity(plugin, model, config, out_dir, records, batch_sizes, device_plan, latency=latency, log=log)
    if "pt2" in formats:
        for target in chosen:
            for device_name, _device, skip in device_plan:
                if skip is not None:
                    stub = {"target": target.name, "format": "pt2", "rtol": target.rtol, "atol": target.atol}
                    rows.append(_row(stub, "python", device_name, None, reason=f"{skip}: no {device_name} .pt2 compiled"))
        rows.sort(key=_rows_sort_key)
    previous = _merge_previous(out_dir, plugin, source, records)
    if previous is not None:
        records = previous["artifacts"] + records
        rows = sorted(previous["parity"] + rows, key=_rows_sort_key)
        latency_rows = previous["latency"] + latency_rows
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
        "artifacts": records,
        "parity": rows,
        "latency": latency_rows,
        "passed": overall_passed(rows),
    }
    if onnx_opset is not None:
        manifest["opset"] = onnx_opset
    write_json(manifest, out_dir / MANIFEST)
    return manifest


# --------------------------------------------------------------------------- verify


def verify(
    directory: Path,
    *,
    device_plan: list[tuple[str, Any, str | None]] | None = None,
    runtimes: Sequence[str] = ("python",),
    batch_sizes: Sequence[int] | None = None,
    checkpoint: str | None = None,
    weights: str | None = None,
    latency: bool = True,
    log: Log = _quiet_log,
) -> dict[str, Any]:
    """Re-run the parity checks of an export directory; refuses artifacts whose bytes
    changed since export. Returns a report shaped like the manifest (not written)."""
    from zoo import _registry
    from zoo.checkpoint import sha256_file

    manifest = read_manifest(directory)
    plugin = _registry.get_plugin(manifest["plugin"])
    records = manifest["artifacts"]
    if not records:
        raise ZooError(f"{directory / MANIFEST} lists no artifacts")
    for record in records:
        path = directory / record["path"]
        if not path.is_file():
            raise ZooError(f"artifact {path} listed in {MANIFEST} is missing")
        actual = sha256_file(path)
        if actual != record["sha256"]:
            raise ZooError(
                f"artifact {path} was modified after export (sha256 {actual[:12]}..., {MANIFEST} says {record['sha256'][:12]}...); refusing to verify it"
            )
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise UsageError(f"unknown runtime {unknown[0]!r} (runtimes: {', '.join(RUNTIMES)}, all)")
    built = rebuild_model(plugin, manifest, checkpoint=checkpoint, weights=weights)
    model, config = built.model, built.config
    sizes = list(batch_sizes or manifest.get("batch_sizes") or (1, 4))
    plan = device_plan if device_plan is not None else plan_devices("all")
    rows, latency_rows = run_parity(plugin, model, config, directory, records, sizes, plan, runtimes=runtimes, latency=latency, log=log)
    return {
        "directory": str(directory),
        "plugin": plugin.name,
        "source": manifest.get("source"),
        "batch_sizes": sizes,
        "runtimes": list(runtimes),
        "artifacts": records,
        "parity": rows,
        "latency": latency_rows,
        "passed": overall_passed(rows),
    }
