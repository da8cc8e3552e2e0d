"""Generative adversarial nets (Goodfellow et al., 2014, "Generative Adversarial Nets").

The MNIST model of the paper's code (github.com/goodfeli/adversarial, `mnist.yaml`):
a generator z (100) -> 1200 ReLU -> 1200 ReLU -> 784 sigmoid, and a discriminator of
two maxout layers (240 units x 5 pieces) and a sigmoid unit, with dropout on the
discriminator's inputs (0.2 on the image, 0.5 on the hidden layers). The paper trained
with SGD and momentum; we use Adam 2e-4 with betas (0.5, 0.999) (Radford et al. 2015),
the optimizer of the course notes and of every later GAN here.

The loss is the paper's minimax game in binary cross-entropy form; the generator
maximises log D(G(z)) rather than minimising log(1 - D(G(z))) (the paper's advice
for strong early gradients, Section 3). The discriminator returns logits, and the
losses use `binary_cross_entropy_with_logits`: the same BCE on sigmoid outputs,
without its overflow when D is confident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Trainer, Weights, hparam, tasks

IMAGE_SIZE = 28  # MNIST geometry: both networks see flattened 784-pixel images
PIXELS = IMAGE_SIZE * IMAGE_SIZE
GRID = 64  # images in the sample grid written every epoch (8 x 8)


@dataclass
class GANConfig(TrainConfig):
    # The paper trained 50,000 MNIST images for hundreds of epochs; the bundled digits
    # have 1,497 training images, so one epoch is 15 steps. The convnet's mean
    # max-probability on samples passes 0.8 after about 125 epochs and is 0.83-0.85 at
    # 200 (3,000 steps, about 3.5 minutes on an otherwise idle 2-core CPU).
    epochs: int = hparam(200, "passes over the training split (3,000 steps of 100 on the bundled digits)")
    batch_size: int = hparam(100, "samples per step (Goodfellow et al., mnist.yaml: batch_size 100)")
    lr: float = hparam(2e-4, "Adam learning rate of both networks (Radford et al. 2015: 2e-4)")
    beta1: float = hparam(0.5, "Adam beta1 (Radford et al. 2015: 0.5; 0.9 made training oscillate)", at_least=0.0, below=1.0)
    beta2: float = hparam(0.999, "Adam beta2 (Kingma & Ba 2015 default 0.999)", at_least=0.0, below=1.0)
    latent_dim: int = hparam(100, "size of the noise z ~ N(0, I) (mnist.yaml: nvis 100, gaussian noise)", at_least=1)
    generator_hidden: int = hparam(1200, "units of each of the generator's two ReLU layers (mnist.yaml: 1200)", at_least=1)
    maxout_units: int = hparam(240, "units of each discriminator maxout layer (mnist.yaml: 240)", at_least=1)
    maxout_pieces: int = hparam(5, "linear pieces per maxout unit (mnist.yaml: 5)", at_least=1)
    input_dropout: float = hparam(0.2, "dropout on the discriminator's image input (mnist.yaml: include prob 0.8)", at_least=0.0, below=1.0)
    dropout: float = hparam(0.5, "dropout on the discriminator's hidden layers (mnist.yaml: include prob 0.5)", at_least=0.0, below=1.0)


class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): each unit is the max of `pieces` linear
    functions of the input. Pieces of one unit are adjacent, as in pylearn2."""

    def __init__(self, in_features: int, units: int, pieces: int):
        super().__init__()
        self.units = units
        self.pieces = pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x).reshape(x.shape[0], self.units, self.pieces)  # (N, units * pieces) -> (N, units, pieces)
        return h.amax(dim=2)  # (N, units)


class Generator(nn.Module):
    """z (N, latent) -> images (N, 1, 28, 28) in [0, 1]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.image_size = IMAGE_SIZE  # TorchScript reads attributes, not module globals
        self.hidden1 = nn.Linear(config.latent_dim, config.generator_hidden)
        self.hidden2 = nn.Linear(config.generator_hidden, config.generator_hidden)
        self.to_image = nn.Linear(config.generator_hidden, PIXELS)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.hidden1(z))
        h = F.relu(self.hidden2(h))
        return torch.sigmoid(self.to_image(h)).reshape(z.shape[0], 1, self.image_size, self.image_size)  # (N, 1, 28, 28)


class Discriminator(nn.Module):
    """images (N, 1, 28, 28) -> logits (N,) of "this image is real"."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.hidden1 = Maxout(PIXELS, config.maxout_units, config.maxout_pieces)
        self.hidden2 = Maxout(config.maxout_units, config.maxout_units, config.maxout_pieces)
        self.dropout = nn.Dropout(config.dropout)
        self.to_logit = nn.Linear(config.maxout_units, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.hidden1(self.input_dropout(image.flatten(1)))  # (N, 784) -> (N, units)
        h = self.hidden2(self.dropout(h))
        return self.to_logit(self.dropout(h)).squeeze(1)  # (N,)


class GAN(nn.Module):
    """Holds both players; only `generator` leaves Python."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        # mnist.yaml initialises weights uniformly in [-irange, irange] and biases at 0.
        for module, irange in ((self.generator, 0.05), (self.discriminator, 0.005)):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.uniform_(layer.weight, -irange, irange)
                    nn.init.zeros_(layer.bias)


def discriminator_losses(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-[log D(x) + log(1 - D(G(z)))], the discriminator's side of the minimax game."""
    return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + F.binary_cross_entropy_with_logits(
        fake_logits, torch.zeros_like(fake_logits)
    )


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): the non-saturating generator loss (Goodfellow et al. 2014, Section 3)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def adversarial_step(
    trainer: Trainer,
    discriminator: Any,
    real: torch.Tensor,
    fake: torch.Tensor,
    optimizers: dict[str, torch.optim.Optimizer],
    d_module: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """One discriminator update then one generator update on the same fakes (still
    attached to the generator's graph), as in Algorithm 1 of Goodfellow et al. with
    k = 1. `discriminator` is a callable (conditional models bind the label in; then
    `d_module` is the module it runs); the trainer's `backward` and `step` scale the
    losses under fp16. Returns the logged losses."""
    real_logits = discriminator(real)
    fake_logits = discriminator(fake.detach())  # no generator gradients from D's update
    loss_d = discriminator_losses(real_logits, fake_logits)
    optimizers["discriminator"].zero_grad(set_to_none=True)
    trainer.backward(loss_d)
    trainer.step(optimizers["discriminator"])

    # G's step passes through D (just updated, as in pytorch/examples dcgan); D's own
    # gradients from it would be discarded, so they are not computed (nor synchronised).
    with trainer.frozen(d_module if d_module is not None else discriminator):
        loss_g = generator_loss(discriminator(fake))
        optimizers["generator"].zero_grad(set_to_none=True)
        trainer.backward(loss_g)
    trainer.step(optimizers["generator"])
    return {
        "loss_d": loss_d.detach(),
        "loss_g": loss_g.detach(),
        "d_real": torch.sigmoid(real_logits.detach()).mean(),  # D(x): 1 is "sure it is real"
        "d_fake": torch.sigmoid(fake_logits.detach()).mean(),  # D(G(z)) before D's update
    }


class AdversarialMetrics:
    """Sums of the validation losses over batches: D on real validation images and on
    as many fakes from fixed noise, G on the same fakes. Cheap and reproducible; they
    say whether the game is balanced, not how good the samples are (`zoo evaluate`)."""

    def __init__(self) -> None:
        self.loss_d = self.loss_g = self.d_real = self.d_fake = 0.0
        self.n = 0

    def add(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        n = real_logits.shape[0]
        self.loss_d += float(discriminator_losses(real_logits, fake_logits)) * n
        self.loss_g += float(generator_loss(fake_logits)) * n
        self.d_real += float(torch.sigmoid(real_logits).sum())
        self.d_fake += float(torch.sigmoid(fake_logits).sum())
        self.n += n

    def result(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"val_loss_d": self.loss_d / n, "val_loss_g": self.loss_g / n, "val_d_real": self.d_real / n, "val_d_fake": self.d_fake / n}


def adam_pair(model: Any, config: Any) -> dict[str, torch.optim.Optimizer]:
    """One Adam per player; the step runs the discriminator's first."""
    betas = (config.beta1, config.beta2)
    return {
        "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=config.lr, betas=betas),
        "generator": torch.optim.Adam(model.generator.parameters(), lr=config.lr, betas=betas),
    }


class GANTrainer(Trainer):
    def configure_optimizers(self):
        return adam_pair(self.model, self.config)

    def train_step(self, batch, optimizers, progress):
        real = batch["image"]
        z = torch.randn(real.shape[0], self.config.latent_dim, device=self.device)
        fake = self.model.generator(z)
        return adversarial_step(self, self.model.discriminator, real, fake, optimizers)

    def evaluate(self, batches):
        gen = torch.Generator().manual_seed(0)  # the same fakes every epoch
        metrics = AdversarialMetrics()
        for batch in batches:
            real = batch["image"]
            z = torch.randn(real.shape[0], self.config.latent_dim, generator=gen).to(self.device)
            metrics.add(self.model.discriminator(real), self.model.discriminator(self.model.generator(z)))
        return metrics.result()

    def sample_grid(self, generator, val_batch):
        from torchvision.utils import make_grid

        (z,) = _sample_inputs(self.config, GRID, None, generator)
        return make_grid(self.model.generator(z.to(self.device)), nrow=8, padding=2)


def noise_input(config: Any, batch: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    """z ~ N(0, I) of size config.latent_dim, the generator's input (gan and dcgan)."""
    return (torch.randn(batch, config.latent_dim, generator=gen),)


def _sample_inputs(config: GANConfig, n: int, label: int | None, gen: torch.Generator) -> tuple[torch.Tensor]:
    if label is not None:
        from zoo.errors import UsageError

        raise UsageError("gan is not conditional: --label does not apply (cgan takes a class label)")
    return noise_input(config, n, gen)


# Generator only (sampling and export need nothing else), trained by zoo on the bundled
# digits with meta['command']; shipped in the package so sampling works offline.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:gan-digits_v1-bb5f2e7a.safetensors",
    sha256="bb5f2e7ace5250596067570ce07bdab97f11d27c93923cf7b394b9c520cd0dd9",
    meta={
        "dataset": "digits",
        "metrics": {
            "val_loss_d": 1.0806677341461182,
            "val_loss_g": 0.9790183504422506,
            "val_d_real": 0.6068346150716146,
            "val_d_fake": 0.39849603017171226,
        },
        "input": {
            "shape": [1, 28, 28],
            "value_range": [0.0, 1.0],
            "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation",
        },
        "num_params": 2503984,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train gan --data digits --seed 0 --device cpu --epochs 200 --batch-size 100 --lr 0.0002 --beta1 0.5 --beta2 0.999 --latent-dim 100 --generator-hidden 1200 --maxout-units 240 --maxout-pieces 5 --input-dropout 0.2 --dropout 0.5",
        "config": {
            "epochs": 200,
            "batch_size": 100,
            "lr": 0.0002,
            "beta1": 0.5,
            "beta2": 0.999,
            "latent_dim": 100,
            "generator_hidden": 1200,
            "maxout_units": 240,
            "maxout_pieces": 5,
            "input_dropout": 0.2,
            "dropout": 0.5,
        },
        "components": ["generator"],
        "judged": {
            "by": "convnet:DIGITS_V1",
            "samples": 1000,
            "seed": 0,
            "metrics": {"mean_max_probability": 0.8463369011878967, "distinct_classes": 10, "within_class_std": 0.12664157152175903},
        },
        "description": "generator only, trained by zoo with the recorded command in float32 and stored at half precision (float16); 'metrics' are the float32 run's (its discriminator is not shipped), 'judged' is measured on these float16 weights",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="gan",
    summary="Generative adversarial nets of Goodfellow et al. 2014: MLP generator, maxout discriminator",
    task="generative",
    config_class=GANConfig,
    build=GAN,
    trainer_class=GANTrainer,
    data_request=lambda config: DataRequest.images(size=IMAGE_SIZE, channels=1, value_range=(0.0, 1.0), labels=False),
    default_dataset="digits",
    datasets=("digits", "mnist"),
    export_targets=(
        ExportTarget(
            name="generator",
            module=lambda model: model.generator,
            inputs=(TensorSpec("z", range="standard normal noise N(0, I)"),),
            outputs=(TensorSpec("image", range="pixels in [0, 1], 1x28x28, white digit on black", value_range=(0.0, 1.0)),),
            example_inputs=noise_input,
            # 500 fixed noise inputs judged by the packaged convnet: the mean max-probability
            # may move by 1e-4 relative, and every judged class must agree.
            task_check=tasks.judged_images(("convnet", "DEFAULT"), samples=500),
            description="noise -> image",
        ),
    ),
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    reference="Goodfellow et al. 2014; github.com/goodfeli/adversarial mnist.yaml",
    sample_target="generator",
    sample_inputs=_sample_inputs,
)
