#!/usr/bin/env python3
# On a lent GPU machine (the device tool: Python 3.12, torch 2.11 with CUDA 13, no network), from
# the repository root, nothing carried:
#
#     run(command="PYTHONUNBUFFERED=1 python3 benchmarks/cuda_proof.py $OUT --work /tmp/cuda-proof",
#         timeout_s=570)
#
# The default --budget of 480 s ends the checks in time to write the report; $OUT then holds
# report.json, report.txt and pytest-cuda.xml (the exports and runs stay in --work, which the
# tool would not bring back). Everything zoo's pyproject asks for is in that machine's image
# except onnxruntime-gpu, whose wheel is hundreds of MB, far over the 64 MiB the tool carries:
# its CPU onnxruntime runs the ONNX checks on the CPU, and ONNX on CUDA is reported as skipped
# with that reason. A package that is missing there travels as wheels: download them here
# into .whl/ (listed in .git/info/exclude; see the device tool's README for the pip download
# line), then run with carry=[".whl"] and `... cuda_proof.py $OUT --wheels .whl ...`: they are
# installed with `pip install --no-index --no-deps` before zoo.
"""One command that proves zoo's CUDA paths run, and one report of what it proved.

    python3 benchmarks/cuda_proof.py OUT [--work DIR] [--plugins vae,convnet] [--quick]
                                         [--steps 3] [--batch-size 16] [--jobs N]
                                         [--budget 480] [--wheels DIR] [--install]

1. install: zoo from this tree with `pip install --no-index --no-deps --no-build-isolation -e .`
   (skipped when this tree's zoo is already the one installed; --install forces it), after
   any --wheels; every dependency pyproject.toml declares is checked against what is
   installed, and a module zoo cannot be imported without stops the run in one line naming it.
2. train: every plugin for --steps steps with `zoo train --device cuda`, in fp32 and
   bf16-mixed; each run's losses must be finite and its checkpoint must load on the CPU (in
   a process that sees no GPU).
3. export: every plugin with `zoo export --random-init --all-formats --device all`
   (TorchScript, ONNX, .cpu.pt2 and .cuda.pt2); the parity rows zoo proved are read from
   each export.json. ONNX on CUDA runs where onnxruntime has its CUDA provider, and is
   skipped with that reason where it has not.
4. cpp: zoo-run built against this machine's torch (in the background from the start),
   then `zoo verify --runtime cpp --device all` on a small export (vae's).
5. pytest: `pytest -m cuda`.
6. OUT/report.json and OUT/report.txt: every cell plugin x target x format x runtime x
   device with its max abs/rel error (the worst over batch sizes and axis sizes) and
   passed / failed / skipped with the reason, the training runs, the dependencies, and the
   seconds of every phase and command.

Without CUDA it says so in one line and runs the CPU part: convnet and vae (or --plugins)
trained on the CPU, exported and checked on the CPU, at small configs; every CUDA cell is
skipped with the reason. --quick (what the test suite runs) exports TorchScript and ONNX
only, trains in fp32 only and builds no zoo-run. Exit 0 when no check failed, 1 when one
did or zoo cannot be installed or imported, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FORMATS = ("torchscript", "onnx", "pt2")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16-mixed")
CPU_SUBSET = ("convnet", "vae")  # without CUDA and without --plugins: a couple of minutes on 2 cores
CPP_PREFERENCE = ("vae", "convnet", "mlp", "linear")  # the small export zoo-run verifies
# Exports started first: the most .pt2 compiling (several targets, big graphs) ends last otherwise.
HEAVY_FIRST = ("vae", "pix2pix", "rnn", "transformer", "finetune", "resnet", "dcgan", "cgan", "gan")
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"
# Small configs for the CPU part and --quick: the code paths are the same, the compute is not.
SMALL = {
    "vae": {"hidden": "64"},
    "convnet": {"hidden": "32"},
    "gan": {"generator_hidden": "64", "maxout_units": "32"},
    "cgan": {
        "noise_hidden": "32",
        "label_hidden": "64",
        "joint_hidden": "64",
        "image_units": "32",
        "label_units": "16",
        "joint_units": "32",
    },
    "dcgan": {"generator_width": "8", "discriminator_width": "8"},
    "pix2pix": {"ngf": "8", "ndf": "8"},
    "mlp": {"hidden": "32"},
    "resnet": {"depth": "8"},
    "finetune": {"channels": "16", "blocks": "2"},
    "rnn": {"hidden": "32", "layers": "1", "block_size": "32"},
    "transformer": {"layers": "1", "width": "32", "heads": "2", "block_size": "32"},
}
# Distribution -> the module zoo imports it as.
MODULES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime",
    "click": "click",
    "tqdm": "tqdm",
    "numpy": "numpy",
    "scikit-learn": "sklearn",
    "scikit-image": "skimage",
    "safetensors": "safetensors",
    "pillow": "PIL",
}

ENVIRONMENT_PROBE = r"""
import json, os, platform, shutil, sys
compilers = [c for c in os.environ.get("CXX", "").split()[:1] + ["c++", "g++", "clang++"] if c and shutil.which(c)]
info = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
        "cpus": os.cpu_count(), "cmake": shutil.which("cmake"), "ninja": shutil.which("ninja"),
        "cxx": shutil.which(compilers[0]) if compilers else None}
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available())
    if info["cuda"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["bf16"] = torch.cuda.is_bf16_supported()
except Exception as exc:
    info.update(cuda=False, torch_error=f"{type(exc).__name__}: {exc}")
try:
    import onnxruntime
    info.update(onnxruntime=onnxruntime.__version__, onnxruntime_providers=onnxruntime.get_available_providers())
except Exception as exc:
    info.update(onnxruntime=None, onnxruntime_providers=[], onnxruntime_error=f"{type(exc).__name__}: {exc}")
print(json.dumps(info))
"""

# Each module on its own; the first is what zoo needs at all (zoo.cli): without it, the rest is moot.
IMPORT_PROBE = r"""
import importlib, json, os, sys
result = {}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
        result[name] = {"ok": True, "file": os.path.realpath(getattr(module, "__file__", None) or "")}
    except Exception as exc:
        result[name] = {"ok": False, "missing": getattr(exc, "name", None), "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        if name == sys.argv[1]:
            break
print(json.dumps(result))
"""

# Run with CUDA hidden: a checkpoint written on the GPU must load on a machine without one.
CHECKPOINT_PROBE = r"""
import json, sys
import torch
from zoo import get_plugin
from zoo.models import build_model
result = {}
for plugin, path in json.loads(sys.argv[1]):
    try:
        built = build_model(get_plugin(plugin), checkpoint=path)
        tensors = [t for t in built.model.state_dict().values() if isinstance(t, torch.Tensor)]
        devices = sorted({t.device.type for t in tensors})
        finite = all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
        result[path] = {"loads": devices in (["cpu"], []), "devices": devices, "finite_weights": finite, "tensors": len(tensors)}
    except Exception as exc:
        result[path] = {"loads": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
print(json.dumps(result))
"""

BUILD_ZOO_RUN = "from zoo.export import runtimes; print(runtimes.cpp_runner())"


class Fatal(Exception):
    """Stops the run: one line, and the report written so far."""


class Stopped(Exception):
    """SIGTERM or Ctrl-C: the commands are ended and the report says what was done."""


@dataclass
class Ran:
    name: str
    cmd: list[str]
    returncode: int | None  # None: not started (no time left) or killed at its timeout
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self) -> str:
        """What went wrong, in one line: the command's own error line if it printed one."""
        if self.note:
            return self.note
        lines = [line.strip() for line in (self.stderr + "\n" + self.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(("error:", "ERROR", "E ")) or "Error" in line]
        return (errors or lines or [f"exit {self.returncode}"])[-1][:400]


@dataclass
class Proof:
    out: Path
    work: Path
    budget: float
    jobs: int
    threads: int
    started: float = field(default_factory=time.monotonic)
    env: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    install: dict[str, Any] = field(default_factory=dict)
    training: list[dict[str, Any]] = field(default_factory=list)
    parity: list[dict[str, Any]] = field(default_factory=list)
    pytest: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fatal: str = ""
    lock: threading.RLock = field(default_factory=threading.RLock)
    live: set[subprocess.Popen] = field(default_factory=set)  # killed, with what they started, when the run ends
    stopping: bool = False

    @property
    def cuda(self) -> bool:
        return bool(self.env.get("cuda"))

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.budget - self.elapsed()

    def child_env(self, *, hide_cuda: bool = False, **extra: str) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", ZOO_OFFLINE="1", **extra)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS"):
            env.setdefault(name, str(self.threads))  # one share of the cores per parallel job
        if hide_cuda:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def run(
        self,
        name: str,
        cmd: list[str],
        *,
        timeout: float = 600,
        reserve: float = 0.0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Ran:
        """Run `cmd` within the budget (less `reserve` seconds kept for later phases). It runs
        in the work directory unless `cwd` says otherwise: from the repository root, Python
        would import the tree's zoo/ whether or not zoo is installed."""
        left = min(timeout, self.remaining() - reserve)
        if self.stopping:
            ran = Ran(name, cmd, None, note="not run: stopped")
        elif left < 5:
            ran = Ran(name, cmd, None, note="not run: the time budget (--budget) was spent")
        else:
            ran = self._spawn(name, cmd, left, env if env is not None else self.child_env(), cwd or self.work)
        status = "ok" if ran.ok else ran.last_line()
        print(f"[{self.elapsed():6.1f}s] {name}: {status} ({ran.seconds:.1f} s)", file=sys.stderr, flush=True)
        with self.lock:
            self.commands.append(
                {
                    "name": name,
                    "command": " ".join("<script>" if i and cmd[i - 1] == "-c" else arg for i, arg in enumerate(cmd)),
                    "returncode": ran.returncode,
                    "seconds": round(ran.seconds, 2),
                    "error": "" if ran.ok else ran.last_line(),
                }
            )
        return ran

    def _spawn(self, name: str, cmd: list[str], timeout: float, env: dict[str, str], cwd: Path) -> Ran:
        started = time.monotonic()
        # Its own process group, so a timeout also ends what it started (compile workers, cmake).
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        with self.lock:
            self.live.add(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            return Ran(name, cmd, proc.returncode, time.monotonic() - started, stdout, stderr)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = proc.communicate()
            return Ran(name, cmd, None, time.monotonic() - started, stdout, stderr, note=f"killed after {timeout:.0f} s (time budget)")
        finally:
            with self.lock:
                self.live.discard(proc)

    def stop_all(self) -> None:
        """End every command still running (a background build, or all of them on Ctrl-C), and start no more."""
        with self.lock:
            self.stopping = True
            for proc in self.live:
                _kill_group(proc)

    @contextmanager
    def phase(self, name: str):
        entry = {"phase": name, "seconds": 0.0, "status": "ok", "note": ""}
        started = time.monotonic()
        try:
            yield entry
        finally:
            entry["seconds"] = round(time.monotonic() - started, 1)
            self.phases.append(entry)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def failed_or_ok(cells: list[dict[str, Any]]) -> str:
    return "failed" if any(c["status"] == "failed" for c in cells) else "ok"


def zoo_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "zoo", *args]


def skipped(reason: str, **fields: Any) -> dict[str, Any]:
    return {**fields, "status": "skipped", "reason": reason}


def failed_cell(plugin: str, runtime: str, reason: str, fmt: str = "*") -> dict[str, Any]:
    """A command that failed before it could say which cells it covers."""
    return {"plugin": plugin, "target": "*", "format": fmt, "runtime": runtime, "device": "*", "status": "failed", "reason": reason}


# --------------------------------------------------------------------------- install


def declared_dependencies() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib

        return list(tomllib.loads(text)["project"]["dependencies"])
    except ImportError:  # Python 3.10
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, flags=re.S | re.M)
        return re.findall(r'^\s*"([^"]+)"', block.group(1), flags=re.M) if block else []


def _requirement_class() -> Any:
    """packaging's Requirement (markers, specifiers), or pip's vendored copy, or None."""
    for name in ("packaging.requirements", "pip._vendor.packaging.requirements"):
        try:
            return importlib.import_module(name).Requirement
        except ImportError:
            continue
    return None


def dependency_rows(providers: list[str]) -> list[dict[str, Any]]:
    """Each declared dependency that applies here: installed version, and whether it satisfies pyproject."""
    requirement_class = _requirement_class()
    rows = []
    for text in declared_dependencies():
        name = re.split(r"[\s<>=!~;\[(]", text, maxsplit=1)[0]
        row: dict[str, Any] = {"requirement": text.split(";")[0].strip(), "module": MODULES.get(name.lower(), name), "note": ""}
        requirement = requirement_class(text) if requirement_class is not None else None
        if requirement is not None:
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        row["installed"] = installed
        if installed is None:
            row["status"] = "missing"
            if name.lower() == "onnxruntime-gpu":
                try:
                    cpu = metadata.version("onnxruntime")
                    row["status"] = "substituted"
                    cuda = "CUDAExecutionProvider" in providers
                    row["note"] = f"onnxruntime {cpu} provides the module" + (
                        "" if cuda else " (CPU build: ONNX on CUDA is skipped; onnxruntime-gpu's wheel is too large to carry)"
                    )
                except metadata.PackageNotFoundError:
                    pass
        elif requirement is not None and not requirement.specifier.contains(installed, prereleases=True):
            row["status"] = "other version"
            row["note"] = f"pyproject asks for {requirement.specifier}"
        else:
            row["status"] = "ok"
        rows.append(row)
    return rows


def install(proof: Proof, wheels: Path | None, force: bool) -> None:
    report = proof.install
    if wheels is not None:
        found = sorted(str(p) for p in wheels.glob("*.whl"))
        if not found:
            raise Fatal(f"--wheels {wheels}: no .whl files there")
        ran = proof.run("pip install --wheels", [PYTHON, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *found])
        if not ran.ok:
            raise Fatal(f"installing the wheels in {wheels} failed: {ran.last_line()}")
        report["wheels"] = [Path(p).name for p in found]
    probe = proof.run("locate zoo", [PYTHON, "-c", IMPORT_PROBE, "zoo"])
    located = json.loads(probe.stdout or "{}").get("zoo", {}) if probe.ok else {}
    here = located.get("ok") and Path(located["file"]).is_relative_to(ROOT)
    if here and not force:
        report["zoo"] = f"already installed from this tree ({located['file']})"
    else:
        # --no-build-isolation builds with the installed setuptools: >= 70.1 builds wheels on
        # its own, older ones (>= 64) need the wheel package.
        try:
            version = tuple(int(part) for part in re.findall(r"\d+", metadata.version("setuptools"))[:2])
        except metadata.PackageNotFoundError:
            version = ()
        if version < (64,) or (version < (70, 1) and importlib.util.find_spec("wheel") is None):
            raise Fatal(
                "installing zoo without the network needs setuptools >= 70.1 (or >= 64 with the wheel package); "
                "carry their wheels (--wheels)"
            )
        cmd = [PYTHON, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation", "-e", str(ROOT)]
        ran = proof.run("pip install zoo", cmd)
        if not ran.ok:
            raise Fatal(f"pip could not install zoo from {ROOT} offline: {ran.last_line()}")
        report["zoo"] = "installed from this tree: " + " ".join(cmd[2:])
    report["dependencies"] = dependency_rows(proof.env.get("onnxruntime_providers") or [])
    modules = ["zoo.cli", *dict.fromkeys(row["module"] for row in report["dependencies"])]
    probe = proof.run("import zoo and its dependencies", [PYTHON, "-c", IMPORT_PROBE, *modules])
    if not probe.ok:
        raise Fatal(f"the import check failed: {probe.last_line()}")
    imports = json.loads(probe.stdout)
    if not imports["zoo.cli"]["ok"]:
        missing = imports["zoo.cli"].get("missing")
        what = f"module {missing!r} is missing" if missing else imports["zoo.cli"]["error"]
        raise Fatal(f"zoo cannot be imported: {what} (carry it as a wheel: see the top of benchmarks/cuda_proof.py)")
    for row in report["dependencies"]:
        result = imports.get(row["module"], {})
        row["imports"] = bool(result.get("ok"))
        if not row["imports"]:
            row["note"] = (row["note"] + "; " if row["note"] else "") + result.get("error", "")
    lacking = [row["requirement"] for row in report["dependencies"] if not row["imports"]]
    if lacking:
        proof.notes.append(f"not importable here (the checks that need them fail): {', '.join(lacking)}")


# --------------------------------------------------------------------------- train


def config_args(plugin: str, small: bool, style: str) -> list[str]:
    """A plugin's small config as `zoo train` options or `zoo export --config` pairs."""
    if not small:
        return []
    pairs = SMALL.get(plugin, {})
    if style == "train":
        return [arg for name, value in pairs.items() for arg in (f"--{name.replace('_', '-')}", value)]
    return [arg for name, value in pairs.items() for arg in ("--config", f"{name}={value}")]


def last_metrics(run_dir: Path) -> dict[str, Any]:
    lines = (
        [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        if (run_dir / "metrics.jsonl").is_file()
        else []
    )
    return json.loads(lines[-1]) if lines else {}


def train(proof: Proof, plugins: list[str], args: argparse.Namespace, small: bool) -> None:
    precisions = PRECISIONS[:1] if args.quick else PRECISIONS
    device = "cuda" if proof.cuda else "cpu"
    root = proof.work / "train"
    shutil.rmtree(root, ignore_errors=True)
    runs = []
    for plugin in plugins:
        for precision in precisions:
            runs.append((plugin, precision, root / f"{plugin}-{device}-{precision}"))
        if not proof.cuda:
            proof.training += [skipped(NO_CUDA, plugin=plugin, device="cuda", precision=p) for p in PRECISIONS]

    def one(plugin: str, precision: str, run_dir: Path) -> dict[str, Any]:
        options = {
            "--device": device,
            "--precision": precision,
            "--max-steps": args.steps,
            "--batch-size": args.batch_size,
            "--seed": 0,
            "--progress": "none",
            "--threads": proof.threads,
            "--out": run_dir,
        }
        cmd = zoo_cmd("train", plugin, *(str(v) for option in options.items() for v in option), *config_args(plugin, small, "train"))
        ran = proof.run(f"train {plugin} {device} {precision}", cmd, timeout=240)
        cell = {"plugin": plugin, "device": device, "precision": precision, "seconds": round(ran.seconds, 1), "run": str(run_dir)}
        if not ran.ok:
            return {**cell, "status": "failed", "reason": ran.last_line()}
        metrics = last_metrics(run_dir)
        losses = {k: v for k, v in metrics.items() if "loss" in k and isinstance(v, (int, float))}
        finite = all(math.isfinite(v) for v in losses.values())
        cell.update(steps=metrics.get("step"), losses={k: float(f"{v:.5g}") for k, v in losses.items()}, finite=finite)
        if not losses:
            return {**cell, "status": "failed", "reason": "metrics.jsonl has no loss"}
        if not finite:
            return {**cell, "status": "failed", "reason": f"a loss is not finite: {losses}"}
        return {**cell, "status": "passed", "reason": ""}

    with ThreadPoolExecutor(proof.jobs) as pool:
        cells = list(pool.map(lambda r: one(*r), runs))
    trained = [c for c in cells if c["status"] == "passed"]
    if trained:
        pairs = [(c["plugin"], str(Path(c["run"]) / "last.pt")) for c in trained]
        ran = proof.run(
            "load the checkpoints on the CPU", [PYTHON, "-c", CHECKPOINT_PROBE, json.dumps(pairs)], env=proof.child_env(hide_cuda=True)
        )
        loaded = json.loads(ran.stdout) if ran.ok else {}
        for cell, (_, path) in zip(trained, pairs):
            result = loaded.get(path) or {"loads": False, "error": ran.last_line()}
            cell["loads_on_cpu"] = bool(result.get("loads") and result.get("finite_weights"))
            if not cell["loads_on_cpu"]:
                reason = result.get("error") or f"weights on {result.get('devices')}, finite: {result.get('finite_weights')}"
                cell.update(status="failed", reason=f"the checkpoint does not load on the CPU: {reason}")
    proof.training = cells + proof.training


# --------------------------------------------------------------------------- export and parity


def ort_cuda_reason(env: dict[str, Any]) -> str | None:
    """Why ONNX cannot run on CUDA here, or None when onnxruntime has its CUDA provider."""
    providers = env.get("onnxruntime_providers") or []
    if "CUDAExecutionProvider" in providers:
        return None
    version = env.get("onnxruntime") or "(not installed)"
    return f"onnxruntime {version} has no CUDAExecutionProvider (providers: {', '.join(providers) or 'none'}): ONNX on CUDA needs onnxruntime-gpu"


def cells_from_rows(
    plugin: str, manifest: dict[str, Any], rows: list[dict[str, Any]], env: dict[str, Any], source: str
) -> list[dict[str, Any]]:
    """One cell per (target, format, runtime, device): the worst error over its batch
    sizes and axis sizes, failed if any check failed, skipped only if none ran."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["target"], row["format"], row["runtime"], row["device"]), []).append(row)
    task_rows: dict[tuple, list[dict[str, Any]]] = {}
    for row in manifest.get("task_parity") or []:
        task_rows.setdefault((row.get("target"), row.get("format"), row.get("runtime"), row.get("device")), []).append(row)
    no_ort_cuda = ort_cuda_reason(env)
    cells = []
    for (target, fmt, runtime, device), group in groups.items():
        ran = [r for r in group if r.get("status") != "skipped"]
        failed = [r for r in ran if not r.get("passed")]
        abs_errors = [r["max_abs"] for r in ran if r.get("max_abs") is not None]
        rel_errors = [r["max_rel"] for r in ran if r.get("max_rel") is not None]
        seconds = [
            a.get("seconds") or 0.0
            for a in manifest.get("artifacts", [])
            if a["target"] == target and a["format"] == fmt and a.get("device") in (None, device)
        ]
        cell = {
            "plugin": plugin,
            "target": target,
            "format": fmt,
            "runtime": runtime,
            "device": device,
            "checks": len(ran),
            "batches": sorted({r["batch"] for r in ran if r.get("batch") is not None}),
            "max_abs": max(abs_errors) if abs_errors else None,
            "max_rel": max(rel_errors) if rel_errors else None,
            "rtol": group[0].get("rtol"),
            "atol": group[0].get("atol"),
            "export_seconds": round(sum(seconds), 2) if seconds and ran and source == "zoo export" else None,
            "source": source,
        }
        tasks = task_rows.get((target, fmt, runtime, device), [])
        task_failed = [r for r in tasks if r.get("status") == "failed"]
        if tasks:
            cell["task_checks"] = len([r for r in tasks if r.get("status") != "skipped"])
        if fmt == "onnx" and device.startswith("cuda") and no_ort_cuda and (failed or task_failed):
            # zoo asks onnxruntime for CUDA and counts its CPU fallback as a failure; without
            # the provider there is nothing to prove, so the cell is skipped, saying why.
            zoo_said = (failed or task_failed)[0].get("reason") or ""
            cell.update(status="skipped", reason=no_ort_cuda, zoo_reason=zoo_said)
        elif failed or task_failed:
            cell.update(status="failed", reason=(failed or task_failed)[0].get("reason") or "outside the tolerance")
        elif ran:
            cell.update(status="passed", reason="")
        else:
            cell.update(status="skipped", reason=group[0].get("reason") or "")
        cells.append(cell)
    return cells


def missing_cells(plugin: str, manifest: dict[str, Any], cells: list[dict[str, Any]], formats: tuple[str, ...]) -> list[dict[str, Any]]:
    """The python runtime's grid (every target x format x device) where export.json has no row."""
    targets = dict.fromkeys(
        [a["target"] for a in manifest.get("artifacts", [])] + [s["target"] for s in manifest.get("skipped_formats", [])]
    )
    have = {(c["target"], c["format"], c["device"]) for c in cells if c["runtime"] == "python"}
    out = []
    for target in targets:
        for fmt in FORMATS:
            for device in DEVICES:
                if (target, fmt, device) in have:
                    continue
                where = dict(plugin=plugin, target=target, format=fmt, runtime="python", device=device, source="zoo export")
                if fmt not in formats:
                    out.append(skipped("--quick: not exported (a .pt2 compiles C++, ~30 s a target)", **where))
                else:
                    out.append({**where, "status": "failed", "reason": "export.json has no parity row for it"})
    return out


def exported_formats(out: Path) -> set[str]:
    """Formats export.json in `out` lists (as artifacts or as skipped by the target)."""
    if not (out / "export.json").is_file():
        return set()
    manifest = json.loads((out / "export.json").read_text())
    return {a["format"] for a in manifest.get("artifacts", [])} | {s["format"] for s in manifest.get("skipped_formats", [])}


def export_one(proof: Proof, plugin: str, formats: tuple[str, ...], small: bool, reserve: float) -> list[dict[str, Any]]:
    out = proof.work / "export" / plugin
    shutil.rmtree(out, ignore_errors=True)
    flags = ["--all-formats"] if formats == FORMATS else [f"--{f}" for f in formats]
    base = ["export", plugin, "--random-init", "--device", "all", "--no-latency", "--json", "--out", str(out)]
    ran = proof.run(f"export {plugin}", zoo_cmd(*base, *flags, *config_args(plugin, small, "export")), timeout=420, reserve=reserve)
    errors = []
    if not (out / "export.json").is_file():
        # A format that breaks the whole export (exit 1, no export.json) must not hide the
        # others: each is exported on its own into the same directory (export.json merges).
        errors.append(("every format", ran))
        if ran.returncode is not None:
            for fmt in formats:
                again = proof.run(
                    f"export {plugin} --{fmt}", zoo_cmd(*base, f"--{fmt}", *config_args(plugin, small, "export")), reserve=reserve
                )
                if not again.ok and fmt not in exported_formats(out):
                    errors.append((f"--{fmt}", again))
    cells = []
    if (out / "export.json").is_file():
        manifest = json.loads((out / "export.json").read_text())
        cells = cells_from_rows(plugin, manifest, manifest.get("parity", []), proof.env, "zoo export")
        cells += missing_cells(plugin, manifest, cells, formats)
    return cells + [failed_cell(plugin, "python", ran.last_line(), fmt=where) for where, ran in errors]


def verify_cpp(proof: Proof, plugins: list[str]) -> list[dict[str, Any]]:
    """zoo-run (libtorch C++) on one small export: TorchScript and .pt2, on the CPU and CUDA."""
    exports = proof.work / "export"
    chosen = next((p for p in (*CPP_PREFERENCE, *plugins) if p in plugins and (exports / p / "export.json").is_file()), None)
    if chosen is None:
        return [skipped("no export to verify (every export failed)", plugin="*", target="*", format="*", runtime="cpp", device="*")]
    cmd = zoo_cmd("verify", str(exports / chosen), "--runtime", "cpp", "--device", "all", "--no-latency", "--json")
    ran = proof.run(f"verify {chosen} --runtime cpp", cmd, timeout=300)
    try:
        report = json.loads(ran.stdout)
    except json.JSONDecodeError:
        return [failed_cell(chosen, "cpp", ran.last_line())]
    cells = cells_from_rows(chosen, report, report.get("parity", []), proof.env, "zoo verify")
    if not ran.ok and not any(c["status"] == "failed" for c in cells):
        cells.append(failed_cell(chosen, "cpp", ran.last_line()))
    return cells


# --------------------------------------------------------------------------- pytest -m cuda


def run_pytest(proof: Proof) -> dict[str, Any]:
    xml = proof.out / "pytest-cuda.xml"
    xml.unlink(missing_ok=True)
    cmd = [PYTHON, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    env = proof.child_env()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS"):
        if name not in os.environ:
            env.pop(name)  # pytest runs alone: every core
    ran = proof.run("pytest -m cuda", cmd, env=env, cwd=ROOT)
    result: dict[str, Any] = {"command": "pytest -m cuda", "returncode": ran.returncode, "seconds": round(ran.seconds, 1), "tests": []}
    if xml.is_file():
        for case in ElementTree.parse(xml).iter("testcase"):
            status, reason = "passed", ""
            for tag in ("failure", "error", "skipped"):
                found = case.find(tag)
                if found is not None:
                    status = "skipped" if tag == "skipped" else "failed"
                    text = (found.get("message") or found.text or "").strip()
                    reason = text.splitlines()[0][:300] if text else ""
                    break
            name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            result["tests"].append({"test": name, "status": status, "reason": reason, "seconds": float(case.get("time") or 0)})
    counts = Counter(t["status"] for t in result["tests"])
    result.update(passed=counts["passed"], failed=counts["failed"], skipped=counts["skipped"])
    if not result["tests"]:
        result["status"], result["reason"] = "failed", f"pytest -m cuda selected no tests ({ran.last_line()})"
    elif counts["failed"] or ran.returncode != 0:
        result["status"], result["reason"] = "failed", ran.last_line()
    elif proof.cuda and not counts["passed"]:
        result["status"], result["reason"] = "failed", "every test pytest -m cuda selected skipped, on a machine with CUDA"
    else:
        result["status"], result["reason"] = "passed", ""
    return result


# --------------------------------------------------------------------------- report


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.3g}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_num(v) if not isinstance(v, str) else v for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join("  " + line for line in lines)


def summary(proof: Proof) -> dict[str, Any]:
    statuses = [c["status"] for c in proof.training + proof.parity]
    if proof.pytest:
        statuses += [t["status"] for t in proof.pytest.get("tests", [])]
    counts = Counter(statuses)
    failed_phases = [p["phase"] for p in proof.phases if p["status"] == "failed"]
    ok = not proof.fatal and not counts["failed"] and not failed_phases and (proof.pytest.get("status") != "failed")
    return {"ok": ok, "passed": counts["passed"], "failed": counts["failed"], "skipped": counts["skipped"], "failed_phases": failed_phases}


def skip_reasons(proof: Proof) -> list[dict[str, Any]]:
    reasons = Counter(c["reason"] for c in proof.training + proof.parity if c["status"] == "skipped")
    if proof.pytest:
        reasons.update(t["reason"] for t in proof.pytest.get("tests", []) if t["status"] == "skipped")
        if proof.pytest.get("status") == "skipped":
            reasons.update([proof.pytest["reason"]])
    return [{"reason": reason, "cells": count} for reason, count in reasons.most_common()]


def render(report: dict[str, Any]) -> str:
    env, result = report["environment"], report["summary"]
    gpu = f"{', '.join(env.get('gpus', []))} (sm {env.get('capability')})" if env.get("cuda") else "no CUDA device"
    parts = [
        f"zoo CUDA proof, {report['created']}: {gpu}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
        f"onnxruntime {env.get('onnxruntime')} [{', '.join(env.get('onnxruntime_providers') or [])}], Python {env.get('python')}",
        f"result: {'PASSED' if result['ok'] else 'FAILED'}: {result['passed']} passed, {result['failed']} failed, "
        f"{result['skipped']} skipped in {report['seconds']:.0f} s (mode {report['mode']}{', quick' if report['quick'] else ''})",
    ]
    if report.get("fatal"):
        parts.append(f"stopped: {report['fatal']}")
    parts += [f"note: {n}" for n in report["notes"]]
    parts += [
        "",
        "phases",
        table(["phase", "seconds", "status", "note"], [[p["phase"], p["seconds"], p["status"], p["note"]] for p in report["phases"]]),
    ]
    if report["training"]:
        rows = [
            [
                c["plugin"],
                c["device"],
                c["precision"],
                c["status"],
                c.get("steps"),
                " ".join(f"{k}={v:.4g}" for k, v in (c.get("losses") or {}).items()) or "-",
                {True: "yes", False: "no"}.get(c.get("loads_on_cpu"), "-"),
                c.get("seconds"),
                c["reason"],
            ]
            for c in report["training"]
        ]
        parts += ["", f"training (--max-steps {report['steps']})"]
        parts.append(table(["plugin", "device", "precision", "status", "steps", "losses", "loads on cpu", "seconds", "reason"], rows))
    if report["parity"]:
        rows = [
            [
                c["plugin"],
                c["target"],
                c["format"],
                c["runtime"],
                c["device"],
                c["status"],
                c.get("checks"),
                c.get("max_abs"),
                c.get("max_rel"),
                c.get("export_seconds"),
                c["reason"],
            ]
            for c in report["parity"]
        ]
        parts += ["", "parity (the worst over every batch size and axis size; errors against eager PyTorch)"]
        parts.append(
            table(["plugin", "target", "format", "runtime", "device", "status", "checks", "max abs", "max rel", "export s", "reason"], rows)
        )
    pytest = report.get("pytest") or {}
    if pytest:
        parts += ["", f"pytest -m cuda: {pytest.get('status')} {pytest.get('reason') or ''}".rstrip()]
        if pytest.get("tests"):
            parts.append(
                table(
                    ["test", "status", "seconds", "reason"], [[t["test"], t["status"], t["seconds"], t["reason"]] for t in pytest["tests"]]
                )
            )
    if report["skip_reasons"]:
        parts += ["", "skip reasons", table(["cells", "reason"], [[s["cells"], s["reason"]] for s in report["skip_reasons"]])]
    deps = report["install"].get("dependencies") or []
    if report["install"]:
        parts += ["", f"install: {report['install'].get('zoo', '-')}"]
    if deps:
        rows = [
            [d["requirement"], d.get("installed") or "-", d["status"], {True: "yes", False: "no"}.get(d.get("imports"), "-"), d["note"]]
            for d in deps
        ]
        parts.append(table(["requirement", "installed", "status", "imports", "note"], rows))
    return "\n".join(parts) + "\n"


def write_report(proof: Proof, args: argparse.Namespace) -> dict[str, Any]:
    report = {
        "report_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
        "mode": "cuda" if proof.cuda else "cpu",
        "quick": args.quick,
        "steps": args.steps,
        "seconds": round(proof.elapsed(), 1),
        "budget_seconds": args.budget,
        "jobs": proof.jobs,
        "threads_per_job": proof.threads,
        "summary": summary(proof),
        "fatal": proof.fatal,
        "notes": proof.notes,
        "environment": proof.env,
        "install": proof.install,
        "phases": proof.phases,
        "training": proof.training,
        "parity": proof.parity,
        "pytest": proof.pytest,
        "skip_reasons": skip_reasons(proof),
        "commands": proof.commands,
        "work": str(proof.work),
    }
    proof.out.mkdir(parents=True, exist_ok=True)
    (proof.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (proof.out / "report.txt").write_text(render(report))
    return report


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cuda_proof.py",
        description="Train, export, verify and test zoo on CUDA (or its CPU part where there is none), and write one report.",
    )
    parser.add_argument("out", type=Path, help="directory for report.json, report.txt and pytest-cuda.xml")
    parser.add_argument("--work", type=Path, default=None, help="directory for the runs and exports [default: OUT/work]")
    parser.add_argument("--plugins", default=None, help="comma list [default: every plugin on CUDA; convnet,vae without CUDA]")
    parser.add_argument("--quick", action="store_true", help="TorchScript and ONNX only, fp32 training only, no zoo-run build (CI)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per run [default: 3]")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size [default: 16]")
    parser.add_argument("--jobs", type=int, default=None, help="commands run at once [default: half the cores, at most 8]")
    parser.add_argument("--budget", type=float, default=480, help="seconds for all the checks; what is left then is skipped [default: 480]")
    parser.add_argument("--wheels", type=Path, default=None, help="install every .whl in DIR (--no-index --no-deps) before zoo")
    parser.add_argument("--install", action="store_true", help="pip install zoo from this tree even if it is already installed")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or (args.jobs is not None and args.jobs < 1) or args.budget <= 0:
        parser.error("--steps, --batch-size, --jobs and --budget must be positive")
    return args


def choose_plugins(proof: Proof, spec: str | None) -> list[str]:
    ran = proof.run("zoo list", zoo_cmd("list", "--json"))
    if not ran.ok:
        raise Fatal(f"`zoo list` failed: {ran.last_line()}")
    listed = json.loads(ran.stdout)
    ok = [p["name"] for p in listed if p.get("status") == "ok"]
    broken = [f"{p['name']} ({p.get('error', p.get('status'))})" for p in listed if p.get("status") != "ok"]
    if broken:
        proof.notes.append(f"broken plugins, not checked: {', '.join(broken)}")
    if spec:
        wanted = [p.strip() for p in spec.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in ok]
        if unknown:
            raise Fatal(f"--plugins: {', '.join(unknown)} not among the working plugins ({', '.join(ok)})")
        return wanted
    return ok if proof.cuda else [p for p in CPU_SUBSET if p in ok] or ok[:1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = os.cpu_count() or 2
    jobs = args.jobs or max(1, min(8, cpus // 2))
    work = (args.work or args.out / "work").resolve()
    proof = Proof(out=args.out.resolve(), work=work, budget=args.budget, jobs=jobs, threads=max(1, cpus // jobs))
    proof.out.mkdir(parents=True, exist_ok=True)
    proof.work.mkdir(parents=True, exist_ok=True)
    build: dict[str, Any] = {}

    def stop(signum: int, frame: Any) -> None:
        proof.stop_all()
        raise Stopped(f"stopped by {signal.Signals(signum).name}; the report holds what was done before")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        with proof.phase("environment") as phase:
            ran = proof.run("probe the environment", [PYTHON, "-c", ENVIRONMENT_PROBE])
            if not ran.ok:
                raise Fatal(f"{PYTHON} cannot run the environment probe: {ran.last_line()}")
            proof.env = json.loads(ran.stdout)
            if "torch_error" in proof.env:
                raise Fatal(f"torch cannot be imported by {PYTHON}: {proof.env['torch_error']}")
            phase["note"] = f"torch {proof.env['torch']}, " + (f"{proof.env['gpus'][0]}" if proof.cuda else "no CUDA")
        if not proof.cuda:
            print(f"cuda_proof: {NO_CUDA}: running the CPU part only; every CUDA cell is skipped with that reason", flush=True)
        small = args.quick or not proof.cuda
        with proof.phase("install") as phase:
            install(proof, args.wheels, args.install)
            phase["note"] = proof.install["zoo"]
        plugins = choose_plugins(proof, args.plugins)
        builder = None
        if not args.quick:  # a minute or more of C++ on its own: built beside the training and the exports
            builder = threading.Thread(
                target=lambda: build.update(ran=proof.run("build zoo-run", [PYTHON, "-c", BUILD_ZOO_RUN], timeout=420)), daemon=True
            )
            builder.start()
        with proof.phase("train") as phase:
            train(proof, plugins, args, small)
            phase["note"] = f"{len(plugins)} plugins on {'cuda' if proof.cuda else 'cpu'}, --max-steps {args.steps}"
            phase["status"] = failed_or_ok(proof.training)
        with proof.phase("export") as phase:
            formats = FORMATS[:2] if args.quick else FORMATS
            reserve = 120 if proof.cuda else 0  # for zoo-run's checks and pytest
            order = sorted(plugins, key=lambda p: HEAVY_FIRST.index(p) if p in HEAVY_FIRST else len(HEAVY_FIRST))
            with ThreadPoolExecutor(proof.jobs) as pool:
                exported = dict(zip(order, pool.map(lambda p: export_one(proof, p, formats, small, reserve), order)))
            proof.parity += [cell for p in plugins for cell in exported[p]]
            phase["note"] = f"{', '.join(formats)} with --device all"
            phase["status"] = failed_or_ok([c for p in plugins for c in exported[p]])
        with proof.phase("cpp") as phase:
            if builder is None:
                phase.update(status="skipped", note="--quick: zoo-run not built")
                proof.parity.append(skipped("--quick: zoo-run not built", plugin="*", target="*", format="*", runtime="cpp", device="*"))
            else:
                builder.join(timeout=max(5.0, proof.remaining()))
                ran = build.get("ran")
                phase["note"] = f"zoo-run built in {ran.seconds:.0f} s, beside the training and exports" if ran and ran.ok else ""
                if not (ran and ran.ok):
                    phase["note"] = f"zoo-run build: {ran.last_line() if ran else 'still running at the end of the budget'}"
                cells = verify_cpp(proof, plugins)
                proof.parity += cells
                phase["status"] = failed_or_ok(cells)
        with proof.phase("pytest") as phase:
            if proof.cuda:
                proof.pytest = run_pytest(proof)
                phase.update(status=proof.pytest["status"], note=f"{proof.pytest['passed']} passed, {proof.pytest['skipped']} skipped")
            else:
                proof.pytest = {"status": "skipped", "reason": f"{NO_CUDA}: pytest -m cuda would only skip", "tests": []}
                phase.update(status="skipped", note=proof.pytest["reason"])
    except (Fatal, Stopped) as exc:
        proof.fatal = str(exc)
        print(f"cuda_proof: error: {exc}", file=sys.stderr)
    finally:
        proof.stop_all()
    report = write_report(proof, args)
    text = render(report)
    print(text, end="")
    print(f"{text.splitlines()[1]}; report: {proof.out / 'report.json'} and {proof.out / 'report.txt'}")
    return 0 if report["summary"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
