"""`zoo sample`, `zoo predict` and `zoo evaluate` through the CLI: every source
(checkpoint, newest run, weights file, exported artifact), and bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import one_line_error
from PIL import Image

from zoo import get_plugin, list_plugins, models
from zoo.capabilities import predict_kind, sample_kind

GENERATIVE = [n for n in list_plugins() if sample_kind(get_plugin(n)) == "images"]
IMAGE_TO_IMAGE = [n for n in list_plugins() if predict_kind(get_plugin(n)) == "images"]
HAS_EXPORT = importlib.util.find_spec("zoo.export.pipeline") is not None


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shared_home):
    """`trained(name)` -> a last.pt from `zoo train NAME --max-steps 1`, made once per session."""
    from zoo.cli import cli

    made = {}
    root = tmp_path_factory.mktemp("trained")

    def get(name):
        if name not in made:
            out = root / name
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("ZOO_HOME", str(shared_home))
                r = CliRunner().invoke(
                    cli, ["train", name, "--max-steps", "1", "--batch-size", "4", "--out", str(out), "--progress", "none"]
                )
            assert r.exit_code == 0, r.output
            made[name] = out / "last.pt"
        return made[name]

    return get


def _pixels(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


# --------------------------------------------------------------------------- sample


@pytest.mark.parametrize("name", GENERATIVE)
def test_sample_writes_a_seeded_grid(zoo, trained, tmp_path, name):
    ckpt = trained(name)
    a, b, c = (tmp_path / f"{x}.png" for x in "abc")
    for path, seed in ((a, "1"), (b, "1"), (c, "2")):
        r = zoo("sample", name, "--checkpoint", ckpt, "-n", "6", "--nrow", "3", "--seed", seed, "-o", path)
        assert r.exit_code == 0, r
    with Image.open(a) as grid:
        width, height = grid.size
    side = (width - 2) // 3 - 2  # 3 columns of side x side images, padded by 2
    assert width == 2 + 3 * (side + 2) and height == 2 + 2 * (side + 2) and side >= 28
    assert np.array_equal(_pixels(a), _pixels(b))
    assert not np.array_equal(_pixels(a), _pixels(c))
    assert not list(tmp_path.glob(".*.tmp"))


def test_sample_uses_the_newest_run(zoo, trained, tmp_path):
    run = tmp_path / "runs" / "gan" / "001"  # ZOO_RUNS of this test
    run.mkdir(parents=True)
    shutil.copy(trained("gan"), run / "last.pt")
    r = zoo("sample", "gan", "-n", "4", "-o", "grid.png")
    assert r.exit_code == 0, r
    assert str(run / "last.pt") in r.stdout and (tmp_path / "grid.png").is_file()


def test_sample_without_a_model_says_to_train(zoo):
    one_line_error(zoo("sample", "gan", "-o", "grid.png"), 2, "zoo train gan", "--weights")


def test_sample_from_a_weights_file(zoo, trained, tmp_path):
    """A generator-only safetensors file (what a published entry may hold) samples like
    the checkpoint it came from."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(trained("dcgan"), weights_only=True)
    generator = {k: v.contiguous() for k, v in state["model"].items() if k.startswith("generator.")}
    path = tmp_path / "dcgan-generator.safetensors"
    save_file(
        generator, str(path), metadata={"zoo": json.dumps({"plugin": "dcgan", "config": state["config"], "components": ["generator"]})}
    )
    r = zoo("sample", "dcgan", "--weights", path, "-n", "4", "-o", "w.png")
    assert r.exit_code == 0 and r.stderr == "", r  # the discriminator they lack is not what sampling runs
    assert zoo("sample", "dcgan", "--checkpoint", trained("dcgan"), "-n", "4", "-o", "c.png").exit_code == 0
    assert np.array_equal(_pixels(tmp_path / "w.png"), _pixels(tmp_path / "c.png"))


@pytest.mark.skipif(not HAS_EXPORT, reason="zoo.export is not installed")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_sample_from_an_artifact_matches_eager(zoo, trained, tmp_path, fmt):
    """cgan: two inputs, one of them an int64 label; the same seed gives the same grid."""
    ckpt = trained("cgan")
    r = zoo("export", "cgan", "--checkpoint", ckpt, f"--{fmt}", "--out", tmp_path / "exp")
    assert r.exit_code == 0, r
    (artifact,) = [p for p in (tmp_path / "exp").iterdir() if p.name.startswith("generator.") and p.suffix != ".json"]
    assert zoo("sample", "cgan", "--artifact", artifact, "-n", "20", "--seed", "3", "-o", "a.png").exit_code == 0
    assert zoo("sample", "cgan", "--checkpoint", ckpt, "-n", "20", "--seed", "3", "-o", "e.png").exit_code == 0
    assert np.abs(_pixels(tmp_path / "a.png") - _pixels(tmp_path / "e.png")).max() <= 1
    r = zoo("sample", "gan", "--artifact", artifact, "-o", "x.png")
    one_line_error(r, 2, "cgan:generator", "not gan:generator")


def test_sample_bad_input(zoo, trained, tmp_path):
    gan, cgan = trained("gan"), trained("cgan")
    one_line_error(zoo("sample", "gan", "--checkpoint", gan, "--label", "3", "-o", "x.png"), 2, "not conditional")
    one_line_error(zoo("sample", "cgan", "--checkpoint", cgan, "--label", "10", "-o", "x.png"), 2, "0 to 9")
    one_line_error(zoo("sample", "gan", "--checkpoint", gan, "-n", "0", "-o", "x.png"), 2, "-n")
    one_line_error(zoo("sample", "gan", "--checkpoint", gan, "-o", "x.jpg"), 2, ".png")
    one_line_error(zoo("sample", "gan", "--checkpoint", gan, "--weights", "DEFAULT", "-o", "x.png"), 2, "--checkpoint and --weights")
    one_line_error(zoo("sample", "gan", "--checkpoint", cgan, "-o", "x.png"), 1, "cgan", "not 'gan'")
    one_line_error(zoo("sample", "gan", "--checkpoint", tmp_path / "missing.pt", "-o", "x.png"), 1, "does not exist")
    one_line_error(zoo("sample", "convnet", "-o", "x.png"), 2, "does not sample", "gan")
    one_line_error(zoo("sample", "nosuch", "-o", "x.png"), 2, "unknown plugin")
    (tmp_path / "blocked").write_text("a file where a directory should be")
    one_line_error(zoo("sample", "gan", "--checkpoint", gan, "-o", tmp_path / "blocked" / "x.png"), 2, "cannot write")
    assert not list(tmp_path.glob("x.*"))


# --------------------------------------------------------------------------- predict


@pytest.fixture
def digit_files(tmp_path):
    """Real handwritten digits (scikit-learn's) saved as 28x28 PNG and JPEG files."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "digits"
    folder.mkdir()
    paths = []
    for i, suffix in zip(range(3), (".png", ".jpg", ".png")):
        image = Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR)
        path = folder / f"digit{i}{suffix}"
        image.save(path)
        paths.append(path)
    return paths


def test_predict_classifies_each_image(zoo, trained, digit_files):
    ckpt = trained("convnet")
    r = zoo("predict", "convnet", *digit_files, "--checkpoint", ckpt)
    assert r.exit_code == 0, r
    lines = r.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in digit_files]
    r = zoo("predict", "convnet", digit_files[0].parent, "--checkpoint", ckpt, "--json")
    results = r.json()
    assert [x["input"] for x in results] == [str(p) for p in digit_files]  # a directory expands, sorted
    # What the convnet computes on the pixels, read here with PIL alone (the files are
    # 28x28 already; convnet takes grey [0, 1]).
    model = models.build_model(get_plugin("convnet"), checkpoint=str(ckpt)).model
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255.0) for p in digit_files])
    with torch.no_grad():
        expected = torch.softmax(model(pixels.unsqueeze(1)), dim=1)
    for x, row in zip(results, expected):
        assert x["probabilities"] == pytest.approx(row.tolist(), abs=1e-5)
        assert x["class"] == int(row.argmax()) and x["probability"] == pytest.approx(float(row.max()), abs=1e-6)
        assert lines[results.index(x)].endswith(f"probability {x['probability']:.4f}")


def test_predict_bad_input(zoo, trained, digit_files, tmp_path):
    ckpt = trained("convnet")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    one_line_error(zoo("predict", "convnet", digit_files[0], text, "--checkpoint", ckpt), 1, str(text))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(digit_files[0].read_bytes()[:60])
    one_line_error(zoo("predict", "convnet", truncated, "--checkpoint", ckpt), 1, str(truncated))
    one_line_error(zoo("predict", "convnet", tmp_path / "missing.png", "--checkpoint", ckpt), 1, "missing.png")
    (tmp_path / "empty").mkdir()
    one_line_error(zoo("predict", "convnet", tmp_path / "empty", "--checkpoint", ckpt), 1, "no images")
    one_line_error(zoo("predict", "gan", digit_files[0]), 2, "zoo sample")


@pytest.mark.skipif(not IMAGE_TO_IMAGE, reason="no image-to-image plugin is installed")
@pytest.mark.parametrize("name", IMAGE_TO_IMAGE)
def test_predict_translates_images(zoo, trained, digit_files, tmp_path, name):
    ckpt = trained(name)
    r = zoo("predict", name, digit_files[0], "--checkpoint", ckpt, "-o", tmp_path / "one.png")
    assert r.exit_code == 0, r
    plugin = get_plugin(name)
    config = plugin.config()
    target = plugin.export_targets[0]
    _, channels, size, _ = target.input_shapes(config, 1)[target.inputs[0].name]
    with Image.open(tmp_path / "one.png") as image:
        assert image.size == (size, size) and len(image.getbands()) == channels
    r = zoo("predict", name, *digit_files, "--checkpoint", ckpt, "-o", tmp_path / "many", "--json")
    assert r.exit_code == 0, r
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(f"{p.stem}.png" for p in digit_files)
    one_line_error(zoo("predict", name, *digit_files, "--checkpoint", ckpt, "-o", tmp_path / "x.png"), 2, "directory")
    one_line_error(zoo("predict", name, *digit_files, "--checkpoint", ckpt), 2, "-o")


# --------------------------------------------------------------------------- evaluate


def expected_figures(name, generator_checkpoint, classifier_checkpoint, n, seed=0):
    """What `zoo evaluate` must report, recomputed from the two models with torch alone:
    the generator's output mapped to [0, 1] and resized to the convnet's 28x28."""
    import torch.nn.functional as F

    plugin = get_plugin(name)
    generator = models.build_model(plugin, checkpoint=str(generator_checkpoint))
    classifier = models.build_model(get_plugin("convnet"), checkpoint=str(classifier_checkpoint)).model
    target = plugin.target(plugin.sample_target)
    inputs = plugin.sample_inputs(generator.config, n, None, torch.Generator().manual_seed(seed))
    lo, hi = target.outputs[0].resolved_range(generator.config)
    with torch.no_grad():
        images = ((target.module(generator.model)(*inputs) - lo) / (hi - lo)).clamp(0, 1)
        if images.shape[-1] != 28:
            images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        probabilities = torch.softmax(classifier(images), dim=1)
    best, predicted = probabilities.max(dim=1)
    figures = {"mean_max_probability": float(best.mean()), "class_counts": torch.bincount(predicted, minlength=10).tolist()}
    if "label" in [spec.name for spec in target.inputs]:
        figures["conditional_accuracy"] = float((predicted == inputs[1]).float().mean())
    return figures


@pytest.mark.parametrize("name", ["cgan", "dcgan"])
def test_evaluate_prints_the_figures(zoo, trained, name):
    r = zoo("evaluate", name, "--checkpoint", trained(name), "--classifier", trained("convnet"), "-n", "50", "--json")
    assert r.exit_code == 0, r
    result = r.json()
    expected = expected_figures(name, trained(name), trained("convnet"), 50)
    assert result["samples"] == 50 and result["class_counts"] == expected["class_counts"]
    assert result["distinct_classes"] == sum(1 for c in expected["class_counts"] if c > 0)
    assert result["mean_max_probability"] == pytest.approx(expected["mean_max_probability"], abs=1e-5)
    assert ("conditional_accuracy" in result) == (name == "cgan")
    if name == "cgan":
        assert result["conditional_accuracy"] == pytest.approx(expected["conditional_accuracy"])
    r = zoo("evaluate", name, "--checkpoint", trained(name), "--classifier", trained("convnet"), "-n", "50")
    assert "mean max-probability" in r.stdout and f"{result['mean_max_probability']:.4f}" in r.stdout


def test_within_class_std_of_known_images():
    """The digits themselves score 0.13 (the figure `zoo evaluate` is read against);
    one image repeated scores 0; lumping all classes together spreads more."""
    from zoo import DataRequest, Labels, datasets
    from zoo.commands.evaluate import within_class_std
    from zoo.data import Images

    real = datasets.load("digits", DataRequest(Images("image", size=28, channels=1, value_range=(0.0, 1.0)), Labels("label"))).val.tensors
    images, labels = real["image"], real["label"]
    assert within_class_std(images, labels) == pytest.approx(0.129, abs=0.005)
    assert within_class_std(images, torch.zeros_like(labels)) > within_class_std(images, labels) + 0.03
    assert within_class_std(images[:1].expand(10, -1, -1, -1), torch.zeros(10, dtype=torch.int64)) == 0.0


def test_a_random_init_is_a_source_like_the_others(zoo, trained, tmp_path):
    """`--random-init`: an untrained model from seed 0, the same every time; the
    baseline a trained generator's figures are read against."""
    r = zoo("sample", "gan", "--random-init", "-n", "4", "-o", "a.png")
    assert r.exit_code == 0, r
    assert "random init (seed 0)" in r.stdout
    assert zoo("sample", "gan", "--random-init", "-n", "4", "-o", "b.png").exit_code == 0
    assert zoo("sample", "gan", "--checkpoint", trained("gan"), "-n", "4", "-o", "c.png").exit_code == 0
    assert np.array_equal(_pixels(tmp_path / "a.png"), _pixels(tmp_path / "b.png"))
    assert not np.array_equal(_pixels(tmp_path / "a.png"), _pixels(tmp_path / "c.png"))
    one_line_error(
        zoo("sample", "gan", "--random-init", "--checkpoint", trained("gan"), "-o", "x.png"), 2, "--checkpoint and --random-init"
    )
    r = zoo("evaluate", "gan", "--random-init", "--classifier", trained("convnet"), "-n", "20", "--json")
    assert r.exit_code == 0, r
    assert r.json()["source"] == "random init (seed 0)"


def test_evaluate_finds_the_newest_convnet(zoo, trained, tmp_path):
    run = tmp_path / "runs" / "convnet" / "001"
    run.mkdir(parents=True)
    shutil.copy(trained("convnet"), run / "last.pt")
    r = zoo("evaluate", "gan", "--checkpoint", trained("gan"), "-n", "20", "--json")
    assert r.exit_code == 0, r
    assert str(run / "last.pt") in r.json()["classifier"]


def test_evaluate_bad_input(zoo, trained):
    one_line_error(zoo("evaluate", "gan", "--checkpoint", trained("gan")), 2, "zoo train convnet", "--classifier")
    one_line_error(zoo("evaluate", "gan", "--checkpoint", trained("gan"), "--classifier", trained("vae")), 2, "vae", "classifier")
    one_line_error(zoo("evaluate", "convnet", "--classifier", trained("convnet")), 2, "convnet is evaluated on data")
    one_line_error(zoo("evaluate", "convnet", "--artifact", "x.onnx"), 2, "task parity")
    one_line_error(zoo("evaluate", "gan", "--checkpoint", trained("gan"), "--classifier", trained("convnet"), "-n", "0"), 2, "-n")


def test_evaluate_a_classifier_on_data(zoo, monkeypatch):
    """Validation metrics, per-class accuracy and the confusion matrix of DEFAULT weights,
    recomputed here from the validation split."""
    import torch

    from zoo import DataRequest, datasets, models

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    report = zoo("evaluate", "convnet", "--weights", "DEFAULT", "--json").json()
    splits = datasets.load("digits", DataRequest.images(28, num_classes=10))
    model = models.build_model(get_plugin("convnet"), weights="DEFAULT").model
    with torch.no_grad():
        predicted = model(splits.val.tensors["image"]).argmax(1)
    labels = splits.val.tensors["label"]
    matrix = torch.zeros(10, 10, dtype=torch.int64)
    for t, p in zip(labels.tolist(), predicted.tolist()):
        matrix[t, p] += 1
    assert report["confusion_matrix"] == matrix.tolist() and report["samples"] == 300
    assert report["metrics"]["val_accuracy"] == pytest.approx(float((predicted == labels).float().mean()))
    per_class = [float(matrix[c, c]) / float(matrix[c].sum()) for c in range(10)]
    assert report["per_class_accuracy"] == pytest.approx(per_class)
    text = zoo("evaluate", "convnet", "--weights", "DEFAULT").stdout
    assert "confusion matrix (rows: true class, columns: predicted)" in text and "val_accuracy" in text
