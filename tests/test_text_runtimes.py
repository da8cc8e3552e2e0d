"""Greedy text is the same in every runtime: a language model trained for a few steps and
exported, continued from the same prompt by `zoo sample --temperature 0` (from the checkpoint
and from each artifact), by export/cpp/examples/generate_text (TorchScript and .pt2) and by
export/node/examples/generate-text.js (ONNX), gives exactly the same characters.

The text is multilingual, with characters of one to four UTF-8 bytes (and, above U+FFFF, a
surrogate pair in the metadata's JSON and in a JavaScript string), so encoding the prompt and
decoding the output are checked along with the models. The C++ runner and the Node runner come
from the session's shared build (conftest's `zoo_run` and `node_script`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import one_line_error

from zoo.export import artifacts

# Repeated until the tiny models know it by heart, so their greedy text is long and varied.
TEXT = (
    "Le café déjà vu — naïve façade, coöperate; Ωμέγα and ünïcödé: 日本語のテキスト 🙂 emoji 🐍 snake.\n"
    "The quick brown fox jumps over the lazy dog. ¿Qué tal? Grüße aus Köln! ½ × 3 = 1.5\n"
) * 60
PROMPT = "Le café 🙂 "
LENGTH = 120
TRAIN = ["--max-steps", "150", "--block-size", "24", "--batch-size", "16", "--lr", "0.01", "--dropout", "0", "--threads", "1"]
# plugin -> (its small hyperparameters, the target generation runs, its artifacts)
MODELS = {
    "rnn": (["--hidden", "32", "--layers", "2", "--embedding", "16"], "step", ("step.torchscript", "step.cpu.pt2", "step.onnx")),
    "transformer": (
        ["--layers", "1", "--heads", "2", "--width", "32", "--warmup-steps", "10"],
        "logits",
        ("logits.torchscript", "logits.cpu.pt2", "logits.onnx"),
    ),
}


def program(zoo_run: Path, node_script: Path, artifact: Path) -> list[str]:
    """The command line of the example that runs `artifact`: C++ for .torchscript and .pt2, Node for .onnx."""
    if artifact.suffix == ".onnx":
        return [shutil.which("node") or "node", str(node_script.parent / "examples" / "generate-text.js")]
    exe = zoo_run.parent / "generate_text"
    if not exe.is_file():
        pytest.fail(
            f"generate_text is not beside {zoo_run}: export/runtimes/cpp.py must keep it with the programs it copies out of the build"
        )
    return [str(exe)]


def with_tied_scores(plugin: str, checkpoint: Path, ids: tuple[int, int], path: Path) -> Path:
    """A copy of `checkpoint` whose next-character scores, whatever the input, are exactly 1 at
    both `ids` and 0 elsewhere: exact in float arithmetic, so every runtime sees the same tie."""
    state = torch.load(checkpoint, weights_only=True)
    model = state["model"]
    if plugin == "rnn":  # scores = head(h) = 0 · h + bias
        model["head.weight"].zero_()
        model["head.bias"].zero_()
        model["head.bias"][list(ids)] = 1.0
    else:  # scores = ln(x) @ tokens.weight.T (tied output layer); ln(x) = its bias = (1, 0, ..., 0)
        model["ln.weight"].zero_()
        model["ln.bias"].zero_()
        model["ln.bias"][0] = 1.0
        model["tokens.weight"][:, 0] = 0.0
        model["tokens.weight"][list(ids), 0] = 1.0
    torch.save(state, path)
    return path


def run(command: list[str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *args, "--threads", "1"], capture_output=True, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("plugin", list(MODELS))
def test_greedy_text_is_the_same_in_every_runtime(plugin, zoo, zoo_run, node_script, tmp_path):
    hyperparameters, target, files = MODELS[plugin]
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    r = zoo("train", plugin, "--data", f"text:{tmp_path / 'text.txt'}", *TRAIN, *hyperparameters, "--out", tmp_path / "run")
    assert r.exit_code == 0, r
    out = tmp_path / "export"
    r = zoo(
        "export", plugin, "--checkpoint", tmp_path / "run" / "last.pt", "--target", target, "--all-formats",
        "--device", "cpu", "--no-latency", "--batch-sizes", "1", "--out", out,
    )  # fmt: skip
    assert r.exit_code == 0, r
    assert all((out / name).is_file() for name in files), sorted(p.name for p in out.iterdir())

    sample = ["sample", plugin, "--prompt", PROMPT, "--temperature", "0", "--length", str(LENGTH), "--device", "cpu"]
    r = zoo(*sample, "--checkpoint", tmp_path / "run" / "last.pt")
    assert r.exit_code == 0, r
    expected = r.stdout
    assert expected.startswith(PROMPT) and len(expected) == len(PROMPT) + LENGTH + 1, expected  # "\n" ends it
    continuation = expected[len(PROMPT) : -1]
    # A model that learned the text: varied characters, some of them beyond ASCII.
    assert len(set(continuation)) > 10 and any(ord(c) > 127 for c in continuation), continuation

    texts = {}
    for name in files:
        r = zoo(*sample, "--artifact", out / name)
        assert r.exit_code == 0, r
        texts[f"python {name}"] = r.stdout
        proc = run(program(zoo_run, node_script, out / name), str(out / name), PROMPT, str(LENGTH))
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        texts[f"{'node' if name.endswith('.onnx') else 'c++'} {name}"] = proc.stdout.decode("utf-8")
    different = {source: text for source, text in texts.items() if text != expected}
    assert not different, f"checkpoint: {expected!r}\n" + "\n".join(f"{s}: {t!r}" for s, t in different.items())

    # A prompt character outside the vocabulary is one line naming it, in every runtime.
    r = zoo("sample", plugin, "--prompt", "café 🐍 Z", "--temperature", "0", "--artifact", out / files[0])
    one_line_error(r, 2, "vocabulary lacks: 'Z'")
    for name in files:
        proc = run(program(zoo_run, node_script, out / name), str(out / name), "café 🐍 Z€", "5")
        lines = proc.stderr.decode("utf-8").strip().splitlines()
        assert proc.returncode == 1 and proc.stdout == b"", (name, proc)
        assert len(lines) == 1 and "the prompt has characters the model's vocabulary lacks: 'Z', '€' (it knows" in lines[0], (name, lines)

    # Ties go to the lowest id, as torch.argmax breaks them, in every runtime.
    vocabulary = artifacts.read_metadata(out / files[0])["data_info"]["vocabulary"]
    ids = (vocabulary.index("🙂"), vocabulary.index("é"))
    tied = with_tied_scores(plugin, tmp_path / "run" / "last.pt", ids, tmp_path / "tied.pt")
    r = zoo(
        "export", plugin, "--checkpoint", tied, "--target", target, "--torchscript", "--onnx",
        "--device", "cpu", "--no-latency", "--batch-sizes", "1", "--out", tmp_path / "tied",
    )  # fmt: skip
    assert r.exit_code == 0, r
    expected = PROMPT + vocabulary[min(ids)] * 20 + "\n"
    r = zoo("sample", plugin, "--prompt", PROMPT, "--temperature", "0", "--length", "20", "--device", "cpu", "--checkpoint", tied)
    assert r.exit_code == 0 and r.stdout == expected, r
    for name in files[0], files[2]:  # the .torchscript in C++, the .onnx in Node
        proc = run(program(zoo_run, node_script, tmp_path / "tied" / name), str(tmp_path / "tied" / name), PROMPT, "20")
        assert proc.returncode == 0 and proc.stdout.decode("utf-8") == expected, (name, proc)
