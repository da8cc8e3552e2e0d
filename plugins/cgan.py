"""Conditional generative adversarial nets (Mirza & Osindero, 2014, "Conditional Generative Adversarial Nets").

The MNIST model of Section 4.1, both players conditioned on the one-hot class y:
- generator: z (100, uniform in the unit hypercube) -> 200 ReLU, y -> 1000 ReLU, the two
  joined -> 1200 ReLU -> 784 sigmoid;
- discriminator: x -> maxout 240 units x 5 pieces, y -> maxout 50 x 5, joined -> maxout
  240 x 4 -> sigmoid;
- dropout 0.5 in both ("applied to both the generator and discriminator"), off in eval.

Measured on the bundled digits: every sample is drawn as the class it was asked
for, but samples of one class are nearly identical (pixel spread 0.005 against 0.13
for real digits): the generator learns to ignore z, which a discriminator judging
one sample at a time cannot notice. Normal noise (spread 0.017) or no generator
dropout (0.002) did not cure it and conditioned worse (accuracy 0.85 and 0.30 at
150 epochs), so the paper's choices stay; `zoo evaluate` prints this spread.

The paper trained with SGD (lr 0.1 decayed exponentially, momentum 0.5 -> 0.7); we use
Adam 2e-4 with betas (0.5, 0.999) (Radford et al. 2015) like the other GANs here, which
trains in far fewer steps. The label enters the exported generator as an int64 class
index (N,); the one-hot encoding happens inside the graph, so deployed code never has
to build it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Trainer, Weights, hparam, tasks
from zoo.plugins.gan import AdversarialMetrics, Maxout, adam_pair, adversarial_step

IMAGE_SIZE = 28
PIXELS = IMAGE_SIZE * IMAGE_SIZE
PER_CLASS = 10  # samples per class row in the epoch grid


@dataclass
class CGANConfig(TrainConfig):
    # As for gan: 1,497 bundled training digits make 15 steps of 100 per epoch.
    # Conditional accuracy reaches 1.0 by epoch 125; 200 epochs take about 3 minutes
    # on an otherwise idle 2-core CPU.
    epochs: int = hparam(200, "passes over the training split (3,000 steps of 100 on the bundled digits)")
    batch_size: int = hparam(100, "samples per step (Mirza & Osindero 2014: mini-batches of 100)")
    lr: float = hparam(2e-4, "Adam learning rate of both networks (Radford et al. 2015: 2e-4; the paper used SGD 0.1)")
    beta1: float = hparam(0.5, "Adam beta1 (Radford et al. 2015: 0.5)", at_least=0.0, below=1.0)
    beta2: float = hparam(0.999, "Adam beta2 (Kingma & Ba 2015 default 0.999)", at_least=0.0, below=1.0)
    latent_dim: int = hparam(100, "size of the noise z ~ U[0, 1)^d (Mirza & Osindero: 100, unit hypercube)", at_least=1)
    num_classes: int = hparam(10, "classes of the conditioning label y (MNIST digits: 10)", at_least=1)
    noise_hidden: int = hparam(200, "generator ReLU units for z (Mirza & Osindero: 200)", at_least=1)
    label_hidden: int = hparam(1000, "generator ReLU units for y (Mirza & Osindero: 1000)", at_least=1)
    joint_hidden: int = hparam(1200, "generator ReLU units after joining (Mirza & Osindero: 1200)", at_least=1)
    image_units: int = hparam(240, "discriminator maxout units for x (Mirza & Osindero: 240, 5 pieces)", at_least=1)
    label_units: int = hparam(50, "discriminator maxout units for y (Mirza & Osindero: 50, 5 pieces)", at_least=1)
    input_pieces: int = hparam(5, "pieces of the x and y maxout layers (Mirza & Osindero: 5)", at_least=1)
    joint_units: int = hparam(240, "discriminator joint maxout units (Mirza & Osindero: 240, 4 pieces)", at_least=1)
    joint_pieces: int = hparam(4, "pieces of the joint maxout layer (Mirza & Osindero: 4)", at_least=1)
    dropout: float = hparam(0.5, "dropout on the discriminator's hidden layers (Mirza & Osindero: 0.5)", at_least=0.0, below=1.0)
    generator_dropout: float = hparam(0.5, "dropout on the generator's hidden layers (Mirza & Osindero: 0.5)", at_least=0.0, below=1.0)


class Generator(nn.Module):
    """(z (N, latent), label (N,) int64) -> images (N, 1, 28, 28) in [0, 1]."""

    def __init__(self, config: CGANConfig):
        super().__init__()
        self.num_classes = config.num_classes
        self.image_size = IMAGE_SIZE  # TorchScript reads attributes, not module globals
        self.noise_layer = nn.Linear(config.latent_dim, config.noise_hidden)
        self.label_layer = nn.Linear(config.num_classes, config.label_hidden)
        self.joint_layer = nn.Linear(config.noise_hidden + config.label_hidden, config.joint_hidden)
        self.to_image = nn.Linear(config.joint_hidden, PIXELS)
        self.dropout = nn.Dropout(config.generator_dropout)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        y = F.one_hot(label, self.num_classes).to(z.dtype)  # (N,) -> (N, classes)
        h = torch.cat([F.relu(self.noise_layer(z)), F.relu(self.label_layer(y))], dim=1)  # (N, 200 + 1000)
        h = F.relu(self.joint_layer(self.dropout(h)))  # (N, 1200)
        return torch.sigmoid(self.to_image(self.dropout(h))).reshape(z.shape[0], 1, self.image_size, self.image_size)


class Discriminator(nn.Module):
    """(images (N, 1, 28, 28), label (N,)) -> logits (N,) of "a real image of this class"."""

    def __init__(self, config: CGANConfig):
        super().__init__()
        self.num_classes = config.num_classes
        self.image_layer = Maxout(PIXELS, config.image_units, config.input_pieces)
        self.label_layer = Maxout(config.num_classes, config.label_units, config.input_pieces)
        self.joint_layer = Maxout(config.image_units + config.label_units, config.joint_units, config.joint_pieces)
        self.to_logit = nn.Linear(config.joint_units, 1)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        y = F.one_hot(label, self.num_classes).to(image.dtype)
        h = torch.cat([self.image_layer(image.flatten(1)), self.label_layer(y)], dim=1)  # (N, 240 + 50)
        h = self.joint_layer(self.dropout(h))  # (N, 240)
        return self.to_logit(self.dropout(h)).squeeze(1)  # (N,)


class CGAN(nn.Module):
    def __init__(self, config: CGANConfig):
        super().__init__()
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)


class CGANTrainer(Trainer):
    def configure_optimizers(self):
        return adam_pair(self.model, self.config)

    def train_step(self, batch, optimizers, progress):
        real, label = batch["image"], batch["label"]
        z = torch.rand(real.shape[0], self.config.latent_dim, device=self.device)
        fake = self.model.generator(z, label)  # fakes of the batch's own classes
        discriminator = self.model.discriminator
        return adversarial_step(self, lambda images: discriminator(images, label), real, fake, optimizers, d_module=discriminator)

    def evaluate(self, batches):
        gen = torch.Generator().manual_seed(0)
        metrics = AdversarialMetrics()
        for batch in batches:
            real, label = batch["image"], batch["label"]
            z = torch.rand(real.shape[0], self.config.latent_dim, generator=gen).to(self.device)
            fake = self.model.generator(z, label)
            metrics.add(self.model.discriminator(real, label), self.model.discriminator(fake, label))
        return metrics.result()

    def sample_grid(self, generator, val_batch):
        """One row per class, the same noise down each column."""
        from torchvision.utils import make_grid

        classes = self.config.num_classes
        z = torch.rand(PER_CLASS, self.config.latent_dim, generator=generator).repeat(classes, 1)  # (classes * 10, latent)
        label = torch.arange(classes).repeat_interleave(PER_CLASS)  # 0 x10, 1 x10, ...
        return make_grid(self.model.generator(z.to(self.device), label.to(self.device)), nrow=PER_CLASS, padding=2)


def _check_label(config: CGANConfig, label: int) -> None:
    if not 0 <= label < config.num_classes:
        from zoo.errors import UsageError

        raise UsageError(f"--label {label}: cgan classes are 0 to {config.num_classes - 1}")


def _sample_inputs(config: CGANConfig, n: int, label: int | None, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and labels for `zoo sample`: every sample of class `label`, or, without
    one, classes cycling 0, 1, ..., 9, 0, ... so that a grid shows every digit."""
    z = torch.rand(n, config.latent_dim, generator=gen)
    if label is None:
        labels = torch.arange(n) % config.num_classes
    else:
        _check_label(config, label)
        labels = torch.full((n,), label, dtype=torch.int64)
    return z, labels


def _example_inputs(config: CGANConfig, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(batch, config.latent_dim, generator=gen), torch.randint(0, config.num_classes, (batch,), generator=gen)


# Generator only (sampling and export need nothing else), trained by zoo on the bundled
# digits with meta['command']; shipped in the package so sampling works offline.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:cgan-digits_v1-bb080d55.safetensors",
    sha256="bb080d55ffabc68d135fc7abc8645cd0a5aed34706bce7649411a1062d90f2b2",
    meta={
        "dataset": "digits",
        "metrics": {
            "val_loss_d": 0.9790078202883402,
            "val_loss_g": 1.0126415491104126,
            "val_d_real": 0.6310804239908854,
            "val_d_fake": 0.3739951960245768,
        },
        "input": {
            "shape": [1, 28, 28],
            "value_range": [0.0, 1.0],
            "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation",
        },
        "num_params": 2413984,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train cgan --data digits --seed 0 --device cpu --epochs 200 --batch-size 100 --lr 0.0002 --beta1 0.5 --beta2 0.999 --latent-dim 100 --num-classes 10 --noise-hidden 200 --label-hidden 1000 --joint-hidden 1200 --image-units 240 --label-units 50 --input-pieces 5 --joint-units 240 --joint-pieces 4 --dropout 0.5 --generator-dropout 0.5",
        "config": {
            "epochs": 200,
            "batch_size": 100,
            "lr": 0.0002,
            "beta1": 0.5,
            "beta2": 0.999,
            "latent_dim": 100,
            "num_classes": 10,
            "noise_hidden": 200,
            "label_hidden": 1000,
            "joint_hidden": 1200,
            "image_units": 240,
            "label_units": 50,
            "input_pieces": 5,
            "joint_units": 240,
            "joint_pieces": 4,
            "dropout": 0.5,
            "generator_dropout": 0.5,
        },
        "components": ["generator"],
        "judged": {
            "by": "convnet:DIGITS_V1",
            "samples": 1000,
            "seed": 0,
            "metrics": {
                "mean_max_probability": 0.9922159314155579,
                "distinct_classes": 10,
                "within_class_std": 0.005207601469010115,
                "conditional_accuracy": 1.0,
            },
        },
        "description": "generator only, trained by zoo with the recorded command in float32 and stored at half precision (float16); 'metrics' are the float32 run's (its discriminator is not shipped), 'judged' is measured on these float16 weights",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="cgan",
    summary="Conditional GAN of Mirza & Osindero 2014: class-conditioned MLP generator, maxout discriminator",
    task="generative",
    config_class=CGANConfig,
    build=CGAN,
    trainer_class=CGANTrainer,
    data_request=lambda config: DataRequest.images(size=IMAGE_SIZE, channels=1, value_range=(0.0, 1.0), num_classes=config.num_classes),
    default_dataset="digits",
    datasets=("digits", "mnist"),
    export_targets=(
        ExportTarget(
            name="generator",
            module=lambda model: model.generator,
            inputs=(
                TensorSpec("z", range="uniform noise in [0, 1)"),
                TensorSpec(
                    "label",
                    dtype="int64",
                    range="class index 0-9 (one-hot encoded inside the graph)",
                    value_range=lambda config, data: (0, config.num_classes - 1),
                ),
            ),
            outputs=(TensorSpec("image", range="pixels in [0, 1], 1x28x28, white digit on black", value_range=(0.0, 1.0)),),
            example_inputs=_example_inputs,
            # 500 fixed (noise, label) pairs, labels cycling through the classes, judged by
            # the packaged convnet: mean max-probability within 1e-4, every judged class equal.
            task_check=tasks.judged_images(("convnet", "DEFAULT"), samples=500),
            description="noise and class label -> image of that class",
        ),
    ),
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    reference="Mirza & Osindero 2014, Section 4.1",
    sample_target="generator",
    sample_inputs=_sample_inputs,
)
