"""Training throughput: zoo's engine beside a plain hand-written loop, in one run.

For each plugin both sides train the same model on the same images with the same batch
size and optimizer. The plain loop is written the way pytorch/examples writes it: a
torchvision dataset read from disk with per-sample transforms, a DataLoader, and the
step spelled out by hand. zoo's engine reads the same files once into tensors and
batches by index. Printed: training samples/s (iterations/s for GANs) of each and the
ratio engine / plain (the issue asks for >= 1.0), plus achieved GFLOP/s of the engine's
step beside this machine's measured conv2d peak.

    python benchmarks/train_throughput.py [--plugins vae,convnet,dcgan,pix2pix] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_data import make_mnist  # noqa: E402  (writes real digits in MNIST's IDX layout)

from zoo import engine, get_plugin  # noqa: E402
from zoo.engine import config_from_dict  # noqa: E402


# --------------------------------------------------------------------------- plain loops


def plain_mnist_loader(root: Path, batch_size: int, size: int = 28, normalize: bool = False) -> DataLoader:
    from torchvision import datasets, transforms

    tf = [transforms.Resize(size)] if size != 28 else []
    tf.append(transforms.ToTensor())
    if normalize:
        tf.append(transforms.Normalize((0.5,), (0.5,)))
    ds = datasets.MNIST(str(root), train=True, download=False, transform=transforms.Compose(tf))
    return DataLoader(ds, batch_size=batch_size, shuffle=True)


def plain_vae(model, config, root: Path, epochs: int) -> tuple[float, int]:
    from zoo.plugins.vae import loss_function

    loader = plain_mnist_loader(root, config.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        model.train()
        for data, _ in loader:
            opt.zero_grad()
            recon, mu, logvar = model(data)
            bce, kld = loss_function(recon, data, mu, logvar)
            loss = bce + kld
            loss.backward()
            opt.step()
            loss.item()  # pytorch/examples reads the loss every step
            seen += len(data)
    return time.perf_counter() - start, seen


def plain_convnet(model, config, root: Path, epochs: int) -> tuple[float, int]:
    loader = plain_mnist_loader(root, config.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        model.train()
        for data, target in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            opt.step()
            loss.item()
            seen += len(data)
    return time.perf_counter() - start, seen


PLAIN = {"vae": plain_vae, "convnet": plain_convnet}


# --------------------------------------------------------------------------- engine side


def engine_run(name: str, config, data_spec: str, epochs: int, out: Path) -> tuple[float, int, list[dict]]:
    plugin = get_plugin(name)
    config = config_from_dict(plugin, {**engine.config_to_dict(config), "epochs": epochs})
    result = engine.train(plugin, config, data=data_spec, device="cpu", seed=0, out=out, progress="none")
    seconds = sum(r["seconds"] for r in result.history)
    seen = sum(round(r["samples_per_second"] * r["seconds"]) for r in result.history)
    return seconds, seen, result.history


def peak_gflops() -> float:
    """This machine's conv2d throughput on a large, well-shaped problem (fp32, forward)."""
    x = torch.randn(32, 128, 56, 56)
    w = torch.randn(128, 128, 3, 3)
    F.conv2d(x, w, padding=1)
    flops = 2 * 32 * 128 * 56 * 56 * 128 * 9
    times = []
    for _ in range(5):
        t = time.perf_counter()
        F.conv2d(x, w, padding=1)
        times.append(time.perf_counter() - t)
    return flops / statistics.median(times) / 1e9


def step_flops(name: str, config, data_spec: str) -> float:
    """FLOPs of one engine training step (forward and backward), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from zoo import data as zdata

    plugin = get_plugin(name)
    splits = zdata.load(data_spec, plugin.data_request(config))
    model = plugin.build(config)
    trainer = plugin.trainer_class(model, config, torch.device("cpu"))
    optimizers = trainer.configure_optimizers()
    batch = next(splits.train.batches(config.batch_size, generator=torch.Generator().manual_seed(0)))
    batch = trainer.augment(batch, torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(batch, optimizers, 0)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugins", default=",".join(PLAIN))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    peak = peak_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_mnist(tmp / "mnist", n_train=1497, n_test=300)
        spec = f"mnist:{root}"
        for name in args.plugins.split(","):
            plugin = get_plugin(name)
            config = plugin.config()
            best_plain, best_engine = 0.0, 0.0
            for rep in range(args.repeats):
                torch.manual_seed(rep)
                seconds, seen = PLAIN[name](plugin.build(config), config, root, args.epochs)
                best_plain = max(best_plain, seen / seconds)
                seconds, seen, _ = engine_run(name, config, spec, args.epochs, tmp / f"{name}-{rep}")
                best_engine = max(best_engine, seen / seconds)
            flops = step_flops(name, config, spec)
            steps_per_s = best_engine / config.batch_size
            rows.append(
                {
                    "plugin": name,
                    "batch_size": config.batch_size,
                    "plain_samples_per_s": round(best_plain, 1),
                    "engine_samples_per_s": round(best_engine, 1),
                    "ratio": round(best_engine / best_plain, 3),
                    "engine_gflops": round(flops * steps_per_s / 1e9, 2),
                    "peak_gflops": round(peak, 2),
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'plugin':<10}{'batch':>6}{'plain/s':>12}{'engine/s':>12}{'ratio':>8}{'GFLOP/s':>10}{'peak':>8}")
    for r in rows:
        print(f"{r['plugin']:<10}{r['batch_size']:>6}{r['plain_samples_per_s']:>12}{r['engine_samples_per_s']:>12}"
              f"{r['ratio']:>8}{r['engine_gflops']:>10}{r['peak_gflops']:>8}")
    print("samples/s of training steps only (evaluation excluded), best of", args.repeats, "alternating runs")
    worst = min(r["ratio"] for r in rows)
    print(f"lowest ratio engine/plain: {worst} ({'ok' if worst >= 1.0 else 'BELOW 1.0'})")


if __name__ == "__main__":
    main()
