"""Issue 4's sample-quality figures for the GANs, after default training on the digits.

A convnet trained on the same digits judges 1,000 samples of each generator (the
computation of `zoo evaluate`):
- cgan: the fraction of samples classified as the class they were conditioned on (>= 0.8);
- gan, dcgan: the convnet's mean max-probability (>= 0.8: samples look like digits) and
  the number of distinct predicted classes (>= 8: not all one digit).

Every model is trained here with its defaults (`zoo train NAME`), unless a checkpoint is
given; the training time of each is printed beside its figures. Exit 1 if a figure is
missed.

    python benchmarks/generative_quality.py [--plugins gan,cgan,dcgan] [--classifier CKPT]
        [--checkpoint NAME=PATH ...] [--out DIR] [-n 1000] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from zoo import DataRequest, Labels, datasets, engine, get_plugin
from zoo.commands.evaluate import sample_quality, within_class_std
from zoo.commands.runner import open_runner

# name -> [(figure, minimum)], from issue 4
FIGURES = {
    "cgan": [("conditional_accuracy", 0.8)],
    "gan": [("mean_max_probability", 0.8), ("distinct_classes", 8)],
    "dcgan": [("mean_max_probability", 0.8), ("distinct_classes", 8)],
}


def train_default(name: str, out: Path) -> tuple[Path, dict]:
    """`zoo train NAME` with its defaults; returns the checkpoint and timings."""
    import resource

    plugin = get_plugin(name)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    result = engine.train(plugin, plugin.config(), out=out / name, progress="none")
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    last = result.history[-1]
    return result.checkpoint, {
        "train_seconds": round(time.perf_counter() - wall0, 1),
        # the optimisation steps alone; the rest is evaluation, sample grids and checkpoints
        "step_seconds": round(sum(r["seconds"] for r in result.history), 1),
        "train_cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
        "epochs": last["epoch"],
        "steps": last["step"],
        **{k: round(v, 4) for k, v in last.items() if k.startswith("val_")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", default="gan,cgan,dcgan")
    parser.add_argument("--classifier", default=None, help="a trained convnet checkpoint (default: train one)")
    parser.add_argument(
        "--checkpoint", action="append", default=[], metavar="NAME=PATH", help="use this checkpoint instead of training NAME"
    )
    parser.add_argument("--out", default="runs/generative_quality", help="where trained runs go")
    parser.add_argument("-n", type=int, default=1000, help="samples per generator (issue 4: 1,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    given = dict(item.split("=", 1) for item in args.checkpoint)

    rows = []
    classifier_path, classifier_info = (args.classifier, {}) if args.classifier else train_default("convnet", out)
    if classifier_info:
        print(
            f"convnet: trained in {classifier_info['train_seconds']} s, val_accuracy {classifier_info['val_accuracy']}",
            file=sys.stderr,
            flush=True,
        )
    classifier = open_runner(
        get_plugin("convnet"), "classifier", checkpoint=str(classifier_path), weights=None, artifact=None, device=args.device
    )
    real = datasets.load("digits", DataRequest(classifier.input_request(), Labels("label"))).val.tensors
    reference = within_class_std(real["image"], real["label"])  # what real digits score, for comparison
    for name in [n.strip() for n in args.plugins.split(",") if n.strip()]:
        if name in given:
            path, info = given[name], {}
        else:
            path, info = train_default(name, out)
            print(f"{name}: trained in {info['train_seconds']} s ({info['steps']} steps)", file=sys.stderr, flush=True)
        runner = open_runner(
            get_plugin(name), get_plugin(name).sample_target, checkpoint=str(path), weights=None, artifact=None, device=args.device
        )
        result = {**sample_quality(runner, classifier, args.n, args.seed), **info}
        result["checks"] = [
            {"figure": figure, "value": result[figure], "minimum": minimum, "passed": result[figure] >= minimum}
            for figure, minimum in FIGURES.get(name, [])
        ]
        rows.append(result)

    passed = all(c["passed"] for r in rows for c in r["checks"])
    if args.json:
        print(
            json.dumps(
                {
                    "classifier": str(classifier_path),
                    **classifier_info,
                    "real_digits_within_class_std": reference,
                    "results": rows,
                    "passed": passed,
                },
                indent=2,
            )
        )
    else:
        print(f"judge: convnet {classifier_path}" + (f" (val_accuracy {classifier_info['val_accuracy']})" if classifier_info else ""))
        print(f"within-class std of the real digits (validation split): {reference:.4f}")
        print(f"{'plugin':<8} {'cond.acc':>8} {'max-prob':>8} {'classes':>7} {'w.c.std':>7} {'train s':>8} {'cpu s':>8}  checks")
        for r in rows:
            checks = ", ".join(
                f"{c['figure']} {c['value']:.4g} >= {c['minimum']}: {'pass' if c['passed'] else 'FAIL'}" for c in r["checks"]
            )
            cond = f"{r['conditional_accuracy']:.4f}" if "conditional_accuracy" in r else "-"
            print(
                f"{r['plugin']:<8} {cond:>8} {r['mean_max_probability']:>8.4f} {r['distinct_classes']:>7} {r['within_class_std']:>7.4f} "
                f"{r.get('train_seconds', '-'):>8} {r.get('train_cpu_seconds', '-'):>8}  {checks or '-'}"
            )
        print("all figures met" if passed else "some figures were missed")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
