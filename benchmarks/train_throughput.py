"""Training throughput: zoo's engine beside a plain hand-written loop, in one run.

For each plugin both sides train the same model on the same data with the same batch
size and the same update rule. The plain loop is written the way its reference writes
it: for the image plugins pytorch/examples (and the pix2pix reference), a torchvision
dataset or Dataset class read from disk with per-sample transforms, a DataLoader, the
step spelled out by hand, and `optim.Adam(params, lr, betas)`; for the language models
nanoGPT's train.py (transformer: `get_batch` at random offsets of the uint16 train.bin,
`model(X, Y)` returning the loss, AdamW with nanoGPT's decay groups, its warm-up and
cosine `get_lr`, clip, step) and char-rnn as its PyTorch ports write it (rnn: windows
cut from the text string at random offsets and encoded character by character, Adam,
clip). zoo's engine, with each plugin as shipped, reads the same files once into tensors
and batches by index. pix2pix's files are real A|B pairs written from the offline
colorization pairs; the language models' are the training split of `--data pydoc`.

Printed: training iterations/s of each side and the ratio engine / plain (issues 12
and 15 ask for >= 1.0). Where a plugin ships a different implementation of Adam than the
references' default (pix2pix: fused), the plain loop runs a second time with the
plugin's own optimizers, and `same-opt` is the ratio against that run: it separates
what the loop and data path gain from what the optimizer gains. Also printed: the
FLOPs of one step (torch's FlopCounterMode) and the engine's achieved GFLOP/s beside
this machine's conv2d peak, measured in the same run.

Then the engine's variants (`--variants`), each against fp32 eager, from the same
runs' epochs after the first (steady state): `--precision bf16-mixed` (bf16), `--compile`
(its warm-up, the first epoch's time beyond the steady rate, is printed apart) and
`--channels-last` (convolutional plugins only), with each run's final validation metric
next to its speed and its change against fp32. A `+` combines knobs: `bf16+channels-last`.

    python benchmarks/train_throughput.py [--plugins vae,convnet,dcgan,pix2pix,rnn,transformer] [--epochs 3]
        [--variants fp32,bf16,compile,channels-last]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
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
from zoo.datasets.text import pydoc_text, split_text  # noqa: E402

# --------------------------------------------------------------------------- plain loops
# Each plain side is written the way its reference writes it: a torchvision dataset or
# a Dataset class that opens files and transforms each sample, a DataLoader, and the
# step spelled out by hand. Losses are read back every step (the references read them
# every 10-100 steps to print; on a CPU reading a scalar costs nothing measurable).
# Optimizers come in from the caller: `reference_optimizers` builds them the way
# pytorch/examples vae and dcgan and the pix2pix reference do (the mnist example's
# Adadelta is not used: zoo's convnet trains with Adam), `shipped_optimizers` the way
# the plugin does.


def plain_loop(loader: DataLoader, step, epochs: int, max_steps: int | None = None) -> tuple[float, int]:
    """Run `step(batch)` over `loader` for `epochs` (at most `max_steps` steps); (seconds, samples seen)."""
    seen, steps, start = 0, 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            step(batch)
            seen += len(batch[0])
            steps += 1
            if max_steps is not None and steps >= max_steps:
                return time.perf_counter() - start, seen
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
    if name == "transformer":
        return nanogpt_optimizers(model, config)
    betas = (getattr(config, "beta1", 0.9), getattr(config, "beta2", 0.999))
    if hasattr(model, "discriminator"):
        return {
            part: torch.optim.Adam(getattr(model, part).parameters(), lr=config.lr, betas=betas) for part in ("discriminator", "generator")
        }
    return {"adam": torch.optim.Adam(model.parameters(), lr=config.lr, betas=betas)}


def shipped_optimizers(name: str, model, config) -> dict[str, torch.optim.Optimizer]:
    returned = get_plugin(name).trainer_class(model, config, torch.device("cpu")).configure_optimizers()
    return returned[0] if isinstance(returned, tuple) else returned  # (optimizers, schedules): the optimizers


def optimizer_kind(optimizers: dict[str, torch.optim.Optimizer]) -> str:
    """'Adam', 'Adam fused', ...: what differs between the two builders."""
    kinds = {f"{type(o).__name__}{' fused' if o.defaults.get('fused') else ''}" for o in optimizers.values()}
    return ", ".join(sorted(kinds))


def plain_vae(model, config, opts: dict, data: dict, epochs: int, workers: int, max_steps: int | None = None) -> tuple[float, int]:
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

    return plain_loop(mnist_loader(data["mnist"], config.batch_size, workers), step, epochs, max_steps)


def plain_convnet(model, config, opts: dict, data: dict, epochs: int, workers: int, max_steps: int | None = None) -> tuple[float, int]:
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

    return plain_loop(mnist_loader(data["mnist"], config.batch_size, workers), step, epochs, max_steps)


def plain_dcgan(model, config, opts: dict, data: dict, epochs: int, workers: int, max_steps: int | None = None) -> tuple[float, int]:
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
    return plain_loop(loader, step, epochs, max_steps)


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


def plain_pix2pix(model, config, opts: dict, data: dict, epochs: int, workers: int, max_steps: int | None = None) -> tuple[float, int]:
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
    return plain_loop(loader, step, epochs, max_steps)


class Steps:
    """An epoch of a loop that draws its own batches: `per_epoch` calls of `get_batch`
    each time it is iterated (nanoGPT and char-rnn have no DataLoader)."""

    def __init__(self, get_batch, per_epoch: int):
        self.get_batch, self.per_epoch = get_batch, per_epoch

    def __iter__(self):
        return (self.get_batch() for _ in range(self.per_epoch))


def text_steps_per_epoch(config, data: dict) -> int:
    """The engine's steps per epoch of random windows (zoo.datasets.text.RandomWindows:
    about one pass over the training text), so both sides take as many steps."""
    characters = (data["pydoc"] / "train.bin").stat().st_size // 2  # uint16 ids
    windows = max(1, (characters - 1) // config.block_size)
    return math.ceil(windows / config.batch_size)


def plain_rnn(model, config, opts: dict, data: dict, epochs: int, workers: int, max_steps: int | None = None) -> tuple[float, int]:
    """char-rnn as its PyTorch ports write it (char-rnn.pytorch's random_training_set,
    min-char-rnn's char_to_ix): the text file read into a string, each window cut at a
    random offset and encoded character by character, the whole window through the
    model from a zero state, cross-entropy, clip (char-rnn: 5), step."""
    text = (data["pydoc"] / "train.txt").read_bytes().decode("utf-8")  # as written: no newline translation
    char_to_ix = {ch: i for i, ch in enumerate(sorted(set(text)))}
    block, batch_size = config.block_size, config.batch_size
    (opt,) = opts.values()
    model.train()

    def random_training_set():
        inp = torch.empty(batch_size, block, dtype=torch.long)
        target = torch.empty(batch_size, block, dtype=torch.long)
        for b in range(batch_size):
            start = random.randint(0, len(text) - block - 1)
            chunk = [char_to_ix[ch] for ch in text[start : start + block + 1]]
            inp[b] = torch.tensor(chunk[:-1])
            target[b] = torch.tensor(chunk[1:])
        return inp, target

    def step(batch):
        inp, target = batch
        opt.zero_grad()
        output, _ = model(inp)
        loss = F.cross_entropy(output.view(-1, output.size(-1)), target.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        loss.item()

    return plain_loop(Steps(random_training_set, text_steps_per_epoch(config, data)), step, epochs, max_steps)


class WithLoss(torch.nn.Module):
    """nanoGPT's `GPT.forward(idx, targets)`: the logits and, given targets, the loss."""

    def __init__(self, gpt: torch.nn.Module):
        super().__init__()
        self.gpt = gpt

    def forward(self, idx, targets=None):
        logits = self.gpt(idx)
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def nanogpt_optimizers(model, config) -> dict[str, torch.optim.Optimizer]:
    """nanoGPT's GPT.configure_optimizers: every 2-D parameter decayed, the rest not;
    AdamW, fused only on CUDA (so for-each here, like the plugin's)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return {"adamw": torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, config.beta2))}


def plain_transformer(model, config, opts: dict, data: dict, epochs: int, workers: int, max_steps: int | None = None) -> tuple[float, int]:
    """nanoGPT train.py: `get_batch` from the uint16 train.bin (the memmap recreated every
    batch, as nanoGPT does against a leak), windows at random offsets; `get_lr` (linear
    warm-up, cosine to min_lr over the run) set on the param groups; `model(X, Y)`;
    backward; clip 1.0; step; zero_grad(set_to_none=True). (nanoGPT fetches the next
    batch between forward and backward, to overlap a GPU; on a CPU the order costs nothing.)"""
    import numpy as np

    path = data["pydoc"] / "train.bin"
    block, batch_size = config.block_size, config.batch_size
    (opt,) = opts.values()
    per_epoch = text_steps_per_epoch(config, data)
    lr_decay_iters = per_epoch * epochs
    gpt = WithLoss(model)
    gpt.train()

    def get_batch():
        d = np.memmap(path, dtype=np.uint16, mode="r")
        ix = torch.randint(len(d) - block, (batch_size,))
        x = torch.stack([torch.from_numpy(d[i : i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(d[i + 1 : i + 1 + block].astype(np.int64)) for i in ix])
        return x, y

    def get_lr(it: int) -> float:
        if it < config.warmup_steps:
            return config.lr * (it + 1) / (config.warmup_steps + 1)
        if it > lr_decay_iters:
            return config.min_lr
        decay_ratio = (it - config.warmup_steps) / max(1, lr_decay_iters - config.warmup_steps)
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
        return config.min_lr + coeff * (config.lr - config.min_lr)

    iter_num = 0

    def step(batch):
        nonlocal iter_num
        x, y = batch
        lr = get_lr(iter_num)
        for param_group in opt.param_groups:
            param_group["lr"] = lr
        _, loss = gpt(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        iter_num += 1

    return plain_loop(Steps(get_batch, per_epoch), step, epochs, max_steps)


PLAIN = {
    "vae": plain_vae,
    "convnet": plain_convnet,
    "dcgan": plain_dcgan,
    "pix2pix": plain_pix2pix,
    "rnn": plain_rnn,
    "transformer": plain_transformer,
}
# The files both sides read, by plugin.
DATASET = {"vae": "mnist", "convnet": "mnist", "dcgan": "mnist", "pix2pix": "pix2pix", "rnn": "pydoc", "transformer": "pydoc"}
# The final validation metric printed beside each variant's speed.
VALIDATION = {
    "vae": "val_loss",
    "convnet": "val_accuracy",
    "dcgan": "val_loss_d",
    "pix2pix": "val_l1",
    "rnn": "val_bpc",
    "transformer": "val_bpc",
}


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


def write_text_files(root: Path) -> Path:
    """The training split of `--data pydoc`, as the references read it: train.txt (the
    text, for char-rnn) and train.bin (uint16 character ids in the sorted vocabulary of
    the split, nanoGPT's data/shakespeare_char/prepare.py layout)."""
    import numpy as np

    train_text, _ = split_text(pydoc_text())
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.txt").write_bytes(train_text.encode("utf-8"))
    stoi = {ch: i for i, ch in enumerate(sorted(set(train_text)))}
    np.array([stoi[ch] for ch in train_text], dtype=np.uint16).tofile(root / "train.bin")
    return root


# --------------------------------------------------------------------------- engine side

# The engine's knobs, as `zoo train` passes them to zoo.engine.train.
KNOBS = {
    "fp32": {},
    "bf16": {"precision": "bf16-mixed"},
    "fp16": {"precision": "fp16-mixed"},
    "compile": {"compile": True},
    "channels-last": {"channels_last": True},
}


def variant_knobs(variant: str) -> dict:
    """'bf16+channels-last' -> {'precision': 'bf16-mixed', 'channels_last': True}."""
    knobs: dict = {}
    for part in variant.split("+"):
        knobs.update(KNOBS[part])
    return knobs


def is_convolutional(model: torch.nn.Module) -> bool:
    return any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules())


def engine_run(
    name: str, config, data_spec: str, epochs: int, out: Path, max_steps: int | None = None, **knobs
) -> tuple[float, int, list[dict]]:
    """`zoo train` in this process, with `knobs` (precision, compile, channels_last) as the CLI passes them."""
    plugin = get_plugin(name)
    config = zconfig.from_dict(plugin.config_class, {**zconfig.to_dict(config), "epochs": epochs}, plugin=plugin.name)
    if knobs.get("compile"):
        torch._dynamo.reset()  # a cold compile per run, never dynamo's recompile limit from the runs before
    result = engine.train(plugin, config, data=data_spec, device="cpu", seed=0, out=out, max_steps=max_steps, progress="none", **knobs)
    seconds = sum(r["seconds"] for r in result.history)
    seen = sum(round(r["samples_per_second"] * r["seconds"]) for r in result.history)
    return seconds, seen, result.history


def steady_rate(history: list[dict]) -> float:
    """Samples/s over the epochs after the first (compilation, allocation), or the only one."""
    timed = history[1:] or history
    return sum(r["samples_per_second"] * r["seconds"] for r in timed) / sum(r["seconds"] for r in timed)


def warmup_seconds(history: list[dict], rate: float) -> float:
    """The first epoch's time beyond what its samples take at the steady rate: compiling
    (the first step, a recompile for the epoch's shorter last batch), first allocations."""
    first = history[0]
    return max(0.0, first["seconds"] - first["samples_per_second"] * first["seconds"] / rate)


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


def step_flops(name: str, config, train, data_info) -> float:
    """FLOPs of one engine training step (forward and backward) on the `train` split,
    counted by torch (0 where torch has no formula for the step's operations)."""
    from torch.utils.flop_counter import FlopCounterMode

    plugin = get_plugin(name)
    model = plugin.instantiate(config, data_info)
    trainer = plugin.trainer_class(model, config, torch.device("cpu"))
    trainer.data_info = data_info
    optimizers = trainer.configure_optimizers()
    if isinstance(optimizers, tuple):  # (optimizers, schedules)
        optimizers = optimizers[0]
    batch = next(train.batches(config.batch_size, generator=torch.Generator().manual_seed(0)))
    batch = trainer.augment(batch, torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    recurrent = [0.0]
    hooks = [m.register_forward_hook(recurrent_flops(recurrent)) for m in model.modules() if isinstance(m, torch.nn.RNNBase)]
    with counter:
        trainer.train_step(batch, optimizers, trainer.plan)
    for hook in hooks:
        hook.remove()
    return float(counter.get_total_flops()) + recurrent[0]


def recurrent_flops(total: list[float]):
    """A forward hook adding what FlopCounterMode leaves out: it has no formula for torch's
    fused recurrent layers (nn.LSTM counts 0). Their matrix products per token, layer and
    direction are 2 * gates * hidden * (input + hidden) forward, and the backward twice
    that; the gates' elementwise work is left out, as the counter leaves it out elsewhere."""

    def hook(module, inputs, output):
        x = inputs[0]
        tokens = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
        gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
        directions = 2 if module.bidirectional else 1
        for layer in range(module.num_layers):
            width = module.input_size if layer == 0 else module.hidden_size * directions
            total[0] += 3 * 2 * gates * module.hidden_size * (width + module.hidden_size) * tokens * directions

    return hook


def parse_variants(parser: argparse.ArgumentParser, text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    for v in variants:
        unknown = [part for part in v.split("+") if part not in KNOBS]
        if unknown:
            parser.error(f"--variants: unknown {', '.join(unknown)} in {v!r} (choose {', '.join(KNOBS)}, joined by + to combine)")
    return [v for v in variants if v != "fp32"]  # fp32 eager is the engine's own column, always run


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
    parser.add_argument(
        "--variants",
        default="fp32,bf16,compile,channels-last",
        help="engine runs against fp32 eager: fp32 (the engine column alone), bf16, fp16, compile, channels-last "
        "(convolutional plugins); + combines, e.g. bf16+channels-last",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop every run after this many steps: a smoke test, not a measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = args.plugins.split(",")
    unknown = [n for n in names if n not in PLAIN]
    if unknown:
        parser.error(f"no plain loop for {', '.join(unknown)} (have {', '.join(PLAIN)})")
    variants = parse_variants(parser, args.variants)
    torch.manual_seed(0)
    random.seed(0)
    rows = []
    peak = peak_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # A cold compile in the first repeat: no inductor cache from earlier invocations.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor"))
        data: dict[str, Path] = {}
        specs: dict[str, str] = {}
        if any(DATASET[n] == "mnist" for n in names):
            data["mnist"] = make_mnist(tmp / "mnist", n_train=1497, n_test=300)
            specs["mnist"] = f"mnist:{data['mnist']}"
        if "pix2pix" in names:
            data["pix2pix"] = write_pix2pix_pairs(tmp / "pix2pix", args.pix2pix_pairs, 8)
            specs["pix2pix"] = f"pix2pix:{data['pix2pix']}"
        if any(DATASET[n] == "pydoc" for n in names):
            data["pydoc"] = write_text_files(tmp / "pydoc")
            specs["pydoc"] = "pydoc"  # the engine's own offline dataset: the same training split
        for name in names:
            plugin = get_plugin(name)
            config = plugin.config()
            spec = specs[DATASET[name]]
            splits = datasets.load(spec, plugin.data_request(config))
            train, info = splits.train, splits.info
            steps_per_epoch = train.num_batches(config.batch_size)
            epochs = max(args.epochs, math.ceil(args.min_steps / steps_per_epoch))
            probe = plugin.instantiate(config, info)
            shipped = optimizer_kind(shipped_optimizers(name, probe, config))
            reference = optimizer_kind(reference_optimizers(name, probe, config))
            builders = {"plain": reference_optimizers}
            if shipped != reference:
                builders["plain_same_opt"] = shipped_optimizers
            mine = [v for v in variants if "channels-last" not in v.split("+") or is_convolutional(probe)]
            best = {side: 0.0 for side in (*builders, "engine")}
            steady = {v: 0.0 for v in ("fp32", *mine)}
            runs: dict[str, dict] = {}  # variant -> final metric, cold warm-up, or the error
            for rep in range(args.repeats):
                for side, build_optimizers in builders.items():
                    torch.manual_seed(rep)
                    random.seed(rep)
                    model = plugin.instantiate(config, info)
                    optimizers = build_optimizers(name, model, config)
                    seconds, seen = PLAIN[name](model, config, optimizers, data, epochs, args.workers, args.max_steps)
                    best[side] = max(best[side], seen / seconds)
                seconds, seen, history = engine_run(name, config, spec, epochs, tmp / f"{name}-{rep}", args.max_steps)
                best["engine"] = max(best["engine"], seen / seconds)
                steady["fp32"] = max(steady["fp32"], steady_rate(history))
                runs.setdefault("fp32", {"history": history})
                for v in mine:
                    if "error" in runs.get(v, {}):
                        continue
                    try:
                        _, _, history = engine_run(
                            name, config, spec, epochs, tmp / f"{name}-{v}-{rep}", args.max_steps, **variant_knobs(v)
                        )
                    except Exception as exc:  # a variant this machine cannot run is reported, not fatal
                        runs[v] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"}
                        continue
                    steady[v] = max(steady[v], steady_rate(history))
                    runs.setdefault(v, {"history": history})  # the first repeat: a cold compile
            flops = step_flops(name, config, train, info)
            steps_per_s = best["engine"] / config.batch_size
            metric = VALIDATION[name]
            fp32_history = runs["fp32"]["history"]
            fp32_value = fp32_history[-1].get(metric)
            variant_rows = []
            for v in ("fp32", *mine):
                if "error" in runs[v]:
                    variant_rows.append({"variant": v, "error": runs[v]["error"]})
                    continue
                history = runs[v]["history"]
                value = history[-1].get(metric)
                variant_rows.append(
                    {
                        "variant": v,
                        "iterations_per_s": round(steady[v] / config.batch_size, 2),
                        "samples_per_s": round(steady[v], 1),
                        "ratio_to_fp32": round(steady[v] / steady["fp32"], 3),
                        "warmup_s": round(warmup_seconds(history, steady[v]), 2),
                        "first_step_s": history[0].get("first_step_seconds"),
                        "metric": metric,
                        "value": value,
                        "change_vs_fp32": (value - fp32_value) / abs(fp32_value) if value is not None and fp32_value else None,
                    }
                )
            rows.append(
                {
                    "plugin": name,
                    "batch_size": config.batch_size,
                    "steps_per_run": min(steps_per_epoch * epochs, args.max_steps or steps_per_epoch * epochs),
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
                    "variants": variant_rows,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'plugin':<12}{'batch':>6}{'plain it/s':>12}{'engine it/s':>13}{'ratio':>8}{'same-opt':>10}"
        f"{'GFLOP/step':>12}{'GFLOP/s':>9}{'peak':>8}{'of peak':>9}  optimizers (plain / engine)"
    )
    for r in rows:
        counted = r["step_gflop"] > 0
        print(
            f"{r['plugin']:<12}{r['batch_size']:>6}{r['plain_iterations_per_s']:>12}{r['engine_iterations_per_s']:>13}"
            f"{r['ratio']:>8}{r['ratio_same_optimizers']:>10}{r['step_gflop'] if counted else '-':>12}"
            f"{r['engine_gflops'] if counted else '-':>9}{r['peak_gflops']:>8}"
            f"{format(r['engine_gflops'] / r['peak_gflops'], '.1%') if counted else '-':>9}  {r['plain_optimizers']} / {r['engine_optimizers']}"
        )
    print(
        f"training steps only (evaluation excluded), best of {args.repeats} alternating runs of "
        f"{', '.join(str(r['steps_per_run']) + ' steps (' + r['plugin'] + ')' for r in rows)};"
        f" peak = fp32 conv2d forward, 32x128x56x56 * 128x3x3, in this run; torch threads {torch.get_num_threads()}"
    )
    print(
        "ratio: zoo as shipped against the references' loop; same-opt: against that loop running the plugin's own"
        " optimizers (equal to ratio where they are the references' Adam); '-': torch counts no FLOPs for the step's operations"
    )
    worst = min(r["ratio"] for r in rows)
    print(f"lowest ratio engine/plain: {worst} ({'ok' if worst >= 1.0 else 'BELOW 1.0'})")
    if variants:
        print_variants(rows, args.repeats)


def print_variants(rows: list[dict], repeats: int) -> None:
    print()
    print(f"{'plugin':<12}{'variant':<26}{'it/s':>8}{'x fp32':>8}{'warm-up s':>11}  {'final validation':<22}{'vs fp32':>9}")
    for r in rows:
        for v in r["variants"]:
            if "error" in v:
                print(f"{r['plugin']:<12}{v['variant']:<26}  failed: {v['error']}")
                continue
            value = f"{v['metric']} {v['value']:.4f}" if v["value"] is not None else f"{v['metric']} -"
            change = f"{v['change_vs_fp32']:+.1%}" if v["variant"] != "fp32" and v["change_vs_fp32"] is not None else ""
            print(
                f"{r['plugin']:<12}{v['variant']:<26}{v['iterations_per_s']:>8}{v['ratio_to_fp32']:>8}{v['warmup_s']:>11}  {value:<22}{change:>9}"
            )
    print(
        f"engine runs of the same steps, seed 0; it/s: steady state, the epochs after the first, best of {repeats}; "
        "warm-up s: the first epoch's time beyond that rate in the first run (compilation with an empty inductor cache); "
        "final validation: the last epoch's metric (val_loss_d for dcgan, which has no other), vs fp32: its relative change"
    )
    pix2pix = next((r for r in rows if r["plugin"] == "pix2pix"), None)
    if pix2pix is not None:
        fine = [
            v
            for v in pix2pix["variants"]
            if "error" not in v and v["variant"] != "fp32" and v["change_vs_fp32"] is not None and abs(v["change_vs_fp32"]) <= 0.05
        ]
        if fine:
            fastest = max(fine, key=lambda v: v["ratio_to_fp32"])
            verdict = "ok" if fastest["ratio_to_fp32"] >= 1.5 else "BELOW 1.5"
            print(
                f"pix2pix: fastest variant with val_l1 within 5% of fp32: {fastest['variant']} at {fastest['ratio_to_fp32']}x ({verdict})"
            )
        else:
            print("pix2pix: no variant kept val_l1 within 5% of fp32")


if __name__ == "__main__":
    main()
