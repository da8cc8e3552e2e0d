"""The CIFAR residual networks of He, Zhang, Ren & Sun 2015, section 4.2 ("Deep Residual
Learning for Image Recognition").

Depth 6n + 2 (20, 32, 44, 56, 110): a 3x3 convolution to 16 channels, then three stages
of n residual blocks on 32x32, 16x16 and 8x8 maps with 16, 32 and 64 channels (each
block: conv3x3-BN-ReLU-conv3x3-BN, added to its input, then ReLU), global average
pooling and a fully connected layer. Where a stage halves the map and doubles the
channels, the shortcut is the paper's option A (identity: subsample by 2 and pad the new
channels with zeros, no parameters) or B (a 1x1 projection with batch norm).

Training follows the paper: SGD with momentum 0.9, weight decay 1e-4, learning rate 0.1
divided by 10 at 32k and 48k of 64k iterations, i.e. at half and three quarters of the
run whatever its length (`--milestones 0.5,0.75`), batch 128, He initialisation, and
4-pixel padding with random 32x32 crops. The offline default trains on the bundled
digits padded to 32x32 and replicated to 3 channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Images, Labels, Plugin, TensorSpec, TrainConfig, Weights, hparam, tasks
from zoo.classify import ClassifierTrainer
from zoo.optim import OptimizerOptions

IMAGE_SIZE = 32
DEPTHS = (20, 32, 44, 56, 110)


@dataclass
class ResNetConfig(OptimizerOptions, TrainConfig):
    # Measured on the bundled digits (python benchmarks/classifier_peers.py): depth 20 reaches val
    # accuracy 0.9967 in about 5 minutes on 2 cores (convnet's DEFAULT: 0.9933).
    epochs: int = hparam(30, "passes over the training split (the paper: 64k iterations of 128 on CIFAR-10)")
    batch_size: int = hparam(128, "images per step (He et al. 2015: 128)")
    lr: float = hparam(0.1, "peak SGD learning rate (He et al. 2015: 0.1)")
    optimizer: str = hparam(
        "momentum", "SGD with momentum (He et al. 2015)", choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
    )
    momentum: float = hparam(0.9, "momentum (He et al. 2015: 0.9)", at_least=0.0, below=1.0)
    weight_decay: float = hparam(1e-4, "L2 weight decay (He et al. 2015: 1e-4)", at_least=0.0)
    schedule: str = hparam("step", "the paper's step schedule (or cosine, constant)", choices=("constant", "step", "cosine"))
    depth: int = hparam(20, "layers, 6n + 2 (He et al. 2015: 20, 32, 44, 56, 110)", choices=DEPTHS)
    shortcut: str = hparam(
        "A", "where a stage changes shape: A zero-padded identity, B 1x1 projection (He et al. 2015 4.1)", choices=("A", "B")
    )
    crop_padding: int = hparam(4, "random crops of the image padded by this many pixels (He et al. 2015: 4)", at_least=0)
    flip: bool = hparam(False, "random horizontal flips (the paper flips CIFAR images; digits are not mirror-symmetric)")
    pad: int = hparam(
        2, "black border around each image: 28x28 digits in a 32x32 frame, as LeNet-5 read MNIST; 0 for CIFAR-10", at_least=0, at_most=15
    )


class Block(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.changes_shape = stride != 1 or in_channels != channels
        self.option_a = shortcut == "A"
        self.extra_channels = channels - in_channels
        if self.changes_shape and not self.option_a:
            self.projection = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels))
        else:
            self.projection = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.changes_shape and self.option_a:
            # Option A: subsample by 2 and zero-pad the new channels; no parameters.
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.extra_channels))
        else:
            shortcut = self.projection(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig, data):
        super().__init__()
        n = (config.depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks: list[nn.Module] = []
        in_channels = 16
        for stage, channels in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(Block(in_channels, channels, 2 if stage > 0 and i == 0 else 1, config.shortcut))
                in_channels = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, data.num_classes or 10)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")  # He et al. 2015
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(image))  # (N, 3, 32, 32) -> (N, 64, 8, 8)
        return self.fc(x.mean((2, 3)))  # global average pooling -> (N, 64) -> (N, classes)


class ResNetTrainer(ClassifierTrainer):
    def augment(self, batch, generator):
        """The paper's: pad by 4, crop 32x32 at random (and flip, where enabled)."""
        pad = self.config.crop_padding
        images = batch["image"]
        n, _, height, width = images.shape
        if pad:
            padded = F.pad(images, (pad, pad, pad, pad))
            tops = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
            lefts = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
            images = torch.stack([padded[i, :, t : t + height, left : left + width] for i, (t, left) in enumerate(zip(tops, lefts))])
        if self.config.flip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return {**batch, "image": images}


def _image_input(config: ResNetConfig, batch: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen),)


# Trained by zoo on the bundled digits with meta['command'] and stored in float16; shipped in
# the package so prediction and export work offline right after install.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:resnet-digits_v1-2367b968.safetensors",
    sha256="2367b96875b803b68629e8f13c8200e8cefa619f2019a55c2fc8f5c016e02467",
    meta={
        "dataset": "digits",
        "metrics": {"val_accuracy": 0.996666669845581, "val_loss": 0.011415365152060986},
        "input": {
            "shape": [3, 32, 32],
            "value_range": [0.0, 1.0],
            "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation",
        },
        "num_params": 269722,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train resnet --data digits --seed 0 --device cpu --epochs 30 --batch-size 128 --lr 0.1 --optimizer momentum --momentum 0.9 --weight-decay 0.0001 --schedule step --milestones 0.5,0.75 --gamma 0.1 --depth 20 --shortcut A --crop-padding 4 --no-flip --pad 2",
        "config": {
            "epochs": 30,
            "batch_size": 128,
            "lr": 0.1,
            "optimizer": "momentum",
            "momentum": 0.9,
            "weight_decay": 0.0001,
            "schedule": "step",
            "milestones": [0.5, 0.75],
            "gamma": 0.1,
            "depth": 20,
            "shortcut": "A",
            "crop_padding": 4,
            "flip": False,
            "pad": 2,
        },
        "data_info": {"num_classes": 10, "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], "train_size": 1497},
        "description": "ResNet-20 (shortcut A) on the digits padded to 32x32, 99.7% validation accuracy on the bundled digits; trained by zoo with the recorded command in float32 and stored at half precision (float16): the float32 run reached val_accuracy 0.996667, val_loss 0.011380, these float16 weights reach val_accuracy 0.996667, val_loss 0.011415",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="resnet",
    summary="CIFAR ResNets of He et al. 2015 (depth 6n+2, shortcuts A or B), 32x32 RGB; digits padded to 32x32",
    config_class=ResNetConfig,
    build=ResNet,
    trainer_class=ResNetTrainer,
    data_request=lambda config: DataRequest(
        Images("image", size=IMAGE_SIZE, channels=3, value_range=(0.0, 1.0), pad=config.pad), Labels("label", num_classes=10)
    ),
    default_dataset="digits",
    datasets=("digits", "cifar10", "mnist", "folder"),
    export_targets=(
        ExportTarget(
            name="classifier",
            module=lambda model: model,
            inputs=(
                TensorSpec(
                    "image", range="RGB pixels in [0, 1], 3x32x32 (digits: 28x28 in a 2-pixel black border)", value_range=(0.0, 1.0)
                ),
            ),
            outputs=(TensorSpec("logits", range="unnormalised class scores; softmax gives probabilities"),),
            example_inputs=_image_input,
            task_check=tasks.classification(),  # validation accuracy; every predicted class must agree
            description="image -> logits over the classes",
        ),
    ),
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    predict_target="classifier",
    reference="He, Zhang, Ren & Sun 2015 (arXiv:1512.03385), section 4.2",
    task="classification",
)
