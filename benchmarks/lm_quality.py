"""The default language-model runs against n-gram baselines, on the default split of
CPython's bundled documentation (`--data pydoc`), in one run.

    python benchmarks/lm_quality.py [--threads 2] [--only rnn|transformer] [--keep DIR]

Prints the unigram and add-one bigram models' validation bits per character (measured
here on the same split), then for `zoo train rnn` (LSTM) and `zoo train transformer`
with their defaults: the final val_bpc, the training minutes, and whether each reaches
issue 12's bar (at most 1.50 and 1.60 bits per character in at most 10 minutes).
"""

from __future__ import annotations

import argparse
import collections
import math
import tempfile
import time
from pathlib import Path

import torch

from zoo import engine, get_plugin
from zoo.datasets.text import pydoc_text, split_text

BARS = {"rnn": 1.50, "transformer": 1.60}
MINUTES = 10.0


def baselines() -> dict[str, float]:
    train, val = split_text(pydoc_text())
    vocabulary = sorted(set(train))
    val = "".join(c for c in val if c in set(vocabulary))
    counts = collections.Counter(train)
    n, v = len(train), len(vocabulary)
    unigram = -sum(math.log2(counts[c] / n) for c in val) / len(val)
    pairs = collections.Counter(zip(train, train[1:]))
    bigram = -sum(math.log2((pairs[(a, b)] + 1) / (counts[a] + v)) for a, b in zip(val, val[1:])) / (len(val) - 1)
    return {"unigram": unigram, "add-one bigram": bigram}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", choices=sorted(BARS), default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs in DIR/PLUGIN (e.g. to publish their weights)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name, bpc in baselines().items():
        print(f"{name:16} val_bpc {bpc:.3f}")
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for name in [args.only] if args.only else sorted(BARS):
            plugin = get_plugin(name)
            start = time.perf_counter()
            result = engine.train(plugin, plugin.config(), out=Path(tmp) / name, progress="lines")
            minutes = (time.perf_counter() - start) / 60
            bpc = result.history[-1]["val_bpc"]
            ok = bpc <= BARS[name] and minutes <= MINUTES
            print(
                f"{name:16} val_bpc {bpc:.3f} in {minutes:.1f} min (bar: <= {BARS[name]:.2f} in <= {MINUTES:.0f} min): {'PASS' if ok else 'FAIL'}"
            )
            sample = Path(tmp) / name / "samples" / f"epoch_{result.history[-1]['epoch']:03d}.txt"
            if sample.is_file():
                print("  sample:", sample.read_text()[:240].replace("\n", " / "))


if __name__ == "__main__":
    main()
