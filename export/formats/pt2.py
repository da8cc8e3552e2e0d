"""AOTInductor `.pt2` packages: the target's `torch.export` program compiled ahead of
time for one device kind (`<target>.cpu.pt2`, `<target>.cuda.pt2`), `zoo.json` in the
package metadata, where `AOTIModelPackageLoader::get_metadata()` returns it in Python
and C++. Compiling is C++ work (about half a minute for a small model on two cores),
so a plain `zoo export` leaves it out."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.export import metadata as zmeta
from zoo.export._files import write_atomically
from zoo.export._quiet import one_line, quiet
from zoo.export.format import ExportJob, Format, Loaded, Probe


class Pt2(Format):
    name = "pt2"
    summary = "export AOTInductor packages (<target>.cpu.pt2, <target>.cuda.pt2 where CUDA exists); compiles C++, ~30 s per target"
    # `aotinductor-nchw` turns Inductor's layout optimization off: convolutions keep NCHW.
    # By default Inductor makes convolution outputs channels-last, which speeds plain conv
    # stacks (dcgan: 0.74x eager in process) but leaves per-image normalisations reducing
    # over strided memory (pix2pix's instance norm: 1.4x eager, 0.96x with it off).
    exporters = {"aotinductor": "torch.export", "aotinductor-nchw": "torch.export (AOTInductor, layout optimization off: NCHW)"}
    inductor_options = {"aotinductor": {}, "aotinductor-nchw": {"layout_optimization": False}}
    default_exporter = "aotinductor"
    in_default_export = False
    order = 30
    per_device = True
    size_overhead = 4 << 20  # the compiled shared library and its sources (~1.7 MB for dcgan)
    record_keys = ("device",)
    latency_name = "aotinductor"

    def file_name(self, target: str, device: str = "cpu") -> str:
        return f"{target}.{device}.pt2"

    def needs_program(self, target: Any) -> bool:
        return True

    def export(self, job: ExportJob, path: Path, device: Any) -> dict[str, Any]:
        import torch._inductor

        from zoo.export.parity import strict_fp32

        how = self.exporter_for(job.target)
        metadata = {**job.metadata, "format": self.name, "exported_with": self.exporters[how], "device": device.type}
        program = job.program(device, purpose="for AOTInductor")
        try:
            # Compiled with TF32 off: Inductor fixes the matmul precision of its kernels at
            # compile time, and parity is an fp32 promise.
            buffer = io.BytesIO()  # packaged in memory: see write_atomically
            with strict_fp32(device.type), quiet():
                torch._inductor.aoti_compile_and_package(
                    program,
                    package_path=buffer,
                    inductor_configs={"aot_inductor.metadata": {zmeta.METADATA_KEY: zmeta.dumps(metadata)}, **self.inductor_options[how]},
                )
        except ZooError:
            raise
        except Exception as exc:
            raise ZooError(f"AOTInductor compile of target {job.target.name!r} for {device.type} failed: {one_line(exc)}") from None
        write_atomically(path, buffer.getbuffer())
        return metadata

    def training_ops(self, job: ExportJob, path: Path, device: Any) -> list[str]:
        from zoo.export.graph_checks import fx_training_ops

        return fx_training_ops(job.program(device))

    def intermediate_values(self, path: Path, trace: list, inputs: Any, input_names: Any) -> list:
        raise ZooError("AOTInductor compiles the intermediate values away; localize the same target's ONNX or TorchScript file")

    def sniff(self, probe: Probe) -> bool:
        return any("/aotinductor/" in n for n in probe.names or [])

    def read_metadata(self, path: Path) -> dict[str, Any]:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if "/aotinductor/" in name and name.endswith("_metadata.json"):
                    return zmeta.parse(json.loads(archive.read(name)).get(zmeta.METADATA_KEY, ""), path)
        return zmeta.parse("", path)

    def load(self, path: Path, metadata: dict[str, Any], device: Any) -> Loaded:
        import torch
        import torch._inductor

        built_for = metadata.get("device", "cpu")
        if built_for != device.type:
            if built_for == "cuda" and not torch.cuda.is_available():
                raise ZooError(f"{path.name} was compiled for CUDA and this machine has no CUDA device; export a CPU .pt2 here")
            raise ZooError(f"{path.name} was compiled for {built_for}; load it with device={built_for!r}, not {device.type!r}")
        with quiet():
            model = torch._inductor.aoti_load_package(str(path), device_index=device.index if device.index is not None else -1)

        def run(inputs: list) -> Any:
            # AOTInductor's kernels assume the strides of the inputs the graph was captured
            # with (contiguous): a strided view, e.g. a state fed back from an earlier
            # output, gives silently wrong results (task parity of rnn's `step` caught it).
            with torch.inference_mode():
                return model(*[x.contiguous() if isinstance(x, torch.Tensor) else x for x in inputs])

        return Loaded(run, takes="torch")


format = Pt2()
