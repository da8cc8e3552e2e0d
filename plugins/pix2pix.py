"""pix2pix (Isola, Zhu, Zhou & Efros, 2017, "Image-to-Image Translation with Conditional
Adversarial Networks").

A U-Net generator translates an input image into an output image; a 70x70 PatchGAN
discriminator judges (input, output) pairs patch by patch. The generator minimises
the conditional GAN loss plus lambda * L1 to the target (lambda = 100), so L1 takes
care of the low frequencies and the discriminator of the high ones (paper, section 3).

Layer layout, initialisation and optimisation follow the paper's appendix 6.1-6.2
and the authors' PyTorch code (junyanz/pytorch-CycleGAN-and-pix2pix, `unet_256`,
`basic` discriminator, batch norm), whose `latest_net_G.pth` generators load here
through `checkpoint_filter`.

Three deliberate differences from the reference code, the first two for models that
leave Python:
- Evaluation, sample grids and exports run the generator in eval mode with dropout off,
  so an exported graph is a deterministic function of its input. The paper keeps
  dropout on at test time (its only source of noise, section 3.1); we do not.
- Batch norm is kept the paper's way (section 3.3): it always normalises with the
  statistics of the data in front of it, never with running averages, which "when
  the batch size is set to 1, has been termed instance normalization". At inference
  each image is normalised by its own statistics, so a batch of N images gives the N
  single-image results, exactly what training at batch size 1 computed. (Running
  averages of batch-1 statistics describe no single image; eval-mode batch norm with
  them is a known cause of poor pix2pix test results, e.g. junyanz issues 1329, 893.)
- The dropout sits in the three innermost decoder levels as in the paper's appendix
  (CD512-CD1024-CD1024-...); the reference code puts it one level further out (its
  innermost block has none). Dropout has no parameters, so weights are unaffected.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Images, Plugin, TensorSpec, TrainConfig, Trainer, hparam, tasks

# 256 -> 8 downsamplings (the paper's unet_256), 128 -> 7 (unet_128), 64 -> 6 for the CPU:
# the bottleneck is always 1x1.
IMAGE_SIZES = (64, 128, 256)
# The paper's jitter (appendix 6.2): resize 256 to 286, then random-crop back to 256.
JITTER_RATIO = 286 / 256
CHANNELS = 3  # RGB in, RGB out, as the paper's datasets (edge maps and BW inputs are stored as RGB too)
DROPOUT_LEVELS = 3  # the three innermost decoder levels (paper appendix 6.1.1: CD512-CD1024-CD1024)
INIT_STD = 0.02  # paper appendix 6.2: weights from a Gaussian with mean 0 and standard deviation 0.02


@dataclass
class Pix2PixConfig(TrainConfig):
    # 7 epochs x 400 pairs = 2,800 steps of batch 1. The paper trains facades (400 pairs)
    # for 200 epochs on a GPU. Here one epoch of the default colorization pairs takes
    # 66-70 s on the 2-core CPU (2 threads, idle machine), 1.8 minutes on one core; the
    # default run took 9.8-10.4 minutes and ended at 0.35 of the untrained generator's
    # validation L1 (python benchmarks/pix2pix_quality.py: the issue asks for <= 0.70
    # in under 15 minutes). Handing back the black-and-white input scores 0.44, so the
    # colour learned is the step from 0.44 to 0.35. Validation L1 levels off after
    # about 5 epochs; the samples' colours are muted at 7 (red and blue L1 fall by a
    # quarter from the copy's, green, which luminance mostly carries, rises a little).
    epochs: int = hparam(7, "passes over the training pairs (paper: 200 on facades; 7 take about 10 minutes on 2 CPU cores)")
    batch_size: int = hparam(1, "pairs per step (paper 3.3 and 6.3: 1 for facades and maps; batch norm then acts as instance norm)")
    lr: float = hparam(2e-4, "Adam learning rate of both networks (paper 3.3: 0.0002)")
    beta1: float = hparam(0.5, "Adam beta1 (paper 3.3: 0.5)", at_least=0.0, below=1.0)
    beta2: float = hparam(0.999, "Adam beta2 (paper 3.3: 0.999)", at_least=0.0, below=1.0)
    image_size: int = hparam(64, "training crop size, 64, 128 or 256; the U-Net has log2(size) levels (paper: 256; 64 trains on a CPU)")
    load_size: int = hparam(
        0, "size images are stored at before the random crop; 0 = round(image_size * 286 / 256) (paper: 286 for 256)", at_least=0
    )
    flip: bool = hparam(True, "random horizontal flip of the pair (the reference's default, --no_flip turns it off)")
    direction: str = hparam("AtoB", "translate A (left half) into B (right half), or B into A", choices=("AtoB", "BtoA"))
    lambda_l1: float = hparam(100.0, "weight of the L1 term (paper eq. 4: lambda = 100)", at_least=0.0)
    ngf: int = hparam(64, "generator filters in the first layer, doubling to 8x (paper: 64)", at_least=1)
    ndf: int = hparam(64, "discriminator filters in the first layer (paper: 64)", at_least=1)


def unet_depth(image_size: int) -> int:
    """Number of stride-2 levels that take `image_size` down to a 1x1 bottleneck."""
    from zoo.errors import UsageError

    if image_size not in IMAGE_SIZES:
        raise UsageError(f"--image-size must be one of {', '.join(map(str, IMAGE_SIZES))}, not {image_size}")
    return int(math.log2(image_size))


def load_size(config: Pix2PixConfig) -> int:
    from zoo.errors import UsageError

    size = config.load_size or round(config.image_size * JITTER_RATIO)
    if size < config.image_size:
        raise UsageError(f"--load-size {size} is smaller than --image-size {config.image_size}; the random crop needs room")
    return size


# --------------------------------------------------------------------------- model


class BatchStatsNorm2d(nn.BatchNorm2d):
    """Batch norm with the statistics of the batch at hand, in training and at inference
    (paper 3.3), and learned scale and shift. Training normalises over the batch; outside
    training every image is normalised over its own height and width, which is the
    same thing for a batch of one and keeps exported graphs independent of the batch.
    No running averages are kept: nothing would read them."""

    def __init__(self, num_features: int):
        super().__init__(num_features, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class UNetGenerator(nn.Module):
    """Encoder-decoder with skip connections (paper 6.1.1, figure 3).

    `encoder[i]` halves the size with a 4x4 stride-2 convolution; `decoder[j]` doubles it
    with a 4x4 stride-2 transposed convolution and undoes `encoder[depth - 1 - j]`. Before
    each decoder level except the first, the output of the mirrored encoder level is
    concatenated to the channels (the U-Net skip). Activations lead each block (LeakyReLU
    0.2 going down, ReLU going up), so the skip carries the pre-activation features and
    the decoder's ReLU sees both halves of the concatenation.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, ngf: int = 64):
        super().__init__()
        if depth < 5:
            raise ValueError(f"a U-Net needs at least 5 levels, not {depth}")
        self.depth = depth
        # Filters per level: ngf, 2ngf, 4ngf, then 8ngf down to the bottleneck (C64-C128-C256-C512-C512...).
        widths = [ngf * min(2**i, 8) for i in range(depth)]

        encoder = []
        for i in range(depth):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if i > 0:
                layers["act"] = nn.LeakyReLU(0.2)
            conv_in = in_channels if i == 0 else widths[i - 1]
            # No batch norm on the outermost level (paper) nor on the 1x1 bottleneck, where
            # a batch of one would normalise every feature to zero. No biases either, as
            # in the reference with batch norm (only the output convolution has one).
            has_norm = 0 < i < depth - 1
            layers["conv"] = nn.Conv2d(conv_in, widths[i], 4, stride=2, padding=1, bias=False)
            if has_norm:
                layers["norm"] = BatchStatsNorm2d(widths[i])
            encoder.append(nn.Sequential(layers))
        self.encoder = nn.ModuleList(encoder)

        decoder = []
        for j in range(depth):
            level = depth - 1 - j  # the encoder level this decoder level mirrors
            outermost = level == 0
            conv_in = widths[level] * (1 if j == 0 else 2)  # the skip doubles the channels
            conv_out = out_channels if outermost else widths[level - 1]
            layers = OrderedDict()
            layers["act"] = nn.ReLU()
            layers["conv"] = nn.ConvTranspose2d(conv_in, conv_out, 4, stride=2, padding=1, bias=outermost)
            if outermost:
                layers["out"] = nn.Tanh()
            else:
                layers["norm"] = BatchStatsNorm2d(conv_out)
                if j < DROPOUT_LEVELS:
                    layers["dropout"] = nn.Dropout(0.5)
            decoder.append(nn.Sequential(layers))
        self.decoder = nn.ModuleList(decoder)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        x = image  # (N, in, H, W), H and W multiples of 2**depth
        for block in self.encoder:
            x = block(x)  # level i: (N, widths[i], H / 2**(i+1), W / 2**(i+1))
            skips.append(x)
        # x: the bottleneck, (N, 8ngf, H / 2**depth, W / 2**depth); 1x1 at the training size
        for j, block in enumerate(self.decoder):
            if j > 0:
                # (N, C, h, w) ++ skip (N, C, h, w) -> (N, 2C, h, w); skip first, as the reference
                x = torch.cat([skips[self.depth - 1 - j], x], 1)
            x = block(x)  # doubles h and w
        return x  # (N, out, H, W) in [-1, 1]


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN (paper 6.1.2: C64-C128-C256-C512, then a 1-channel convolution).

    4x4 convolutions, stride 2 for the first three and 1 for the last two, LeakyReLU 0.2,
    no batch norm on the first layer. Each output logit sees a 70x70 patch of the
    concatenated (input, output) pair: real or fake, judged patch by patch.
    """

    def __init__(self, in_channels: int, ndf: int = 64):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1"] = nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1)
        layers["act1"] = nn.LeakyReLU(0.2)
        width = ndf
        for n, stride in ((2, 2), (3, 2), (4, 1)):
            layers[f"conv{n}"] = nn.Conv2d(width, width * 2, 4, stride=stride, padding=1, bias=False)
            layers[f"norm{n}"] = nn.BatchNorm2d(width * 2)
            layers[f"act{n}"] = nn.LeakyReLU(0.2)
            width *= 2
        layers["conv5"] = nn.Conv2d(width, 1, 4, stride=1, padding=1)
        self.layers = nn.Sequential(layers)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        # (N, 6, 256, 256) -> (N, 1, 30, 30) patch logits; (N, 6, 64, 64) -> (N, 1, 6, 6)
        return self.layers(pair)


class Pix2Pix(nn.Module):
    """The generator and the discriminator that trains it; only the generator leaves Python."""

    def __init__(self, config: Pix2PixConfig):
        super().__init__()
        self.generator = UNetGenerator(CHANNELS, CHANNELS, unet_depth(config.image_size), config.ngf)
        self.discriminator = PatchDiscriminator(2 * CHANNELS, config.ndf)
        self.apply(_init_weights)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.generator(image)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)


def build(config: Pix2PixConfig) -> Pix2Pix:
    load_size(config)  # reject an impossible crop before anything is built
    return Pix2Pix(config)


def data_request(config: Pix2PixConfig) -> DataRequest:
    """RGB pairs in [-1, 1] at the jitter's load size; `augment` crops them to image_size."""
    unet_depth(config.image_size)  # a bad size fails before any data is prepared
    size = load_size(config)
    return DataRequest(
        Images("A", size=size, channels=CHANNELS, value_range=(-1.0, 1.0)),
        Images("B", size=size, channels=CHANNELS, value_range=(-1.0, 1.0)),
    )


# --------------------------------------------------------------------------- training


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, size, size): the evaluation view of the stored, jitter-sized
    images, at the scale training saw them."""
    top = (images.shape[-2] - size) // 2
    left = (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size]


def _validation_l1(run, batch, context) -> tasks.Measure:
    """The trainer's `val_l1` of the generator `run`: the configured direction, on the
    centre crops of the validation pairs."""
    source, target = (batch["A"], batch["B"]) if context.config.direction == "AtoB" else (batch["B"], batch["A"])
    size = context.config.image_size
    made = run(center_crop(source, size))[0]
    return tasks.Measure(float((made - center_crop(target, size)).abs().sum()), made.numel())


class Pix2PixTrainer(Trainer):
    def __init__(self, model, config, device):
        super().__init__(model, config, device)
        self.size = config.image_size

    def _pair(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, target) images for the configured direction."""
        if "A" not in batch or "B" not in batch:
            from zoo.errors import DataError

            raise DataError(
                f"pix2pix trains on aligned pairs (--data colorization, edges or pix2pix:PATH); this dataset has {', '.join(sorted(batch))}"
            )
        if self.config.direction == "AtoB":
            return batch["A"], batch["B"]
        return batch["B"], batch["A"]

    def configure_optimizers(self):
        betas = (self.config.beta1, self.config.beta2)
        # fused: one kernel over all parameters; the for-each default costs the CPU
        # about a third of a step on these 32M parameters.
        return {
            "discriminator": torch.optim.Adam(self.model.discriminator.parameters(), lr=self.config.lr, betas=betas, fused=True),
            "generator": torch.optim.Adam(self.model.generator.parameters(), lr=self.config.lr, betas=betas, fused=True),
        }

    def augment(self, batch, generator):
        """The paper's jitter: one random crop and one random flip per pair, the same for
        A and B so they stay aligned."""
        self._pair(batch)
        a, b = batch["A"], batch["B"]
        n, _, height, width = a.shape
        tops = torch.randint(0, height - self.size + 1, (n,), generator=generator).tolist()
        lefts = torch.randint(0, width - self.size + 1, (n,), generator=generator).tolist()
        flips = (torch.rand(n, generator=generator) < 0.5).tolist() if self.config.flip else [False] * n
        out_a, out_b = [], []
        for i in range(n):
            crop = (slice(None), slice(tops[i], tops[i] + self.size), slice(lefts[i], lefts[i] + self.size))
            pa, pb = a[i][crop], b[i][crop]  # (C, size, size)
            if flips[i]:
                pa, pb = pa.flip(-1), pb.flip(-1)
            out_a.append(pa)
            out_b.append(pb)
        return {**batch, "A": torch.stack(out_a), "B": torch.stack(out_b)}

    def train_step(self, batch, optimizers, progress):
        source, target = self._pair(batch)
        generator, discriminator = self.model.generator, self.model.discriminator
        fake = generator(source)

        # Discriminator: real pairs -> 1, fake pairs -> 0; the objective is halved so D
        # learns more slowly than G (paper 3.3).
        opt_d = optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        logits_fake = discriminator(torch.cat([source, fake.detach()], 1))
        logits_real = discriminator(torch.cat([source, target], 1))
        loss_d_fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
        loss_d_real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
        loss_d = 0.5 * (loss_d_fake + loss_d_real)
        self.backward(loss_d)
        self.step(opt_d)

        # Generator: fool the updated D (the non-saturating log D(x, G(x)) of the paper)
        # and stay close to the target in L1. D's weights need no gradients here.
        opt_g = optimizers["generator"]
        with self.frozen(discriminator):
            opt_g.zero_grad(set_to_none=True)
            logits = discriminator(torch.cat([source, fake], 1))
            loss_g_gan = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            loss_g_l1 = F.l1_loss(fake, target)
            loss_g = loss_g_gan + self.config.lambda_l1 * loss_g_l1
            self.backward(loss_g)
        self.step(opt_g)
        return {
            "loss_d": loss_d.detach(),
            "loss_d_real": loss_d_real.detach(),
            "loss_d_fake": loss_d_fake.detach(),
            "loss_g_gan": loss_g_gan.detach(),
            "loss_g_l1": loss_g_l1.detach(),
        }

    def evaluate(self, batches):
        """Mean absolute error of G(source) against the target, pixels in [-1, 1], on
        the centre crops of the validation pairs (eval mode: deterministic)."""
        total, count = 0.0, 0
        for batch in batches:
            source, target = self._pair(batch)
            source, target = center_crop(source, self.size), center_crop(target, self.size)
            total += float((self.model.generator(source) - target).abs().sum())
            count += target.numel()
        return {"val_l1": total / count}

    def sample_grid(self, generator, val_batch):
        """Rows of input | output | target for the first validation pairs, in [0, 1]."""
        from torchvision.utils import make_grid

        if val_batch is None:
            return None
        source, target = self._pair(val_batch)
        source, target = center_crop(source[:8], self.size), center_crop(target[:8], self.size)
        output = self.model.generator(source)
        rows = torch.stack([source, output, target], 1).flatten(0, 1)  # (n*3, C, size, size)
        return make_grid((rows + 1) / 2, nrow=3, padding=2).clamp(0, 1)


# --------------------------------------------------------------------------- foreign checkpoints

_FOREIGN_PREFIX = re.compile(r"^(module\.)?model\.model\.")


def _reference_block(level: int) -> str:
    """Key prefix of U-Net level `level` (0 = outermost) in the reference code, where each
    level is a block whose `model` Sequential holds the next level at index 1 (outermost)
    or 3 (the others): level 3 is `model.model.1.model.3.model.3.model`."""
    if level == 0:
        return "model.model"
    return "model.model.1" + ".model.3" * (level - 1) + ".model"


def reference_key_map(depth: int) -> dict[str, str]:
    """Module names of the reference `UnetGenerator(num_downs=depth, norm='batch')` ->
    names in zoo's `UNetGenerator`. Per level of the reference Sequential: outermost
    [conv 0, inner 1, relu 2, upconv 3, tanh 4]; middle [lrelu 0, conv 1, norm 2,
    inner 3, relu 4, upconv 5, upnorm 6, dropout 7]; innermost [lrelu 0, conv 1, relu 2,
    upconv 3, upnorm 4]."""
    mapping = {}
    for level in range(depth):
        prefix = _reference_block(level)
        decoder = f"decoder.{depth - 1 - level}"
        if level == 0:
            mapping[f"{prefix}.0"] = "encoder.0.conv"
            mapping[f"{prefix}.3"] = f"{decoder}.conv"
        elif level == depth - 1:
            mapping[f"{prefix}.1"] = f"encoder.{level}.conv"
            mapping[f"{prefix}.3"] = f"{decoder}.conv"
            mapping[f"{prefix}.4"] = f"{decoder}.norm"
        else:
            mapping[f"{prefix}.1"] = f"encoder.{level}.conv"
            mapping[f"{prefix}.2"] = f"encoder.{level}.norm"
            mapping[f"{prefix}.5"] = f"{decoder}.conv"
            mapping[f"{prefix}.6"] = f"{decoder}.norm"
    return mapping


# Batch-norm buffers of the reference checkpoints. Its default test path (no --eval)
# never reads them, and neither does zoo's generator (see BatchStatsNorm2d).
_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def checkpoint_filter(state: Mapping[str, Any], model: Pix2Pix) -> dict[str, Any]:
    """zoo's own state dicts pass unchanged; a generator saved by the reference code
    (`latest_net_G.pth` of `unet_256`, `unet_128`, ... with batch norm) becomes
    `generator.*` keys, without the running statistics nothing reads.

    The result holds the generator only: the reference publishes no discriminator, so
    that one stays as initialised (loading must be strict per covered sub-module)."""
    from zoo.errors import CheckpointError

    keys = list(state)
    if not keys or not all(_FOREIGN_PREFIX.match(k) for k in keys):
        return dict(state)
    depth = model.generator.depth
    mapping = reference_key_map(depth)
    out: dict[str, Any] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")  # saved from nn.DataParallel
        module_name, _, param = key.rpartition(".")
        if module_name not in mapping:
            raise CheckpointError(
                f"reference pix2pix key {key!r} has no place in a {depth}-level U-Net "
                f"(--image-size {2**depth}); was it saved as unet_{2**depth} with batch norm?"
            )
        if param in _RUNNING_STATS:
            continue
        out[f"generator.{mapping[module_name]}.{param}"] = value
    return out


# --------------------------------------------------------------------------- export


def _image_input(config: Pix2PixConfig, batch: int, gen: torch.Generator, sizes: dict[str, int]) -> tuple[torch.Tensor]:
    return (torch.rand(batch, CHANNELS, sizes["height"], sizes["width"], generator=gen) * 2 - 1,)


def _axis_sizes(config: Pix2PixConfig) -> dict[str, tuple[int, ...]]:
    """Height and width are multiples of 2**depth (= image_size). The graph is captured at
    twice the training size, two blocks each way, so the bottleneck is 2x2: torch.export
    (and ONNX through it) specialises any size that is 1, and at the training size the
    bottleneck is 1x1, which would fix height and width in the graph. Parity also runs
    at 3 blocks by 1, where the input is not square and the bottleneck is 3x1."""
    unit = config.image_size
    return {"height": (2 * unit, 3 * unit), "width": (2 * unit, unit)}


IMAGE_RANGE = "RGB in [-1, 1]; height and width multiples of 2**depth (64 for --image-size 64, 256 for 256)"

plugin = Plugin(
    name="pix2pix",
    summary="pix2pix: U-Net generator + 70x70 PatchGAN, cGAN + 100 L1 (Isola et al. 2017)",
    task="image-to-image",
    config_class=Pix2PixConfig,
    build=build,
    trainer_class=Pix2PixTrainer,
    data_request=data_request,
    default_dataset="colorization",
    datasets=("colorization", "edges", "pix2pix"),
    export_targets=(
        ExportTarget(
            name="generator",
            module=lambda model: model.generator,
            inputs=(TensorSpec("image", range=IMAGE_RANGE, value_range=(-1.0, 1.0)),),
            outputs=(TensorSpec("translated", range="RGB in [-1, 1], same height and width as the input", value_range=(-1.0, 1.0)),),
            example_inputs=_image_input,
            task_check=tasks.TaskCheck("val_l1", _validation_l1, description="L1 between translated and true validation images"),
            description="image -> translated image (eval mode: dropout off, each image normalised by its own statistics)",
            dynamic_dims={"image": {2: "height", 3: "width"}, "translated": {2: "height", 3: "width"}},
            # Inductor's default channels-last layout leaves the instance norms reducing over
            # strided memory: the .pt2 ran at 1.40x eager's batch-1 latency, 0.96x in NCHW.
            exporters={"pt2": "aotinductor-nchw"},
            axis_sizes=_axis_sizes,
        ),
    ),
    checkpoint_filter=checkpoint_filter,
    reference="Isola et al. 2017 (arXiv:1611.07004); junyanz/pytorch-CycleGAN-and-pix2pix",
    predict_target="generator",
)
