"""TorchScript: `torch.jit.script` (or a checked `torch.jit.trace`) in one `.torchscript`
file, with `zoo.json` as an extra file. Runs in Python and in libtorch C++ (zoo-run)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.export import metadata as zmeta
from zoo.export._files import write_atomically
from zoo.export._quiet import one_line, quiet
from zoo.export.format import ExportJob, Format, Loaded, Probe


class TorchScript(Format):
    name = "torchscript"
    summary = "export TorchScript (<target>.torchscript)"
    exporters = {"script": "script", "trace": "trace"}
    default_exporter = "script"
    order = 10
    # Its profiling executor swaps in an optimised (fused) graph after the first runs.
    parity_runs = 3

    def export(self, job: ExportJob, path: Path, device: Any) -> dict[str, Any]:
        """`torch.jit.script`, or `torch.jit.trace` where the target declares it; a trace
        is re-run at a second batch size and must reproduce eager outputs there."""
        import torch

        target = job.target
        how = self.exporter_for(target)
        metadata = {**job.metadata, "format": self.name, "exported_with": self.exporters[how]}
        try:
            with quiet():
                if how == "trace":
                    compiled = torch.jit.trace(
                        job.module, job.export_inputs, check_trace=True, check_inputs=[job.check_inputs], strict=True
                    )
                else:
                    compiled = torch.jit.script(job.module)
        except Exception as exc:
            if how == "trace":
                hint = f" (the trace, taken at batch {len(job.export_inputs[0])}, was re-run at batch {len(job.check_inputs[0])})"
            else:
                hint = "; make it scriptable, or declare ExportTarget(trace=True) if tracing is faithful"
            raise ZooError(f"torch.jit.{how} of target {target.name!r} failed: {one_line(exc)}{hint}") from None
        buffer = io.BytesIO()  # in memory: see write_atomically
        with quiet():
            torch.jit.save(compiled, buffer, _extra_files={zmeta.METADATA_KEY: zmeta.dumps(metadata)})
        write_atomically(path, buffer.getbuffer())
        return metadata

    def training_ops(self, job: ExportJob, path: Path, device: Any) -> list[str]:
        import torch

        from zoo.export.graph_checks import torchscript_training_ops

        with quiet():
            return torchscript_training_ops(torch.jit.load(str(path), map_location="cpu"))

    def intermediate_values(self, path: Path, trace: list, inputs: Any, input_names: Any) -> list:
        """The scripted file keeps the module tree: each submodule runs on its eager inputs."""
        return _intermediate_values(path, trace)

    def sniff(self, probe: Probe) -> bool:
        names = probe.names or []
        return any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names) and not any("/aotinductor/" in n for n in names)

    def read_metadata(self, path: Path) -> dict[str, Any]:
        with zipfile.ZipFile(path) as archive:
            entry = next((n for n in archive.namelist() if n.endswith(f"/extra/{zmeta.METADATA_KEY}")), None)
            return zmeta.parse(archive.read(entry) if entry else "", path)

    def load(self, path: Path, metadata: dict[str, Any], device: Any) -> Loaded:
        import torch

        with quiet():
            module = torch.jit.load(str(path), map_location=device)
        module.eval()

        def run(inputs: list) -> Any:
            with torch.inference_mode():
                return module(*inputs)

        return Loaded(run, takes="torch")


def _intermediate_values(path: Path, trace: list) -> list:
    """Each scripted submodule run on its eager inputs."""
    import torch

    from zoo.export.localize import flat

    loaded = torch.jit.load(str(path), map_location="cpu")
    out = []
    for seen in trace:
        sub = loaded
        try:
            for part in seen.path.split("."):
                sub = getattr(sub, part)
            with torch.inference_mode():
                result = sub(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in seen.inputs])
        except Exception:  # noqa: BLE001 - a submodule the script inlined or cannot call alone: skip it
            continue
        first = next((o for o in flat(result) if isinstance(o, torch.Tensor)), None)
        if first is not None:
            out.append((seen, first.numpy(), ""))
    return out


format = TorchScript()
