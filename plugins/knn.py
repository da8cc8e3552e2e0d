"""k-nearest-neighbour classifier (EECS-498 lecture 2).

"Training" memorises the training set: O(1) per example, no optimizer. Prediction
compares an image with every stored one, O(n): L1 (sum of absolute pixel differences)
or L2 (Euclidean) distance, then a majority vote of the labels of the `--k` nearest
(ties go to the smaller class index, as scikit-learn's). The stored images are buffers
of the model, so the exported graph is a real one: distances to the stored examples,
top-k and the vote, running in C++, ONNX Runtime and Node like every other plugin.

Its output is the log of each class's share of the k votes (smoothed by 1e-6 so no
class is -inf): softmax gives the shares back, argmax the vote's winner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo import DataRequest, ExportTarget, Plugin, TensorSpec, TrainConfig, Weights, hparam, tasks
from zoo.classify import ClassifierTrainer

IMAGE_SIZE = 28
SMOOTHING = 1e-6


@dataclass
class KNNConfig(TrainConfig):
    # Measured on the bundled digits: 0.993 validation accuracy at k = 1 with L2, equal to
    # scikit-learn's KNeighborsClassifier(n_neighbors=1) on the same split
    # (benchmarks/classifier_peers.py).
    epochs: int = hparam(1, "passes over the training split: one stores it")
    batch_size: int = hparam(512, "images stored per step")
    k: int = hparam(1, "neighbours that vote (EECS-498 lecture 2: chosen on validation data; 1 is the nearest neighbour)", at_least=1)
    distance: str = hparam("l2", "l1 (sum of |differences|) or l2 (Euclidean), EECS-498 lecture 2", choices=("l1", "l2"))


class KNN(nn.Module):
    def __init__(self, config: KNNConfig, data):
        super().__init__()
        from zoo.errors import UsageError

        stored = data.train_size or 1
        if config.k > stored:
            raise UsageError(f"--k {config.k} is larger than the {stored} training images it would vote among")
        self.k = config.k
        self.l1 = config.distance == "l1"
        self.num_classes = data.num_classes or 10
        self.smoothing = SMOOTHING  # an attribute: TorchScript cannot read module globals
        self.register_buffer("images", torch.zeros(stored, IMAGE_SIZE * IMAGE_SIZE))
        self.register_buffer("labels", torch.zeros(stored, dtype=torch.int64))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.flatten(1)  # (N, 784)
        if self.l1:
            distances = (x[:, None, :] - self.images[None]).abs().sum(-1)  # (N, stored)
        else:
            # |x - t|^2 = |x|^2 - 2 x.t + |t|^2, without an (N, stored, 784) difference tensor
            distances = (x * x).sum(1, keepdim=True) - 2 * x @ self.images.t() + (self.images * self.images).sum(1)[None]
        nearest = distances.topk(self.k, dim=1, largest=False).indices  # (N, k)
        votes = self.labels[nearest]  # (N, k) class indices
        classes = torch.arange(self.num_classes, device=votes.device)
        shares = (votes[:, :, None] == classes).float().mean(1)  # (N, classes)
        return torch.log(shares + self.smoothing)


class KNNTrainer(ClassifierTrainer):
    def configure_optimizers(self):
        return {}  # nothing to optimise: the training set is the model

    def train_step(self, batch, optimizers, progress):
        begin = progress.step_in_epoch * self.config.batch_size  # batches are full but for an epoch's last
        images, labels = batch["image"].flatten(1), batch["label"]
        self.model.images[begin : begin + len(labels)] = images
        self.model.labels[begin : begin + len(labels)] = labels
        return {}


def _image_input(config: KNNConfig, batch: int, gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.rand(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen),)


# Trained by zoo on the bundled digits with meta['command'] and stored in float16; shipped in
# the package so prediction and export work offline right after install.
DIGITS_V1 = Weights(
    name="DIGITS_V1",
    source="package:knn-digits_v1-51f21db0.safetensors",
    sha256="51f21db029cf456465cf6b56057dc094ca05d89fea5c94dac95b9448923b88f9",
    meta={
        "dataset": "digits",
        "metrics": {"val_accuracy": 0.9933333396911621, "val_loss": 0.09211219102144241},
        "input": {
            "shape": [1, 28, 28],
            "value_range": [0.0, 1.0],
            "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation",
        },
        "num_params": 0,
        "license": "BSD-3-Clause; trained on scikit-learn's bundled digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)",
        "command": "zoo train knn --data digits --seed 0 --device cpu --epochs 1 --batch-size 512 --lr 0.001 --k 1 --distance l2",
        "config": {"epochs": 1, "batch_size": 512, "lr": 0.001, "k": 1, "distance": "l2"},
        "data_info": {"num_classes": 10, "class_names": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], "train_size": 1497},
        "description": "1-nearest-neighbour classifier (L2) on pixels: the 1,497 training images it stores, with their labels, are the model (buffers, no parameters), 99.3% validation accuracy on the bundled digits; trained by zoo with the recorded command in float32 and stored at half precision (float16): the float32 run reached val_accuracy 0.993333, val_loss 0.092112, these float16 weights reach val_accuracy 0.993333, val_loss 0.092112",
        "stored_dtype": "float16",
    },
)


plugin = Plugin(
    name="knn",
    summary="k-nearest-neighbour classifier on pixels, L1 or L2 distance (EECS-498 lecture 2)",
    config_class=KNNConfig,
    build=KNN,
    trainer_class=KNNTrainer,
    data_request=lambda config: DataRequest.images(size=IMAGE_SIZE, channels=1, value_range=(0.0, 1.0), num_classes=10),
    default_dataset="digits",
    datasets=("digits", "mnist"),
    export_targets=(
        ExportTarget(
            name="classifier",
            module=lambda model: model,
            inputs=(TensorSpec("image", range="pixels in [0, 1], 1x28x28, white digit on black", value_range=(0.0, 1.0)),),
            outputs=(TensorSpec("scores", range="log of each class's share of the k nearest neighbours' votes"),),
            example_inputs=_image_input,
            # Distances of close images differ in the last bits between runtimes; the vote
            # (a top-k) can flip between two equidistant neighbours, never otherwise.
            # Every vote must agree: a distance that differs in its last bits can only flip
            # the vote between two equidistant neighbours, and task parity shows whether it did.
            task_check=tasks.classification(),
            description="image -> log vote shares of the k nearest stored training images",
        ),
    ),
    weights=(DIGITS_V1,),
    default_weights="DIGITS_V1",
    predict_target="classifier",
    reference="EECS-498 (Johnson) lecture 2; Cover & Hart 1967",
    task="classification",
)
