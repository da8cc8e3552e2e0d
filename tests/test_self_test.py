"""Self-testing artifacts: every export ships test vectors (seeded inputs and eager PyTorch's
outputs, `.npy` files named with their sha256 in each artifact's `zoo.json` and in export.json),
and `zoo-run FILE --self-test` (TorchScript, .pt2) and `node zoo-run.js FILE --self-test` (ONNX)
check a file against them with no Python: exit 0 when they match, 1 with one line otherwise.

Parametrized over the plugin registry: one target per plugin (the one that opts out of the fewest
formats) through every format. Also here: zoo-run naming libtorch's real cause when a TorchScript
model fails inside the interpreter.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import registry_plugins

from zoo import get_plugin
from zoo.export import artifacts
from zoo.export import vectors as zvectors

RUNTIME_OF = {"torchscript": "cpp", "pt2": "cpp", "onnx": "node"}
PREFIX = {"cpp": "zoo-run:", "node": "zoo-run-node:"}
CRASHES = ("Traceback", "terminate called", "Exception raised from", "Aborted", "Segmentation")


def self_test_target(plugin_name: str) -> str:
    """The target of a plugin that goes through the most formats."""
    targets = get_plugin(plugin_name).export_targets
    return min(targets, key=lambda t: len(t.skip_formats)).name


def assert_parity_passed(out: Path, output: str) -> None:
    """The export wrote its artifacts and every element-wise parity check passed: what the test
    vectors stand on. (Other verdicts in export.json, such as task-level parity on real data,
    are other tests' business.)"""
    manifest = out / "export.json"
    assert manifest.is_file(), output
    ran = [row for row in json.loads(manifest.read_text())["parity"] if row["status"] != "skipped"]
    assert ran and all(row["passed"] for row in ran), output


@pytest.fixture(scope="module")
def export_of(tmp_path_factory):
    """export_of(plugin) -> the directory of `zoo export PLUGIN --random-init --all-formats` of its
    self-test target (once per module: a .pt2 compiles C++)."""
    done: dict[str, Path] = {}
    home = tmp_path_factory.mktemp("self-test-home")

    def export(plugin_name: str) -> Path:
        if plugin_name not in done:
            from zoo.cli import cli

            out = tmp_path_factory.mktemp(f"export-{plugin_name}")
            args = ["export", plugin_name, "--random-init", "--all-formats", "--target", self_test_target(plugin_name)]
            args += ["--device", "cpu", "--batch-sizes", "2", "--no-latency", "--out", str(out)]
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("ZOO_HOME", str(home))
                r = CliRunner().invoke(cli, args, catch_exceptions=False)
            assert_parity_passed(out, r.stdout + r.stderr)
            done[plugin_name] = out
        return done[plugin_name]

    return export


@pytest.fixture
def command(request):
    """The command line of the runner that runs a format: command("onnx") -> [node, .../zoo-run.js]."""

    def make(fmt: str) -> list[str]:
        if RUNTIME_OF[fmt] == "cpp":
            return [str(request.getfixturevalue("zoo_run"))]
        return [shutil.which("node") or "node", str(request.getfixturevalue("node_script"))]

    return make


def self_test(command, artifact: Path, *args: str) -> subprocess.CompletedProcess:
    fmt = artifacts.read_metadata(artifact)["format"]
    return subprocess.run([*command(fmt), str(artifact), "--self-test", *args], capture_output=True, text=True)


def passed(proc: subprocess.CompletedProcess) -> dict:
    """The one JSON line of a self-test that passed."""
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    summary = json.loads(line)
    assert summary["self_test"] == "passed" and all(o["passed"] for o in summary["outputs"]), summary
    return summary


def failed(proc: subprocess.CompletedProcess, fmt: str) -> str:
    """The one stderr line of a self-test that failed (exit 1)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith(PREFIX[RUNTIME_OF[fmt]]), lines[0]
    assert not any(crash in proc.stderr for crash in CRASHES), proc.stderr
    return lines[0]


def artifact_paths(directory: Path) -> dict[str, Path]:
    manifest = json.loads((directory / "export.json").read_text())
    return {a["format"]: directory / a["path"] for a in manifest["artifacts"]}


def flip_last_byte(path: Path) -> bytes:
    """Change one data byte of a .npy file; returns the original bytes."""
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
    return original


# --------------------------------------------------------------------------- every plugin


@pytest.mark.slow
@pytest.mark.parametrize("plugin_name", registry_plugins())
def test_every_plugin_self_tests_in_the_native_runners(plugin_name, export_of, command, tmp_path):
    """The figure: every artifact passes its self-test in the runner that deploys it, and fails
    in one line naming the file when an output or an input vector is tampered with."""
    out = tmp_path / "export"
    shutil.copytree(export_of(plugin_name), out)
    paths = artifact_paths(out)
    target = get_plugin(plugin_name).target(self_test_target(plugin_name))
    assert set(paths) == {"torchscript", "onnx", "pt2"} - set(target.skip_formats)

    section = artifacts.read_metadata(paths["torchscript"])[zvectors.KEY]
    assert [e["name"] for e in section["inputs"]] == [s.name for s in target.inputs]
    assert [e["name"] for e in section["outputs"]] == [s.name for s in target.outputs]
    assert (section["rtol"], section["atol"]) == (target.rtol, target.atol)
    for fmt, path in paths.items():
        summary = passed(self_test(command, path))
        assert summary["format"] == fmt and summary["device"] == "cpu"
        assert [o["name"] for o in summary["outputs"]] == [s.name for s in target.outputs]
        assert (summary["rtol"], summary["atol"]) == (target.rtol, target.atol)
        assert summary["worst"]["output"] in {s.name for s in target.outputs}

    for kind in ("outputs", "inputs"):
        vector = out / section[kind][0]["path"]
        original = flip_last_byte(vector)
        for fmt, path in paths.items():
            line = failed(self_test(command, path), fmt)
            assert f"test vector {vector} was modified after export" in line, line
        vector.write_bytes(original)


# --------------------------------------------------------------------------- what a self-test reports


def rewrite_metadata(path: Path, change) -> None:
    """Rewrite the zoo.json inside an artifact, as someone fixing up the hashes would."""
    fmt = artifacts.read_metadata(path)["format"]
    if fmt == "torchscript":
        extra = {"zoo.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), _extra_files=extra)
            torch.jit.save(module, str(path), _extra_files={"zoo.json": json.dumps(change(json.loads(extra["zoo.json"])))})
    elif fmt == "onnx":
        import onnx

        proto = onnx.load(str(path))
        for entry in proto.metadata_props:
            if entry.key == "zoo.json":
                entry.value = json.dumps(change(json.loads(entry.value)))
        onnx.save(proto, str(path))
    else:  # .pt2: a zip whose *_metadata.json holds zoo.json as a string
        tmp = path.with_suffix(".rewritten")
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                data = zin.read(info)
                if info.filename.endswith("_metadata.json"):
                    meta = json.loads(data)
                    if "zoo.json" in meta:
                        meta["zoo.json"] = json.dumps(change(json.loads(meta["zoo.json"])))
                    data = json.dumps(meta).encode()
                zout.writestr(info, data)
        tmp.replace(path)


@pytest.mark.slow
def test_a_changed_value_fails_with_the_worst_difference(export_of, command, tmp_path):
    """An output vector changed and re-hashed into the metadata (so the bytes check passes): the
    values decide, and the one JSON line and the one error line name the output and the element."""
    out = tmp_path / "vae"
    shutil.copytree(export_of("vae"), out)
    section = artifacts.read_metadata(out / "decoder.torchscript")[zvectors.KEY]
    (entry,) = section["outputs"]
    image = np.load(out / entry["path"])
    image[1, 0, 3, 5] += 0.5
    np.save(out / entry["path"], image)
    digest = hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest()

    def rehash(meta):
        meta[zvectors.KEY]["outputs"][0]["sha256"] = digest
        return meta

    for fmt, path in artifact_paths(out).items():
        rewrite_metadata(path, rehash)
        proc = self_test(command, path)
        line = failed(proc, fmt)
        assert "self-test failed: output 'image' differs from its test vector at [1, 0, 3, 5]" in line, line
        assert "atol 1e-05 + rtol 0.0001" in line
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["self_test"] == "failed"
        assert summary["worst"]["output"] == "image" and summary["worst"]["index"] == [1, 0, 3, 5]
        assert summary["max_abs"] == pytest.approx(0.5, abs=1e-3)
        assert summary["outputs"][0]["passed"] is False


@pytest.mark.slow
def test_missing_vectors_and_old_artifacts_are_named(export_of, command, tmp_path):
    source = export_of("vae")
    alone = tmp_path / "alone"
    alone.mkdir()
    for fmt, path in artifact_paths(source).items():
        shutil.copy(path, alone / path.name)
        line = failed(self_test(command, alone / path.name), fmt)
        assert f"test vector {alone / 'vectors' / 'decoder' / 'inputs' / 'z.npy'} not found" in line, line
        assert "copy the export's vectors/ directory beside " + path.name in line

    # An artifact from before test vectors: its metadata names none.
    old = tmp_path / "old"
    shutil.copytree(source, old)
    for fmt, path in artifact_paths(old).items():
        rewrite_metadata(path, lambda meta: {k: v for k, v in meta.items() if k != zvectors.KEY})
        line = failed(self_test(command, path), fmt)
        assert f"{path.name} names no test vectors in its metadata: export it again" in line, line
        # Self-test takes its inputs from the vectors only.
        proc = subprocess.run([*command(fmt), str(path), "--self-test", "--inputs", str(tmp_path)], capture_output=True, text=True)
        assert proc.returncode == 2 and "--self-test reads the inputs" in proc.stderr


# --------------------------------------------------------------------------- export.json and zoo verify


@pytest.mark.slow
def test_manifest_lists_the_vectors_and_verify_checks_them(zoo, zoo_run, node_script, tmp_path):
    out = tmp_path / "out"
    args = ["--random-init", "--target", "decoder", "--device", "cpu", "--batch-sizes", "1", "--no-latency", "--out", out]
    assert_parity_passed(out, repr(zoo("export", "vae", "--torchscript", *args)))
    # A second export into the directory (same weights) keeps the vectors the first one named.
    assert_parity_passed(out, repr(zoo("export", "vae", "--onnx", *args)))
    manifest = json.loads((out / "export.json").read_text())
    sections = [record[zvectors.KEY] for record in manifest["artifacts"]]
    assert len(sections) == 2 and sections[0] == sections[1]
    for record in manifest["artifacts"]:
        assert artifacts.read_metadata(out / record["path"])[zvectors.KEY] == record[zvectors.KEY]
    for entry in zvectors.files(sections[0]):
        assert hashlib.sha256((out / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
        assert entry["path"].startswith("vectors/decoder/")
    for path in (out / "decoder.torchscript", out / "decoder.onnx"):
        runner = [str(zoo_run)] if path.suffix == ".torchscript" else ["node", str(node_script)]
        passed(subprocess.run([*runner, str(path), "--self-test"], capture_output=True, text=True))

    report = zoo("verify", out, "--device", "cpu", "--no-latency", "--json").json()
    assert all(row["passed"] for row in report["parity"] if row["status"] != "skipped"), report
    flip_last_byte(out / "vectors" / "decoder" / "outputs" / "image.npy")
    r = zoo("verify", out, "--device", "cpu", "--no-latency")
    assert r.exit_code == 1, r
    assert "test vector" in r.stderr and "image.npy was modified after export" in r.stderr and "refusing" in r.stderr
    (out / "vectors" / "decoder" / "outputs" / "image.npy").unlink()
    r = zoo("verify", out, "--device", "cpu", "--no-latency")
    assert r.exit_code == 1 and "image.npy listed in export.json is missing" in r.stderr


def test_vectors_of_the_same_weights_are_kept(tmp_path):
    """Re-exporting into a directory keeps vector files that still describe the model (identical
    inputs, outputs within the tolerances), so the artifacts exported before still match them."""
    inputs = {"z": np.arange(6, dtype=np.float32).reshape(2, 3)}
    first = zvectors.save(tmp_path, "decoder", inputs, {"image": np.ones((2, 4), np.float32)}, 1e-4, 1e-5)
    again = zvectors.save(tmp_path, "decoder", inputs, {"image": np.ones((2, 4), np.float32) + 1e-7}, 1e-4, 1e-5)
    assert again == first
    other = zvectors.save(tmp_path, "decoder", inputs, {"image": np.zeros((2, 4), np.float32)}, 1e-4, 1e-5)
    assert other["outputs"][0]["sha256"] != first["outputs"][0]["sha256"]
    assert other["inputs"] == first["inputs"]
    assert np.load(tmp_path / other["outputs"][0]["path"]).sum() == 0
    # Names that are no safe file names are stored by position.
    odd = zvectors.save(tmp_path, "../up", {"a/b": inputs["z"]}, {"..": inputs["z"]}, 1e-4, 1e-5)
    assert [e["path"] for e in zvectors.files(odd)] == ["vectors/target0/inputs/input0.npy", "vectors/target0/outputs/output0.npy"]


# --------------------------------------------------------------------------- integers, and libtorch's real cause


class Labeller(torch.nn.Module):
    """Scores and their argmax: an int64 output, compared exactly."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.linear(x)  # (batch, 3)
        return scores, scores.argmax(dim=1)  # (batch,) int64


def write_labeller(directory: Path, fmt: str, labels_shift: int = 0) -> Path:
    """A hand-made artifact with zoo.json and test vectors, as `zoo export` would write them."""
    torch.manual_seed(0)
    model = Labeller().eval()
    x = torch.randn(2, 4)
    with torch.no_grad():
        scores, labels = model(x)
    section = zvectors.save(
        directory, "labeller", {"x": x.numpy()}, {"scores": scores.numpy(), "labels": labels.numpy() + labels_shift}, 1e-4, 1e-5
    )
    meta = {
        "plugin": "test",
        "target": "labeller",
        "format": fmt,
        "inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
        "outputs": [
            {"name": "scores", "shape": ["batch", 3], "dtype": "float32"},
            {"name": "labels", "shape": ["batch"], "dtype": "int64"},
        ],
        "rtol": 1e-4,
        "atol": 1e-5,
        zvectors.KEY: section,
    }
    path = directory / f"labeller.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.save(torch.jit.script(model), str(path), _extra_files={"zoo.json": json.dumps(meta)})
        else:
            import onnx

            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=True,
                external_data=False,
                input_names=["x"],
                output_names=["scores", "labels"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
            proto = onnx.load(str(path))
            entry = proto.metadata_props.add()
            entry.key, entry.value = "zoo.json", json.dumps(meta)
            onnx.save(proto, str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_integer_outputs_compare_exactly(fmt, command, tmp_path):
    summary = passed(self_test(command, write_labeller(tmp_path / "good", fmt)))
    assert [o["dtype"] for o in summary["outputs"]] == ["float32", "int64"]
    line = failed(self_test(command, write_labeller(tmp_path / "off-by-one", fmt, labels_shift=1)), fmt)
    assert "output 'labels' differs from its test vector at [0]" in line, line


@pytest.mark.slow
def test_zoo_run_names_the_real_cause_of_a_torchscript_failure(zoo_run, tmp_path):
    """An embedding fed an id past its table (the metadata declares no value_range, so zoo-run's
    own range check lets it through): libtorch's cause, not the interpreter's preamble."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = {
            "inputs": [{"name": "ids", "shape": ["batch"], "dtype": "int64"}],
            "outputs": [{"name": "vectors", "shape": ["batch", 3], "dtype": "float32"}],
        }
        torch.jit.save(
            torch.jit.script(torch.nn.Embedding(5, 3)), str(tmp_path / "embed.torchscript"), _extra_files={"zoo.json": json.dumps(meta)}
        )
    np.save(tmp_path / "ids.npy", np.array([1, 7], np.int64))
    proc = subprocess.run(
        [str(zoo_run), str(tmp_path / "embed.torchscript"), f"ids={tmp_path / 'ids.npy'}", "--outputs", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    line = failed(proc, "torchscript")
    assert line == "zoo-run: running embed.torchscript failed: RuntimeError: index out of range in self", line
