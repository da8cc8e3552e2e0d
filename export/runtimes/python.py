"""`python`: artifacts run in this process, through `zoo.export.artifacts` (torch.jit,
ONNX Runtime, torch._inductor): every installed format, on the CPU and CUDA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.export.runtime import Runtime, Session

if TYPE_CHECKING:
    import numpy
    import torch

    from zoo.export.format import Format


class PythonSession(Session):
    def __init__(self, artifact: Any):
        self.artifact = artifact

    def run(self, inputs: Sequence[Any]) -> dict[str, numpy.ndarray]:
        return dict(zip(self.artifact.output_names, self.artifact(*inputs)))

    def latency_ms(self, inputs: Sequence[Any]) -> float:
        import torch

        from zoo.export.parity import median_ms

        device = torch.device(self.artifact.device)
        # Converted once, outside the timing: tensors on the device, or host arrays for ONNX Runtime.
        prepared = self.artifact.prepare(*[t.to(device) for t in inputs])
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        return median_ms(lambda: self.artifact.run_prepared(prepared), sync=sync)


class Python(Runtime):
    name = "python"
    summary = "in process (torch.jit, onnxruntime, torch._inductor): every format"
    formats = None
    order = 0

    def available(self) -> tuple[bool, str]:
        return True, "this Python process"

    def open(self, path: Path, device: torch.device) -> Session:
        from zoo.export import artifacts

        return PythonSession(artifacts.load(path, device=str(device)))

    def format_skip_reason(self, fmt: Format, device: str) -> str | None:
        """In this process a format may lack a device (onnxruntime built without CUDA)."""
        return fmt.skip_reason(device)

    def checks_per_case(self, fmt: Format) -> int:
        return fmt.parity_runs

    def latency_label(self, fmt: Format) -> str:
        return fmt.latency_name or fmt.name


runtime = Python()
