"""The course's classifiers: linear (softmax and SVM), k-NN, MLP, ResNet and the
fine-tuning example; the shared optimizer options; reports and confusion matrices."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import one_line_error

from zoo import get_plugin, models

CLASSIFIERS = ("linear", "knn", "mlp", "resnet", "finetune")


def train(zoo, *args):
    r = zoo("train", *[str(a) for a in args], "--progress", "none")
    assert r.exit_code == 0, r
    return r


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_multiclass_hinge_is_the_lectures():
    from zoo.plugins.linear import multiclass_hinge

    scores = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])  # EECS-498 lecture 3's cat/car/frog
    labels = torch.tensor([0, 1, 2])
    # The lecture's losses: 2.9, 0 and 12.9, averaging 5.27.
    assert float(multiclass_hinge(scores, labels)) == pytest.approx((2.9 + 0.0 + 12.9) / 3, abs=1e-5)


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_linear_trains_and_writes_its_confusion_matrix(zoo, tmp_path, loss):
    train(zoo, "linear", "--loss", loss, "--epochs", "3", "--out", tmp_path / "r")
    last = records(tmp_path / "r")[-1]
    assert last["val_accuracy"] > 0.8  # three epochs; chance is 0.1
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    matrix = torch.tensor(report["confusion_matrix"])
    assert matrix.sum() == 300 and float(matrix.diag().sum()) / 300 == pytest.approx(last["val_accuracy"])
    assert report["class_names"] == [str(d) for d in range(10)]
    from PIL import Image

    assert Image.open(tmp_path / "r" / "confusion.png").size[0] > 10 * 28


def test_knn_stores_the_training_set_and_votes(zoo, tmp_path):
    train(zoo, "knn", "--k", "3", "--out", tmp_path / "r")
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert state["optimizers"] == {} and state["model"]["images"].shape == (1497, 784)
    built = models.build_model(get_plugin("knn"), checkpoint=str(tmp_path / "r" / "last.pt"))
    from zoo import DataRequest, datasets

    splits = datasets.load("digits", DataRequest.images(28, num_classes=10))
    stored = splits.train.tensors
    # Each training image's nearest stored neighbour is itself: its vote share is 1/3 at least.
    scores = built.model(stored["image"][:50])
    assert (scores.exp().max(1).values >= 1 / 3 - 1e-6).all()
    # The vote, by hand: the 3 nearest by Euclidean distance.
    x = splits.val.tensors["image"][:20].flatten(1)
    nearest = torch.cdist(x, stored["image"].flatten(1)).topk(3, largest=False).indices
    by_hand = torch.mode(stored["label"][nearest], dim=1).values
    assert torch.equal(built.model(splits.val.tensors["image"][:20]).argmax(1), by_hand)


def test_mlp_hidden_sizes_batch_norm_and_init(zoo, tmp_path):
    train(
        zoo,
        "mlp",
        "--hidden",
        "64,32",
        "--no-batch-norm",
        "--init",
        "xavier",
        "--optimizer",
        "nesterov",
        "--lr",
        "0.05",
        "--epochs",
        "2",
        "--out",
        tmp_path / "r",
    )
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert state["model"]["hidden.0.weight"].shape == (64, 784) and state["model"]["hidden.3.weight"].shape == (32, 64)
    assert not any("running_mean" in k for k in state["model"])
    assert state["optimizers"]["nesterov"]["param_groups"][0]["nesterov"] is True


@pytest.mark.parametrize(
    "optimizer,kind",
    [("sgd", "SGD"), ("momentum", "SGD"), ("nesterov", "SGD"), ("adagrad", "Adagrad"), ("rmsprop", "RMSprop"), ("adam", "Adam")],
)
def test_every_classifier_takes_the_shared_optimizers(optimizer, kind):
    from zoo.optim import make_optimizer

    config = get_plugin("linear").config(optimizer=optimizer, lr=0.1)
    opt = make_optimizer(config, [torch.nn.Parameter(torch.zeros(2))])
    assert type(opt).__name__ == kind
    if optimizer in ("momentum", "nesterov"):
        assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"] == (optimizer == "nesterov")


def test_step_schedule_follows_the_run_and_cosine_ends_at_zero(zoo, tmp_path):
    # 1,497 digits at 500 a batch: 3 steps an epoch; 8 epochs are 24 steps, milestones at 12 and 18.
    train(zoo, "linear", "--schedule", "step", "--epochs", "8", "--batch-size", "500", "--lr", "0.4", "--out", tmp_path / "s")
    lrs = [r["lr"] for r in records(tmp_path / "s")]
    assert lrs == pytest.approx([0.4, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004, 0.004])
    train(zoo, "linear", "--schedule", "cosine", "--epochs", "4", "--batch-size", "500", "--lr", "0.4", "--out", tmp_path / "c")
    lrs = [r["lr"] for r in records(tmp_path / "c")]
    assert lrs == pytest.approx([0.4 * (1 + math.cos(math.pi * s / 12)) / 2 for s in (3, 6, 9, 12)], abs=1e-9)


def test_resnet_depth_and_shortcuts(tmp_path):
    from zoo.data import DataInfo

    plugin = get_plugin("resnet")
    info = DataInfo(num_classes=10)
    for depth in (20, 32, 56):
        model = plugin.instantiate(plugin.config(depth=depth), info)
        convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert convs + 1 == depth  # 6n + 1 convolutions and the fully connected layer
    a = plugin.instantiate(plugin.config(shortcut="A"), info)
    b = plugin.instantiate(plugin.config(shortcut="B"), info)
    extra = sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters())
    assert extra == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 projections with batch norm; A has none
    assert a(torch.rand(2, 3, 32, 32)).shape == (2, 10)


ALEXNET_CHECK = "features.0.weight"


@pytest.fixture
def alexnet_file(tmp_path):
    """A state dict saved from torchvision's AlexNet built here (nothing is downloaded)."""
    from torchvision.models import alexnet

    torch.manual_seed(7)
    path = tmp_path / "alexnet.pth"
    torch.save(alexnet().state_dict(), path)
    return path


def test_finetune_imports_alexnets_first_convolution_and_freezes_it(zoo, tmp_path, alexnet_file):
    r = zoo("weights", "import", "finetune", alexnet_file, "--name", "ALEXNET")
    assert r.exit_code == 0, r
    alexnet = torch.load(alexnet_file, weights_only=True)
    run = tmp_path / "run"
    stages = []
    for epoch in (1, 2, 3, 4):  # --frozen-epochs defaults to half of --epochs 4
        where = ["--out", run, "--weights", "ALEXNET"] if epoch == 1 else ["--resume", run / "last.pt"]
        train(
            zoo, "finetune", "--epochs", "4", "--blocks", "2", "--channels", "16", "--batch-size", "250", "--max-steps", 6 * epoch, *where
        )
        stages.append(torch.load(run / "last.pt", weights_only=True)["model"])
    for state in stages[:2]:
        assert torch.equal(state[ALEXNET_CHECK], alexnet[ALEXNET_CHECK]) and torch.equal(
            state["features.0.bias"], alexnet["features.0.bias"]
        )
    assert not torch.equal(stages[2][ALEXNET_CHECK], alexnet[ALEXNET_CHECK])
    assert [r["phase"] for r in records(run)] == ["features frozen", "features frozen", "all layers", "all layers"]


def test_finetune_resumed_in_the_frozen_phase_is_bit_identical(zoo, tmp_path):
    common = ["--epochs", "4", "--blocks", "2", "--channels", "16", "--batch-size", "250"]
    train(zoo, "finetune", *common, "--out", tmp_path / "straight")
    train(zoo, "finetune", *common, "--max-steps", "4", "--out", tmp_path / "split")  # epoch 1 of 6 steps: frozen, mid-epoch
    train(zoo, "finetune", "--epochs", "4", "--resume", tmp_path / "split" / "last.pt")
    a = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], v) for k, v in b["model"].items())


@pytest.mark.parametrize(
    "argv,code,needle",
    [
        (["train", "knn", "--k", "0"], 2, "--k must be at least 1"),
        (["train", "knn", "--k", "5000"], 2, "--k 5000 is larger than the 1497 training images"),
        (["train", "mlp", "--hidden", "0"], 2, "every hidden size must be at least 1"),
        (["train", "mlp", "--hidden", "64,x"], 2, "--hidden"),
        (["train", "finetune", "--epochs", "4", "--frozen-epochs", "6"], 2, "--frozen-epochs 6 is more than --epochs 4"),
        (["train", "linear", "--loss", "hinge"], 2, "--loss"),
        (["train", "resnet", "--depth", "21"], 2, "--depth"),
        (["train", "linear", "--optimizer", "lbfgs"], 2, "--optimizer"),
        (["train", "linear", "--gamma", "2"], 2, "--gamma must be at most 1"),
    ],
)
def test_bad_classifier_input_is_one_line(zoo, tmp_path, argv, code, needle):
    one_line_error(zoo(*argv, "--out", tmp_path / "r"), code, needle)
    assert not (tmp_path / "r").exists()


def test_alexnet_with_the_wrong_shapes_lists_the_keys(zoo, tmp_path):
    state = {"features.0.weight": torch.zeros(64, 3, 5, 5), "features.0.bias": torch.zeros(32), "classifier.6.weight": torch.zeros(10, 4)}
    torch.save(state, tmp_path / "bad.pth")
    line = one_line_error(zoo("weights", "import", "finetune", tmp_path / "bad.pth"), 1)
    assert "features.0.weight (64, 3, 5, 5) != (64, 3, 11, 11)" in line and "features.0.bias (32,) != (64,)" in line
