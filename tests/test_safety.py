"""Nothing lost, nothing silent: every bad input is one line and a non-zero exit, no
traceback, and every file the user had is byte-identical afterwards with no temp files
or empty runs left behind. Plus kill -9 at any point and a full disk."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import one_line_error


class Evil:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.fixture(scope="module")
def base_files(tmp_path_factory) -> Path:
    """Files a user has: a finished tiny vae run, a convnet run, a broken checkpoint
    zoo, and a few bad files. Built once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("base")
    env = {**os.environ, "ZOO_HOME": str(root / "home"), "ZOO_RUNS": str(root / "runs"), "OMP_NUM_THREADS": "1"}
    for args in (
        ("vae", "--hidden", "8", "--epochs", "1", "--out", str(root / "vae-run")),
        ("convnet", "--hidden", "8", "--max-steps", "2", "--out", str(root / "convnet-run")),
    ):
        subprocess.run([sys.executable, "-m", "zoo.cli", "train", *args, "--progress", "none"], env=env, check=True, capture_output=True)
    (root / "text.pt").write_text("hi\n")
    (root / "random.pt").write_bytes(os.urandom(4096))
    torch.save({"plugin": "vae", "model": {"a": Evil()}}, root / "evil.pt")
    state = torch.load(root / "vae-run" / "last.pt", weights_only=True)
    for key in ("optimizers", "rng"):
        torch.save({k: v for k, v in state.items() if k != key}, root / f"no-{key}.pt")
    with open(root / "plain.pkl", "wb") as fh:
        pickle.dump({"x": 1}, fh)
    _mnist_variants(root)
    return root


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
    """Every file under root (hidden ones included) and its sha256, but lock files and
    zoo's cache of prepared datasets (which a command may fill before it fails)."""
    out = {}
    cache = root / "zoo-home" / "data"
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".zoo.lock" and cache not in p.parents:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
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

CASES = TRAIN_CASES


@pytest.mark.parametrize("argv,code,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(zoo, files, tmp_path, argv, code, needle):
    before = snapshot(tmp_path)
    r = zoo(*[a.replace("{F}", str(files)) for a in argv])
    one_line_error(r, code, needle)
    assert snapshot(tmp_path) == before  # nothing changed, nothing added: no temp files, no empty runs
    assert not (tmp_path / "pwned.txt").exists() and not Path("pwned.txt").exists()


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


def test_the_bad_input_suite_is_large_enough():
    assert len(CASES) >= 45  # and the other commands' cases join below


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
