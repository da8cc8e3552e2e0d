"""Run exported models where they will be deployed: libtorch C++ and Node.

Two native runners live next to this module:

- ``cpp/``: ``zoo-run``, a CMake project built against the libtorch inside the installed torch
  wheel. It runs ``.torchscript`` (``torch::jit::load``) and ``.pt2`` (AOTInductor's
  ``AOTIModelPackageLoader``).
- ``node/``: ``zoo-run.js``, running ``.onnx`` with onnxruntime-node.

Both read inputs from ``NAME.npy`` files, check them against the artifact's ``zoo.json``
metadata, write ``NAME.npy`` outputs, and fail with one line on stderr. This module builds the C++
runner once and installs the Node one once, cached under ``$ZOO_BUILD_CACHE`` (default
``$ZOO_HOME/build``), keyed by a hash of their sources (and torch's version for C++), so a changed
source or torch gives a fresh build and concurrent builders never see each other's half-done work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import paths
from zoo.errors import UsageError, ZooError

if TYPE_CHECKING:
    import numpy

RUNTIMES = ("cpp", "node")
CPP_SOURCE = Path(__file__).resolve().parent / "cpp"
NODE_SOURCE = Path(__file__).resolve().parent / "node"
# Which runner runs which artifact format.
FORMATS = {"cpp": ("torchscript", "pt2"), "node": ("onnx",)}
MIN_NODE_MAJOR = 18
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def build_cache() -> Path:
    """Where built runners live: `$ZOO_BUILD_CACHE`, else `$ZOO_HOME/build`."""
    env = os.environ.get("ZOO_BUILD_CACHE")
    return Path(env).expanduser() if env else paths.home() / "build"


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")


def _compiler() -> str | None:
    env = os.environ.get("CXX")
    if env:
        return shutil.which(env.split()[0])
    return next((found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)


def _node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def available(runtime: str) -> tuple[bool, str]:
    """Whether `runtime` ("cpp" or "node") is built or can be built here; if not, what is missing."""
    _check_runtime(runtime)
    if runtime == "cpp":
        if (_cpp_dir() / "zoo-run").is_file():
            return True, f"zoo-run built in {_cpp_dir()}"
        if shutil.which("cmake") is None:
            return False, "cmake not found (install CMake >= 3.18 to build zoo-run)"
        if _compiler() is None:
            return False, "no C++ compiler found (install g++ or clang++, or set CXX)"
        import torch.utils

        if not (Path(torch.utils.cmake_prefix_path) / "Torch" / "TorchConfig.cmake").is_file():
            return False, f"the installed torch has no libtorch CMake files under {torch.utils.cmake_prefix_path}"
        return True, "cmake, a C++ compiler and libtorch found"
    major = _node_major()
    if shutil.which("node") is None:
        return False, "node not found (install Node.js >= 18 to run ONNX in Node)"
    if major is None or major < MIN_NODE_MAJOR:
        return False, f"node {major if major is not None else '?'} is too old (Node.js >= {MIN_NODE_MAJOR} needed)"
    if (_node_dir() / "zoo-run.js").is_file():
        return True, f"onnxruntime-node installed in {_node_dir()}"
    if shutil.which("npm") is None:
        return False, "npm not found (needed once to install onnxruntime-node)"
    return True, "node and npm found"


def _require(runtime: str) -> None:
    ok, reason = available(runtime)
    if not ok:
        raise ZooError(f"the {runtime} runtime is not available: {reason}")


def _hash_files(root: Path, files: list[Path], extra: list[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for item in extra:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()[:16]


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished build into place. If another process published the same key first,
    keep theirs: both were built from the same sources."""
    try:
        tmp.rename(final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _run_logged(cmd: list[str], log: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd)


def _first_error(log: Path) -> str:
    """The first error of a build or install log in one line (a CMake error's message follows
    its "CMake Error at ...:" line, so that is joined on)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    for i, line in enumerate(lines):
        if re.search(r"error|ERR!", line, re.IGNORECASE) and not line.startswith(("See also", "--")):
            if line.endswith(":"):
                line = " ".join([line, *[more for more in lines[i + 1 : i + 8] if more]][:5])
            return re.sub(r"\s+", " ", line)
    tail = [line for line in lines if line]
    return tail[-1] if tail else "(no output)"


def _cpp_sources() -> list[Path]:
    # Only the project's own sources: a developer's build tree under cpp/ must not change the key.
    return [CPP_SOURCE / "CMakeLists.txt", *CPP_SOURCE.glob("*.[ch]pp"), *CPP_SOURCE.glob("examples/*.[ch]pp")]


def _cpp_dir() -> Path:
    """Where zoo-run for these sources and this torch lives (built or not)."""
    import torch.utils

    torch_root = Path(torch.utils.cmake_prefix_path).parents[1]
    return build_cache() / f"zoo-run-{_hash_files(CPP_SOURCE, _cpp_sources(), [torch.__version__, str(torch_root)])}"


def cpp_runner() -> Path:
    """Path of the `zoo-run` executable, built once per source and torch version."""
    import torch.utils

    final = _cpp_dir()
    exe = final / "zoo-run"
    if exe.is_file():
        return exe
    _require("cpp")
    key = final.name.removeprefix("zoo-run-")
    cache = final.parent
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".zoo-run-{key}-", dir=cache))
    log = tmp / "build.log"
    build_dir = tmp / "cmake-build"
    configure = [
        "cmake",
        "-S",
        str(CPP_SOURCE),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    build = ["cmake", "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2)]
    for cmd in (configure, build):
        if _run_logged(cmd, log).returncode != 0:
            kept = cache / f"zoo-run-{key}.failed.log"
            shutil.copyfile(log, kept)
            shutil.rmtree(tmp, ignore_errors=True)
            raise ZooError(f"building zoo-run failed: {_first_error(kept)} (full log: {kept})")
    for program in ("zoo-run", "generate_image"):
        if (build_dir / program).is_file():
            shutil.copy2(build_dir / program, tmp / program)
    # The executables find libtorch through an absolute rpath, so the object files can go.
    shutil.rmtree(build_dir, ignore_errors=True)
    _publish(tmp, final)
    return exe


def _node_files() -> list[Path]:
    return [
        NODE_SOURCE / "package.json",
        NODE_SOURCE / "package-lock.json",
        *sorted(NODE_SOURCE.glob("*.js")),
        *sorted(NODE_SOURCE.glob("examples/*.js")),
    ]


def _node_dir() -> Path:
    """Where the Node runner for these sources and this node major version lives (installed or not)."""
    return build_cache() / f"zoo-run-node-{_hash_files(NODE_SOURCE, _node_files(), [f'node{_node_major()}'])}"


def node_runner() -> Path:
    """Path of the Node runner script (`zoo-run.js`), with onnxruntime-node installed next to it
    once (and `examples/` beside it, which find the same node_modules)."""
    _require("node")
    final = _node_dir()
    script = final / "zoo-run.js"
    if script.is_file():
        return script
    key = final.name.removeprefix("zoo-run-node-")
    cache = final.parent
    files = _node_files()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".zoo-run-node-{key}-", dir=cache))
    for f in files:
        (tmp / f.relative_to(NODE_SOURCE)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, tmp / f.relative_to(NODE_SOURCE))
    log = tmp / "install.log"
    # --ignore-scripts: onnxruntime-node's install script downloads CUDA binaries from a host that
    # need not be reachable; the CPU binaries ship inside the npm package itself.
    install = [shutil.which("npm") or "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"]
    # Check that the native binding really loads here, not just that npm unpacked it.
    check = [shutil.which("node") or "node", "-e", "require('onnxruntime-node')"]
    for cmd, what in ((install, "installing onnxruntime-node failed"), (check, "onnxruntime-node does not load")):
        if _run_logged(cmd, log, cwd=tmp).returncode != 0:
            kept = cache / f"zoo-run-node-{key}.failed.log"
            shutil.copyfile(log, kept)
            shutil.rmtree(tmp, ignore_errors=True)
            raise ZooError(f"{what}: {_first_error(kept)} (full log: {kept})")
    _publish(tmp, final)
    return script


def _command(runtime: str) -> list[str]:
    if runtime == "cpp":
        return [str(cpp_runner())]
    return [shutil.which("node") or "node", str(node_runner())]


def _failure(runtime: str, artifact: Path, proc: subprocess.CompletedProcess) -> ZooError:
    """The runner's own one-line message, or a sentence saying how it died."""
    prefix = "zoo-run:" if runtime == "cpp" else "zoo-run-node:"
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith(prefix)]
    if own:
        return ZooError(own[-1])
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return ZooError(f"{prefix[:-1]} crashed with {name} running {artifact.name}" + (f": {lines[-1]}" if lines else ""))
    return ZooError(f"{prefix[:-1]} failed (exit {proc.returncode}) running {artifact.name}" + (f": {lines[-1]}" if lines else ""))


def _invoke(runtime: str, artifact: Path, inputs: dict[str, numpy.ndarray], workdir: Path, options: list[str]) -> dict[str, Any]:
    import numpy as np

    in_dir, out_dir = workdir / "inputs", workdir / "outputs"
    in_dir.mkdir()
    for name, array in inputs.items():
        if not _NAME.match(name):
            raise UsageError(f"input name {name!r} cannot be a file name")
        np.save(in_dir / f"{name}.npy", np.ascontiguousarray(array))
    cmd = [*_command(runtime), str(artifact), "--inputs", str(in_dir), "--outputs", str(out_dir), *options]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        error = _failure(runtime, artifact, proc)
        # Input files are ours, not the caller's: name them without the temporary directory.
        raise ZooError(str(error).replace(f"{in_dir}{os.sep}", "")) from None
    try:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise ZooError(f"{runtime} runner printed no summary running {artifact.name}") from None
    summary["arrays"] = {o["name"]: np.load(out_dir / f"{o['name']}.npy") for o in summary["outputs"]}
    return summary


def _options(device: str | None, threads: int | None) -> list[str]:
    options = []
    if device is not None:
        options += ["--device", device]
    if threads is not None:
        options += ["--threads", str(threads)]
    return options


def run(
    runtime: str,
    artifact: Path,
    inputs: dict[str, numpy.ndarray],
    *,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, numpy.ndarray]:
    """Run `artifact` in `runtime` ("cpp" for .torchscript/.pt2, "node" for .onnx) on `inputs`
    (name -> array, as the artifact's metadata names them); returns outputs by name, in the
    metadata's order. Any failure raises ZooError with the runner's one-line message.
    `device` ("cpu"/"cuda"; default: a .pt2's own device, else CPU) and `threads` (intra-op
    threads) are passed to the runner."""
    _check_runtime(runtime)
    with tempfile.TemporaryDirectory(prefix="zoo-run-") as tmp:
        return _invoke(runtime, Path(artifact), inputs, Path(tmp), _options(device, threads))["arrays"]


def latency(
    runtime: str,
    artifact: Path,
    inputs: dict[str, numpy.ndarray],
    *,
    repeat: int = 50,
    warmup: int = 5,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Median latency of `artifact` in `runtime`, timed inside the runner around the model call
    only (process start, model load and file I/O excluded). Returns the runner's summary:
    `median_ms`, `min_ms`, `runs`, `warmup`, `threads`, `outputs`, ..."""
    _check_runtime(runtime)
    options = _options(device, threads) + ["--repeat", str(repeat), "--warmup", str(warmup)]
    with tempfile.TemporaryDirectory(prefix="zoo-run-") as tmp:
        summary = _invoke(runtime, Path(artifact), inputs, Path(tmp), options)
    summary.pop("arrays")
    return summary


def metadata(runtime: str, artifact: Path) -> dict[str, Any]:
    """The artifact's zoo.json as the runner reads it (`zoo-run MODEL --metadata`)."""
    _check_runtime(runtime)
    proc = subprocess.run([*_command(runtime), str(artifact), "--metadata"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise _failure(runtime, Path(artifact), proc)
    return json.loads(proc.stdout)
