"""Mixed precision and compilation for the training loop.

`--precision bf16-mixed` / `fp16-mixed` runs each training step and the evaluation
under `torch.autocast` (matrix products and convolutions in the lower precision, the
rest in fp32); the weights, optimizer states and checkpoints stay fp32. fp16 on CUDA
scales the loss with a `GradScaler` so small gradients do not flush to zero: a
trainer that calls `self.backward(loss)` and `self.step(optimizer)` (the built-ins
do) gets the scaling without knowing of it. `--compile` hands the trained modules to
`torch.compile`; `--channels-last` keeps 4-D activations in NHWC, which oneDNN and
cuDNN convolutions prefer.
"""

from __future__ import annotations

import contextlib
from typing import Any

from zoo.errors import UsageError

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")


class Precision:
    def __init__(self, name: str, device: Any):
        import torch

        if name not in PRECISIONS:
            raise UsageError(f"--precision {name!r}: choose {', '.join(PRECISIONS)}")
        self.name = name
        self.device = device
        self.dtype = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(name)
        if self.dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError(f"--precision bf16-mixed: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16-mixed")
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16-mixed" and device.type == "cuda" else None

    def autocast(self) -> Any:
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def channels_last(batch: dict[str, Any]) -> dict[str, Any]:
    """4-D float tensors of a batch in NHWC memory order (values unchanged)."""
    import torch

    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 and v.is_floating_point() else v for k, v in batch.items()}
