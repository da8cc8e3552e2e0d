"""Device selection with errors that say which devices exist."""

from __future__ import annotations

from zoo.errors import UsageError


def available_devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def resolve(spec: str = "auto"):
    """`auto` picks the first CUDA device when there is one, else the CPU."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine (devices: {', '.join(available_devices())})")
        index = 0 if spec == "cuda" else spec.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: no such CUDA device (devices: {', '.join(available_devices())})")
        return torch.device(f"cuda:{int(index)}")
    raise UsageError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N (devices: {', '.join(available_devices())})")


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under `torchrun`; (0, 1) otherwise. Only rank 0 writes files."""
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
