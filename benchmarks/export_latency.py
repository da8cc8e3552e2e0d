"""Batch-1 CPU latency of every plugin export target: eager PyTorch vs TorchScript vs ONNX
Runtime, side by side in one run, with ratios to eager (< 1 is faster than eager).

Each plugin is exported the way `zoo export PLUGIN --random-init` does it (same code path,
parity checked at batch 1), then every runtime is timed in this process on the same seeded
batch-1 inputs, with the same intra-op thread count. The runtimes take turns in several
rounds, so a burst of load from elsewhere on the machine hits all of them alike; the
figure is the median over every timed call.

    python benchmarks/export_latency.py [--plugins vae,convnet] [--threads N]
                                        [--rounds 5] [--calls 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from zoo import get_plugin, list_plugins
from zoo.export import artifacts, pipeline

RUNTIMES = ("eager", "torchscript", "onnxruntime")


def time_calls(call, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def bench_plugin(name: str, out: Path, args: argparse.Namespace) -> list[dict]:
    plugin = get_plugin(name)
    built = pipeline.build_model(plugin, random_init=True)
    model, config = built.model, built.config
    manifest = pipeline.export(
        plugin,
        model,
        config,
        built.source,
        formats=("torchscript", "onnx"),
        out_dir=out,
        batch_sizes=(1,),
        device_plan=pipeline.plan_devices("cpu"),
        latency=False,
        data_info=built.data_info,
    )
    if not manifest["passed"]:
        raise SystemExit(f"{name}: parity failed; latency of a wrong model means nothing")
    results = []
    files = {(a["target"], a["format"]): out / a["path"] for a in manifest["artifacts"]}
    for target in plugin.export_targets:
        if (target.name, "torchscript") not in files or (target.name, "onnx") not in files:
            continue  # the target opts out of one of them (skip_formats)
        module = target.module(model).eval()
        inputs = target.make_inputs(config, 1, torch.Generator().manual_seed(0), data=built.data_info)
        ts = artifacts.load(files[(target.name, "torchscript")])
        ort = artifacts.load(files[(target.name, "onnx")])
        ts_inputs = ts.prepare(*inputs)
        ort_inputs = ort.prepare(*inputs)

        def eager():
            with torch.inference_mode():
                return module(*inputs)

        calls = {
            "eager": eager,
            "torchscript": lambda: ts.run_prepared(ts_inputs),
            "onnxruntime": lambda: ort.run_prepared(ort_inputs),
        }
        for call in calls.values():  # warm-up: allocators, TorchScript's profiling runs
            for _ in range(args.warmup):
                call()
        samples: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
        for _ in range(args.rounds):
            for rt in RUNTIMES:
                samples[rt] += time_calls(calls[rt], args.calls)
        medians = {rt: statistics.median(samples[rt]) for rt in RUNTIMES}
        results.append(
            {
                "plugin": name,
                "target": target.name,
                "threads": torch.get_num_threads(),
                **{f"{rt}_ms": round(medians[rt], 4) for rt in RUNTIMES},
                "torchscript_ratio": round(medians["torchscript"] / medians["eager"], 3),
                "onnxruntime_ratio": round(medians["onnxruntime"] / medians["eager"], 3),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", default=",".join(list_plugins()), help="comma-separated plugin names [default: all]")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for every runtime [default: torch's]")
    parser.add_argument("--rounds", type=int, default=5, help="turns each runtime takes")
    parser.add_argument("--calls", type=int, default=40, help="timed calls per runtime per round")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per runtime first")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of the table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # ONNX Runtime sessions take torch's count (zoo.export.artifacts)

    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-export-latency-") as tmp:
        for name in [p for p in args.plugins.split(",") if p]:
            started = time.perf_counter()
            rows += bench_plugin(name, Path(tmp) / name, args)
            print(f"# {name}: exported and timed in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"median batch-1 latency on the CPU, ms, {rows[0]['threads'] if rows else '?'} threads (ratio to eager PyTorch)")
    header = ("PLUGIN", "TARGET", "EAGER", "TORCHSCRIPT", "ONNXRUNTIME")
    table = [header] + [
        (
            r["plugin"],
            r["target"],
            f"{r['eager_ms']:.4f}",
            f"{r['torchscript_ms']:.4f} ({r['torchscript_ratio']:.2f}x)",
            f"{r['onnxruntime_ms']:.4f} ({r['onnxruntime_ratio']:.2f}x)",
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    worst = max((r["onnxruntime_ratio"] for r in rows), default=float("nan"))
    print(f"ONNX Runtime vs eager, worst target: {worst:.2f}x ({'no worse than eager' if worst <= 1.0 else 'SLOWER than eager'})")


if __name__ == "__main__":
    main()
