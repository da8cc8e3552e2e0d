"""benchmarks/cuda_proof.py, the one command that proves zoo's CUDA paths: its CPU part runs
here like everything else (the GPU part runs on a lent GPU machine), and its reading of
export.json is checked on the rows zoo writes where onnxruntime has no CUDA provider."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "cuda_proof.py"


def proof_module():
    if "cuda_proof" in sys.modules:
        return sys.modules["cuda_proof"]
    spec = importlib.util.spec_from_file_location("cuda_proof", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cuda_proof"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_proof(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The script as a user runs it, on a machine that sees no GPU (whatever this one has)."""
    environment = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **env)
    cmd = [sys.executable, str(SCRIPT), str(out), "--jobs", "1", *args]
    return subprocess.run(cmd, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)


def test_without_cuda_the_cpu_part_runs_and_every_cuda_cell_is_skipped_with_the_reason(tmp_path):
    r = run_proof(tmp_path / "proof", "--quick", "--plugins", "convnet")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    notices = [line for line in r.stdout.splitlines() if line.startswith("cuda_proof:")]
    assert len(notices) == 1 and "no CUDA device" in notices[0] and "CPU part" in notices[0], r.stdout
    report = json.loads((tmp_path / "proof" / "report.json").read_text())
    assert report["mode"] == "cpu" and report["quick"] and report["summary"]["ok"] and report["summary"]["failed"] == 0
    assert (tmp_path / "proof" / "report.txt").read_text() in r.stdout  # the table, also printed

    (trained,) = [c for c in report["training"] if c["device"] == "cpu"]
    assert trained["status"] == "passed" and trained["steps"] == 3 and trained["loads_on_cpu"] and trained["finite"]
    assert trained["losses"] and all(isinstance(v, float) for v in trained["losses"].values())
    cuda_runs = [c for c in report["training"] if c["device"] == "cuda"]
    assert {c["precision"] for c in cuda_runs} == {"fp32", "bf16-mixed"}
    assert all(c["status"] == "skipped" and "no CUDA device" in c["reason"] for c in cuda_runs)

    cells = {(c["format"], c["runtime"], c["device"]): c for c in report["parity"] if c["plugin"] == "convnet"}
    for fmt in ("torchscript", "onnx"):
        cpu = cells[(fmt, "python", "cpu")]
        assert cpu["status"] == "passed" and cpu["target"] == "classifier"
        assert cpu["checks"] == len(cpu["batches"]) >= 2 and 1 in cpu["batches"]  # one check per batch size export.json lists
        assert cpu["max_abs"] is not None and cpu["max_abs"] <= cpu["atol"] + cpu["rtol"]
        cuda = cells[(fmt, "python", "cuda")]
        assert cuda["status"] == "skipped" and "no CUDA device" in cuda["reason"] and cuda["max_abs"] is None
    assert all(c["status"] == "skipped" and "--quick" in c["reason"] for c in (cells[("pt2", "python", d)] for d in ("cpu", "cuda")))
    assert report["pytest"]["status"] == "skipped" and "no CUDA device" in report["pytest"]["reason"]
    assert {p["phase"] for p in report["phases"]} == {"environment", "install", "train", "export", "cpp", "pytest"}
    assert all(isinstance(p["seconds"], float | int) for p in report["phases"])
    assert {row["requirement"].split(">")[0].split("=")[0] for row in report["install"]["dependencies"]} >= {"torch", "onnx", "click"}


def test_a_module_zoo_cannot_import_without_stops_it_in_one_line_naming_it(tmp_path):
    shadow = tmp_path / "shadow" / "click"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'click'\", name='click')\n")
    r = run_proof(tmp_path / "proof", "--quick", PYTHONPATH=str(tmp_path / "shadow"))
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("cuda_proof: error:")]
    assert len(errors) == 1 and "module 'click' is missing" in errors[0] and "Traceback" not in r.stderr, r.stderr
    report = json.loads((tmp_path / "proof" / "report.json").read_text())
    assert "'click'" in report["fatal"] and not report["summary"]["ok"]


def manifest_rows(fmt: str, device: str, **fields) -> list[dict]:
    """Parity rows as zoo writes them for one artifact at batch sizes 1 and 4."""
    base = {"target": "decoder", "format": fmt, "runtime": "python", "device": device, "axes": {}, "rtol": 1e-4, "atol": 1e-5, "reason": ""}
    return [{**base, "batch": batch, **fields} for batch in (1, 4)]


def test_onnx_on_cuda_without_the_cuda_provider_is_skipped_with_the_reason_not_failed():
    proof = proof_module()
    # What zoo writes on a GPU machine whose onnxruntime is the CPU build: it asks for CUDA,
    # gets the CPU fallback, and marks every ONNX row on CUDA failed.
    zoo_reason = "onnxruntime 1.30.0 cannot use CUDA here (providers: CPUExecutionProvider); install onnxruntime-gpu built for this CUDA"
    rows = (
        manifest_rows("onnx", "cuda", passed=False, status="failed", reason=zoo_reason, max_abs=None, max_rel=None)
        + [
            {**row, "max_abs": err, "max_rel": err * 10}
            for row, err in zip(manifest_rows("torchscript", "cuda", passed=True, status="passed"), (1e-7, 3e-7))
        ]
        + manifest_rows("pt2", "cuda", passed=False, status="failed", reason="|file - eager| 0.5 > tolerance", max_abs=0.5, max_rel=1.0)
    )
    manifest = {"artifacts": [{"target": "decoder", "format": "onnx", "seconds": 1.5}], "parity": rows}
    cpu_build = {"onnxruntime": "1.30.0", "onnxruntime_providers": ["CPUExecutionProvider"]}
    cells = {c["format"]: c for c in proof.cells_from_rows("vae", manifest, rows, cpu_build, "zoo export")}
    onnx = cells["onnx"]
    assert onnx["status"] == "skipped" and "no CUDAExecutionProvider" in onnx["reason"] and "onnxruntime-gpu" in onnx["reason"]
    assert onnx["zoo_reason"] == zoo_reason  # what zoo said stays in the report
    assert cells["torchscript"]["status"] == "passed" and cells["torchscript"]["max_abs"] == 3e-7 and cells["torchscript"]["checks"] == 2
    assert cells["pt2"]["status"] == "failed" and "tolerance" in cells["pt2"]["reason"]  # only ONNX is excused
    # Where the provider exists, the same rows are a failure.
    gpu_build = {"onnxruntime": "1.23.0", "onnxruntime_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    (onnx,) = [c for c in proof.cells_from_rows("vae", manifest, rows, gpu_build, "zoo export") if c["format"] == "onnx"]
    assert onnx["status"] == "failed" and onnx["reason"] == zoo_reason


def test_pytest_dash_m_cuda_selects_the_cuda_tests_and_the_report_reads_their_results(tmp_path, monkeypatch):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\s*"cuda: ', pyproject, flags=re.M), "the cuda marker must be declared in [tool.pytest.ini_options]"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    module = proof_module()
    proof = module.Proof(out=tmp_path, work=tmp_path / "work", budget=300, jobs=1, threads=1)
    result = module.run_pytest(proof)  # what the GPU run does, here where every CUDA test skips
    assert result["tests"] and all(t["test"].startswith("tests/") and "::" in t["test"] for t in result["tests"]), result
    assert result["status"] == "passed" and result["failed"] == 0 and result["skipped"] == len(result["tests"]), result
    assert all("CUDA" in t["reason"] for t in result["tests"]), result
    assert (tmp_path / "pytest-cuda.xml").is_file()


def test_the_dependency_table_says_which_onnxruntime_stands_in_for_onnxruntime_gpu(monkeypatch):
    module = proof_module()
    installed = {"torch": "2.11.0+cu130", "onnxruntime": "1.30.0", "numpy": "1.20.0"}

    class Metadata:
        PackageNotFoundError = module.metadata.PackageNotFoundError

        @staticmethod
        def version(name):
            if name.lower() in installed:
                return installed[name.lower()]
            raise Metadata.PackageNotFoundError(name)

    monkeypatch.setattr(module, "metadata", Metadata)
    rows = {row["requirement"].split(">")[0].split("<")[0]: row for row in module.dependency_rows(["CPUExecutionProvider"])}
    assert rows["torch"]["status"] == "ok"  # 2.11 is inside pyproject's range, local version and all
    assert rows["numpy"]["status"] == "other version" and ">=1.24" in rows["numpy"]["note"]
    assert rows["click"]["status"] == "missing" and rows["click"]["installed"] is None
    ort = rows.get("onnxruntime-gpu") or rows["onnxruntime"]  # whichever pyproject asks for on this platform
    if "onnxruntime-gpu" in rows:
        assert ort["status"] == "substituted" and "onnxruntime 1.30.0" in ort["note"] and "CPU build" in ort["note"]
    else:
        assert ort["status"] == "ok"


@pytest.mark.parametrize("argument", ["--steps=0", "--jobs=0", "--budget=0"])
def test_bad_arguments_exit_2(tmp_path, argument):
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), argument], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "must be positive" in r.stderr
