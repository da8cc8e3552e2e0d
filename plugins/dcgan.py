"""Deep convolutional GAN (Radford, Metz & Chintala, 2015, "Unsupervised Representation
Learning with Deep Convolutional Generative Adversarial Networks").

Generator: z (100) -> fully connected projection -> reshape to 4x4 -> transposed
convolutions with stride 2 that double the size up to the image (32 -> 3 of them,
64 -> 4), batch norm and ReLU after all but the last, Tanh out. The widths halve on the
way up: at 64x64 and width 128 that is the paper's 1024-512-256-128. Discriminator:
the mirror image with strided convolutions, LeakyReLU 0.2, batch norm on every layer
but the first, flattened into one sigmoid unit (returned as a logit). Weights
N(0, 0.02), batch-norm gains N(1, 0.02); Adam 2e-4, beta1 0.5. Convolutions have no
bias, as in the authors' code (github.com/Newmu/dcgan_code): batch norm's shift
replaces it.

`--kernel-size 5` is the paper's; `--kernel-size 4` is the variant of pytorch/examples
`dcgan/main.py`, whose generator checkpoints (`netG_epoch_N.pth`) load through this
plugin's checkpoint filter (`--image-size 64 --generator-width 64`, and `--channels 3`
or 1 as it was trained).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Trainer, Weights, hparam, tasks
from zoo.errors import CheckpointError, UsageError
from zoo.plugins.gan import AdversarialMetrics, adam_pair, adversarial_step, noise_input

BASE = 4  # spatial size of the projected noise; every stride-2 layer doubles it
LEAKY_SLOPE = 0.2  # Radford et al.: "the slope of the leak was set to 0.2"
INIT_STD = 0.02  # Radford et al.: "initialized from a zero-centered Normal distribution with standard deviation 0.02"
GRID = 64


@dataclass
class DCGANConfig(TrainConfig):
    # The paper and its code train 25 epochs of hundreds of thousands of images; the
    # bundled digits are 1,497, 12 steps of 128 per epoch. The convnet's mean
    # max-probability on samples passes 0.8 after about 70 epochs and is 0.83-0.85 at
    # 100 (1,200 steps, about 3 minutes on the 2-core CPU at the default size and widths).
    epochs: int = hparam(100, "passes over the training split (1,200 steps of 128 on the bundled digits)")
    batch_size: int = hparam(128, "samples per step (Radford et al.: mini-batch size 128)")
    lr: float = hparam(2e-4, "Adam learning rate of both networks (Radford et al.: 0.0002)")
    beta1: float = hparam(0.5, "Adam beta1 (Radford et al.: 0.5; 0.9 oscillated and was unstable)", at_least=0.0, below=1.0)
    beta2: float = hparam(0.999, "Adam beta2 (Kingma & Ba 2015 default 0.999)", at_least=0.0, below=1.0)
    # The paper drew z uniformly in [-1, 1]; N(0, I) is pytorch/examples' choice, so
    # that its imported generators see the noise they were trained on.
    latent_dim: int = hparam(100, "size of the noise z ~ N(0, I) (Radford et al.: 100)", at_least=1)
    image_size: int = hparam(32, "image side; 64 in the paper, 32 trains on a CPU and fits the digits", choices=(32, 64))
    channels: int = hparam(1, "image channels: 1 grey (digits, mnist) or 3 RGB (cifar10, folders)", choices=(1, 3))
    # Widths of the last generator / first discriminator layer; they double per layer
    # toward the 4x4 end. Authors' code: 128 (1024 at 4x4); pytorch/examples: 64. 32
    # keeps default training affordable on a CPU for 1-channel digits.
    generator_width: int = hparam(32, "generator channels before the output layer (authors' code ngf 128, pytorch/examples 64)", at_least=1)
    discriminator_width: int = hparam(
        32, "discriminator channels after its first layer (authors' code ndf 128, pytorch/examples 64)", at_least=1
    )
    kernel_size: int = hparam(5, "convolution kernel: 5 (Radford et al.) or 4 (pytorch/examples dcgan/main.py)", choices=(5, 4))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            allowed = f.metadata.get("choices")
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise UsageError(f"--{f.name.replace('_', '-')} {getattr(self, f.name)}: dcgan supports {', '.join(map(str, allowed))}")

    @property
    def stride2_layers(self) -> int:
        """Stride-2 layers between 4x4 and the image: 3 for 32, 4 for 64."""
        return (self.image_size // BASE).bit_length() - 1


def _padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 layer exactly halve or double the size."""
    return (2, 1) if kernel_size == 5 else (1, 0)


class UpBlock(nn.Module):
    """Transposed convolution doubling the size, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        padding, output_padding = _padding(kernel_size)
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, 2, padding, output_padding, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))  # (N, in, s, s) -> (N, out, 2s, 2s)


class DownBlock(nn.Module):
    """Strided convolution halving the size, batch norm, LeakyReLU 0.2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, 2, _padding(kernel_size)[0], bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.slope = LEAKY_SLOPE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), self.slope)  # (N, in, s, s) -> (N, out, s/2, s/2)


class Generator(nn.Module):
    """z (N, latent) -> images (N, channels, size, size) in [-1, 1]."""

    def __init__(self, config: DCGANConfig):
        super().__init__()
        layers = config.stride2_layers
        widths = [config.generator_width * 2**i for i in reversed(range(layers))]  # e.g. 32x32, width 32: [128, 64, 32]
        self.base_channels = widths[0]
        self.base = BASE  # TorchScript reads attributes, not module globals
        self.project = nn.Linear(config.latent_dim, widths[0] * BASE * BASE, bias=False)
        self.project_norm = nn.BatchNorm2d(widths[0])
        self.blocks = nn.Sequential(*[UpBlock(a, b, config.kernel_size) for a, b in zip(widths, widths[1:])])
        padding, output_padding = _padding(config.kernel_size)
        self.to_image = nn.ConvTranspose2d(widths[-1], config.channels, config.kernel_size, 2, padding, output_padding, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).reshape(z.shape[0], self.base_channels, self.base, self.base)  # (N, latent) -> (N, C, 4, 4)
        h = F.relu(self.project_norm(h))
        h = self.blocks(h)  # (N, C, 4, 4) -> (N, width, size/2, size/2)
        return torch.tanh(self.to_image(h))  # (N, channels, size, size)


class Discriminator(nn.Module):
    """images (N, channels, size, size) -> logits (N,) of "this image is real"."""

    def __init__(self, config: DCGANConfig):
        super().__init__()
        layers = config.stride2_layers
        widths = [config.discriminator_width * 2**i for i in range(layers)]  # e.g. [32, 64, 128]
        self.from_image = nn.Conv2d(config.channels, widths[0], config.kernel_size, 2, _padding(config.kernel_size)[0], bias=False)
        self.blocks = nn.Sequential(*[DownBlock(a, b, config.kernel_size) for a, b in zip(widths, widths[1:])])
        self.to_logit = nn.Linear(widths[-1] * BASE * BASE, 1, bias=False)
        self.slope = LEAKY_SLOPE

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.from_image(image), self.slope)  # no batch norm on the first layer (Radford et al.)
        h = self.blocks(h)  # (N, width, size/2, size/2) -> (N, C, 4, 4)
        return self.to_logit(h.flatten(1)).squeeze(1)  # (N,)


class DCGAN(nn.Module):
    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, INIT_STD)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, INIT_STD)  # gains N(1, 0.02), as the authors' code
                nn.init.zeros_(module.bias)


class DCGANTrainer(Trainer):
    def configure_optimizers(self):
        return adam_pair(self.model, self.config)

    def train_step(self, batch, optimizers, progress):
        real = batch["image"]
        z = torch.randn(real.shape[0], self.config.latent_dim, device=self.device)
        fake = self.model.generator(z)
        # Real and fake go through D as separate batches, so each batch-norm batch is
        # all real or all fake (as pytorch/examples and the authors' code do).
        return adversarial_step(self, self.model.discriminator, real, fake, optimizers)

    def evaluate(self, batches):
        gen = torch.Generator().manual_seed(0)
        metrics = AdversarialMetrics()
        for batch in batches:
            real = batch["image"]
            z = torch.randn(real.shape[0], self.config.latent_dim, generator=gen).to(self.device)
            metrics.add(self.model.discriminator(real), self.model.discriminator(self.model.generator(z)))
        return metrics.result()

    def sample_grid(self, generator, val_batch):
        from torchvision.utils import make_grid

        (z,) = _sample_inputs(self.config, GRID, None, generator)
        images = self.model.generator(z.to(self.device))
        return make_grid((images + 1) / 2, nrow=8, padding=2)  # [-1, 1] -> [0, 1]


# ----------------------------------------------------------------- foreign checkpoints
# pytorch/examples dcgan/main.py saves `netG.state_dict()` of one nn.Sequential `main`:
# index 0 ConvTranspose2d(nz, ngf*8, 4, 1, 0) on z as (N, nz, 1, 1), which is our
# linear projection; then, per layer i >= 1, ConvTranspose2d at 3i and BatchNorm2d at
# 3i + 1 (ReLU at 3i + 2 holds nothing); the last ConvTranspose2d, followed by Tanh,
# sits at 3L. Batch norm at 1 follows the projection.


def pytorch_examples_config(state: Mapping[str, Any]) -> dict[str, int]:
    """The dcgan hyperparameters that reproduce a pytorch/examples netG, read off its shapes."""
    last = max(int(k.split(".")[1]) for k in state if k.startswith("main."))
    projection, output = state["main.0.weight"], state[f"main.{last}.weight"]
    return {
        "latent_dim": int(projection.shape[0]),
        "image_size": BASE * 2 ** (last // 3),
        "channels": int(output.shape[1]),
        "generator_width": int(output.shape[0]),
        "kernel_size": int(output.shape[-1]),
    }


def from_pytorch_examples(state: Mapping[str, Any], generator: Generator) -> dict[str, Any]:
    """Rename a pytorch/examples netG state dict to `generator.*` keys of this plugin."""
    if "main.0.weight" not in state or "main.1.weight" not in state:
        # netD's module 1 is a LeakyReLU: it has no `main.1.*` keys.
        raise CheckpointError("this pytorch/examples state dict is not a generator (netG_epoch_N.pth); dcgan imports only netG")
    wanted = pytorch_examples_config(state)
    have = {
        "latent_dim": generator.project.in_features,
        "image_size": BASE * 2 ** (len(generator.blocks) + 1),
        "channels": generator.to_image.out_channels,
        "generator_width": generator.to_image.in_channels,
        "kernel_size": generator.to_image.kernel_size[0],
    }
    if wanted != have:
        pairs = [f"{k}={v}" for k, v in wanted.items() if have[k] != v]
        raise CheckpointError(
            f"this pytorch/examples netG needs dcgan with {', '.join(pairs)}: "
            f"zoo weights import dcgan FILE {' '.join('--config ' + p for p in pairs)}"
        )
    last = max(int(k.split(".")[1]) for k in state if k.startswith("main."))
    mapped: dict[str, Any] = {}
    for key, value in state.items():
        _, index, param = key.split(".", 2)
        layer, role = divmod(int(index), 3)  # role 0: convolution, 1: batch norm
        if int(index) == last:
            name = "to_image"
        elif layer == 0:
            name = "project" if role == 0 else "project_norm"
            if role == 0:
                value = value.reshape(value.shape[0], -1).t().contiguous()  # (nz, C, 4, 4) -> Linear (C*16, nz)
        else:
            name = f"blocks.{layer - 1}." + ("conv" if role == 0 else "norm")
        mapped[f"generator.{name}.{param}"] = value
    # Checkpoints from before PyTorch 0.4 lack the batch-norm step counters.
    for key, buffer in generator.state_dict().items():
        if key.endswith("num_batches_tracked"):
            mapped.setdefault(f"generator.{key}", torch.zeros_like(buffer))
    return mapped


def checkpoint_filter(state: Mapping[str, Any], model: DCGAN) -> dict[str, Any]:
    """A pytorch/examples netG is renamed to `generator.*` (the weights loader then loads
    the generator strictly and leaves the discriminator as built); zoo's own state
    dicts pass through."""
    if any(k.startswith("main.") for k in state):
        return from_pytorch_examples(state, model.generator)
    return dict(state)


def _sample_inputs(config: DCGANConfig, n: int, label: int | None, gen: torch.Generator) -> tuple[torch.Tensor]:
    if label is not None:
        raise UsageError("dcgan is not conditional: --label does not apply (cgan takes a class label)")
    return noise_input(config, n, gen)


# Generator only (sampling and export need nothing else), trained by zoo on the bundled
# digits with meta['command']; shipped in the package so sampling works offline.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:dcgan-digits_v1-f802b992.safetensors",
    sha256="f802b99299ce8b5f9f19a0b6230f2664ec7b8a24553d326b5105c1d21c418c49",
    meta={
        "dataset": "digits",
        "metrics": {
            "val_loss_d": 1.834320829709371,
            "val_loss_g": 2.428032948176066,
            "val_d_real": 0.20172577540079753,
            "val_d_fake": 0.10136006832122803,
        },
        "input": {
            "shape": [1, 32, 32],
            "value_range": [-1.0, 1.0],
            "normalization": "pixel intensities in [0, 1] mapped linearly to [-1, 1]",
        },
        "num_params": 462048,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train dcgan --data digits --seed 0 --device cpu --epochs 100 --batch-size 128 --lr 0.0002 --beta1 0.5 --beta2 0.999 --latent-dim 100 --image-size 32 --channels 1 --generator-width 32 --discriminator-width 32 --kernel-size 5",
        "config": {
            "epochs": 100,
            "batch_size": 128,
            "lr": 0.0002,
            "beta1": 0.5,
            "beta2": 0.999,
            "latent_dim": 100,
            "image_size": 32,
            "channels": 1,
            "generator_width": 32,
            "discriminator_width": 32,
            "kernel_size": 5,
        },
        "components": ["generator"],
        "judged": {
            "by": "convnet:DIGITS_V1",
            "samples": 1000,
            "seed": 0,
            "metrics": {"mean_max_probability": 0.8276454210281372, "distinct_classes": 10, "within_class_std": 0.13749630749225616},
        },
        "description": "generator only, trained by zoo with the recorded command in float32 and stored at half precision (float16); 'metrics' are the float32 run's (its discriminator is not shipped), 'judged' is measured on these float16 weights",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="dcgan",
    summary="Deep convolutional GAN of Radford et al. 2015, 32x32 or 64x64, grey or RGB",
    task="generative",
    config_class=DCGANConfig,
    build=DCGAN,
    trainer_class=DCGANTrainer,
    data_request=lambda config: DataRequest.images(size=config.image_size, channels=config.channels, value_range=(-1.0, 1.0), labels=False),
    default_dataset="digits",
    datasets=("digits", "mnist", "cifar10", "folder"),
    export_targets=(
        ExportTarget(
            name="generator",
            module=lambda model: model.generator,
            inputs=(TensorSpec("z", range="standard normal noise N(0, I)"),),
            outputs=(TensorSpec("image", range="pixels in [-1, 1] (Tanh), channels x size x size", value_range=(-1.0, 1.0)),),
            example_inputs=noise_input,
            # Colour images (--channels 3) cannot be judged by the grey digit classifier:
            # their task rows are skipped with that reason.
            # 500 fixed noise inputs judged by the packaged convnet: the mean max-probability
            # may move by 1e-4 relative, and every judged class must agree.
            task_check=tasks.judged_images(("convnet", "DEFAULT"), samples=500),
            description="noise -> image",
        ),
    ),
    checkpoint_filter=checkpoint_filter,
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    reference="Radford et al. 2015; github.com/Newmu/dcgan_code; pytorch/examples dcgan/main.py",
    sample_target="generator",
    sample_inputs=_sample_inputs,
)
