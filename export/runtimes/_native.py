"""What the native runners share: a build cache keyed by their sources, and running
one as a subprocess on `.npy` files.

Both runners read inputs from ``NAME.npy`` files, check them against the artifact's
``zoo.json`` metadata (dtype, rank, fixed sizes, equal named axes, the valid range of
integers), write ``NAME.npy`` outputs, print one JSON line, and fail with one line on
stderr. They are built or installed once, cached under ``$ZOO_BUILD_CACHE`` (default
``$ZOO_HOME/build``), keyed by a hash of their sources (and the toolchain), so a changed
source gives a fresh build and concurrent builders never see each other's half-done work.
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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import paths
from zoo.errors import UsageError, ZooError
from zoo.export.runtime import Runtime, Session, feed

if TYPE_CHECKING:
    import numpy
    import torch

EXPORT_DIR = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def build_cache() -> Path:
    """Where built runners live: `$ZOO_BUILD_CACHE`, else `$ZOO_HOME/build`."""
    env = os.environ.get("ZOO_BUILD_CACHE")
    return Path(env).expanduser() if env else paths.home() / "build"


def hash_files(root: Path, files: list[Path], extra: list[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for item in extra:
        digest.update(item.encode() + b"\0")
    return digest.hexdigest()[:16]


def publish(tmp: Path, final: Path) -> None:
    """Move a finished build into place. If another process published the same key first,
    keep theirs: both were built from the same sources."""
    try:
        tmp.rename(final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def run_logged(cmd: list[str], log: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd)


def first_error(log: Path) -> str:
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


def _options(device: str | None, threads: int | None) -> list[str]:
    options = []
    if device is not None:
        options += ["--device", device]
    if threads is not None:
        options += ["--threads", str(threads)]
    return options


class NativeRuntime(Runtime):
    """A runner program outside this process. Subclasses say how to start it."""

    prefix = ""  # how its one-line errors start, e.g. "zoo-run:"

    def command(self) -> list[str]:
        """The runner's command line (built or installed first if need be)."""
        raise NotImplementedError

    def require(self) -> None:
        ok, reason = self.available()
        if not ok:
            raise ZooError(f"the {self.name} runtime is not available: {reason}")

    def open(self, path: Path, device: torch.device) -> Session:
        from zoo.export.artifacts import read_metadata

        self.require()
        return NativeSession(self, Path(path), device.type, [s["name"] for s in read_metadata(path)["inputs"]])

    def _failure(self, artifact: Path, proc: subprocess.CompletedProcess) -> ZooError:
        """The runner's own one-line message, or a sentence saying how it died."""
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        own = [line for line in lines if line.startswith(self.prefix)]
        if own:
            return ZooError(own[-1])
        program = self.prefix.rstrip(":")
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            return ZooError(f"{program} crashed with {name} running {artifact.name}" + (f": {lines[-1]}" if lines else ""))
        return ZooError(f"{program} failed (exit {proc.returncode}) running {artifact.name}" + (f": {lines[-1]}" if lines else ""))

    def _invoke(self, artifact: Path, inputs: dict[str, numpy.ndarray], workdir: Path, options: list[str]) -> dict[str, Any]:
        import numpy as np

        in_dir, out_dir = workdir / "inputs", workdir / "outputs"
        in_dir.mkdir()
        for name, array in inputs.items():
            if not _NAME.match(name):
                raise UsageError(f"input name {name!r} cannot be a file name")
            np.save(in_dir / f"{name}.npy", np.ascontiguousarray(array))
        cmd = [*self.command(), str(artifact), "--inputs", str(in_dir), "--outputs", str(out_dir), *options]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            error = self._failure(artifact, proc)
            # Input files are ours, not the caller's: name them without the temporary directory.
            raise ZooError(str(error).replace(f"{in_dir}{os.sep}", "")) from None
        try:
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise ZooError(f"{self.name} runner printed no summary running {artifact.name}") from None
        summary["arrays"] = {o["name"]: np.load(out_dir / f"{o['name']}.npy") for o in summary["outputs"]}
        return summary

    def run_file(
        self, artifact: Path, inputs: dict[str, numpy.ndarray], *, device: str | None = None, threads: int | None = None
    ) -> dict[str, numpy.ndarray]:
        """Outputs by name, in the metadata's order; any failure is the runner's one line."""
        self.require()
        with tempfile.TemporaryDirectory(prefix="zoo-run-") as tmp:
            return self._invoke(Path(artifact), inputs, Path(tmp), _options(device, threads))["arrays"]

    def latency_file(
        self,
        artifact: Path,
        inputs: dict[str, numpy.ndarray],
        *,
        repeat: int = 50,
        warmup: int = 5,
        device: str | None = None,
        threads: int | None = None,
    ) -> dict[str, Any]:
        """The runner's summary with `median_ms`, `min_ms`, `runs`, `warmup`, `threads`, timed
        inside the runner around the model call only (start, load and file I/O excluded)."""
        self.require()
        options = _options(device, threads) + ["--repeat", str(repeat), "--warmup", str(warmup)]
        with tempfile.TemporaryDirectory(prefix="zoo-run-") as tmp:
            summary = self._invoke(Path(artifact), inputs, Path(tmp), options)
        summary.pop("arrays")
        return summary

    def metadata_file(self, artifact: Path) -> dict[str, Any]:
        """The artifact's zoo.json as the runner reads it (`RUNNER MODEL --metadata`)."""
        self.require()
        proc = subprocess.run([*self.command(), str(artifact), "--metadata"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise self._failure(Path(artifact), proc)
        return json.loads(proc.stdout)


class NativeSession(Session):
    def __init__(self, runtime: NativeRuntime, path: Path, device: str, input_names: list[str]):
        self.runtime, self.path, self.device, self.input_names = runtime, path, device, input_names

    def run(self, inputs: Sequence[Any]) -> dict[str, numpy.ndarray]:
        return self.runtime.run_file(self.path, feed(inputs, self.input_names), device=self.device)

    def latency_ms(self, inputs: Sequence[Any]) -> float:
        import torch

        summary = self.runtime.latency_file(self.path, feed(inputs, self.input_names), device=self.device, threads=torch.get_num_threads())
        return float(summary["median_ms"])
