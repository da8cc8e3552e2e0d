"""Fine-tuning a pretrained stage: Fleuret's "Monster" example (Deep Learning course,
"Going deeper").

The first convolution of AlexNet (Krizhevsky et al. 2012: 3 -> 64 channels, 11x11,
stride 4, padding 2) and a ReLU are the feature stage; a 3x3 convolution converts its
64 maps to `--channels`; `--blocks` residual blocks of conv-BN-ReLU-conv-BN, each added
to its input (then ReLU), work on the 7x7 map a 32x32 image gives; average pooling over
that map and a linear layer classify. SGD with learning rate 1e-2, as in the notes.

The feature stage stays frozen for the first `--frozen-epochs` (default: half of
`--epochs`), so the new layers first learn on top of the pretrained filters, then
everything trains. `zoo weights import finetune alexnet.pth --name ALEXNET` takes a
torchvision AlexNet state dict (the user's own file: nothing is downloaded) and keeps
its `features.0` as the feature stage; `zoo train finetune --weights ALEXNET` starts
from it. Without one, the stage starts from its own initialisation and the freeze
schedule still runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Images, Labels, Plugin, TensorSpec, TrainConfig, Weights, hparam, tasks
from zoo.classify import ClassifierTrainer
from zoo.optim import OptimizerOptions

IMAGE_SIZE = 32  # AlexNet's first convolution turns 32x32 into the 7x7 map the blocks work on


@dataclass
class FineTuneConfig(OptimizerOptions, TrainConfig):
    # Measured on the bundled digits: val accuracy 0.993 (DIGITS_V1's meta). Accuracy dips after
    # the unfreeze (0.66 at epoch 15 in that run) and recovers by the end.
    epochs: int = hparam(20, "passes over the training split")
    batch_size: int = hparam(64, "images per step")
    lr: float = hparam(1e-2, "SGD learning rate (Fleuret's example: 1e-2)")
    optimizer: str = hparam(
        "sgd", "plain SGD, as in Fleuret's example", choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
    )
    channels: int = hparam(64, "channels of the residual blocks (Fleuret: 64)", at_least=1)
    blocks: int = hparam(16, "residual blocks (Fleuret: 16)", at_least=1)
    frozen_epochs: int = hparam(-1, "epochs the AlexNet feature stage stays frozen; -1: half of --epochs", at_least=-1)
    pad: int = hparam(2, "black border around each image: 28x28 digits in a 32x32 frame; 0 for 32x32 datasets", at_least=0, at_most=15)


def frozen_epochs(config: FineTuneConfig) -> int:
    from zoo.errors import UsageError

    frozen = config.epochs // 2 if config.frozen_epochs == -1 else config.frozen_epochs
    if frozen > config.epochs:
        raise UsageError(f"--frozen-epochs {frozen} is more than --epochs {config.epochs}")
    return frozen


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(x + y)


class Monster(nn.Module):
    def __init__(self, config: FineTuneConfig, data):
        super().__init__()
        frozen_epochs(config)  # an impossible freeze fails before anything trains
        # Named as in torchvision's AlexNet, so its `features.0.*` load here unchanged.
        self.features = nn.Sequential(nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU())
        self.converter = nn.Conv2d(64, config.channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ResBlock(config.channels) for _ in range(config.blocks)))
        self.fc = nn.Linear(config.channels, data.num_classes or 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.features(image)  # (N, 3, 32, 32) -> (N, 64, 7, 7)
        x = self.blocks(F.relu(self.converter(x)))  # (N, channels, 7, 7)
        return self.fc(x.mean((2, 3)))  # average pooling over the 7x7 map -> (N, classes)


class FineTuneTrainer(ClassifierTrainer):
    def on_epoch_start(self, progress):
        frozen = progress.epoch <= frozen_epochs(self.config)
        self.model.features.requires_grad_(not frozen)
        self.log("phase", "features frozen" if frozen else "all layers")


def checkpoint_filter(state: Mapping[str, Any], model: Monster) -> dict[str, Any]:
    """A torchvision AlexNet state dict (`features.0.*` ... `classifier.6.*`) gives its
    first convolution; zoo's own state dicts pass unchanged."""
    if any(k.startswith("classifier.") for k in state) and "features.0.weight" in state:
        return {k: v for k, v in state.items() if k in ("features.0.weight", "features.0.bias")}
    return dict(state)


def _image_input(config: FineTuneConfig, batch: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen),)


# Trained by zoo on the bundled digits with meta['command'] and stored in float16; shipped in
# the package so prediction and export work offline right after install.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:finetune-digits_v1-831db135.safetensors",
    sha256="831db1355a5ba3fda79120bf14220227c784ae34a6ee17f2c79011e3d75ab9cd",
    meta={
        "dataset": "digits",
        "metrics": {"val_accuracy": 0.9933333396911621, "val_loss": 0.0228817630559206},
        "input": {
            "shape": [3, 32, 32],
            "value_range": [0.0, 1.0],
            "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation",
        },
        "num_params": 1246666,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train finetune --data digits --seed 0 --device cpu --epochs 20 --batch-size 64 --lr 0.01 --optimizer sgd --momentum 0.9 --weight-decay 0.0 --schedule constant --milestones 0.5,0.75 --gamma 0.1 --channels 64 --blocks 16 --frozen-epochs -1 --pad 2",
        "config": {
            "epochs": 20,
            "batch_size": 64,
            "lr": 0.01,
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight_decay": 0.0,
            "schedule": "constant",
            "milestones": [0.5, 0.75],
            "gamma": 0.1,
            "channels": 64,
            "blocks": 16,
            "frozen_epochs": -1,
            "pad": 2,
        },
        "data_info": {"num_classes": 10, "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], "train_size": 1497},
        "description": "AlexNet's first convolution under 16 residual blocks (Fleuret's Monster), trained from its own initialisation, 99.3% validation accuracy on the bundled digits; trained by zoo with the recorded command in float32 and stored at half precision (float16): the float32 run reached val_accuracy 0.993333, val_loss 0.022874, these float16 weights reach val_accuracy 0.993333, val_loss 0.022882",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="finetune",
    summary="fine-tuning AlexNet's first convolution under 16 residual blocks, frozen first (Fleuret's Monster example)",
    config_class=FineTuneConfig,
    build=Monster,
    trainer_class=FineTuneTrainer,
    data_request=lambda config: DataRequest(
        Images("image", size=IMAGE_SIZE, channels=3, value_range=(0.0, 1.0), pad=config.pad), Labels("label", num_classes=10)
    ),
    default_dataset="digits",
    datasets=("digits", "cifar10", "mnist", "folder"),
    export_targets=(
        ExportTarget(
            name="classifier",
            module=lambda model: model,
            inputs=(TensorSpec("image", range="RGB pixels in [0, 1], 3x32x32", value_range=(0.0, 1.0)),),
            outputs=(TensorSpec("logits", range="unnormalised class scores; softmax gives probabilities"),),
            example_inputs=_image_input,
            task_check=tasks.classification(),  # validation accuracy; every predicted class must agree
            description="image -> logits over the classes",
        ),
    ),
    checkpoint_filter=checkpoint_filter,
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    predict_target="classifier",
    reference="Fleuret, Deep Learning course, 'Going deeper' (the Monster example); Krizhevsky et al. 2012 (AlexNet)",
    task="classification",
)
