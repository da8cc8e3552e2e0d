"""Variational autoencoder (Kingma & Welling, 2014, "Auto-Encoding Variational Bayes").

The model of pytorch/examples `vae/main.py`: a 784-400-20 encoder with mean and
log-variance heads, a 20-400-784 decoder with a sigmoid output, trained on summed
binary cross-entropy plus the KL divergence. Layer names match that example
(`fc1`, `fc21`, `fc22`, `fc3`, `fc4`), so its saved state dicts load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Trainer, Weights, hparam, tasks

IMAGE_SIZE = 28  # MNIST geometry: the example flattens 1x28x28 images into 784 inputs
PIXELS = IMAGE_SIZE * IMAGE_SIZE


@dataclass
class VAEConfig(TrainConfig):
    # pytorch/examples trains 10 epochs of 60,000 MNIST images (4,690 steps); the 1,497
    # bundled training digits give 12 steps an epoch, so twice the passes are needed before
    # the loss settles (val_loss ends ~77% of epoch 1's at 20 epochs, ~80% at 10).
    epochs: int = hparam(20, "passes over the training split (pytorch/examples vae: 10 on full MNIST)")
    batch_size: int = hparam(128, "samples per step (pytorch/examples vae: --batch-size 128)")
    lr: float = hparam(1e-3, "Adam learning rate (pytorch/examples vae: optim.Adam(lr=1e-3))")
    hidden: int = hparam(400, "hidden units of encoder and decoder (pytorch/examples vae: 400)", at_least=1)
    latent_dim: int = hparam(20, "size of the latent code z (pytorch/examples vae: 20)", at_least=1)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.latent_dim = config.latent_dim
        self.image_size = IMAGE_SIZE  # an attribute: TorchScript cannot read module globals
        self.fc1 = nn.Linear(PIXELS, config.hidden)
        self.fc21 = nn.Linear(config.hidden, config.latent_dim)  # mean head
        self.fc22 = nn.Linear(config.hidden, config.latent_dim)  # log-variance head
        self.fc3 = nn.Linear(config.latent_dim, config.hidden)
        self.fc4 = nn.Linear(config.hidden, PIXELS)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.reshape(x.shape[0], self.fc1.in_features)))  # (N, 784) -> (N, hidden)
        return self.fc21(h), self.fc22(h)  # (N, latent) each

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h)).reshape(z.shape[0], 1, self.image_size, self.image_size)  # (N, 1, 28, 28)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encode(x)
        std = torch.exp(0.5 * log_variance)
        # The reparameterisation trick; `eps` may be passed in so evaluation is deterministic.
        eps = torch.randn_like(std) if eps is None else eps
        return self.decode(mean + eps * std), mean, log_variance


class Encoder(nn.Module):
    """image -> (mean, log_variance): the deterministic half of the encoder."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(image)


class Decoder(nn.Module):
    """z -> image in [0, 1]: the generator; sample z ~ N(0, I) outside the graph."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


def loss_function(
    recon: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed BCE and KL divergence (Kingma & Welling, Appendix B), as in pytorch/examples."""
    bce = F.binary_cross_entropy(recon.reshape(-1, PIXELS), x.reshape(-1, PIXELS), reduction="sum")
    kld = -0.5 * torch.sum(1 + log_variance - mean.pow(2) - log_variance.exp())
    return bce, kld


class VAETrainer(Trainer):
    def configure_optimizers(self):
        return {"adam": torch.optim.Adam(self.model.parameters(), lr=self.config.lr)}

    def train_step(self, batch, optimizers, progress):
        x = batch["image"]
        recon, mean, log_variance = self.model(x)
        if not bool(torch.isfinite(recon).all()):
            # Diverged (e.g. --lr 1e30): BCE refuses NaN pixels with an error, so report the
            # loss as NaN and let the engine stop with the step named, weights untouched.
            nan = torch.tensor(float("nan"))
            return {"loss": nan, "bce": nan, "kld": nan}
        bce, kld = loss_function(recon, x, mean, log_variance)
        loss = bce + kld
        opt = optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        self.backward(loss)
        self.step(opt)
        n = x.shape[0]
        # Per-sample values, so numbers compare across batch sizes.
        return {"loss": loss.detach() / n, "bce": bce.detach() / n, "kld": kld.detach() / n}

    def evaluate(self, batches):
        # Fixed noise for the reparameterisation, so val_loss is reproducible and
        # evaluation never consumes the training random stream.
        gen = torch.Generator().manual_seed(0)
        total, n = 0.0, 0
        for batch in batches:
            x = batch["image"]
            eps = torch.randn(x.shape[0], self.model.latent_dim, generator=gen).to(x.device)
            recon, mean, log_variance = self.model(x, eps)
            bce, kld = loss_function(recon, x, mean, log_variance)
            total += float(bce + kld)
            n += x.shape[0]
        return {"val_loss": total / n}

    def sample_grid(self, generator, val_batch):
        from torchvision.utils import make_grid

        z = torch.randn(64, self.model.latent_dim, generator=generator).to(self.device)
        return make_grid(self.model.decode(z), nrow=8, padding=2)


def _image_input(config: VAEConfig, batch: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.rand(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen),)


def _latent_input(config: VAEConfig, batch: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.randn(batch, config.latent_dim, generator=gen),)


IMAGE_RANGE = "pixels in [0, 1], white digit on black"


def _reconstruction(recon: torch.Tensor, x: torch.Tensor) -> tasks.Measure:
    """Summed binary cross-entropy of the reconstructions, per image (the VAE's reconstruction error)."""
    bce = F.binary_cross_entropy(recon.reshape(-1, PIXELS), x.reshape(-1, PIXELS), reduction="sum")
    return tasks.Measure(float(bce), x.shape[0])


def _decoder_reconstruction(run, batch, context) -> tasks.Measure:
    """The decoder under test reconstructs validation images from the eager encoder's means."""
    mean, _ = context.model.encode(batch["image"])
    return _reconstruction(run(mean)[0], batch["image"])


def _encoder_reconstruction(run, batch, context) -> tasks.Measure:
    """The encoder under test gives the means the eager decoder reconstructs from."""
    mean = run(batch["image"])[0]
    return _reconstruction(context.model.decode(mean), batch["image"])


def _sample_inputs(config: VAEConfig, n: int, label: int | None, gen: torch.Generator) -> tuple[torch.Tensor]:
    if label is not None:
        from zoo.errors import UsageError

        raise UsageError("vae is not conditional: --label does not apply")
    return (torch.randn(n, config.latent_dim, generator=gen),)


# Trained by zoo on the bundled digits with meta['command']; shipped in the package so
# sampling, prediction and export work offline right after install.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:vae-digits_v1-685496ae.safetensors",
    sha256="685496ae3ceaa6b0657811301b23c0ecb434b20ab8c336529f02055e09fbc9ec",
    meta={
        "dataset": "digits",
        "metrics": {"val_loss": 301.62805338541665},
        "input": {
            "shape": [1, 28, 28],
            "value_range": [0.0, 1.0],
            "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation",
        },
        "num_params": 652824,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train vae --data digits --seed 0 --device cpu --epochs 20 --batch-size 128 --lr 0.001 --hidden 400 --latent-dim 20",
        "config": {"epochs": 20, "batch_size": 128, "lr": 0.001, "hidden": 400, "latent_dim": 20},
        "description": "pytorch/examples VAE on the bundled digits (8x8 scans upsampled to 28x28), trained by zoo with the recorded command in float32 and stored at half precision (float16); the float32 run reached val_loss 301.627588, these float16 weights reach 301.628053",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="vae",
    summary="Variational autoencoder of pytorch/examples (784-400-20), trained on digits",
    task="generative",
    config_class=VAEConfig,
    build=VAE,
    trainer_class=VAETrainer,
    data_request=lambda config: DataRequest.images(size=IMAGE_SIZE, channels=1, value_range=(0.0, 1.0), labels=False),
    default_dataset="digits",
    datasets=("digits", "mnist"),
    export_targets=(
        ExportTarget(
            name="decoder",
            module=Decoder,
            inputs=(TensorSpec("z", range="standard normal noise N(0, I)"),),
            outputs=(TensorSpec("image", range=IMAGE_RANGE, value_range=(0.0, 1.0)),),
            example_inputs=_latent_input,
            task_check=tasks.TaskCheck(
                "val_reconstruction_bce", _decoder_reconstruction, description="reconstruction error of validation images"
            ),
            description="latent code -> image",
        ),
        ExportTarget(
            name="encoder",
            module=Encoder,
            inputs=(TensorSpec("image", range=IMAGE_RANGE, value_range=(0.0, 1.0)),),
            outputs=(
                TensorSpec("mean"),
                TensorSpec("log_variance"),
            ),
            example_inputs=_image_input,
            task_check=tasks.TaskCheck(
                "val_reconstruction_bce", _encoder_reconstruction, description="reconstruction error of validation images"
            ),
            description="image -> mean and log-variance of q(z|x)",
        ),
    ),
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    reference="Kingma & Welling 2014; pytorch/examples vae/main.py",
    sample_target="decoder",
    sample_inputs=_sample_inputs,
)
