"""Batch-1 latency of every plugin's export targets in every runtime zoo ships, in one run.

For each plugin, `zoo export PLUGIN --random-init --all-formats` writes TorchScript, ONNX and a
CPU `.pt2`; then each target is timed at batch 1 on the CPU in

    eager PyTorch (Python) | TorchScript in C++ (zoo-run) | .pt2 in C++ (zoo-run)
    | ONNX Runtime in Python | ONNX Runtime in Node (onnxruntime-node)

and printed as median milliseconds with the ratio to eager (< 1 is faster than eager). Every
number is timed inside its runtime around the model call alone, after warm-up runs: process
start, model loading and file I/O are excluded. All runtimes use the same intra-op thread count.

    python benchmarks/runtime_latency.py [--plugins vae,convnet] [--repeat 200] [--warmup 20]
                                         [--threads N] [--exports DIR] [--json]

`--exports DIR` keeps the exports there and reuses them on the next run (the .pt2 compile takes
about half a minute per target).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zoo import get_plugin, list_plugins
from zoo.export import runtimes

COLUMNS = ("eager", "torchscript-cpp", "pt2-cpp", "onnxruntime-python", "onnxruntime-node")


class ExportFailed(Exception):
    pass


def _covers_every_format(manifest: dict) -> bool:
    """Whether an earlier export holds every format (or the target's reason for skipping one)."""
    done = {(a["target"], a["format"]) for a in manifest["artifacts"]} | {
        (s["target"], s["format"]) for s in manifest.get("skipped_formats", [])
    }
    return all((t, f) in done for t in {t for t, _ in done} for f in ("torchscript", "onnx", "pt2"))


def export(plugin: str, out: Path) -> list[dict]:
    """The artifacts of `zoo export PLUGIN` in `out` (exported now unless already there)."""
    manifest = out / "export.json"
    if not manifest.is_file() or not _covers_every_format(json.loads(manifest.read_text())):
        cmd = [
            sys.executable,
            "-m",
            "zoo.cli",
            "export",
            plugin,
            "--random-init",
            "--all-formats",
            "--device",
            "cpu",
            "--batch-sizes",
            "1",
            "--no-latency",
            "--out",
            str(out),
        ]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ExportFailed(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
        print(f"# exported {plugin} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return json.loads(manifest.read_text())["artifacts"]


def median_ms(fn, repeat: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_target(plugin_name: str, target_name: str, files: dict[str, Path], args) -> dict[str, float]:
    import onnxruntime

    from zoo.models import build_model

    plugin = get_plugin(plugin_name)
    built = build_model(plugin, random_init=True)  # the weights `zoo export --random-init` exported
    config = built.config
    target = plugin.target(target_name)
    module = target.module(built.model).eval()
    tensors = target.make_inputs(config, 1, torch.Generator().manual_seed(0), data=built.data_info)
    feed = {spec.name: t.numpy() for spec, t in zip(target.inputs, tensors)}

    # A column is None where the target opts out of the format (skip_formats).
    result: dict[str, float | None] = dict.fromkeys(COLUMNS)
    with torch.inference_mode():
        result["eager"] = median_ms(lambda: module(*tensors), args.repeat, args.warmup)
    common = dict(repeat=args.repeat, warmup=args.warmup, threads=args.threads)
    if "torchscript" in files:
        result["torchscript-cpp"] = runtimes.latency("cpp", files["torchscript"], feed, **common)["median_ms"]
    if "pt2" in files:
        result["pt2-cpp"] = runtimes.latency("cpp", files["pt2"], feed, **common)["median_ms"]
    if "onnx" in files:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(str(files["onnx"]), options, providers=["CPUExecutionProvider"])
        result["onnxruntime-python"] = median_ms(lambda: session.run(None, feed), args.repeat, args.warmup)
        result["onnxruntime-node"] = runtimes.latency("node", files["onnx"], feed, **common)["median_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", default=",".join(list_plugins()), help="comma-separated plugins [default: every installed one]")
    parser.add_argument("--repeat", type=int, default=200, help="timed runs per runtime")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads of every runtime")
    parser.add_argument("--exports", type=Path, default=None, help="keep exports here and reuse them [default: a temporary directory]")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if args.threads > 1 and load > cores:
        # OpenMP threads that wait for each other at every operator stall when other processes
        # hold the cores: medians then measure the neighbours, not the runtime.
        print(f"# warning: load {load:.1f} on {cores} cores; multi-threaded timings are unreliable here, try --threads 1", file=sys.stderr)

    for runtime in ("cpp", "node"):
        ok, reason = runtimes.available(runtime)
        if not ok:
            raise SystemExit(f"the {runtime} runtime is not available: {reason}")
    started = time.perf_counter()
    runtimes.cpp_runner(), runtimes.node_runner()
    print(f"# zoo-run built and onnxruntime-node installed (or found cached) in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    rows, failures = [], {}
    with tempfile.TemporaryDirectory(prefix="zoo-runtime-latency-") as tmp:
        root = args.exports or Path(tmp)
        for plugin in [p.strip() for p in args.plugins.split(",") if p.strip()]:
            try:
                exported = export(plugin, root / plugin)
            except ExportFailed as exc:
                failures[plugin] = str(exc)
                print(f"# zoo export {plugin} failed: {exc}", file=sys.stderr)
                continue
            by_target: dict[str, dict[str, Path]] = {}
            for a in exported:
                by_target.setdefault(a["target"], {})[a["format"]] = root / plugin / a["path"]
            for target, files in by_target.items():
                rows.append({"plugin": plugin, "target": target, **bench_target(plugin, target, files, args)})
                print(f"# timed {plugin}:{target}", file=sys.stderr)

    note = (
        f"median latency, batch 1, CPU, {args.threads} intra-op threads, {args.repeat} runs after {args.warmup} warm-up runs; "
        "timed inside each runtime around the model call only (process start, model load and file I/O excluded)"
    )
    if args.json:
        print(json.dumps({"note": note, "torch": torch.__version__, "rows": rows, "export_failures": failures}, indent=2))
        return
    print(note)
    print("ms (ratio to eager; < 1 is faster than eager PyTorch)")
    table = [("PLUGIN", "TARGET", *[c.upper() for c in COLUMNS])]
    for r in rows:
        cells = [f"{r['eager']:.4f}"] + [f"{r[c]:.4f} ({r[c] / r['eager']:.2f}x)" if r[c] is not None else "-" for c in COLUMNS[1:]]
        table.append((r["plugin"], r["target"], *cells))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if rows:
        ratios = {c: float(np.exp(np.mean([np.log(r[c] / r["eager"]) for r in rows if r[c] is not None] or [np.nan]))) for c in COLUMNS[1:]}
        print("geometric mean ratio to eager: " + ", ".join(f"{c} {v:.2f}x" for c, v in ratios.items()))
    for plugin, reason in failures.items():
        print(f"{plugin}: not timed, `zoo export` failed: {reason}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
