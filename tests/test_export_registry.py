"""Export formats and runtimes are registries (`zoo.formats`, `zoo.runtimes`): zoo's own are
registered in its pyproject.toml like a third party's, and a third party's format or runtime
is one module and one entry point, after which `zoo export`, `zoo verify`, the artifact
loader and the CLI flags know it. A broken one is named without taking the others down."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch

from zoo.errors import UsageError, ZooError
from zoo.export import artifacts
from zoo.export import format as zformat
from zoo.export import runtime as zruntime


def test_builtin_formats_and_runtimes_are_registered_like_a_third_partys():
    assert zformat.names() == ["torchscript", "onnx", "pt2"]
    assert zformat.default_names() == ["torchscript", "onnx"]
    assert zruntime.names() == ["python", "cpp", "node"]
    declared = {ep.name: ep.value for ep in entry_points(group="zoo.formats")}
    assert declared == {f: f"zoo.export.formats.{f}:format" for f in ("torchscript", "onnx", "pt2")}
    for entry in zformat.formats.entries().values():
        assert entry.distribution == "zoo" and entry.status == "ok", entry
        fmt = entry.obj
        assert fmt.default_exporter in fmt.exporters
    assert zformat.get("onnx").exporters == {"dynamo": "torch.export", "torchscript": "torchscript"}
    pt2 = zformat.get("pt2")
    assert set(pt2.exporters) == set(pt2.inductor_options) == {"aotinductor", "aotinductor-nchw"}
    assert pt2.inductor_options["aotinductor-nchw"] == {"layout_optimization": False}
    assert zruntime.get("cpp").formats == ("torchscript", "pt2") and zruntime.get("node").formats == ("onnx",)
    assert zruntime.get("python").runs("pt2") and not zruntime.get("node").runs("torchscript")
    with pytest.raises(UsageError, match="unknown format 'tflite'"):
        zformat.get("tflite")


PROGRAM_FORMAT = '''
"""A third party's format: the torch.export program itself (`torch.export.save`), run in
Python by `torch.export.load(...).module()`."""
import zipfile

from zoo.export import metadata
from zoo.export.format import Format, Loaded


class Program(Format):
    name = "program"
    summary = "export the torch.export program (<target>.program.pt2)"
    exporters = {"torch.export": "torch.export.save"}
    default_exporter = "torch.export"
    in_default_export = False
    order = 25  # between ONNX (20) and .pt2 (30)

    def file_name(self, target, device="cpu"):
        return f"{target}.program.pt2"

    def needs_program(self, target):
        return True

    def export(self, job, path, device):
        import torch

        meta = {**job.metadata, "format": self.name, "exported_with": "torch.export.save"}
        torch.export.save(job.program(), str(path), extra_files={metadata.METADATA_KEY: metadata.dumps(meta)})
        return meta

    def sniff(self, probe):
        names = probe.names or []
        return any(n.endswith("/models/model.json") for n in names) and not any("/aotinductor/" in n for n in names)

    def read_metadata(self, path):
        with zipfile.ZipFile(path) as archive:
            entry = next(n for n in archive.namelist() if n.endswith("/extra/zoo.json"))
            return metadata.parse(archive.read(entry), path)

    def load(self, path, meta, device):
        import torch

        module = torch.export.load(str(path)).module()

        def run(inputs):
            with torch.no_grad():
                return module(*inputs)

        return Loaded(run, takes="torch")


format = Program()
'''

ORT_RUNTIME = '''
"""A third party's runtime: ONNX files in a plain onnxruntime session, and one that is never available."""
from zoo.export.runtime import Runtime, Session


class OrtSession(Session):
    def __init__(self, path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, inputs):
        names = [i.name for i in self.session.get_inputs()]
        outputs = self.session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        return dict(zip([o.name for o in self.session.get_outputs()], outputs))

    def latency_ms(self, inputs):
        return 1.0


class Ort(Runtime):
    name = "ort"
    summary = "a bare onnxruntime session"
    formats = ("onnx",)
    order = 50

    def available(self):
        return True, "onnxruntime is installed"

    def skip_reason(self, device):
        return None if device == "cpu" else "CPU only"

    def open(self, path, device):
        return OrtSession(path)


class Moon(Runtime):
    name = "moon"
    formats = ("onnx",)

    def available(self):
        return False, "no runner on the moon here"


runtime = Ort()
moon = Moon()
'''


@pytest.fixture
def third_party(install_dist):
    install_dist(
        "zoo-extras",
        "2.0",
        {"zoo_program_format": PROGRAM_FORMAT, "zoo_ort_runtime": ORT_RUNTIME},
        {},
        groups={
            "zoo.formats": {"program": "zoo_program_format:format", "broken": "zoo_not_installed:format"},
            "zoo.runtimes": {"ort": "zoo_ort_runtime:runtime", "moon": "zoo_ort_runtime:moon"},
        },
    )


def test_a_third_party_format_exports_verifies_and_loads(zoo, third_party, tmp_path):
    assert zformat.names() == ["torchscript", "onnx", "program", "pt2"]  # its `order` puts it there
    r = zoo("export", "--help")
    assert "--program" in r.stdout and "export the torch.export program" in r.stdout
    out = tmp_path / "out"
    r = zoo("export", "convnet", "--random-init", "--program", "--device", "cpu", "--no-latency", "--json", "--out", out)
    assert r.exit_code == 0, r
    manifest = r.json()
    (record,) = manifest["artifacts"]
    assert (record["format"], record["path"], record["exported_with"]) == ("program", "classifier.program.pt2", "torch.export.save")
    assert {(row["runtime"], row["batch"], row["status"]) for row in manifest["parity"] if row["device"] == "cpu"} == {
        ("python", 1, "passed"),
        ("python", 2, "passed"),
        ("python", 5, "passed"),
    }
    # The loader tells it from a .pt2 package by its bytes, and runs it.
    art = artifacts.load(out / "classifier.program.pt2")
    assert art.format == "program" and art.metadata["target"] == "classifier"
    assert art(torch.rand(3, 1, 28, 28))[0].shape == (3, 10)
    r = zoo("verify", out, "--device", "cpu", "--no-latency")
    assert r.exit_code == 0, r
    # --format NAME and --all-formats reach it too.
    r = zoo(
        "export",
        "convnet",
        "--random-init",
        "--format",
        "program",
        "--torchscript",
        "--device",
        "cpu",
        "--no-latency",
        "--json",
        "--out",
        tmp_path / "two",
    )
    assert r.exit_code == 0, r
    assert [a["format"] for a in r.json()["artifacts"]] == ["torchscript", "program"]


def test_a_broken_format_is_named_and_the_others_keep_working(zoo, third_party, tmp_path):
    entry = zformat.formats.entries()["broken"]
    assert entry.status == "broken" and "zoo_not_installed" in entry.error and entry.distribution == "zoo-extras"
    r = zoo("export", "convnet", "--random-init", "--onnx", "--device", "cpu", "--no-latency", "--out", tmp_path / "ok")
    assert r.exit_code == 0, r
    r = zoo("export", "convnet", "--random-init", "--format", "broken", "--out", tmp_path / "bad")
    assert r.exit_code == 1 and "format 'broken' from zoo-extras 2.0 is broken" in r.stderr and "Traceback" not in r.stderr


def test_a_third_party_runtime_is_a_verify_choice(zoo, third_party, tmp_path):
    out = tmp_path / "out"
    r = zoo("export", "convnet", "--random-init", "--onnx", "--torchscript", "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 0, r
    r = zoo("verify", out, "--runtime", "python,ort", "--device", "cpu", "--json")
    assert r.exit_code == 0, r
    report = r.json()
    assert report["runtimes"] == ["python", "ort"]
    ran = {(row["runtime"], row["format"]) for row in report["parity"] if row["status"] == "passed"}
    assert ran == {("python", "torchscript"), ("python", "onnx"), ("ort", "onnx")}  # ort runs only ONNX
    assert "ort:onnx" in {row["runtime"] for row in report["latency"]}
    r = zoo("verify", out, "--runtime", "moon")
    assert r.exit_code == 1 and "runtime moon is not available: no runner on the moon here" in r.stderr
    r = zoo("verify", out, "--runtime", "mars")
    assert r.exit_code == 2 and "choose from python, cpp, node, ort, moon, all" in r.stderr


def test_artifact_metadata_round_trips_through_every_builtin_format(zoo, tmp_path):
    """read_metadata reads what each format wrote, without loading its code; sniffing goes by
    content, so a renamed file is still recognised."""
    out = tmp_path / "out"
    r = zoo("export", "vae", "--random-init", "--target", "decoder", "--device", "cpu", "--no-latency", "--out", out)
    assert r.exit_code == 0, r
    manifest = json.loads((out / "export.json").read_text())
    for record in manifest["artifacts"]:
        renamed = out / f"renamed-{record['format']}.bin"
        renamed.write_bytes((out / record["path"]).read_bytes())
        assert artifacts.sniff(renamed) == record["format"]
        meta = artifacts.read_metadata(renamed)
        assert (meta["format"], meta["exported_with"]) == (record["format"], record["exported_with"])
    (tmp_path / "noise.bin").write_bytes(np.arange(8, dtype=np.int64).tobytes())
    with pytest.raises(ZooError, match="no installed format recognises"):
        artifacts.load(tmp_path / "noise.bin")
