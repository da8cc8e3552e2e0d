"""Data-parallel training on torch.distributed: what the engine needs of it.

A run is distributed when it was started by torch's elastic launcher (`zoo train
--nproc N`, or `torchrun ... -m zoo train`), which sets RANK, WORLD_SIZE and
LOCAL_RANK. Each process then joins the process group (gloo on the CPU, NCCL on CUDA,
one GPU per process), trains on its shard of every step's global batch, and keeps its
model in step with the others through DistributedDataParallel: the plugin's whole model
when one optimizer trains all of it, otherwise each top-level sub-module an optimizer
trains (a GAN's generator and discriminator), so a trainer's calls such as
`self.model.generator(z)` still go through DDP. Batch-norm buffers follow DDP's
default: rank 0's are broadcast at every forward. Losses and validation metrics are
averaged over the processes; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from zoo.errors import UsageError, ZooError

# How long a process waits for the others at a collective before it gives up (seconds).
ENV_TIMEOUT = "ZOO_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_environment() -> Context:
    """The launcher's view of this process ((0, 1) when not launched by it)."""
    try:
        return Context(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))),
        )
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE or LOCAL_RANK is not a number; start distributed runs with --nproc or torchrun") from None


def join(context: Context, device: Any) -> None:
    """Join the process group: gloo on the CPU, NCCL on CUDA."""
    import datetime

    import torch.distributed as dist

    if not context.active or dist.is_initialized():
        return
    timeout = float(os.environ.get(ENV_TIMEOUT, DEFAULT_TIMEOUT_S))
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=timeout), **({"device_id": device} if device.type == "cuda" else {})
        )
    except Exception as exc:  # a rendezvous that never completes, a port in use
        raise ZooError(
            f"process {context.rank} of {context.world} could not join the {backend} process group: "
            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}"
        ) from None


def leave(context: Context) -> None:
    import torch.distributed as dist

    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def device_for(context: Context, device: Any) -> Any:
    """One GPU per process: cuda becomes cuda:LOCAL_RANK."""
    import torch

    if context.active and device.type == "cuda":
        if context.local_rank >= torch.cuda.device_count():
            raise UsageError(f"process {context.local_rank} needs a GPU of its own; this machine has {torch.cuda.device_count()}")
        return torch.device("cuda", context.local_rank)
    return device


class _Passthrough:
    """Attribute access through a DDP wrapper to the module inside (`self.model.latent_dim`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def _ddp_class() -> type:
    from torch.nn.parallel import DistributedDataParallel

    return type("DistributedModule", (_Passthrough, DistributedDataParallel), {})


def wrap(model: Any, optimizers: dict[str, Any], device: Any, context: Context) -> tuple[Any, Any]:
    """(the module the trainer uses, a function giving the plain model's state dict).
    One optimizer over every parameter: the whole model in DDP. Several: each top-level
    child whose parameters one optimizer owns, in DDP, in place."""
    if not context.active:
        return model, lambda: plain_state_dict(model)
    if not optimizers:
        raise UsageError("this plugin trains without an optimizer (it stores its data): run it in one process, without --nproc")
    ddp = _ddp_class()
    ids = {name: {id(p) for group in opt.param_groups for p in group["params"]} for name, opt in optimizers.items()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    device_ids = [device.index] if device.type == "cuda" else None
    if len(ids) == 1 and trainable <= next(iter(ids.values())):
        wrapped = ddp(model, device_ids=device_ids)
        return wrapped, lambda: plain_state_dict(model)
    for name, child in list(model.named_children()):
        params = {id(p) for p in child.parameters()}
        if params and any(params <= owned for owned in ids.values()):
            setattr(model, name, ddp(child, device_ids=device_ids))

    return model, lambda: plain_state_dict(model)


def plain_state_dict(model: Any) -> dict[str, Any]:
    """The model's state dict with the wrappers' names taken out of its keys
    (`generator.module.x` under DDP, `generator._orig_mod.x` under torch.compile), so a
    checkpoint written by N processes, compiled or not, loads in one plain process."""
    from torch.nn.parallel import DistributedDataParallel

    renames = []  # (prefix of a wrapped module's inside, the plain prefix)
    for name, module in model.named_modules():
        if name and isinstance(module, DistributedDataParallel):
            renames.append((f"{name}.module.", f"{name}."))
        elif name and hasattr(module, "_orig_mod"):
            renames.append((f"{name}._orig_mod.", f"{name}."))
    renames.sort(key=lambda pair: len(pair[0]), reverse=True)
    out = {}
    for key, value in model.state_dict().items():
        changed = True
        while changed:
            changed = False
            for wrapped, plain in renames:
                if key.startswith(wrapped):
                    key, changed = plain + key[len(wrapped) :], True
                    break
        out[key] = value
    return out


def gather(context: Context, value: Any) -> list[Any]:
    """Every process's `value`, in rank order (on every process)."""
    if not context.active:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * context.world
    dist.all_gather_object(values, value)
    return values


def mean(context: Context, values: dict[str, float], weight: float = 1.0) -> dict[str, float]:
    """`values` averaged over the processes, each weighted by `weight` (its sample count)."""
    if not context.active or not values:
        return values
    import torch
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(t[i] / t[-1]) for i, k in enumerate(keys)}


def same_everywhere(context: Context, value: Any) -> Any:
    """Rank 0's `value` on every process (e.g. where the run directory is)."""
    if not context.active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(context: Context) -> None:
    if context.active:
        import torch.distributed as dist

        dist.barrier()
