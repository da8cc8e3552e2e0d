"""`node`: ``export/node/zoo-run.js``, running ``.onnx`` with onnxruntime-node (its CPU
binaries), installed once with ``npm ci --ignore-scripts`` into the build cache."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from zoo.errors import ZooError
from zoo.export.runtimes._native import EXPORT_DIR, NativeRuntime, build_cache, first_error, hash_files, publish, run_logged

SOURCE = EXPORT_DIR / "node"
MIN_NODE_MAJOR = 18


def node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def _files() -> list[Path]:
    return [
        SOURCE / "package.json",
        SOURCE / "package-lock.json",
        *sorted(SOURCE.glob("*.js")),
        *sorted(SOURCE.glob("examples/*.js")),
    ]


def install_dir() -> Path:
    """Where the Node runner for these sources and this node major version lives (installed or not)."""
    return build_cache() / f"zoo-run-node-{hash_files(SOURCE, _files(), [f'node{node_major()}'])}"


class Node(NativeRuntime):
    name = "node"
    summary = "onnxruntime-node (ONNX, CPU)"
    formats = ("onnx",)
    order = 20
    prefix = "zoo-run-node:"

    def available(self) -> tuple[bool, str]:
        major = node_major()
        if shutil.which("node") is None:
            return False, "node not found (install Node.js >= 18 to run ONNX in Node)"
        if major is None or major < MIN_NODE_MAJOR:
            return False, f"node {major if major is not None else '?'} is too old (Node.js >= {MIN_NODE_MAJOR} needed)"
        if (install_dir() / "zoo-run.js").is_file():
            return True, f"onnxruntime-node installed in {install_dir()}"
        if shutil.which("npm") is None:
            return False, "npm not found (needed once to install onnxruntime-node)"
        return True, "node and npm found"

    def skip_reason(self, device: str) -> str | None:
        return None if device == "cpu" else "the Node runner uses onnxruntime-node's CPU binaries"

    def command(self) -> list[str]:
        return [shutil.which("node") or "node", str(self.runner())]

    def runner(self) -> Path:
        """Path of the Node runner script (`zoo-run.js`), with onnxruntime-node installed next to it
        once (and `examples/` beside it, which find the same node_modules)."""
        self.require()
        final = install_dir()
        script = final / "zoo-run.js"
        if script.is_file():
            return script
        key = final.name.removeprefix("zoo-run-node-")
        cache = final.parent
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".zoo-run-node-{key}-", dir=cache))
        for f in _files():
            (tmp / f.relative_to(SOURCE)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / f.relative_to(SOURCE))
        log = tmp / "install.log"
        # --ignore-scripts: onnxruntime-node's install script downloads CUDA binaries from a host that
        # need not be reachable; the CPU binaries ship inside the npm package itself.
        install = [shutil.which("npm") or "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"]
        # Check that the native binding really loads here, not just that npm unpacked it.
        check = [shutil.which("node") or "node", "-e", "require('onnxruntime-node')"]
        for cmd, what in ((install, "installing onnxruntime-node failed"), (check, "onnxruntime-node does not load")):
            if run_logged(cmd, log, cwd=tmp).returncode != 0:
                kept = cache / f"zoo-run-node-{key}.failed.log"
                shutil.copyfile(log, kept)
                shutil.rmtree(tmp, ignore_errors=True)
                raise ZooError(f"{what}: {first_error(kept)} (full log: {kept})")
        publish(tmp, final)
        return script


runtime = Node()
