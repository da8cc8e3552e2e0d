"""Training throughput: zoo's engine beside a plain hand-written loop, in one run.

For each plugin both sides train the same model on the same images with the same batch
size and the same update rule. The plain loop is written the way pytorch/examples (and
the pix2pix reference) writes it: a torchvision dataset or Dataset class read from disk
with per-sample transforms, a DataLoader, the step spelled out by hand, and
`optim.Adam(params, lr, betas)`. zoo's engine, with each plugin as shipped, reads the
same files once into tensors and batches by index. pix2pix's files are real A|B pairs
written from the offline colorization pairs.

Printed: training iterations/s of each side and the ratio engine / plain (the issue
asks for >= 1.0). Where a plugin ships a different implementation of Adam than the
references' default (pix2pix: fused), the plain loop runs a second time with the
plugin's own optimizers, and `same-opt` is the ratio against that run: it separates
what the loop and data path gain from what the optimizer gains. Also printed: the
FLOPs of one step (torch's FlopCounterMode) and the engine's achieved GFLOP/s beside
this machine's conv2d peak, measured in the same run.

    python benchmarks/train_throughput.py [--plugins vae,convnet,dcgan,pix2pix] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_data import make_mnist  # noqa: E402  (writes real digits in MNIST's IDX layout)

from zoo import config as zconfig  # noqa: E402
from zoo import datasets, engine, get_plugin  # noqa: E402

# --------------------------------------------------------------------------- plain loops
# Each plain side is written the way its reference writes it: a torchvision dataset or
# a Dataset class that opens files and transforms each sample, a DataLoader, and the
# step spelled out by hand. Losses are read back every step (the references read them
# every 10-100 steps to print; on a CPU reading a scalar costs nothing measurable).
# Optimizers come in from the caller: `reference_optimizers` builds them the way
# pytorch/examples vae and dcgan and the pix2pix reference do (the mnist example's
# Adadelta is not used: zoo's convnet trains with Adam), `shipped_optimizers` the way
# the plugin does.


def plain_loop(loader: DataLoader, step, epochs: int) -> tuple[float, int]:
    """Run `step(batch)` over `loader` for `epochs`; (seconds, samples seen)."""
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            step(batch)
            seen += len(batch[0])
    return time.perf_counter() - start, seen


def mnist_loader(root: Path, batch_size: int, workers: int, size: int = 28, normalize: bool = False) -> DataLoader:
    from torchvision import datasets, transforms

    tf = [transforms.Resize(size)] if size != 28 else []
    tf.append(transforms.ToTensor())
    if normalize:
        tf.append(transforms.Normalize((0.5,), (0.5,)))
    ds = datasets.MNIST(str(root), train=True, download=False, transform=transforms.Compose(tf))
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)


def reference_optimizers(name: str, model, config) -> dict[str, torch.optim.Optimizer]:
    """The references' line, `optim.Adam(params, lr=..., betas=...)` (default, for-each
    Adam), with the plugin's settings and under the plugin's optimizer names."""
    betas = (getattr(config, "beta1", 0.9), getattr(config, "beta2", 0.999))
    if hasattr(model, "discriminator"):
        return {
            part: torch.optim.Adam(getattr(model, part).parameters(), lr=config.lr, betas=betas) for part in ("discriminator", "generator")
        }
    return {"adam": torch.optim.Adam(model.parameters(), lr=config.lr, betas=betas)}


def shipped_optimizers(name: str, model, config) -> dict[str, torch.optim.Optimizer]:
    return get_plugin(name).trainer_class(model, config, torch.device("cpu")).configure_optimizers()


def optimizer_kind(optimizers: dict[str, torch.optim.Optimizer]) -> str:
    """'Adam', 'Adam fused', ...: what differs between the two builders."""
    kinds = {f"{type(o).__name__}{' fused' if o.defaults.get('fused') else ''}" for o in optimizers.values()}
    return ", ".join(sorted(kinds))


def plain_vae(model, config, opts: dict, data: dict, epochs: int, workers: int) -> tuple[float, int]:
    """pytorch/examples vae/main.py."""
    from zoo.plugins.vae import loss_function

    (opt,) = opts.values()
    model.train()

    def step(batch):
        x, _ = batch
        opt.zero_grad()
        recon, mu, logvar = model(x)
        bce, kld = loss_function(recon, x, mu, logvar)
        loss = bce + kld
        loss.backward()
        opt.step()
        loss.item()

    return plain_loop(mnist_loader(data["mnist"], config.batch_size, workers), step, epochs)


def plain_convnet(model, config, opts: dict, data: dict, epochs: int, workers: int) -> tuple[float, int]:
    """pytorch/examples mnist/main.py."""
    (opt,) = opts.values()
    model.train()

    def step(batch):
        x, target = batch
        opt.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        loss.item()

    return plain_loop(mnist_loader(data["mnist"], config.batch_size, workers), step, epochs)


def plain_dcgan(model, config, opts: dict, data: dict, epochs: int, workers: int) -> tuple[float, int]:
    """pytorch/examples dcgan/main.py: D on a real batch (label 1), on G's fakes
    detached (label 0), its step; then G through the updated D with label 1."""
    net_g, net_d = model.generator, model.discriminator
    opt_d, opt_g = opts["discriminator"], opts["generator"]
    criterion = torch.nn.BCEWithLogitsLoss()  # D ends in logits here (examples: Sigmoid + BCELoss)
    model.train()

    def step(batch):
        real, _ = batch
        b = real.size(0)
        net_d.zero_grad()
        label = torch.full((b,), 1.0)
        err_d_real = criterion(net_d(real).view(-1), label)
        err_d_real.backward()
        noise = torch.randn(b, config.latent_dim)
        fake = net_g(noise)
        label.fill_(0.0)
        err_d_fake = criterion(net_d(fake.detach()).view(-1), label)
        err_d_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        label.fill_(1.0)
        err_g = criterion(net_d(fake).view(-1), label)
        err_g.backward()
        opt_g.step()
        (err_d_real + err_d_fake).item(), err_g.item()

    loader = mnist_loader(data["mnist"], config.batch_size, workers, size=config.image_size, normalize=True)
    return plain_loop(loader, step, epochs)


class AlignedDataset(Dataset):
    """pytorch-CycleGAN-and-pix2pix's aligned dataset: open the A|B file, split it, resize
    both halves to the load size, one random crop and flip for both, to [-1, 1]."""

    def __init__(self, directory: Path, load_size: int, crop_size: int, flip: bool):
        self.files = sorted(directory.glob("*.png"))
        self.load_size, self.crop_size, self.flip = load_size, crop_size, flip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        import random

        from PIL import Image
        from torchvision.transforms import functional as TF

        ab = Image.open(self.files[index]).convert("RGB")
        w, h = ab.size
        halves = [ab.crop((0, 0, w // 2, h)), ab.crop((w // 2, 0, w, h))]
        top = random.randint(0, self.load_size - self.crop_size)
        left = random.randint(0, self.load_size - self.crop_size)
        flip = self.flip and random.random() < 0.5
        out = []
        for img in halves:
            img = img.resize((self.load_size, self.load_size), Image.Resampling.BICUBIC)
            img = img.crop((left, top, left + self.crop_size, top + self.crop_size))
            if flip:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out.append(TF.normalize(TF.to_tensor(img), (0.5,) * 3, (0.5,) * 3))
        return out[0], out[1]


def plain_pix2pix(model, config, opts: dict, data: dict, epochs: int, workers: int) -> tuple[float, int]:
    """pytorch-CycleGAN-and-pix2pix's Pix2PixModel.optimize_parameters: fake = G(A);
    D on (A, fake) detached and (A, B), averaged, its step; then G against D (frozen)
    plus lambda L1, its step."""
    from zoo.plugins.pix2pix import load_size

    net_g, net_d = model.generator, model.discriminator
    opt_d, opt_g = opts["discriminator"], opts["generator"]
    gan_loss, l1 = torch.nn.BCEWithLogitsLoss(), torch.nn.L1Loss()  # the reference's 'vanilla' GAN mode
    model.train()

    def set_requires_grad(net, flag):
        for p in net.parameters():
            p.requires_grad = flag

    def step(batch):
        real_a, real_b = batch
        fake_b = net_g(real_a)
        set_requires_grad(net_d, True)
        opt_d.zero_grad()
        pred_fake = net_d(torch.cat((real_a, fake_b), 1).detach())
        pred_real = net_d(torch.cat((real_a, real_b), 1))
        loss_d = 0.5 * (gan_loss(pred_fake, torch.zeros_like(pred_fake)) + gan_loss(pred_real, torch.ones_like(pred_real)))
        loss_d.backward()
        opt_d.step()
        set_requires_grad(net_d, False)
        opt_g.zero_grad()
        pred_fake = net_d(torch.cat((real_a, fake_b), 1))
        loss_g_gan = gan_loss(pred_fake, torch.ones_like(pred_fake))
        loss_g_l1 = l1(fake_b, real_b)
        loss_g = loss_g_gan + config.lambda_l1 * loss_g_l1
        loss_g.backward()
        opt_g.step()
        loss_d.item(), loss_g_gan.item(), loss_g_l1.item()

    ds = AlignedDataset(data["pix2pix"] / "train", load_size(config), config.image_size, config.flip)
    loader = DataLoader(ds, batch_size=config.batch_size, shuffle=True, num_workers=workers)
    return plain_loop(loader, step, epochs)


PLAIN = {"vae": plain_vae, "convnet": plain_convnet, "dcgan": plain_dcgan, "pix2pix": plain_pix2pix}
# The files both sides read, by plugin.
DATASET = {"vae": "mnist", "convnet": "mnist", "dcgan": "mnist", "pix2pix": "pix2pix"}


def write_pix2pix_pairs(root: Path, n_train: int, n_val: int) -> Path:
    """Real aligned pairs on disk in the pix2pix layout: the offline colorization pairs
    (bundled photographs, black and white | colour), saved as A|B PNGs."""
    from PIL import Image

    from zoo import DataRequest, Images

    pairs = DataRequest(Images("A", size=64, channels=3), Images("B", size=64, channels=3))
    splits = datasets.load("colorization", pairs)
    for split, tensors, n in (("train", splits.train.tensors, n_train), ("val", splits.val.tensors, n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(min(n, len(tensors["A"]))):
            ab = torch.cat([tensors["A"][i], tensors["B"][i]], dim=2)  # A left, B right
            pixels = (ab * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(root / split / f"{i:04d}.png")
    return root


# --------------------------------------------------------------------------- engine side


def engine_run(name: str, config, data_spec: str, epochs: int, out: Path) -> tuple[float, int, list[dict]]:
    plugin = get_plugin(name)
    config = zconfig.from_dict(plugin.config_class, {**zconfig.to_dict(config), "epochs": epochs}, plugin=plugin.name)
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


def step_flops(name: str, config, train) -> float:
    """FLOPs of one engine training step (forward and backward) on the `train` split,
    counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    plugin = get_plugin(name)
    model = plugin.instantiate(config)
    trainer = plugin.trainer_class(model, config, torch.device("cpu"))
    optimizers = trainer.configure_optimizers()
    batch = next(train.batches(config.batch_size, generator=torch.Generator().manual_seed(0)))
    batch = trainer.augment(batch, torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(batch, optimizers, 0)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugins", default=",".join(PLAIN))
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training data per run, at least")
    parser.add_argument(
        "--min-steps",
        type=int,
        default=100,
        help="more epochs where a run would take fewer steps (dcgan has 12 per epoch): short runs are mostly noise",
    )
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; the best is kept")
    parser.add_argument("--pix2pix-pairs", type=int, default=64, help="training pairs written for pix2pix (batch 1: one step each)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader workers of the plain loops (pytorch/examples: 0-1 on a CPU, dcgan 2, the pix2pix reference 4; 0 suits a 2-core machine)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = args.plugins.split(",")
    unknown = [n for n in names if n not in PLAIN]
    if unknown:
        parser.error(f"no plain loop for {', '.join(unknown)} (have {', '.join(PLAIN)})")
    torch.manual_seed(0)
    rows = []
    peak = peak_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = {"mnist": make_mnist(tmp / "mnist", n_train=1497, n_test=300)}
        if "pix2pix" in names:
            data["pix2pix"] = write_pix2pix_pairs(tmp / "pix2pix", args.pix2pix_pairs, 8)
        for name in names:
            plugin = get_plugin(name)
            config = plugin.config()
            spec = f"{DATASET[name]}:{data[DATASET[name]]}"
            train = datasets.load(spec, plugin.data_request(config)).train
            steps_per_epoch = math.ceil(len(train) / config.batch_size)
            epochs = max(args.epochs, math.ceil(args.min_steps / steps_per_epoch))
            probe = plugin.instantiate(config)
            shipped = optimizer_kind(shipped_optimizers(name, probe, config))
            reference = optimizer_kind(reference_optimizers(name, probe, config))
            builders = {"plain": reference_optimizers}
            if shipped != reference:
                builders["plain_same_opt"] = shipped_optimizers
            best = {side: 0.0 for side in (*builders, "engine")}
            for rep in range(args.repeats):
                for side, build_optimizers in builders.items():
                    torch.manual_seed(rep)
                    model = plugin.instantiate(config)
                    seconds, seen = PLAIN[name](model, config, build_optimizers(name, model, config), data, epochs, args.workers)
                    best[side] = max(best[side], seen / seconds)
                seconds, seen, _ = engine_run(name, config, spec, epochs, tmp / f"{name}-{rep}")
                best["engine"] = max(best["engine"], seen / seconds)
            flops = step_flops(name, config, train)
            steps_per_s = best["engine"] / config.batch_size
            rows.append(
                {
                    "plugin": name,
                    "batch_size": config.batch_size,
                    "steps_per_run": steps_per_epoch * epochs,
                    "plain_iterations_per_s": round(best["plain"] / config.batch_size, 2),
                    "engine_iterations_per_s": round(steps_per_s, 2),
                    "plain_samples_per_s": round(best["plain"], 1),
                    "engine_samples_per_s": round(best["engine"], 1),
                    "ratio": round(best["engine"] / best["plain"], 3),
                    # Engine against the plain loop running the plugin's own optimizers.
                    "ratio_same_optimizers": round(best["engine"] / best.get("plain_same_opt", best["plain"]), 3),
                    "step_gflop": round(flops / 1e9, 3),
                    "engine_gflops": round(flops * steps_per_s / 1e9, 2),
                    "peak_gflops": round(peak, 2),
                    "engine_optimizers": shipped,
                    "plain_optimizers": reference,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'plugin':<9}{'batch':>6}{'plain it/s':>12}{'engine it/s':>13}{'ratio':>8}{'same-opt':>10}"
        f"{'GFLOP/step':>12}{'GFLOP/s':>9}{'peak':>8}{'of peak':>9}  optimizers (plain / engine)"
    )
    for r in rows:
        print(
            f"{r['plugin']:<9}{r['batch_size']:>6}{r['plain_iterations_per_s']:>12}{r['engine_iterations_per_s']:>13}"
            f"{r['ratio']:>8}{r['ratio_same_optimizers']:>10}{r['step_gflop']:>12}{r['engine_gflops']:>9}{r['peak_gflops']:>8}"
            f"{r['engine_gflops'] / r['peak_gflops']:>9.1%}  {r['plain_optimizers']} / {r['engine_optimizers']}"
        )
    print(
        f"training steps only (evaluation excluded), best of {args.repeats} alternating runs of "
        f"{', '.join(str(r['steps_per_run']) + ' steps (' + r['plugin'] + ')' for r in rows)};"
        f" peak = fp32 conv2d forward, 32x128x56x56 * 128x3x3, in this run; torch threads {torch.get_num_threads()}"
    )
    print(
        "ratio: zoo as shipped against the references' loop; same-opt: against that loop running the plugin's own"
        " optimizers (equal to ratio where they are the references' Adam)"
    )
    worst = min(r["ratio"] for r in rows)
    print(f"lowest ratio engine/plain: {worst} ({'ok' if worst >= 1.0 else 'BELOW 1.0'})")


if __name__ == "__main__":
    main()
