"""Runtimes zoo ships, one module each, registered under `zoo.runtimes` in zoo's
`pyproject.toml` like any third party's: `python` (in process), `cpp` (zoo-run,
libtorch C++: TorchScript and .pt2) and `node` (onnxruntime-node: ONNX).

The functions here run an artifact in a native runner by the runner's name, e.g.
`run("cpp", "decoder.cpu.pt2", {"z": z})`; `zoo.export.runtime` has the protocol and
the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import UsageError
from zoo.export import runtime as _runtime
from zoo.export.runtimes._native import NativeRuntime, build_cache

if TYPE_CHECKING:
    import numpy

__all__ = ["available", "build_cache", "cpp_runner", "latency", "metadata", "names", "native", "node_runner", "run"]


def names() -> list[str]:
    """Every installed runtime, in order."""
    return _runtime.names()


def available(name: str) -> tuple[bool, str]:
    """Whether runtime `name` runs (or can be built) here; if not, what is missing."""
    return _runtime.get(name).available()


def native(name: str) -> NativeRuntime:
    runtime = _runtime.get(name)
    if not isinstance(runtime, NativeRuntime):
        raise UsageError(f"runtime {name!r} runs in this process: load the file with zoo.export.artifacts.load")
    return runtime


def run(
    name: str, artifact: str | Path, inputs: dict[str, numpy.ndarray], *, device: str | None = None, threads: int | None = None
) -> dict[str, numpy.ndarray]:
    """Run `artifact` in runner `name` ("cpp" for .torchscript/.pt2, "node" for .onnx) on
    `inputs` (name -> array, as the artifact's metadata names them); returns outputs by
    name, in the metadata's order. Any failure raises ZooError with the runner's one-line
    message. `device` ("cpu"/"cuda"; default: a .pt2's own device, else CPU) and `threads`
    (intra-op threads) are passed to the runner."""
    return native(name).run_file(Path(artifact), inputs, device=device, threads=threads)


def latency(
    name: str,
    artifact: str | Path,
    inputs: dict[str, numpy.ndarray],
    *,
    repeat: int = 50,
    warmup: int = 5,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Median latency of `artifact` in runner `name`, timed inside the runner around the model
    call only (process start, model load and file I/O excluded). Returns the runner's summary:
    `median_ms`, `min_ms`, `runs`, `warmup`, `threads`, `outputs`, ..."""
    return native(name).latency_file(Path(artifact), inputs, repeat=repeat, warmup=warmup, device=device, threads=threads)


def metadata(name: str, artifact: str | Path) -> dict[str, Any]:
    """The artifact's zoo.json as the runner reads it (`zoo-run MODEL --metadata`)."""
    return native(name).metadata_file(Path(artifact))


def cpp_runner() -> Path:
    """Path of the `zoo-run` executable, built once per source and torch version."""
    return native("cpp").runner()


def node_runner() -> Path:
    """Path of the Node runner script, with onnxruntime-node installed beside it once."""
    return native("node").runner()
