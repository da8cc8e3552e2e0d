"""Linear classifiers on raw pixels (EECS-498 lecture 3): scores s = W x + b over the
flattened image, trained with the softmax (cross-entropy) loss or the multiclass SVM
hinge loss, plus L2 regularisation R(W) = reg * sum(W ** 2).

- softmax: L_i = -log(exp(s_{y_i}) / sum_j exp(s_j))
- svm: L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + 1), the Weston-Watkins hinge with
  margin 1 as in the lecture (and CS231n)

Optimised with minibatch SGD as in the lecture's assignment, by default; every option
of `zoo.optim` (momentum, Adam, schedules) applies.
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
class LinearConfig(OptimizerOptions, TrainConfig):
    # Measured on the bundled digits (seeds 0-2, about 2 s each on one core): softmax 0.977
    # and svm 0.970 validation accuracy, against scikit-learn's LogisticRegression 0.973
    # and LinearSVC 0.967 on the same split (benchmarks/classifier_peers.py). lr 0.05
    # gave 0.960 for softmax in 60 epochs; 0.5 with the cosine decay converges in them.
    epochs: int = hparam(60, "passes over the training split")
    batch_size: int = hparam(64, "images per step (EECS-498 assignment 2: 200)")
    lr: float = hparam(0.5, "peak SGD learning rate (the assignment searches a range; 0.5 suits [0, 1] pixels here)")
    optimizer: str = hparam(
        "sgd", "plain minibatch SGD, as in the lecture", choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
    )
    schedule: str = hparam("cosine", "learning-rate schedule over the run (EECS-498 lecture 11)", choices=("constant", "step", "cosine"))
    loss: str = hparam(
        "softmax", "softmax (cross-entropy) or svm (multiclass hinge, margin 1): EECS-498 lecture 3", choices=("softmax", "svm")
    )
    reg: float = hparam(1e-4, "L2 regularisation strength: loss += reg * sum(W ** 2) (EECS-498 lecture 3)", at_least=0.0)


class Linear(nn.Module):
    def __init__(self, config: LinearConfig, data):
        super().__init__()
        self.fc = nn.Linear(IMAGE_SIZE * IMAGE_SIZE, data.num_classes or 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(image.flatten(1))  # (N, 1, 28, 28) -> (N, 784) -> (N, classes) scores


def multiclass_hinge(scores: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Mean over the batch of sum_{j != y} max(0, s_j - s_y + margin)."""
    correct = scores.gather(1, labels[:, None])  # (N, 1)
    margins = (scores - correct + margin).clamp(min=0)
    margins = margins.scatter(1, labels[:, None], 0.0)  # the correct class contributes nothing
    return margins.sum(1).mean()


class LinearTrainer(ClassifierTrainer):
    def loss(self, scores, labels):
        if self.config.loss == "svm":
            return multiclass_hinge(scores, labels)
        return super().loss(scores, labels)

    def penalty(self):
        return self.config.reg * (self.model.fc.weight**2).sum()


def _image_input(config: LinearConfig, batch: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.rand(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen),)


# Trained by zoo on the bundled digits with meta['command'] and stored in float16; shipped in
# the package so prediction and export work offline right after install.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:linear-digits_v1-6175e80a.safetensors",
    sha256="6175e80a5699be9dd18b59d5ad1b7ec7fd55e44eca8f74d6dcb10791227fbf52",
    meta={
        "dataset": "digits",
        "metrics": {"val_accuracy": 0.9766666889190674, "val_loss": 0.09186454117298126},
        "input": {
            "shape": [1, 28, 28],
            "value_range": [0.0, 1.0],
            "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation",
        },
        "num_params": 7850,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train linear --data digits --seed 0 --device cpu --epochs 60 --batch-size 64 --lr 0.5 --optimizer sgd --momentum 0.9 --weight-decay 0.0 --schedule cosine --milestones 0.5,0.75 --gamma 0.1 --loss softmax --reg 0.0001",
        "config": {
            "epochs": 60,
            "batch_size": 64,
            "lr": 0.5,
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight_decay": 0.0,
            "schedule": "cosine",
            "milestones": [0.5, 0.75],
            "gamma": 0.1,
            "loss": "softmax",
            "reg": 0.0001,
        },
        "data_info": {"num_classes": 10, "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], "train_size": 1497},
        "description": "softmax linear classifier on pixels, 97.7% validation accuracy on the bundled digits; trained by zoo with the recorded command in float32 and stored at half precision (float16): the float32 run reached val_accuracy 0.976667, val_loss 0.091870, these float16 weights reach val_accuracy 0.976667, val_loss 0.091865",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="linear",
    summary="linear classifier on pixels: softmax or multiclass SVM loss with L2 regularisation (EECS-498 lecture 3)",
    config_class=LinearConfig,
    build=Linear,
    trainer_class=LinearTrainer,
    data_request=lambda config: DataRequest.images(size=IMAGE_SIZE, channels=1, value_range=(0.0, 1.0), num_classes=10),
    default_dataset="digits",
    datasets=("digits", "mnist"),
    export_targets=(
        ExportTarget(
            name="classifier",
            module=lambda model: model,
            inputs=(TensorSpec("image", range="pixels in [0, 1], 1x28x28, white digit on black", value_range=(0.0, 1.0)),),
            outputs=(TensorSpec("scores", range="class scores W x + b; softmax gives probabilities (for --loss softmax)"),),
            example_inputs=_image_input,
            task_check=tasks.classification(),  # validation accuracy; every predicted class must agree
            description="image -> class scores",
        ),
    ),
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    predict_target="classifier",
    reference="EECS-498 (Johnson) lecture 3; CS231n linear classification notes",
    task="classification",
)
