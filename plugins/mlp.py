"""Multilayer perceptron (Zu's introduction; Fleuret's dropout and batch-norm examples).

Flattened pixels -> for each of `--hidden` sizes: linear -> (batch norm, Ioffe &
Szegedy 2015) -> ReLU -> (dropout, Srivastava et al. 2014) -> a linear layer over the
classes. `--init` picks the weight initialisation: xavier (Glorot & Bengio 2010,
uniform, for tanh-like units), kaiming (He et al. 2015, normal fan-in, for ReLU) or
torch's default. Any of `zoo.optim`'s optimizers and schedules; Adam by default, as
scikit-learn's MLPClassifier, its peer in benchmarks/classifier_peers.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Weights, hparam, tasks
from zoo.classify import ClassifierTrainer
from zoo.optim import OptimizerOptions

IMAGE_SIZE = 28


@dataclass
class MLPConfig(OptimizerOptions, TrainConfig):
    # Measured on the bundled digits (python benchmarks/classifier_peers.py): val accuracy 0.990 in
    # 10 s, level with scikit-learn's MLPClassifier((256,)) on the same split (0.990).
    epochs: int = hparam(40, "passes over the training split")
    batch_size: int = hparam(64, "images per step")
    lr: float = hparam(1e-3, "Adam learning rate (Kingma & Ba 2015; scikit-learn's MLPClassifier: 1e-3)")
    optimizer: str = hparam(
        "adam", "Adam, as scikit-learn's MLPClassifier", choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
    )
    weight_decay: float = hparam(1e-4, "L2 weight decay (MLPClassifier's alpha: 1e-4)", at_least=0.0)
    schedule: str = hparam("cosine", "learning-rate schedule over the run", choices=("constant", "step", "cosine"))
    hidden: tuple[int, ...] = hparam((256,), "units of each hidden layer, e.g. 512,256 (MLPClassifier(256): one layer of 256)")
    dropout: float = hparam(0.2, "dropout after each hidden layer (Srivastava et al. 2014: 0.5 for large nets)", at_least=0.0, below=1.0)
    batch_norm: bool = hparam(True, "batch norm before each ReLU (Ioffe & Szegedy 2015)")
    init: str = hparam(
        "kaiming",
        "weight init: xavier (Glorot & Bengio 2010), kaiming (He et al. 2015) or torch's default",
        choices=("xavier", "kaiming", "default"),
    )


class MLP(nn.Module):
    def __init__(self, config: MLPConfig, data):
        super().__init__()
        from zoo.errors import UsageError

        if not config.hidden or any(h < 1 for h in config.hidden):
            raise UsageError(f"--hidden {','.join(map(str, config.hidden)) or '(none)'}: every hidden size must be at least 1")
        layers: list[nn.Module] = []
        width = IMAGE_SIZE * IMAGE_SIZE
        for units in config.hidden:
            layers.append(nn.Linear(width, units))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(nn.ReLU())
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = units
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, data.num_classes or 10)
        for module in self.modules():
            if isinstance(module, nn.Linear) and config.init != "default":
                if config.init == "xavier":
                    nn.init.xavier_uniform_(module.weight)
                else:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(image.flatten(1)))  # (N, 784) -> ... -> (N, classes) logits


def _image_input(config: MLPConfig, batch: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.rand(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen),)


# Trained by zoo on the bundled digits with meta['command'] and stored in float16; shipped in
# the package so prediction and export work offline right after install.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:mlp-digits_v1-3b8ec9fc.safetensors",
    sha256="3b8ec9fc26d5841846356a2bd335fe0d5e533b46478f2ee38d06b8ccb46d6a2a",
    meta={
        "dataset": "digits",
        "metrics": {"val_accuracy": 0.9900000095367432, "val_loss": 0.04316955432295799},
        "input": {
            "shape": [1, 28, 28],
            "value_range": [0.0, 1.0],
            "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation",
        },
        "num_params": 204042,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train mlp --data digits --seed 0 --device cpu --epochs 40 --batch-size 64 --lr 0.001 --optimizer adam --momentum 0.9 --weight-decay 0.0001 --schedule cosine --milestones 0.5,0.75 --gamma 0.1 --hidden 256 --dropout 0.2 --batch-norm --init kaiming",
        "config": {
            "epochs": 40,
            "batch_size": 64,
            "lr": 0.001,
            "optimizer": "adam",
            "momentum": 0.9,
            "weight_decay": 0.0001,
            "schedule": "cosine",
            "milestones": [0.5, 0.75],
            "gamma": 0.1,
            "hidden": [256],
            "dropout": 0.2,
            "batch_norm": True,
            "init": "kaiming",
        },
        "data_info": {"num_classes": 10, "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], "train_size": 1497},
        "description": "MLP 784-256-10 with batch norm and dropout, 99.0% validation accuracy on the bundled digits; trained by zoo with the recorded command in float32 and stored at half precision (float16): the float32 run reached val_accuracy 0.990000, val_loss 0.043172, these float16 weights reach val_accuracy 0.990000, val_loss 0.043170",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="mlp",
    summary="multilayer perceptron on pixels: hidden sizes, dropout, batch norm, Xavier or Kaiming init",
    config_class=MLPConfig,
    build=MLP,
    trainer_class=ClassifierTrainer,
    data_request=lambda config: DataRequest.images(size=IMAGE_SIZE, channels=1, value_range=(0.0, 1.0), num_classes=10),
    default_dataset="digits",
    datasets=("digits", "mnist"),
    export_targets=(
        ExportTarget(
            name="classifier",
            module=lambda model: model,
            inputs=(TensorSpec("image", range="pixels in [0, 1], 1x28x28, white digit on black", value_range=(0.0, 1.0)),),
            outputs=(TensorSpec("logits", range="unnormalised class scores; softmax gives probabilities"),),
            example_inputs=_image_input,
            task_check=tasks.classification(),  # validation accuracy; every predicted class must agree
            description="image -> logits over the classes",
        ),
    ),
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    predict_target="classifier",
    reference="Zu, introduction to deep learning (MLP); Fleuret, Going deeper (dropout, batch norm); Glorot & Bengio 2010; He et al. 2015",
    task="classification",
)
