"""The native runtimes: `zoo-run` (libtorch C++: TorchScript and .pt2) and the Node runner
(onnxruntime-node: ONNX), through `zoo.export.runtimes` and their command lines.

The C++ runner is built once per session (or once ever, when CI keeps $ZOO_BUILD_CACHE) and
the Node runner installed once. Test artifacts are a tiny conditional generator written the way
`zoo export` writes them (same `zoo.json` metadata), so these tests do not depend on any plugin;
the end-to-end test at the bottom goes through `zoo export` itself. A missing cmake, compiler or
node fails the tests: the runners are part of zoo, not optional extras.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from zoo.errors import UsageError, ZooError
from zoo.export import runtimes

# (runtime, artifact format) pairs: every format in the runner that runs it.
RUNS = [("cpp", "torchscript"), ("cpp", "pt2"), ("node", "onnx")]
RUN_IDS = [f"{r}-{f}" for r, f in RUNS]
PREFIX = {"cpp": "zoo-run:", "node": "zoo-run-node:"}
RTOL, ATOL = 1e-4, 1e-5
LATENT, CLASSES, SIDE = 4, 5, 4


class TinyGenerator(nn.Module):
    """A conditional generator in miniature: noise and a class label in, an image and a score
    out. Two inputs of two dtypes and two outputs exercise names, order and int64 everywhere."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(CLASSES, LATENT)
        self.linear = nn.Linear(LATENT, SIDE * SIDE)
        self.side = SIDE  # an attribute, since TorchScript cannot read module globals

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.linear(z + self.embed(label))  # (batch, 16)
        image = torch.tanh(hidden).view(-1, 1, self.side, self.side)  # (batch, 1, 4, 4) in [-1, 1]
        return image, hidden.sum(dim=1)  # (batch,)


def tiny_model() -> TinyGenerator:
    torch.manual_seed(0)
    return TinyGenerator().eval()


def tiny_metadata(fmt: str, device: str = "cpu") -> dict:
    """The zoo.json document, with the keys and shapes `zoo export` writes."""
    return {
        "plugin": "tiny",
        "plugin_version": "0",
        "target": "generator",
        "format": fmt,
        "zoo_version": "0.1.0",
        "torch_version": torch.__version__,
        "inputs": [
            {"name": "z", "shape": ["batch", LATENT], "dtype": "float32", "range": "standard normal noise"},
            {
                "name": "label",
                "shape": ["batch"],
                "dtype": "int64",
                "range": f"class index in [0, {CLASSES})",
                "value_range": [0, CLASSES - 1],
            },
        ],
        "outputs": [
            {"name": "image", "shape": ["batch", 1, SIDE, SIDE], "dtype": "float32", "range": "[-1, 1]", "value_range": [-1.0, 1.0]},
            {"name": "score", "shape": ["batch"], "dtype": "float32", "range": "unbounded"},
        ],
        "checkpoint_sha256": None,
        "exported_with": "tests/test_runtimes.py",
        "rtol": RTOL,
        "atol": ATOL,
        "device": device,
    }


def tiny_inputs(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "z": torch.randn(batch, LATENT, generator=gen).numpy(),
        "label": torch.randint(0, CLASSES, (batch,), generator=gen).numpy(),
    }


def eager(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        image, score = tiny_model()(torch.from_numpy(inputs["z"]), torch.from_numpy(inputs["label"]))
    return {"image": image.numpy(), "score": score.numpy()}


def write_artifact(out: Path, fmt: str, device: str = "cpu") -> Path:
    """Export the tiny generator as `zoo export` does: dynamic batch (captured at batch 2, since
    torch.export specializes 0 and 1), metadata under zoo.json."""
    model = tiny_model().to(device)
    example = tuple(torch.from_numpy(a).to(device) for a in tiny_inputs(2).values())
    meta = json.dumps(tiny_metadata(fmt, device))
    batch = torch.export.Dim("batch")
    path = out / f"tiny.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit and torch.onnx deprecation chatter
        if fmt == "torchscript":
            torch.jit.save(torch.jit.script(model), str(path), _extra_files={"zoo.json": meta})
        elif fmt == "onnx":
            import onnx

            torch.onnx.export(
                model,
                example,
                str(path),
                dynamo=True,
                external_data=False,
                input_names=["z", "label"],
                output_names=["image", "score"],
                dynamic_shapes=({0: batch}, {0: batch}),
                verbose=False,
            )
            proto = onnx.load(str(path))
            entry = proto.metadata_props.add()
            entry.key, entry.value = "zoo.json", meta
            onnx.save(proto, str(path))
        else:
            program = torch.export.export(model, example, dynamic_shapes=({0: batch}, {0: batch}))
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(path), inductor_configs={"aot_inductor.metadata": {"zoo.json": meta}}
            )
    return path


def rewrite_pt2(src: Path, dst: Path, metadata=None, library=None) -> Path:
    """A copy of a .pt2 package with its AOTInductor metadata and/or compiled library changed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if metadata and info.filename.endswith("_metadata.json"):
                data = json.dumps(metadata(json.loads(data))).encode()
            if library and info.filename.endswith(".so"):
                data = library(data)
            zout.writestr(info, data)
    return dst


def require(runtime: str) -> None:
    ok, reason = runtimes.available(runtime)
    if not ok:
        pytest.fail(f"the {runtime} runtime is part of zoo and must work on this machine: {reason}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _shared_build_cache(build_cache, monkeypatch):
    # conftest gives every test its own ZOO_HOME; the runners are shared through ZOO_BUILD_CACHE.
    monkeypatch.setenv("ZOO_BUILD_CACHE", str(build_cache))


@pytest.fixture(scope="session")
def zoo_run(build_cache) -> Path:
    require("cpp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_BUILD_CACHE", str(build_cache))
        return runtimes.cpp_runner()


@pytest.fixture(scope="session")
def node_script(build_cache) -> Path:
    require("node")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_BUILD_CACHE", str(build_cache))
        return runtimes.node_runner()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """tiny.torchscript, tiny.onnx and tiny.pt2 (one of the session's two AOTInductor compiles; the
    other is vae's decoder in the `zoo export` test)."""
    out = tmp_path_factory.mktemp("tiny-artifacts")
    return {fmt: write_artifact(out, fmt) for fmt in ("torchscript", "onnx", "pt2")}


@pytest.fixture
def command(request):
    """The command line of a runner: command("cpp") -> [.../zoo-run]."""

    def make(runtime: str) -> list[str]:
        if runtime == "cpp":
            return [str(request.getfixturevalue("zoo_run"))]
        return [shutil.which("node") or "node", str(request.getfixturevalue("node_script"))]

    return make


def one_line_failure(proc: subprocess.CompletedProcess, runtime: str) -> str:
    """Assert the runner failed the way users should see it: non-zero exit, one line, its prefix."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode > 0, proc
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith(PREFIX[runtime]), lines[0]
    for crash in ("Traceback", "terminate called", "Exception raised from", "Aborted", "Segmentation"):
        assert crash not in proc.stderr
    return lines[0]


def save_inputs(directory: Path, inputs: dict[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in inputs.items():
        np.save(directory / f"{name}.npy", array)
    return directory


# --------------------------------------------------------------------------- availability


@pytest.mark.parametrize("runtime", runtimes.names())
def test_runtime_is_available_here(runtime):
    ok, reason = runtimes.available(runtime)
    assert ok, f"the {runtime} runtime must be available wherever zoo's tests run: {reason}"


def test_missing_tools_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_BUILD_CACHE", str(tmp_path / "empty-cache"))  # nothing built yet
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with nothing on it
    monkeypatch.delenv("CXX", raising=False)
    assert runtimes.available("cpp") == (False, "cmake not found (install CMake >= 3.18 to build zoo-run)")
    assert runtimes.available("node") == (False, "node not found (install Node.js >= 18 to run ONNX in Node)")
    with pytest.raises(ZooError, match="^the node runtime is not available: node not found"):
        runtimes.run("node", tmp_path / "model.onnx", {})


def test_failed_build_is_one_line_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", shutil.which("false") or "/bin/false")  # a "compiler" that fails every compile
    with pytest.raises(ZooError) as err:
        runtimes.cpp_runner()
    message = str(err.value)
    assert message.startswith("building zoo-run failed: ") and "\n" not in message
    log = Path(message.split("(full log: ")[1].rstrip(")"))
    assert log.is_file() and "cmake" in log.read_text()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [log.name]  # no half-built runner left behind


def test_unknown_runtime_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="unknown runtime 'java'"):
        runtimes.available("java")
    with pytest.raises(UsageError, match="unknown runtime 'java'"):
        runtimes.run("java", tmp_path / "model.onnx", {})


# --------------------------------------------------------------------------- parity


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("runtime,fmt", RUNS, ids=RUN_IDS)
def test_runner_matches_eager(runtime, fmt, batch, artifacts, request):
    request.getfixturevalue("zoo_run" if runtime == "cpp" else "node_script")
    inputs = tiny_inputs(batch, seed=batch)
    got = runtimes.run(runtime, artifacts[fmt], inputs)
    expected = eager(inputs)
    assert list(got) == ["image", "score"]  # metadata order
    for name, want in expected.items():
        assert got[name].shape == want.shape and got[name].dtype == want.dtype, name
        np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=ATOL, err_msg=f"{runtime} {fmt} {name}")


@pytest.mark.slow
@pytest.mark.parametrize("runtime,fmt", RUNS, ids=RUN_IDS)
def test_explicit_input_files_and_summary(runtime, fmt, artifacts, command, tmp_path):
    """NAME=FILE.npy arguments instead of an input directory; one JSON line says what was written."""
    inputs = tiny_inputs(3)
    np.save(tmp_path / "noise.npy", inputs["z"])
    np.save(tmp_path / "classes.npy", inputs["label"])
    proc = subprocess.run(
        [
            *command(runtime),
            str(artifacts[fmt]),
            f"z={tmp_path / 'noise.npy'}",
            f"label={tmp_path / 'classes.npy'}",
            "--outputs",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["format"] == fmt and summary["device"] == "cpu"
    assert summary["outputs"] == [
        {"name": "image", "shape": [3, 1, SIDE, SIDE], "dtype": "float32"},
        {"name": "score", "shape": [3], "dtype": "float32"},
    ]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "image.npy"), eager(inputs)["image"], rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("runtime,fmt", RUNS, ids=RUN_IDS)
def test_metadata_is_read_from_the_file(runtime, fmt, artifacts, request):
    request.getfixturevalue("zoo_run" if runtime == "cpp" else "node_script")
    assert runtimes.metadata(runtime, artifacts[fmt]) == tiny_metadata(fmt)


@pytest.mark.slow
@pytest.mark.parametrize("runtime,fmt", RUNS, ids=RUN_IDS)
def test_latency_is_timed_inside_the_runner(runtime, fmt, artifacts, request):
    request.getfixturevalue("zoo_run" if runtime == "cpp" else "node_script")
    summary = runtimes.latency(runtime, artifacts[fmt], tiny_inputs(1), repeat=7, warmup=2, threads=1)
    assert summary["runs"] == 7 and summary["warmup"] == 2
    assert 0 < summary["min_ms"] <= summary["median_ms"]
    assert summary["threads"] == 1


# --------------------------------------------------------------------------- bad input

# name -> (inputs changed from a good batch of 2, what the one-line error must say)
BAD_INPUTS = {
    "wrong-dtype": (lambda i: {**i, "z": i["z"].astype(np.float64)}, "input 'z' must be float32, got float64"),
    "wrong-rank": (lambda i: {**i, "z": i["z"][:, :, None]}, "input 'z' must have shape [batch, 4] (rank 2), got [2, 4, 1]"),
    "wrong-size": (lambda i: {**i, "z": np.zeros((2, 5), np.float32)}, "got [2, 5] (dimension 1 must be 4)"),
    "batch-mismatch": (lambda i: {**i, "label": np.zeros(3, np.int64)}, "input 'label' has batch 3 but input 'z' has batch 2"),
    "missing-input": (lambda i: {"z": i["z"]}, "label.npy not found (the model takes z [batch, 4] float32, label [batch] int64)"),
    # Integers outside their declared value_range: ONNX would wrap -1 to the last class silently.
    "label-below-range": (lambda i: {**i, "label": np.array([0, -1], np.int64)}, f"input 'label' must be in [0, {CLASSES - 1}], got -1"),
    "label-above-range": (
        lambda i: {**i, "label": np.array([CLASSES, 1], np.int64)},
        f"input 'label' must be in [0, {CLASSES - 1}], got {CLASSES}",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("runtime,fmt", RUNS, ids=RUN_IDS)
def test_bad_inputs_give_one_line(runtime, fmt, case, artifacts, command, tmp_path):
    change, message = BAD_INPUTS[case]
    inputs = change(tiny_inputs(2))
    in_dir = save_inputs(tmp_path / "in", inputs)
    proc = subprocess.run(
        [*command(runtime), str(artifacts[fmt]), "--inputs", str(in_dir), "--outputs", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    line = one_line_failure(proc, runtime)
    assert message in line
    assert not (tmp_path / "out").exists()  # nothing written on failure
    # The Python API raises the runner's own line (naming input files without its temporary directory).
    with pytest.raises(ZooError) as err:
        runtimes.run(runtime, artifacts[fmt], inputs)
    assert str(err.value) == line.replace(f"{in_dir}{os.sep}", "")


@pytest.mark.slow
@pytest.mark.parametrize("runtime,fmt", RUNS, ids=RUN_IDS)
def test_bad_npy_files_give_one_line(runtime, fmt, artifacts, command, tmp_path):
    good = tiny_inputs(2)
    cases = {
        "not-npy": (b"label,1\n", "is not a .npy file"),
        "truncated": (None, "is truncated"),
        "fortran": (np.asfortranarray(np.zeros((2, 4), np.float32)), "is Fortran-ordered"),
    }
    for name, (content, message) in cases.items():
        directory = save_inputs(tmp_path / name, good)
        if isinstance(content, bytes):
            (directory / "z.npy").write_bytes(content)
        elif content is None:
            data = (directory / "z.npy").read_bytes()
            (directory / "z.npy").write_bytes(data[:-3])
        else:
            np.save(directory / "z.npy", content)
        proc = subprocess.run([*command(runtime), str(artifacts[fmt]), "--inputs", str(directory)], capture_output=True, text=True)
        line = one_line_failure(proc, runtime)
        assert "input 'z'" in line and message in line, (name, line)


def _write_checkpoint(path: Path) -> Path:
    torch.save({"model": tiny_model().state_dict()}, path)
    return path


def _truncate(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


@pytest.mark.slow
def test_cpp_refuses_files_that_are_not_its_models(artifacts, command, tmp_path):
    no_metadata = tmp_path / "plain.torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny_model()), str(no_metadata))
        exported_program = tmp_path / "program.pt2"
        torch.export.save(
            torch.export.export(tiny_model(), tuple(torch.from_numpy(a) for a in tiny_inputs(2).values())), str(exported_program)
        )
    cases = {
        artifacts["onnx"]: "tiny.onnx looks like an ONNX model: zoo-run runs .torchscript and .pt2 files",
        save_inputs(tmp_path / "in", tiny_inputs(2)) / "z.npy": "z.npy is not a TorchScript or .pt2 file (not a zip archive)",
        _write_checkpoint(tmp_path / "last.pt"): "last.pt is a torch.save file (a checkpoint?), not an exported model",
        _truncate(artifacts["torchscript"], tmp_path / "cut.torchscript"): "cut.torchscript is not a readable TorchScript or .pt2 archive",
        _truncate(artifacts["pt2"], tmp_path / "cut.pt2"): "cut.pt2 is not a readable TorchScript or .pt2 archive",
        no_metadata: "plain.torchscript has no zoo.json metadata",
        exported_program: "program.pt2 is a torch.export program without AOTInductor code",
        tmp_path / "absent.pt2": "absent.pt2 not found",
    }
    for path, message in cases.items():
        proc = subprocess.run([*command("cpp"), str(path), "--inputs", str(tmp_path / "in")], capture_output=True, text=True)
        assert message in one_line_failure(proc, "cpp")


@pytest.mark.slow
def test_node_refuses_files_that_are_not_its_models(artifacts, command, tmp_path):
    import onnx

    proto = onnx.load(str(artifacts["onnx"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    cases = {
        artifacts["pt2"]: "tiny.pt2 is a zip archive (TorchScript or .pt2?): the Node runner runs .onnx files",
        artifacts["torchscript"]: "tiny.torchscript is a zip archive",
        save_inputs(tmp_path / "in", tiny_inputs(2)) / "z.npy": "z.npy is not an ONNX model",
        _truncate(artifacts["onnx"], tmp_path / "cut.onnx"): "cut.onnx is not an ONNX model",
        tmp_path / "plain.onnx": "plain.onnx has no zoo.json metadata",
        tmp_path / "absent.onnx": "absent.onnx not found",
    }
    for path, message in cases.items():
        proc = subprocess.run([*command("node"), str(path), "--inputs", str(tmp_path / "in")], capture_output=True, text=True)
        assert message in one_line_failure(proc, "node")


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["cpp", "node"])
def test_bad_arguments_exit_2(runtime, artifacts, command):
    model = artifacts["pt2" if runtime == "cpp" else "onnx"]
    for args in (["--repeat", "0"], ["--no-such-option"], []):
        proc = subprocess.run([*command(runtime), *([str(model)] if args else []), *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(PREFIX[runtime])


# --------------------------------------------------------------------------- .pt2 built elsewhere


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so a CUDA .pt2 is runnable here")
def test_cuda_pt2_on_a_cpu_machine_is_refused(artifacts, command, tmp_path):
    """A .pt2 whose metadata says it was compiled for CUDA (rewritten from the CPU package: no CUDA
    compiler is needed to test the refusal) gives one line, before the loader touches it."""

    def to_cuda(meta):
        zoo_json = json.loads(meta["zoo.json"])
        return {**meta, "AOTI_DEVICE_KEY": "cuda", "zoo.json": json.dumps({**zoo_json, "device": "cuda"})}

    pt2 = rewrite_pt2(artifacts["pt2"], tmp_path / "tiny.cuda.pt2", metadata=to_cuda)
    save_inputs(tmp_path / "in", tiny_inputs(2))
    proc = subprocess.run([*command("cpp"), str(pt2), "--inputs", str(tmp_path / "in")], capture_output=True, text=True)
    assert one_line_failure(proc, "cpp") == (
        "zoo-run: tiny.cuda.pt2 was compiled for CUDA and this machine has no CUDA device: export a .pt2 for cpu to run it here"
    )
    # Only the zoo metadata saying cuda is refused the same way.
    only_zoo = rewrite_pt2(
        artifacts["pt2"],
        tmp_path / "only-zoo.pt2",
        metadata=lambda m: {**m, "zoo.json": json.dumps({**json.loads(m["zoo.json"]), "device": "cuda"})},
    )
    with pytest.raises(ZooError, match="compiled for CUDA and this machine has no CUDA device"):
        runtimes.run("cpp", only_zoo, tiny_inputs(2))


@pytest.mark.slow
def test_pt2_for_another_cpu_architecture_is_refused(artifacts, zoo_run, tmp_path):
    pt2 = rewrite_pt2(artifacts["pt2"], tmp_path / "arm.pt2", metadata=lambda m: {**m, "AOTI_MACHINE": "riscv64"})
    with pytest.raises(ZooError, match=r"^zoo-run: arm.pt2 was compiled for riscv64 CPUs, this one is"):
        runtimes.run("cpp", pt2, tiny_inputs(2))


@pytest.mark.slow
def test_broken_pt2_library_gives_one_line_and_leaves_no_files(artifacts, command, tmp_path):
    """The loader's own failure (here: dlopen of a damaged library) is caught, and the directory
    it unpacked into is removed even though the loader leaks it on failure."""
    pt2 = rewrite_pt2(artifacts["pt2"], tmp_path / "broken.pt2", library=lambda so: b"\x7fELF" + bytes(200))
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    save_inputs(tmp_path / "in", tiny_inputs(2))
    proc = subprocess.run(
        [*command("cpp"), str(pt2), "--inputs", str(tmp_path / "in")],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert one_line_failure(proc, "cpp").startswith("zoo-run: cannot load broken.pt2: ")
    assert list(scratch.iterdir()) == []


# --------------------------------------------------------------------------- the C++ example


def read_pnm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic, size, maxval, pixels = data.split(b"\n", 3)
    width, height = (int(v) for v in size.split())
    assert magic == b"P5" and maxval == b"255"
    return np.frombuffer(pixels, np.uint8).reshape(height, width)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_cpp_example_writes_the_generated_image(fmt, artifacts, zoo_run, tmp_path):
    """examples/generate_image.cpp (built with zoo-run) draws noise with libtorch's generator,
    which matches torch's in Python for the same seed, so the expected image is known exactly."""
    seed, label = 3, 2
    out = tmp_path / "sample.pgm"
    proc = subprocess.run(
        [str(zoo_run.parent / "generate_image"), str(artifacts[fmt]), str(out), str(seed), str(label)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    torch.manual_seed(seed)
    z = torch.randn(1, LATENT)
    image = eager({"z": z.numpy(), "label": np.full(1, label, np.int64)})["image"][0, 0]  # (4, 4) in [-1, 1]
    expected = np.clip(np.round((image + 1) / 2 * 255), 0, 255).astype(np.uint8)
    got = read_pnm(out)
    assert got.shape == (SIDE, SIDE)
    # Compiled kernels may round the last float bit differently, so a pixel may differ by one level.
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, (got, expected)


def js_normals(seed: int, count: int) -> np.ndarray:
    """The noise of examples/generate-image.js: mulberry32 uniforms through Box-Muller, in float32."""
    mask = 0xFFFFFFFF
    state = seed & mask

    def imul(a: int, b: int) -> int:
        return (a * b) & mask

    def uniform() -> float:
        nonlocal state
        state = (state + 0x6D2B79F5) & mask
        t = imul(state ^ (state >> 15), 1 | state)
        t ^= (t + imul(t ^ (t >> 7), 61 | t)) & mask
        return (t ^ (t >> 14)) / 4294967296

    values = []
    for _ in range(count):
        radius = math.sqrt(-2 * math.log(1 - uniform()))
        values.append(radius * math.cos(2 * math.pi * uniform()))
    return np.asarray(values, np.float32)


@pytest.mark.slow
def test_node_example_writes_the_generated_image(artifacts, node_script, tmp_path):
    seed, label = 7, 1
    out = tmp_path / "sample.pgm"
    proc = subprocess.run(
        [
            shutil.which("node") or "node",
            str(node_script.parent / "examples" / "generate-image.js"),
            str(artifacts["onnx"]),
            str(out),
            str(seed),
            str(label),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    image = eager({"z": js_normals(seed, LATENT)[None], "label": np.full(1, label, np.int64)})["image"][0, 0]
    expected = np.clip(np.round((image + 1) / 2 * 255), 0, 255).astype(int)
    got = read_pnm(out).astype(int)
    assert got.shape == (SIDE, SIDE)
    assert np.abs(got - expected).max() <= 1, (got, expected)


# --------------------------------------------------------------------------- CUDA, where it exists


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_pt2_and_torchscript_run_on_cuda(artifacts, zoo_run, tmp_path):
    pt2 = write_artifact(tmp_path, "pt2", device="cuda")
    inputs = tiny_inputs(4)
    expected = eager(inputs)
    for path, device in ((pt2, None), (artifacts["torchscript"], "cuda")):
        got = runtimes.run("cpp", path, inputs, device=device)
        for name, want in expected.items():
            # TF32 is off in eager on the CPU; CUDA kernels may still reorder sums.
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4, err_msg=f"{path.name} {name}")
    with pytest.raises(ZooError, match="was compiled for cuda and cannot run on cpu"):
        runtimes.run("cpp", pt2, inputs, device="cpu")


# --------------------------------------------------------------------------- through `zoo export`


@pytest.mark.slow
def test_zoo_export_artifacts_run_natively(zoo, zoo_run, node_script, tmp_path):
    """`zoo export vae` artifacts in the native runners compute what the same files compute in
    Python (the export's own parity ties those to eager PyTorch)."""
    import onnxruntime

    out = tmp_path / "vae"
    r = zoo(
        "export",
        "vae",
        "--random-init",
        "--target",
        "decoder",
        "--all-formats",
        "--device",
        "cpu",
        "--batch-sizes",
        "1",
        "--no-latency",
        "--out",
        out,
    )
    assert r.exit_code == 0, r
    manifest = json.loads((out / "export.json").read_text())
    formats = {a["format"] for a in manifest["artifacts"]}
    assert formats == {"torchscript", "onnx", "pt2"}, formats
    for artifact in manifest["artifacts"]:
        path = out / artifact["path"]
        meta = runtimes.metadata("cpp" if artifact["format"] != "onnx" else "node", path)
        gen = torch.Generator().manual_seed(1)
        inputs = {
            s["name"]: torch.randn(*[3 if isinstance(d, str) else d for d in s["shape"]], generator=gen).numpy() for s in meta["inputs"]
        }
        if artifact["format"] == "onnx":
            got = runtimes.run("node", path, inputs)
            want = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)
        elif artifact["format"] == "torchscript":
            got = runtimes.run("cpp", path, inputs)
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
                result = torch.jit.load(str(path))(*[torch.from_numpy(a) for a in inputs.values()])
            want = [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]
        else:
            got = runtimes.run("cpp", path, inputs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = torch._inductor.aoti_load_package(str(path))
            with torch.inference_mode():
                result = loaded(*[torch.from_numpy(a) for a in inputs.values()])
            want = [t.numpy() for t in (result if isinstance(result, (tuple, list)) else (result,))]
        assert list(got) == [s["name"] for s in meta["outputs"]]
        for g, w in zip(got.values(), want):
            np.testing.assert_allclose(g, np.asarray(w), rtol=meta["rtol"], atol=meta["atol"])
        # The README's C++ example draws an image from the real decoder too.
        if artifact["format"] in ("torchscript", "pt2"):
            image = tmp_path / f"digit-{artifact['format']}.pgm"
            proc = subprocess.run([str(zoo_run.parent / "generate_image"), str(path), str(image)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            assert read_pnm(image).shape == tuple(meta["outputs"][0]["shape"][2:])
