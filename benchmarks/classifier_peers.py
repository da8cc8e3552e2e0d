"""zoo's classic classifiers beside their scikit-learn peers, on exactly zoo's split of
the bundled digits (28x28, 1,497 training and 300 validation images), in one run.

    python benchmarks/classifier_peers.py [--threads 1] [--seed 0] [--keep DIR]

Prints, for each pair, the validation accuracy and the fit time of both and whether
zoo reaches its peer (issue 14): linear --loss softmax against LogisticRegression,
linear --loss svm against LinearSVC, knn against KNeighborsClassifier with the same
k and distance, mlp against MLPClassifier with the same hidden sizes; and resnet
(depth 20) against convnet's packaged DEFAULT weights, 0.993.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from zoo import DataRequest, datasets, engine, get_plugin


def digits() -> tuple:
    splits = datasets.load("digits", DataRequest.images(28, num_classes=10))
    flat = lambda split: (split.tensors["image"].flatten(1).numpy(), split.tensors["label"].numpy())  # noqa: E731
    return flat(splits.train), flat(splits.val)


def zoo_run(name: str, seed: int, out: Path, run_name: str | None = None, **overrides) -> tuple[float, float]:
    plugin = get_plugin(name)
    config = plugin.config(**overrides)
    start = time.perf_counter()
    result = engine.train(plugin, config, seed=seed, out=out / (run_name or name), progress="none", overwrite=True)
    return result.history[-1]["val_accuracy"], time.perf_counter() - start


def peer(make, train, val) -> tuple[float, float]:
    start = time.perf_counter()
    model = make().fit(*train)
    seconds = time.perf_counter() - start
    return float(model.score(*val)), seconds


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import LinearSVC

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-resnet", action="store_true", help="leave out the minute-long resnet row")
    parser.add_argument("--keep", type=Path, default=None, help="keep zoo's runs in DIR/PLUGIN[-LOSS] (e.g. to publish their weights)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train, val = digits()
    knn, mlp = get_plugin("knn").config(), get_plugin("mlp").config()
    rows = [
        ("linear --loss softmax", dict(loss="softmax"), "linear", "LogisticRegression()", lambda: LogisticRegression(max_iter=1000)),
        ("linear --loss svm", dict(loss="svm"), "linear", "LinearSVC()", lambda: LinearSVC()),
        (
            f"knn --k {knn.k} --distance {knn.distance}",
            {},
            "knn",
            f"KNeighborsClassifier({knn.k}, p={2 if knn.distance == 'l2' else 1})",
            lambda: KNeighborsClassifier(n_neighbors=knn.k, p=2 if knn.distance == "l2" else 1),
        ),
        (
            f"mlp --hidden {','.join(map(str, mlp.hidden))}",
            {},
            "mlp",
            f"MLPClassifier({mlp.hidden})",
            lambda: MLPClassifier(mlp.hidden, random_state=args.seed),
        ),
    ]
    print(f"{'zoo':34} {'acc':>6} {'fit s':>7}   {'peer':34} {'acc':>6} {'fit s':>7}   reaches")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        for label, overrides, name, peer_label, make in rows:
            ours, ours_s = zoo_run(name, args.seed, out, run_name="-".join([name, *map(str, overrides.values())]), **overrides)
            theirs, theirs_s = peer(make, train, val)
            print(
                f"{label:34} {ours:6.4f} {ours_s:7.2f}   {peer_label:34} {theirs:6.4f} {theirs_s:7.2f}   {'yes' if ours >= theirs - 1e-9 else 'NO'}"
            )
        if not args.skip_resnet:
            ours, ours_s = zoo_run("resnet", args.seed, out)
            reference = float(dict(get_plugin("convnet").get_weights("DEFAULT").meta)["metrics"]["val_accuracy"])
            print(
                f"{'resnet --depth 20':34} {ours:6.4f} {ours_s:7.2f}   {'convnet DEFAULT weights':34} {reference:6.4f} {'-':>7}   "
                f"{'yes' if ours >= reference - 1e-9 else 'NO'}"
            )


if __name__ == "__main__":
    main()
