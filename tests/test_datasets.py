"""Datasets as an extension point: the `zoo.datasets` registry, `zoo datasets`, the
README's third-party dataset trained and exported by a third-party plugin, and
requests a dataset cannot serve refused before anything runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import one_line_error, readme_block

BUILT_INS = ("digits", "mnist", "cifar10", "folder", "pix2pix", "colorization", "edges")

# A plugin of another distribution that trains on the README's iris dataset: its output
# size comes from the data (DataInfo.num_classes), through build(config, data).
IRIS_MLP = """
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo import DataRequest, ExportTarget, Labels, Plugin, TensorSpec, Trainer, TrainConfig, hparam
from zoo_iris import Features


@dataclass
class Config(TrainConfig):
    epochs: int = hparam(30, "passes over the 120 training flowers")
    batch_size: int = hparam(16, "samples per step")
    lr: float = hparam(1e-2, "Adam learning rate")
    hidden: int = hparam(16, "hidden units", at_least=1)


class MLP(nn.Module):
    def __init__(self, config, data):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, config.hidden), nn.ReLU(), nn.Linear(config.hidden, data.num_classes))

    def forward(self, features):
        return self.net(features)


class Fit(Trainer):
    def configure_optimizers(self):
        return {"adam": torch.optim.Adam(self.model.parameters(), lr=self.config.lr)}

    def train_step(self, batch, optimizers, progress):
        loss = F.cross_entropy(self.model(batch["features"]), batch["label"])
        optimizers["adam"].zero_grad()
        loss.backward()
        optimizers["adam"].step()
        return {"loss": loss.detach()}

    def evaluate(self, batches):
        right = total = 0
        for batch in batches:
            right += int((self.model(batch["features"]).argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
        return {"val_accuracy": right / total}


plugin = Plugin(
    name="iris-mlp",
    summary="an MLP on the iris measurements",
    config_class=Config,
    build=MLP,
    trainer_class=Fit,
    data_request=lambda config: DataRequest(Features("features", size=4), Labels("label", num_classes=3)),
    default_dataset="iris",
    datasets=("iris",),
    export_targets=(
        ExportTarget(
            name="classifier",
            module=lambda model: model,
            inputs=(TensorSpec("features", range="standardised sepal and petal lengths and widths"),),
            outputs=(TensorSpec("logits", range="scores of the three species"),),
            example_inputs=lambda config, batch, gen: (torch.randn(batch, 4, generator=gen),),
        ),
    ),
)
"""


@pytest.fixture
def iris(install_dist):
    """The README's dataset package and a plugin package that uses it, installed as two distributions."""
    pyproject = readme_block("toml", 'name = "zoo-iris"')
    assert '[project.entry-points."zoo.datasets"]' in pyproject and 'iris = "zoo_iris:dataset"' in pyproject
    install_dist(
        "zoo-iris",
        "0.1.0",
        {"zoo_iris": readme_block("python", "# zoo_iris.py")},
        {},
        groups={"zoo.datasets": {"iris": "zoo_iris:dataset"}},
    )
    install_dist("zoo-iris-mlp", "0.2.0", {"zoo_iris_mlp": IRIS_MLP}, {"iris-mlp": "zoo_iris_mlp:plugin"})


def test_built_in_datasets_are_found_through_entry_points(zoo):
    rows = {row["name"]: row for row in zoo("datasets", "--json").json()}
    assert set(BUILT_INS) <= set(rows)
    for name in BUILT_INS:
        row = rows[name]
        assert row["status"] == "ok" and row["distribution"] == "zoo" and row["error"] is None, row
        assert {"name", "distribution", "status", "needs_path", "yields"} <= set(row)
        assert row["entry_point"].startswith("zoo.datasets.") and row["yields"]
    assert rows["digits"]["needs_path"] is False and rows["mnist"]["needs_path"] is True
    assert [t["name"] for t in rows["digits"]["yields"]] == ["image", "label"]
    assert [t["name"] for t in rows["colorization"]["yields"]] == ["A", "B"]
    text = zoo("datasets").stdout
    assert "mnist:PATH" in text and "label int64[]" in text


def test_readme_dataset_trains_and_exports_with_a_third_party_plugin(zoo, iris, tmp_path):
    rows = {row["name"]: row for row in zoo("datasets", "--json").json()}
    row = rows["iris"]
    assert (row["distribution"], row["version"], row["status"], row["needs_path"]) == ("zoo-iris", "0.1.0", "ok", False)
    assert row["yields"] == [
        {"name": "features", "kind": "features", "dtype": "float32", "shape": [4]},
        {"name": "label", "kind": "labels", "dtype": "int64", "shape": [], "num_classes": 3},
    ]
    assert "iris-mlp" in zoo("list").stdout

    r = zoo("train", "iris-mlp", "--out", tmp_path / "run", "--progress", "none")
    assert r.exit_code == 0, r
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["val_accuracy"] >= 0.9, last  # 30 held-out flowers; chance is a third
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == "iris" and config["data_info"]["class_names"] == ["setosa", "versicolor", "virginica"]

    r = zoo("export", "iris-mlp", "--checkpoint", tmp_path / "run" / "last.pt", "--out", tmp_path / "export", "--no-latency")
    assert r.exit_code == 0, r
    from zoo.export import artifacts

    for suffix in ("torchscript", "onnx"):
        meta = artifacts.read_metadata(tmp_path / "export" / f"classifier.{suffix}")
        assert meta["data_info"]["class_names"] == ["setosa", "versicolor", "virginica"]
        assert meta["inputs"][0]["shape"] == ["batch", 4]


def test_a_dataset_that_cannot_serve_the_plugin_is_refused_before_anything_runs(zoo, tmp_path):
    line = one_line_error(zoo("train", "dcgan", "--channels", "3", "--data", "edges", "--out", tmp_path / "r"), 2)
    assert "dataset 'edges' yields A (images), B (images)" in line and "dcgan needs image" in line
    assert not (tmp_path / "r").exists()
    one_line_error(zoo("train", "convnet", "--data", "digits:/somewhere"), 2, "takes no path")
    one_line_error(zoo("train", "convnet", "--data", "mnist"), 2, "needs a path", "mnist:PATH")
    one_line_error(zoo("train", "convnet", "--data", "digit"), 2, "unknown dataset 'digit'", "did you mean 'digits'")


BROKEN_DATASET = "raise ImportError('needs libbar 2')\n"

NEEDS_MISSING = """
from dataclasses import dataclass
from torch import nn
from zoo import DataRequest, Plugin, Trainer, TrainConfig

@dataclass
class Config(TrainConfig):
    pass

plugin = Plugin(name="needs-missing", summary="names a dataset nobody installed", config_class=Config, build=lambda c: nn.Linear(1, 1),
                trainer_class=Trainer, data_request=lambda c: DataRequest.images(size=8), default_dataset="nowhere",
                datasets=("nowhere",))
"""

WANTS_TOKENS = """
from dataclasses import dataclass
from torch import nn
from zoo import DataRequest, Plugin, Tokens, Trainer, TrainConfig

@dataclass
class Config(TrainConfig):
    pass

plugin = Plugin(name="wants-tokens", summary="asks digits for text", config_class=Config, build=lambda c: nn.Linear(1, 1),
                trainer_class=Trainer, data_request=lambda c: DataRequest(Tokens("tokens", length=9)), default_dataset="digits",
                datasets=("digits",))
"""


def test_broken_and_mismatched_packages_are_named_and_the_rest_keep_working(zoo, install_dist, tmp_path):
    install_dist("zoo-bad-data", "1.0", {"zoo_bad_data": BROKEN_DATASET}, {}, groups={"zoo.datasets": {"bad": "zoo_bad_data:dataset"}})
    install_dist("zoo-needs-missing", "0.1", {"zoo_needs_missing": NEEDS_MISSING}, {"needs-missing": "zoo_needs_missing:plugin"})
    install_dist("zoo-wants-tokens", "0.1", {"zoo_wants_tokens": WANTS_TOKENS}, {"wants-tokens": "zoo_wants_tokens:plugin"})
    rows = {row["name"]: row for row in zoo("datasets", "--json").json()}
    assert rows["bad"]["status"] == "broken" and "needs libbar 2" in rows["bad"]["error"]
    assert rows["digits"]["status"] == "ok"
    plugins = {row["name"]: row for row in zoo("list", "--json").json()}
    assert plugins["needs-missing"]["status"] == "broken" and "not installed: nowhere" in plugins["needs-missing"]["error"]
    wants = plugins["wants-tokens"]
    assert wants["status"] == "broken" and "lists dataset 'digits'" in wants["error"] and "no 'tokens'" in wants["error"]
    one_line_error(zoo("train", "convnet", "--data", "bad"), 1, "dataset 'bad'", "is broken", "needs libbar 2")
    r = zoo("train", "convnet", "--max-steps", "1", "--out", tmp_path / "ok", "--progress", "none")
    assert r.exit_code == 0, r


def test_zoo_datasets_narrows_what_loads(zoo, monkeypatch):
    from zoo import _registry

    monkeypatch.setenv("ZOO_DATASETS", "digits,edges")
    _registry.clear()
    try:
        assert [row["name"] for row in zoo("datasets", "--json").json()] == ["digits", "edges"]
    finally:
        monkeypatch.delenv("ZOO_DATASETS")
        _registry.clear()


def test_labels_outside_the_plugins_classes_are_refused(zoo, tmp_path):
    """A folder of 12 classes for convnet's 10: one line before any training, no run left."""
    from PIL import Image

    for c in range(12):
        (tmp_path / "imgs" / f"class{c:02d}").mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), color=c * 20).save(tmp_path / "imgs" / f"class{c:02d}" / f"{i}.png")
    runs = Path(os.environ["ZOO_RUNS"])
    one_line_error(zoo("train", "convnet", "--data", f"folder:{tmp_path / 'imgs'}"), 1, "has 12 classes", "convnet predicts 10")
    assert not (runs / "convnet").exists() or not any((runs / "convnet").iterdir())
