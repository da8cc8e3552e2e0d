"""Nothing lost, nothing silent: every bad input to train, export, verify, sample,
predict, evaluate, weights, info and datasets is one line and a non-zero exit, no
traceback, and every file the user had is byte-identical afterwards with no temp files
or empty runs, exports or outputs left behind. Plus kill -9 at any point and a full disk."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from conftest import one_line_error


class Evil:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.fixture(scope="module")
def base_files(tmp_path_factory) -> Path:
    """Files a user has: tiny vae, convnet and rnn runs, an export of the vae run and
    its weights as a safetensors file, a zoo of broken checkpoints, images that are not
    images, and a few bad files. Built once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("base")
    env = {**os.environ, "ZOO_HOME": str(root / "home"), "ZOO_RUNS": str(root / "runs"), "OMP_NUM_THREADS": "1"}
    zoo_cli = [sys.executable, "-m", "zoo.cli"]
    for args in (
        ("vae", "--hidden", "8", "--epochs", "1", "--out", str(root / "vae-run")),
        ("convnet", "--hidden", "8", "--max-steps", "2", "--out", str(root / "convnet-run")),
        # a language model that knows its vocabulary (the prompt cases)
        ("rnn", "--hidden", "8", "--layers", "1", "--embedding", "4", "--block-size", "16", "--batch-size", "4", "--max-steps", "1")
        + ("--out", str(root / "rnn-run")),
    ):
        subprocess.run([*zoo_cli, "train", *args, "--progress", "none"], env=env, check=True, capture_output=True)
    # An export of the vae run (what verify's cases edit), and its weights as a zoo file.
    export = ("export", "vae", "--checkpoint", str(root / "vae-run" / "last.pt"), "--out", str(root / "vae-export"))
    subprocess.run([*zoo_cli, *export, "--no-latency", "--device", "cpu", "--batch-sizes", "1"], env=env, check=True, capture_output=True)
    publish = ("weights", "export", "vae", "--checkpoint", str(root / "vae-run"), "-o", str(root / "published"), "--license", "MIT")
    subprocess.run([*zoo_cli, *publish], env=env, check=True, capture_output=True)
    next((root / "published").iterdir()).rename(root / "vae.safetensors")
    (root / "published").rmdir()
    (root / "text.pt").write_text("hi\n")
    (root / "random.pt").write_bytes(os.urandom(4096))
    (root / "random.safetensors").write_bytes(os.urandom(4096))
    torch.save({"plugin": "vae", "model": {"a": Evil()}}, root / "evil.pt")
    state = torch.load(root / "vae-run" / "last.pt", weights_only=True)
    for key in ("optimizers", "rng"):
        torch.save({k: v for k, v in state.items() if k != key}, root / f"no-{key}.pt")
    torch.save(dict(state["model"]), root / "vae-state-dict.pt")  # a foreign file: tensors, no config
    torch.save({**state, "model": {**state["model"], "fc1.weight": torch.zeros(3, 3)}}, root / "wrong-shapes.pt")
    with open(root / "plain.pkl", "wb") as fh:
        pickle.dump({"x": 1}, fh)
    _images(root)
    _mnist_variants(root)
    return root


def _images(root: Path) -> None:
    """A real digit-sized PNG, and files that only pretend to be images."""
    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(0).random((28, 28)) * 255).astype("uint8")
    Image.fromarray(pixels).save(root / "digit.png")
    (root / "notes.png").write_text("not an image\n")
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes((root / "digit.png").read_bytes()[:60])
    Image.new("1", (20000, 20000)).save(root / "huge.png")  # 400 megapixels in 48 kB: a decompression bomb
    (root / "no-images").mkdir()
    (root / "no-images" / "readme.txt").write_text("no images here\n")
    for name in ("a", "b"):
        (root / name).mkdir()
        shutil.copy(root / "digit.png", root / name / "digit.png")


def _idx(magic: int, dims: tuple[int, ...], payload: bytes | None = None) -> bytes:
    import numpy as np

    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return head + (payload if payload is not None else np.zeros(dims, dtype=np.uint8).tobytes())


def _mnist_variants(root: Path) -> None:
    """MNIST layouts with one thing wrong each (and one right)."""
    import numpy as np

    def write(name: str, **override: bytes) -> None:
        raw = root / name / "MNIST" / "raw"
        raw.mkdir(parents=True)
        files = {
            "train-images-idx3-ubyte": _idx(0x803, (6, 28, 28)),
            "train-labels-idx1-ubyte": _idx(0x801, (6,), bytes([0, 1, 2, 3, 4, 5])),
            "t10k-images-idx3-ubyte": _idx(0x803, (4, 28, 28)),
            "t10k-labels-idx1-ubyte": _idx(0x801, (4,), bytes([6, 7, 8, 9])),
        }
        files.update(override)
        for file, data in files.items():
            (raw / file).write_bytes(data)

    write("mnist-bad-magic", **{"train-images-idx3-ubyte": _idx(0x804, (6, 28, 28))})
    write("mnist-truncated-header", **{"t10k-labels-idx1-ubyte": b"\x00\x00\x08"})
    write("mnist-short-data", **{"train-images-idx3-ubyte": _idx(0x803, (6, 28, 28))[:-100]})
    write("mnist-fewer-labels", **{"train-labels-idx1-ubyte": _idx(0x801, (5,), bytes([0, 1, 2, 3, 4]))})
    write("mnist-label-12", **{"t10k-labels-idx1-ubyte": _idx(0x801, (4,), bytes([6, 7, 12, 9]))})
    del np


@pytest.fixture
def files(base_files, tmp_path) -> Path:
    work = tmp_path / "files"
    shutil.copytree(base_files, work, ignore=shutil.ignore_patterns("home", "runs"))
    return work


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones included) and its sha256, and every directory
    (an empty run, export or output directory left behind shows), but lock files, zoo's
    cache of prepared datasets (which a command may fill before it fails), and the
    folders that only hold things: zoo's home and the runs root with its per-plugin folders."""
    out = {}
    home, runs = root / "zoo-home", root / "runs"
    cache = home / "data"
    containers = {home, runs, *runs.glob("*")}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".zoo.lock" and cache not in p.parents:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir() and p not in containers and home not in p.parents:
            out[str(p.relative_to(root))] = "directory"
    return out


# (case id, argv with {F} for the user's files directory, exit code, text the line must hold)
TRAIN_CASES = [
    ("epochs-0", ["train", "vae", "--epochs", "0"], 2, "--epochs must be at least 1, not 0"),
    ("epochs-negative", ["train", "vae", "--epochs", "-3"], 2, "--epochs must be at least 1"),
    ("batch-size-0", ["train", "vae", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    ("lr-0", ["train", "vae", "--lr", "0"], 2, "--lr must be above 0"),
    ("lr-negative", ["train", "vae", "--lr", "-1"], 2, "--lr must be above 0"),
    ("lr-nan", ["train", "vae", "--lr", "nan"], 2, "--lr must be a finite number"),
    ("lr-inf", ["train", "vae", "--lr", "inf"], 2, "--lr must be a finite number"),
    ("lr-text", ["train", "vae", "--lr", "fast"], 2, "'--lr'"),
    ("max-steps-0", ["train", "vae", "--max-steps", "0"], 2, "--max-steps must be at least 1"),
    ("latent-dim-negative", ["train", "vae", "--latent-dim", "-5"], 2, "--latent-dim must be at least 1, not -5"),
    ("hidden-0", ["train", "vae", "--hidden", "0"], 2, "--hidden must be at least 1"),
    ("hidden-float", ["train", "vae", "--hidden", "1.5"], 2, "--hidden"),
    ("dropout-above-1", ["train", "convnet", "--dropout", "1.5"], 2, "--dropout must be below 1, not 1.5"),
    ("dropout-negative", ["train", "convnet", "--dropout", "-0.1"], 2, "--dropout must be at least 0"),
    ("cgan-no-classes", ["train", "cgan", "--num-classes", "0"], 2, "--num-classes must be at least 1"),
    ("dcgan-size-choice", ["train", "dcgan", "--image-size", "48"], 2, "--image-size"),
    ("pix2pix-size", ["train", "pix2pix", "--image-size", "100"], 2, "--image-size must be one of 64, 128, 256"),
    ("pix2pix-load-size", ["train", "pix2pix", "--load-size", "60"], 2, "--load-size 60 is smaller than --image-size 64"),
    ("unknown-hyperparameter", ["train", "vae", "--latent", "3"], 2, "--latent-dim"),
    ("unknown-plugin", ["train", "vea"], 2, "did you mean 'vae'"),
    ("unknown-dataset", ["train", "vae", "--data", "imagenet:/x"], 2, "unknown dataset 'imagenet'"),
    ("dataset-needs-path", ["train", "vae", "--data", "mnist"], 2, "needs a path"),
    ("dataset-takes-no-path", ["train", "vae", "--data", "digits:{F}"], 2, "takes no path"),
    ("missing-data-dir", ["train", "convnet", "--data", "mnist:{F}/nope"], 1, "does not exist"),
    (
        "mnist-bad-magic",
        ["train", "convnet", "--data", "mnist:{F}/mnist-bad-magic"],
        1,
        "train-images-idx3-ubyte: not an MNIST images file (magic number 0x00000804",
    ),
    (
        "mnist-truncated-header",
        ["train", "convnet", "--data", "mnist:{F}/mnist-truncated-header"],
        1,
        "t10k-labels-idx1-ubyte: truncated IDX header",
    ),
    (
        "mnist-short-data",
        ["train", "convnet", "--data", "mnist:{F}/mnist-short-data"],
        1,
        "header says 6x28x28 = 4704 bytes of data, the file holds 4604",
    ),
    ("mnist-fewer-labels", ["train", "convnet", "--data", "mnist:{F}/mnist-fewer-labels"], 1, "5 labels for the 6 images"),
    ("mnist-label-12", ["train", "convnet", "--data", "mnist:{F}/mnist-label-12"], 1, "labels must be digits 0..9, found 12"),
    ("mnist-not-a-layout", ["train", "convnet", "--data", "mnist:{F}/vae-run"], 1, "is missing"),
    ("dataset-cannot-serve", ["train", "dcgan", "--channels", "3", "--data", "edges"], 2, "dcgan needs image"),
    ("pairs-for-images", ["train", "pix2pix", "--data", "digits"], 2, "pix2pix needs A"),
    ("resume-text-file", ["train", "vae", "--resume", "{F}/text.pt"], 1, "text.pt"),
    ("resume-random-bytes", ["train", "vae", "--resume", "{F}/random.pt"], 1, "random.pt"),
    ("resume-missing", ["train", "vae", "--resume", "{F}/nope.pt"], 1, "does not exist"),
    ("resume-evil-pickle", ["train", "vae", "--resume", "{F}/evil.pt"], 1, "posix.system"),
    ("resume-plain-pickle", ["train", "vae", "--resume", "{F}/plain.pkl"], 1, "plain.pkl"),
    ("resume-other-plugin", ["train", "vae", "--resume", "{F}/convnet-run/last.pt"], 1, "written by plugin 'convnet'"),
    ("resume-no-optimizers", ["train", "vae", "--resume", "{F}/no-optimizers.pt"], 1, "has no 'optimizers'"),
    ("resume-no-rng", ["train", "vae", "--resume", "{F}/no-rng.pt"], 1, "has no 'rng'"),
    (
        "resume-changed-hyperparameter",
        ["train", "vae", "--epochs", "2", "--hidden", "9", "--resume", "{F}/vae-run/last.pt"],
        2,
        "only --epochs may change (got --hidden)",
    ),
    (
        "resume-other-data",
        ["train", "vae", "--epochs", "2", "--data", "mnist:{F}", "--resume", "{F}/vae-run/last.pt"],
        2,
        "keeps the checkpoint's dataset",
    ),
    (
        "resume-other-seed",
        ["train", "vae", "--epochs", "2", "--seed", "5", "--resume", "{F}/vae-run/last.pt"],
        2,
        "keeps the checkpoint's seed 0",
    ),
    ("resume-finished", ["train", "vae", "--resume", "{F}/vae-run/last.pt"], 2, "already finished epoch 1"),
    ("out-holds-a-run", ["train", "vae", "--hidden", "8", "--out", "{F}/vae-run"], 2, "--overwrite"),
    ("out-is-a-file", ["train", "vae", "--out", "{F}/text.pt/run"], 2, "cannot write"),
    ("device-unknown", ["train", "vae", "--device", "tpu"], 2, "not a device"),
    ("weights-missing-file", ["train", "vae", "--weights", "{F}/nope.safetensors"], 2, "no such file"),
    ("weights-unknown-name", ["train", "vae", "--weights", "NOPE"], 2, "no weights 'NOPE'"),
    ("weights-text-file", ["train", "vae", "--weights", "{F}/text.pt"], 1, "text.pt"),
    ("weights-evil-pickle", ["train", "vae", "--weights", "{F}/evil.pt"], 1, "posix.system"),
    ("weights-other-architecture", ["train", "vae", "--weights", "{F}/vae-run/last.pt"], 2, "--hidden 8"),
    ("threads-0", ["train", "vae", "--threads", "0"], 2, "--threads"),
    ("progress-unknown", ["train", "vae", "--progress", "loud"], 2, "--progress"),
    ("diverges", ["train", "vae", "--hidden", "8", "--lr", "1e30", "--epochs", "2"], 1, "became nan at step"),
]
if not torch.cuda.is_available():
    TRAIN_CASES.append(("device-cuda-without-gpu", ["train", "vae", "--device", "cuda"], 2, "CUDA is not available"))


class Case(NamedTuple):
    """One bad input: argv ({F}: the user's files), the exit code and text the one line
    must hold. `setup(files, zoo, monkeypatch)` prepares what the case needs before the
    snapshot (an edited export.json, an earlier import); `env` adds variables; `xfail`
    says why it fails today where the fix belongs to a module outside this suite's reach."""

    id: str
    argv: list[str]
    code: int
    needle: str
    setup: Callable[[Path, Any, Any], None] | None = None
    env: dict[str, str] | None = None
    xfail: str | None = None


def edit_manifest(change: Callable[[dict, Path], Any]) -> Callable[[Path, Any, Any], None]:
    """A setup that hand-edits the copy of vae-export/export.json: change(manifest, files)."""

    def setup(files: Path, zoo: Any, monkeypatch: Any) -> None:
        path = files / "vae-export" / "export.json"
        manifest = json.loads(path.read_text())
        change(manifest, files)
        path.write_text(json.dumps(manifest, indent=2))

    return setup


def first_artifact(key: str, value: Any) -> Callable[[Path, Any, Any], None]:
    return edit_manifest(lambda m, files: m["artifacts"][0].__setitem__(key, value))


def manifest_text(text: str | Callable[[str], str]) -> Callable[[Path, Any, Any], None]:
    def setup(files: Path, zoo: Any, monkeypatch: Any) -> None:
        path = files / "vae-export" / "export.json"
        path.write_text(text(path.read_text()) if callable(text) else text)

    return setup


def artifact_outside(path_of: Callable[[Path], str]) -> Callable[[Path, Any, Any], None]:
    """export.json names a copy of its first artifact outside DIR, sha256 and all: a
    manifest must not lead verify to load files from elsewhere."""

    def change(manifest: dict, files: Path) -> None:
        record = manifest["artifacts"][0]
        shutil.copy(files / "vae-export" / record["path"], files / "elsewhere.bin")
        record["path"] = path_of(files)

    return edit_manifest(change)


def in_export(name: str, change: Callable[[Path], Any]) -> Callable[[Path, Any, Any], None]:
    def setup(files: Path, zoo: Any, monkeypatch: Any) -> None:
        change(files / "vae-export" / name)

    return setup


def appended(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b"\0")


def imported_as(name: str) -> Callable[[Path, Any, Any], None]:
    def setup(files: Path, zoo: Any, monkeypatch: Any) -> None:
        r = zoo("weights", "import", "vae", files / "vae-run" / "last.pt", "--name", name)
        assert r.exit_code == 0, r

    return setup


def remote_vae_weights(files: Path, zoo: Any, monkeypatch: Any) -> None:
    """vae's table gains an entry hosted on a server, and the network is gone."""
    import dataclasses
    import socket

    from zoo import _registry
    from zoo.plugin import Weights

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a network connection was attempted")

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, no_network)
    entry = _registry.plugins.entries()["vae"]
    remote = Weights("REMOTE_V1", "https://example.org/weights/vae-remote.safetensors", "0" * 64, dict(entry.obj.weights[0].meta))
    monkeypatch.setattr(entry, "obj", dataclasses.replace(entry.obj, weights=(*entry.obj.weights, remote)))


VAE_RUN = "{F}/vae-run/last.pt"
TEXT_PT = "text.pt is not a file torch.save wrote: it holds text ('hi')"  # echo hi > text.pt
VAE_EXPORT = "{F}/vae-export"
FAST = ["--no-latency", "--device", "cpu", "--batch-sizes", "1"]

EXPORT_CASES = [
    Case("export-text-checkpoint", ["export", "vae", "--checkpoint", "{F}/text.pt"], 1, TEXT_PT),
    Case("export-random-bytes-checkpoint", ["export", "vae", "--checkpoint", "{F}/random.pt"], 1, "random.pt is"),
    Case("export-evil-checkpoint", ["export", "vae", "--checkpoint", "{F}/evil.pt"], 1, "posix.system"),
    Case("export-missing-checkpoint", ["export", "vae", "--checkpoint", "{F}/nope.pt"], 1, "does not exist"),
    Case("export-checkpoint-of-other-plugin", ["export", "vae", "--checkpoint", "{F}/convnet-run/last.pt"], 1, "by plugin 'convnet'"),
    Case("export-checkpoint-wrong-shapes", ["export", "vae", "--checkpoint", "{F}/wrong-shapes.pt"], 1, "fc1.weight (3, 3) != (8, 784)"),
    Case("export-weights-text-file", ["export", "vae", "--weights", "{F}/text.pt"], 1, TEXT_PT),
    Case("export-weights-unknown-name", ["export", "vae", "--weights", "NOPE"], 2, "no weights 'NOPE'"),
    Case("export-weights-of-other-plugin", ["export", "cgan", "--weights", "{F}/vae.safetensors"], 1, "for plugin 'vae', not 'cgan'"),
    Case("export-config-negative", ["export", "vae", "--random-init", "--config", "latent_dim=-3"], 2, "latent_dim must be at least 1"),
    Case("export-config-unknown-name", ["export", "vae", "--random-init", "--config", "latent=3"], 2, "no hyperparameter 'latent'"),
    Case("export-config-wrong-type", ["export", "vae", "--random-init", "--config", "hidden=many"], 2, "hidden takes a"),
    Case("export-config-float-for-int", ["export", "vae", "--random-init", "--config", "hidden=1.5"], 2, "hidden takes a"),
    Case("export-config-without-value", ["export", "vae", "--random-init", "--config", "hidden"], 2, "write NAME=VALUE"),
    Case("export-config-not-a-choice", ["export", "rnn", "--random-init", "--config", "cell=tree"], 2, "cell"),
    Case("export-config-with-checkpoint", ["export", "vae", "--checkpoint", VAE_RUN, "--config", "hidden=9"], 2, "only with --random-init"),
    Case("export-checkpoint-a-directory", ["export", "vae", "--checkpoint", "{F}/vae-run"], 2, "is a directory"),
    Case("export-two-sources", ["export", "vae", "--checkpoint", VAE_RUN, "--random-init"], 2, "exclude each other"),
    Case("export-no-run-to-export", ["export", "vae"], 2, "train one first"),
    Case("export-unknown-plugin", ["export", "vea", "--random-init"], 2, "did you mean 'vae'"),
    Case("export-unknown-target", ["export", "vae", "--random-init", "--target", "nope"], 2, "nope"),
    Case("export-unknown-format", ["export", "vae", "--random-init", "--format", "tflite"], 2, "tflite"),
    Case("export-batch-sizes-0", ["export", "vae", "--random-init", "--batch-sizes", "0"], 2, "--batch-sizes '0'"),
    Case("export-batch-sizes-text", ["export", "vae", "--random-init", "--batch-sizes", "one"], 2, "--batch-sizes 'one'"),
    Case("export-batch-1", ["export", "vae", "--random-init", "--export-batch", "1"], 2, "--export-batch 1"),
    Case("export-opset-without-onnx", ["export", "vae", "--random-init", "--torchscript", "--opset", "17"], 2, "--opset applies to onnx"),
    Case("export-opset-unsupported", ["export", "vae", "--random-init", "--opset", "999"], 2, "999"),
    Case("export-device-unknown", ["export", "vae", "--random-init", "--device", "tpu"], 2, "tpu"),
    Case("export-out-is-a-file", ["export", "vae", "--random-init", "--out", "{F}/text.pt"], 2, "text.pt"),
    Case(
        "export-over-an-export-of-other-weights",
        ["export", "vae", "--random-init", "--config", "hidden=8", "--out", VAE_EXPORT, *FAST],
        2,
        "--overwrite",
    ),
]

MODIFIED = "was modified after export"
VERIFY_CASES = [
    Case("verify-no-manifest", ["verify", "{F}/vae-run"], 2, "has no export.json"),
    Case("verify-missing-directory", ["verify", "{F}/nope"], 2, "nope"),
    Case("verify-a-file", ["verify", "{F}/text.pt"], 2, "text.pt"),
    Case("verify-manifest-truncated", ["verify", VAE_EXPORT], 1, "is not valid JSON", manifest_text(lambda t: t[: len(t) // 2])),
    Case("verify-manifest-empty", ["verify", VAE_EXPORT], 1, "is not valid JSON", manifest_text("")),
    Case("verify-manifest-a-list", ["verify", VAE_EXPORT], 1, "not a zoo export manifest", manifest_text("[]")),
    Case("verify-no-artifacts", ["verify", VAE_EXPORT], 1, "lists no artifacts", edit_manifest(lambda m, f: m.update(artifacts=[]))),
    Case("verify-artifacts-an-object", ["verify", VAE_EXPORT], 1, "not a zoo export", edit_manifest(lambda m, f: m.update(artifacts={}))),
    Case(
        "verify-artifact-a-string",
        ["verify", VAE_EXPORT],
        1,
        "export.json",
        edit_manifest(lambda m, f: m.update(artifacts=["decoder.onnx"])),
    ),
    Case(
        "verify-artifact-without-sha256",
        ["verify", VAE_EXPORT],
        1,
        "sha256",
        edit_manifest(lambda m, f: m["artifacts"][0].pop("sha256")),
    ),
    Case(
        "verify-artifact-sha256-a-number",
        ["verify", VAE_EXPORT],
        1,
        "sha256",
        first_artifact("sha256", 5),
    ),
    Case(
        "verify-artifact-path-a-number",
        ["verify", VAE_EXPORT],
        1,
        "path",
        first_artifact("path", 5),
    ),
    Case(
        "verify-artifact-absolute-path",
        ["verify", VAE_EXPORT],
        1,
        "outside",
        artifact_outside(lambda files: str(files / "elsewhere.bin")),
    ),
    Case(
        "verify-artifact-path-up-and-out",
        ["verify", VAE_EXPORT],
        1,
        "outside",
        artifact_outside(lambda files: "../elsewhere.bin"),
    ),
    Case("verify-artifact-modified", ["verify", VAE_EXPORT], 1, MODIFIED, in_export("decoder.onnx", appended)),
    Case("verify-artifact-missing", ["verify", VAE_EXPORT], 1, "is missing", in_export("decoder.onnx", Path.unlink)),
    Case(
        "verify-recorded-batch-size-0",
        ["verify", VAE_EXPORT, "--no-latency"],
        1,
        "batch_sizes",
        edit_manifest(lambda m, f: m.update(batch_sizes=[0])),
    ),
    Case(
        "verify-recorded-batch-size-negative",
        ["verify", VAE_EXPORT, "--no-latency"],
        1,
        "batch_sizes",
        edit_manifest(lambda m, f: m.update(batch_sizes=[-2])),
    ),
    Case(
        "verify-recorded-batch-sizes-a-string",
        ["verify", VAE_EXPORT, "--no-latency"],
        1,
        "batch_sizes",
        edit_manifest(lambda m, f: m.update(batch_sizes="1,4")),
    ),
    Case(
        "verify-tolerance-a-string",
        ["verify", VAE_EXPORT, "--no-latency"],
        1,
        "rtol",
        first_artifact("rtol", "loose"),
    ),
    Case("verify-unknown-plugin", ["verify", VAE_EXPORT], 2, "did you mean 'vae'", edit_manifest(lambda m, f: m.update(plugin="vea"))),
    Case(
        "verify-plugin-a-number",
        ["verify", VAE_EXPORT],
        1,
        "plugin",
        edit_manifest(lambda m, f: m.update(plugin=5)),
    ),
    Case(
        "verify-unknown-source",
        ["verify", VAE_EXPORT],
        1,
        "does not say where its weights came from",
        edit_manifest(lambda m, f: m["source"].update(kind="magic")),
    ),
    Case(
        "verify-source-a-string",
        ["verify", VAE_EXPORT],
        1,
        "source",
        edit_manifest(lambda m, f: m.update(source="last.pt")),
    ),
    Case(
        "verify-checkpoint-moved",
        ["verify", VAE_EXPORT],
        1,
        "pass --checkpoint PATH",
        edit_manifest(lambda m, f: m["source"].update(path=str(f / "moved.pt"))),
    ),
    Case("verify-other-checkpoint", ["verify", VAE_EXPORT, "--checkpoint", "{F}/convnet-run/last.pt"], 1, "is not the one"),
    Case("verify-checkpoint-text-file", ["verify", VAE_EXPORT, "--checkpoint", "{F}/text.pt"], 1, "is not the one"),
    Case(
        "verify-other-model",
        ["verify", VAE_EXPORT],
        1,
        "state digest mismatch",
        edit_manifest(lambda m, f: m["source"].update(state_sha256="0" * 64)),
    ),
    Case("verify-checkpoint-missing", ["verify", VAE_EXPORT, "--checkpoint", "{F}/nope.pt"], 1, "pass --checkpoint PATH"),
    Case(
        "verify-weights-ignored",
        ["verify", VAE_EXPORT, "--weights", "NOPE", "--no-latency"],
        2,
        "--weights",
    ),
    Case(
        "verify-tolerances-loosened",
        ["verify", VAE_EXPORT, "--no-latency"],
        1,
        "rtol",
        edit_manifest(lambda m, f: [a.update(rtol=1e9, atol=1e9) for a in m["artifacts"]]),
    ),
    Case(
        "verify-artifact-unknown-format",
        ["verify", VAE_EXPORT, "--no-latency"],
        1,
        "tflite",
        first_artifact("format", "tflite"),
    ),
    Case(
        "verify-skipped-formats-a-string",
        ["verify", VAE_EXPORT, "--no-latency"],
        1,
        "skipped_formats",
        edit_manifest(lambda m, f: m.update(skipped_formats="pt2")),
    ),
    Case(
        "verify-random-init-seed-a-string",
        ["verify", VAE_EXPORT, "--no-latency"],
        1,
        "seed",
        edit_manifest(lambda m, f: m.update(source={"kind": "random-init", "seed": "abc"})),
    ),
    Case("verify-batch-sizes-0", ["verify", VAE_EXPORT, "--batch-sizes", "0"], 2, "--batch-sizes '0'"),
    Case("verify-runtime-unknown", ["verify", VAE_EXPORT, "--runtime", "java"], 2, "--runtime 'java'"),
    Case("verify-device-unknown", ["verify", VAE_EXPORT, "--device", "tpu"], 2, "tpu"),
]

GRID = ["-o", "{F}/grid.png"]
RNN = ["sample", "rnn", "--checkpoint", "{F}/rnn-run/last.pt"]
SAMPLE_CASES = [
    Case("sample-n-0", ["sample", "vae", "--random-init", "-n", "0", *GRID], 2, "-n must be at least 1, not 0"),
    Case("sample-n-negative", ["sample", "vae", "--random-init", "-n", "-4", *GRID], 2, "-n must be at least 1, not -4"),
    Case("sample-n-above-the-limit", ["sample", "vae", "--random-init", "-n", "10001", *GRID], 2, "at most 10,000"),
    Case("sample-label-out-of-range", ["sample", "cgan", "--random-init", "--label", "10", *GRID], 2, "cgan classes are 0 to 9"),
    Case("sample-label-negative", ["sample", "cgan", "--random-init", "--label", "-1", *GRID], 2, "cgan classes are 0 to 9"),
    Case("sample-label-unconditional", ["sample", "vae", "--random-init", "--label", "3", *GRID], 2, "vae is not conditional"),
    Case("sample-label-unconditional-gan", ["sample", "dcgan", "--random-init", "--label", "3", *GRID], 2, "--label"),
    Case("sample-nrow-0", ["sample", "vae", "--random-init", "--nrow", "0", *GRID], 2, "--nrow must be at least 1"),
    Case("sample-no-out", ["sample", "vae", "--random-init"], 2, "pass -o FILE.png"),
    Case("sample-out-not-png", ["sample", "vae", "--random-init", "-o", "{F}/grid.jpg"], 2, "must end in .png"),
    Case("sample-out-under-a-file", ["sample", "vae", "--random-init", "-o", "{F}/text.pt/grid.png"], 2, "cannot write"),
    Case("sample-prompt-for-images", ["sample", "vae", "--random-init", "--prompt", "hi", *GRID], 2, "--prompt applies to language models"),
    Case("sample-not-a-sampler", ["sample", "convnet", "--random-init", *GRID], 2, "convnet does not sample"),
    Case("sample-unknown-plugin", ["sample", "vea", *GRID], 2, "did you mean 'vae'"),
    Case("sample-no-run", ["sample", "vae", *GRID], 2, "train one first"),
    Case("sample-checkpoint-text-file", ["sample", "vae", "--checkpoint", "{F}/text.pt", *GRID], 1, TEXT_PT),
    Case("sample-checkpoint-random-bytes", ["sample", "vae", "--checkpoint", "{F}/random.pt", *GRID], 1, "random.pt is"),
    Case("sample-checkpoint-evil", ["sample", "vae", "--checkpoint", "{F}/evil.pt", *GRID], 1, "posix.system"),
    Case("sample-checkpoint-of-other-plugin", ["sample", "vae", "--checkpoint", "{F}/convnet-run/last.pt", *GRID], 1, "'convnet'"),
    Case("sample-weights-of-other-plugin", ["sample", "cgan", "--weights", "{F}/vae.safetensors", *GRID], 1, "for plugin 'vae'"),
    Case("sample-weights-unknown-name", ["sample", "vae", "--weights", "NOPE", *GRID], 2, "no weights 'NOPE'"),
    Case("sample-two-sources", ["sample", "vae", "--random-init", "--checkpoint", VAE_RUN, *GRID], 2, "pass one of"),
    Case("sample-artifact-other-target", ["sample", "vae", "--artifact", f"{VAE_EXPORT}/encoder.onnx", *GRID], 2, "is vae:encoder"),
    Case("sample-artifact-text-file", ["sample", "vae", "--artifact", "{F}/text.pt", *GRID], 1, "text.pt"),
    Case("sample-artifact-missing", ["sample", "vae", "--artifact", "{F}/nope.onnx", *GRID], 1, "nope.onnx"),
    Case("sample-prompt-outside-vocabulary", [*RNN, "--prompt", "日本"], 2, "the model's vocabulary lacks: '日', '本'"),
    Case("sample-prompt-empty", [*RNN, "--prompt", ""], 2, "--prompt must hold at least one character"),
    Case("sample-no-prompt", [*RNN], 2, "pass --prompt TEXT"),
    Case("sample-length-0", [*RNN, "--prompt", "hi", "--length", "0"], 2, "--length must be at least 1, not 0"),
    Case("sample-length-negative", [*RNN, "--prompt", "hi", "--length", "-5"], 2, "--length must be at least 1"),
    Case("sample-temperature-negative", [*RNN, "--prompt", "hi", "--temperature", "-1"], 2, "--temperature must be 0 (greedy) or more"),
    Case("sample-temperature-nan", [*RNN, "--prompt", "hi", "--temperature", "nan"], 2, "--temperature must be a finite number"),
    Case("sample-temperature-inf", [*RNN, "--prompt", "hi", "--temperature", "inf"], 2, "--temperature must be a finite number"),
    Case("sample-top-k-0", [*RNN, "--prompt", "hi", "--top-k", "0"], 2, "--top-k must be at least 1, not 0"),
    Case("sample-label-for-text", [*RNN, "--prompt", "hi", "--label", "3"], 2, "--label applies to image generators"),
    Case("sample-n-for-text", [*RNN, "--prompt", "hi", "-n", "5"], 2, "-n applies to image generators"),
    Case("sample-length-for-images", ["sample", "vae", "--random-init", "--length", "5", *GRID], 2, "--length applies to language models"),
    Case("sample-text-over-a-checkpoint", [*RNN, "--prompt", "hi", "-o", VAE_RUN], 2, "last.pt is a model file"),
    Case("sample-text-over-an-export", [*RNN, "--prompt", "hi", "-o", f"{VAE_EXPORT}/export.json"], 2, "the manifest of an export"),
    Case("sample-text-into-a-directory", [*RNN, "--prompt", "hi", "-o", "{F}/vae-run"], 2, "is a directory"),
    Case(
        "sample-text-artifact-of-other-plugin",
        ["sample", "rnn", "--artifact", f"{VAE_EXPORT}/decoder.onnx", "--prompt", "hi"],
        2,
        "is vae:decoder",
    ),
]

CONVNET = ["--checkpoint", "{F}/convnet-run/last.pt"]
PIX2PIX = ["predict", "pix2pix", "--random-init"]
PREDICT_CASES = [
    Case("predict-missing-file", ["predict", "convnet", "{F}/nope.png", *CONVNET], 1, "no such file"),
    Case("predict-text-as-image", ["predict", "convnet", "{F}/notes.png", *CONVNET], 1, "notes.png"),
    Case("predict-checkpoint-as-image", ["predict", "convnet", "{F}/text.pt", *CONVNET], 1, "text.pt"),
    Case("predict-empty-image", ["predict", "convnet", "{F}/empty.png", *CONVNET], 1, "empty.png"),
    Case("predict-truncated-image", ["predict", "convnet", "{F}/truncated.png", *CONVNET], 1, "truncated.png"),
    Case("predict-decompression-bomb", ["predict", "convnet", "{F}/huge.png", *CONVNET], 1, "could be decompression bomb"),
    Case("predict-directory-without-images", ["predict", "convnet", "{F}/no-images", *CONVNET], 1, "no images in this directory"),
    Case("predict-one-bad-among-good", ["predict", "convnet", "{F}/digit.png", "{F}/notes.png", *CONVNET], 1, "notes.png"),
    Case(
        "predict-artifact-of-other-plugin",
        ["predict", "convnet", "{F}/digit.png", "--artifact", f"{VAE_EXPORT}/decoder.onnx"],
        2,
        "is vae:decoder, not convnet:classifier",
    ),
    Case("predict-artifact-text-file", ["predict", "convnet", "{F}/digit.png", "--artifact", "{F}/text.pt"], 1, "text.pt"),
    Case("predict-checkpoint-text-file", ["predict", "convnet", "{F}/digit.png", "--checkpoint", "{F}/text.pt"], 1, TEXT_PT),
    Case("predict-checkpoint-evil", ["predict", "convnet", "{F}/digit.png", "--checkpoint", "{F}/evil.pt"], 1, "posix.system"),
    Case("predict-checkpoint-of-other-plugin", ["predict", "convnet", "{F}/digit.png", "--checkpoint", VAE_RUN], 1, "by plugin 'vae'"),
    Case("predict-weights-of-other-plugin", ["predict", "convnet", "{F}/digit.png", "--weights", "{F}/vae.safetensors"], 1, "'vae'"),
    Case("predict-not-a-predictor", ["predict", "vae", "{F}/digit.png", "--random-init"], 2, "vae has no predict target"),
    Case("predict-no-run", ["predict", "convnet", "{F}/digit.png"], 2, "train one first"),
    Case("predict-out-over-a-checkpoint", ["predict", "convnet", "{F}/digit.png", *CONVNET, "-o", VAE_RUN], 2, "last.pt is a model file"),
    Case("predict-out-into-a-directory", ["predict", "convnet", "{F}/digit.png", *CONVNET, "-o", "{F}/vae-run"], 2, "is a directory"),
    Case("predict-out-over-its-input", ["predict", "convnet", "{F}/digit.png", *CONVNET, "-o", "{F}/digit.png"], 2, "over the input"),
    Case("predict-images-over-their-inputs", [*PIX2PIX, "{F}/digit.png", "-o", "{F}"], 2, "over the input"),
    Case("predict-images-without-out", [*PIX2PIX, "{F}/digit.png"], 2, "pass -o FILE.png"),
    Case("predict-one-png-for-two-images", [*PIX2PIX, "{F}/digit.png", "{F}/a/digit.png", "-o", "{F}/o.png"], 2, "need a directory"),
    Case("predict-images-with-one-name", [*PIX2PIX, "{F}/a/digit.png", "{F}/b/digit.png", "-o", "{F}/out"], 2, "share the name 'digit'"),
]

EVALUATE_CASES = [
    Case("evaluate-n-0", ["evaluate", "vae", "--random-init", "-n", "0"], 2, "-n must be at least 1, not 0"),
    Case("evaluate-no-classifier", ["evaluate", "vae", "--random-init"], 2, "no trained convnet"),
    Case("evaluate-classifier-not-a-classifier", ["evaluate", "vae", "--random-init", "--classifier", VAE_RUN], 2, "is a vae checkpoint"),
    Case("evaluate-classifier-text-file", ["evaluate", "vae", "--random-init", "--classifier", "{F}/text.pt"], 1, TEXT_PT),
    Case("evaluate-classifier-unknown-name", ["evaluate", "vae", "--random-init", "--classifier", "NOPE"], 2, "no weights 'NOPE'"),
    Case("evaluate-classifier-of-a-classifier", ["evaluate", "convnet", *CONVNET, "--classifier", "DEFAULT"], 2, "--classifier judges"),
    Case("evaluate-artifact-of-a-classifier", ["evaluate", "convnet", "--artifact", f"{VAE_EXPORT}/decoder.onnx"], 2, "--artifact"),
    Case("evaluate-n-for-a-classifier", ["evaluate", "convnet", *CONVNET, "-n", "10"], 2, "-n counts generated images"),
    Case("evaluate-data-for-a-generator", ["evaluate", "vae", "--random-init", "--data", "digits", "--classifier", "DEFAULT"], 2, "--data"),
    Case("evaluate-unknown-dataset", ["evaluate", "convnet", *CONVNET, "--data", "imagenet"], 2, "unknown dataset 'imagenet'"),
    Case("evaluate-missing-data", ["evaluate", "convnet", *CONVNET, "--data", "mnist:{F}/nope"], 1, "does not exist"),
    Case("evaluate-dataset-cannot-serve", ["evaluate", "convnet", *CONVNET, "--data", "edges"], 2, "convnet needs"),
    Case("evaluate-checkpoint-text-file", ["evaluate", "convnet", "--checkpoint", "{F}/text.pt"], 1, TEXT_PT),
    Case("evaluate-checkpoint-of-other-plugin", ["evaluate", "convnet", "--checkpoint", VAE_RUN], 1, "by plugin 'vae'"),
]

IMPORT = ["weights", "import", "vae"]
PUBLISH = ["weights", "export", "vae", "-o", "{F}/dist", "--license", "MIT"]
WEIGHTS_CASES = [
    Case("weights-list-unknown-plugin", ["weights", "list", "vea"], 2, "did you mean 'vae'"),
    Case("weights-download-unknown-name", ["weights", "download", "vae", "NOPE"], 2, "no weights 'NOPE'"),
    Case("weights-download-unknown-plugin", ["weights", "download", "vea"], 2, "did you mean 'vae'"),
    Case(
        "weights-download-offline",
        ["weights", "download", "vae", "REMOTE_V1"],
        1,
        "ZOO_OFFLINE=1",
        remote_vae_weights,
        {"ZOO_OFFLINE": "1"},
    ),
    Case("weights-import-text-file", [*IMPORT, "{F}/text.pt"], 1, TEXT_PT),
    Case("weights-import-random-bytes", [*IMPORT, "{F}/random.pt"], 1, "random.pt is"),
    Case("weights-import-random-safetensors", [*IMPORT, "{F}/random.safetensors"], 1, "random.safetensors"),
    Case("weights-import-evil-pickle", [*IMPORT, "{F}/evil.pt"], 1, "posix.system"),
    Case("weights-import-plain-pickle", [*IMPORT, "{F}/plain.pkl"], 1, "plain.pkl"),
    Case("weights-import-missing-file", [*IMPORT, "{F}/nope.pt"], 2, "no such file"),
    Case("weights-import-a-directory", [*IMPORT, "{F}/vae-run"], 2, "is a directory"),
    Case("weights-import-checkpoint-of-other-plugin", [*IMPORT, "{F}/convnet-run/last.pt"], 1, "by plugin 'convnet'"),
    Case("weights-import-weights-of-other-plugin", ["weights", "import", "cgan", "{F}/vae.safetensors"], 1, "for plugin 'vae'"),
    Case("weights-import-wrong-shapes", [*IMPORT, "{F}/wrong-shapes.pt"], 1, "fc1.weight (3, 3) != (8, 784)"),
    Case("weights-import-foreign-other-architecture", [*IMPORT, "{F}/vae-state-dict.pt"], 1, "!= (400, 784)"),
    Case("weights-import-foreign-unknown-config", [*IMPORT, "{F}/vae-state-dict.pt", "--config", "nope=1"], 2, "'nope'"),
    Case("weights-import-config-for-a-zoo-file", [*IMPORT, VAE_RUN, "--config", "hidden=8"], 2, "foreign state dicts only"),
    Case("weights-import-name-of-the-table", [*IMPORT, VAE_RUN, "--name", "DIGITS_V1"], 2, "has an entry of that name"),
    Case("weights-import-name-default", [*IMPORT, VAE_RUN, "--name", "DEFAULT"], 2, "--name 'DEFAULT'"),
    Case("weights-import-name-a-path", [*IMPORT, VAE_RUN, "--name", "../evil"], 2, "use letters, digits"),
    Case("weights-import-name-taken", [*IMPORT, VAE_RUN, "--name", "MINE"], 2, "pass --force", imported_as("MINE")),
    Case("weights-import-components-unknown", [*IMPORT, VAE_RUN, "--components", "nope"], 2, "--components nope"),
    Case("weights-export-missing-checkpoint", [*PUBLISH, "--checkpoint", "{F}/nope.pt"], 1, "does not exist"),
    Case("weights-export-directory-without-run", [*PUBLISH, "--checkpoint", "{F}/no-images"], 1, "does not exist"),
    Case("weights-export-text-file", [*PUBLISH, "--checkpoint", "{F}/text.pt"], 1, TEXT_PT),
    Case("weights-export-evil-pickle", [*PUBLISH, "--checkpoint", "{F}/evil.pt"], 1, "posix.system"),
    Case("weights-export-checkpoint-of-other-plugin", [*PUBLISH, "--checkpoint", "{F}/convnet-run"], 1, "by plugin 'convnet'"),
    Case("weights-export-wrong-shapes", [*PUBLISH, "--checkpoint", "{F}/wrong-shapes.pt"], 1, "fc1.weight (3, 3)"),
    Case("weights-export-components-unknown", [*PUBLISH, "--checkpoint", "{F}/vae-run", "--components", "nope"], 2, "--components nope"),
    Case("weights-export-out-is-a-file", ["weights", "export", "vae", "--checkpoint", "{F}/vae-run", "-o", "{F}/text.pt"], 2, "text.pt"),
    Case("weights-unknown-subcommand", ["weights", "publish", "vae"], 2, "publish"),
]

INFO_CASES = [
    Case("info-unknown-plugin", ["info", "vea"], 2, "did you mean 'vae'"),
    Case("info-empty-name", ["info", ""], 2, "unknown plugin ''"),
    Case("info-without-plugin", ["info"], 2, "PLUGIN"),
    Case("datasets-with-an-argument", ["datasets", "digits"], 2, "digits"),
    Case("datasets-unknown-option", ["datasets", "--jsn"], 2, "--jsn"),
    Case("list-unknown-option", ["list", "--all"], 2, "--all"),
    Case("unknown-command", ["trian", "vae"], 2, "trian"),
]

OTHER_CASES = {
    "export": EXPORT_CASES,
    "verify": VERIFY_CASES,
    "sample": SAMPLE_CASES,
    "predict": PREDICT_CASES,
    "evaluate": EVALUATE_CASES,
    "weights": WEIGHTS_CASES,
    "info, datasets, list": INFO_CASES,
}
CASES = [Case(*c) for c in TRAIN_CASES] + [c for cases in OTHER_CASES.values() for c in cases]


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(zoo, files, tmp_path, monkeypatch, case):
    for name, value in (case.env or {}).items():
        monkeypatch.setenv(name, value)
    if case.setup is not None:
        case.setup(files, zoo, monkeypatch)
    before = snapshot(tmp_path)
    r = zoo(*[a.replace("{F}", str(files)) for a in case.argv])
    one_line_error(r, case.code, case.needle.replace("{F}", str(files)))
    assert snapshot(tmp_path) == before  # nothing changed, nothing added: no temp files, no empty runs or exports
    assert not (tmp_path / "pwned.txt").exists() and not Path("pwned.txt").exists()


def test_the_bad_input_suite_is_large_enough():
    assert len(TRAIN_CASES) >= 45
    assert sum(len(cases) for cases in OTHER_CASES.values()) >= 60  # issue 11: train, export, verify, sample, predict, weights
    assert all(len(cases) >= 5 for cases in OTHER_CASES.values()), {k: len(v) for k, v in OTHER_CASES.items()}
    assert len({c.id for c in CASES}) == len(CASES)


def test_offline_download_makes_no_connection(zoo, files, tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    for spec in ("mnist", "cifar10"):
        plugin = ["convnet"] if spec == "mnist" else ["dcgan", "--channels", "3"]
        r = zoo("train", *plugin, "--data", f"{spec}:{tmp_path / ('new-' + spec)}", "--download")
        one_line_error(r, 1, "ZOO_OFFLINE=1 forbids network access")


def test_overwrite_replaces_a_run_and_only_its_files(zoo, files):
    run = files / "vae-run"
    (run / "notes.txt").write_text("mine\n")
    (run / ".last.pt.abc123.tmp").write_bytes(b"left by a killed write")
    r = zoo("train", "vae", "--hidden", "8", "--max-steps", "1", "--out", run, "--overwrite", "--progress", "none")
    assert r.exit_code == 0, r
    assert (run / "notes.txt").read_text() == "mine\n"  # not zoo's: kept
    assert not (run / ".last.pt.abc123.tmp").exists()
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_second_training_into_the_same_directory_is_refused_while_the_first_runs(files, tmp_path):
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), "ZOO_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "shared"
    first = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "train", "vae", "--epochs", "30", "--out", str(out), "--progress", "lines"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (out / ".zoo.lock").exists() or not (out / "config.json").exists():
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() is not None else "timeout"
            time.sleep(0.2)
        second = subprocess.run(
            [sys.executable, "-m", "zoo.cli", "train", "vae", "--epochs", "1", "--out", str(out)], env=env, capture_output=True, text=True
        )
        assert second.returncode == 1, second
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "is in use by zoo train vae" in lines[0] and f"pid {first.pid}" in lines[0], second.stderr
    finally:
        first.kill()
        first.wait()


EPOCHS = "12"  # of 12 steps each, an 8 MB checkpoint written (and fsync'd) after each


def _killed_then_resumed(tmp_path: Path, env: dict, delay: float, name: str) -> Path:
    out = tmp_path / name
    cmd = [sys.executable, "-m", "zoo.cli", "train", "vae", "--epochs", EPOCHS, "--out", str(out), "--progress", "none"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (out / "last.pt").exists():
        if torch.load(out / "last.pt", weights_only=True)["epoch"] < int(EPOCHS):  # else it finished before the kill
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "zoo.cli",
                    "train",
                    "vae",
                    "--epochs",
                    EPOCHS,
                    "--resume",
                    str(out / "last.pt"),
                    "--progress",
                    "none",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
    else:  # killed before its first checkpoint: it left nothing to resume, so it starts over
        subprocess.run(cmd + ["--overwrite"], env=env, check=True, capture_output=True)
    return out


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_ends_bit_identical(tmp_path):
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), "ZOO_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "zoo.cli", "train", "vae", "--epochs", EPOCHS, "--out", str(straight), "--progress", "none"],
        env=env,
        check=True,
        capture_output=True,
    )
    took = time.time() - started
    want = torch.load(straight / "last.pt", weights_only=True)["model"]
    for i, share in enumerate((0.3, 0.45, 0.6, 0.75, 0.9)):  # points spread over the run, start-up included
        out = _killed_then_resumed(tmp_path, env, share * took, f"killed-{i}")
        got = torch.load(out / "last.pt", weights_only=True)
        assert got["epoch"] == int(EPOCHS)
        assert all(torch.equal(got["model"][k], v) for k, v in want.items()), share
        assert not [p for p in out.rglob("*.tmp")], share


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """A process killed while torch.save writes: the temp file is half written, last.pt is
    the previous one, and the resumed run cleans the temp file up."""
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), "ZOO_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "zoo.cli", "train", "vae", "--hidden", "8", "--epochs", "1", "--out", str(out), "--progress", "none"],
        env=env,
        check=True,
        capture_output=True,
    )
    before = (out / "last.pt").read_bytes()
    # A child that stalls inside torch.save's write, halfway, and is killed there.
    script = f"""
import os, sys, time, torch
real = torch.save
def stalled(obj, fh, *a, **k):
    fh.write(b"half a checkpoint"); fh.flush(); os.fsync(fh.fileno())
    open({str(tmp_path / "in-save")!r}, "w").close()
    time.sleep(600)
torch.save = stalled
from zoo.cli import main
sys.argv = ["zoo", "train", "vae", "--epochs", "2", "--resume", {str(out / "last.pt")!r}, "--progress", "none"]
main()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "in-save").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    temps = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert temps and (out / "last.pt").read_bytes() == before  # a half-written temp file, the old checkpoint
    subprocess.run(
        [sys.executable, "-m", "zoo.cli", "train", "vae", "--epochs", "2", "--resume", str(out / "last.pt"), "--progress", "none"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MB filesystem of the test's own (tmpfs), or a skip saying why there is none."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); the disk-full path is not exercised here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the disk-full path is not exercised")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(zoo, small_disk):
    # vae's checkpoint is 7.9 MB: the first fits in 12 MB, the second does not.
    r = zoo("train", "vae", "--epochs", "3", "--out", small_disk / "run", "--progress", "none")
    line = one_line_error(r, 1, "no space left to write", "needs about 7.9 MB", "stopped at step 24")
    assert f"the last good checkpoint {small_disk / 'run' / 'last.pt'} is intact" in line
    state = torch.load(small_disk / "run" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and len((small_disk / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    assert not [p for p in (small_disk / "run").rglob("*.tmp")]
    # Too full for a first checkpoint: nothing of the run is left behind.
    r = zoo("train", "vae", "--epochs", "1", "--out", small_disk / "run2", "--progress", "none")
    one_line_error(r, 1, "no space left to write")
    assert not (small_disk / "run2").exists()


def _fill(disk: Path, leave: int) -> None:
    """Take all but about `leave` bytes of the small filesystem with a file of its own."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def test_a_full_disk_refuses_export_and_weights_in_one_line_and_keeps_what_was_there(zoo, small_disk, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert zoo("train", "vae", "--max-steps", "1", "--out", run, "--progress", "none").exit_code == 0
    out = small_disk / "exp"
    args = ("--random-init", "--no-latency", "--no-task-parity", "--out", out)
    assert zoo("export", "linear", *args).exit_code == 0
    before = snapshot(out)
    _fill(small_disk, 2 << 20)
    # vae's two targets in two formats need ~11 MB: refused before anything is written, and
    # --overwrite does not remove the export it would replace.
    r = zoo("export", "vae", *args, "--overwrite")
    line = one_line_error(r, 1, "no space left to write", str(out), "needs about", "free there", "nothing was written")
    assert snapshot(out) == before, line
    assert zoo("verify", out).exit_code == 0
    # The same when the check before writing is fooled (a format that underestimates its
    # files): the writer runs out of room mid-file, and still nothing is lost or left.
    from zoo.export import format as zformat

    for fmt in zformat.installed():
        monkeypatch.setattr(fmt, "size_overhead", -(1 << 30))
    r = zoo("export", "vae", "--random-init", "--no-latency", "--no-task-parity", "--out", small_disk / "exp3")
    one_line_error(r, 1, "no space left to write", str(small_disk / "exp3"), "needs more than", "no partial file was left")
    assert not (small_disk / "exp3").exists() and snapshot(out) == before
    monkeypatch.undo()
    # A new export directory: none is left behind.
    r = zoo("export", "vae", "--random-init", "--no-latency", "--no-task-parity", "--out", small_disk / "exp2")
    one_line_error(r, 1, "no space left to write")
    assert not (small_disk / "exp2").exists()
    # weights import (2.6 MB of float32) into a home on the full disk.
    monkeypatch.setenv("ZOO_HOME", str(small_disk / "home"))
    from zoo import get_plugin
    from zoo.weights.entries import package_file

    packaged = package_file(get_plugin("vae"), get_plugin("vae").get_weights("DIGITS_V1").source)
    r = zoo("weights", "import", "vae", packaged, "--dtype", "float32", "--name", "big")
    one_line_error(r, 1, "no space left to write", "needs about 2.6 MB", "nothing was changed")
    assert not [p for p in (small_disk / "home").rglob("*") if p.is_file()]
    # weights export of a run (trained off the small disk, before) onto it.
    r = zoo("weights", "export", "vae", "--checkpoint", run, "--out", small_disk / "w")
    one_line_error(r, 1, "no space left to write", "nothing was changed")
    assert not [p for p in small_disk.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not (small_disk / "w").exists() or not list((small_disk / "w").iterdir())
