"""The optimizers and learning-rate schedules the course notes teach, as one option set
any plugin can take (EECS-498 lectures 4 and 11; Fleuret, "Going deeper").

A plugin's config subclasses `OptimizerOptions` (with its own `TrainConfig`) and sets
the defaults to its reference's choice; its trainer calls `optimization(config,
parameters, plan)` in `configure_optimizers`. The options become CLI flags like any
hyperparameter: `--optimizer sgd|momentum|nesterov|adagrad|rmsprop|adam`,
`--momentum`, `--weight-decay`, `--schedule constant|step|cosine`, `--milestones`,
`--gamma`.

- sgd: x -= lr * dx
- momentum: v = momentum * v + dx; x -= lr * v (Sutskever et al. 2013, as torch defines it)
- nesterov: the same, with the gradient taken at the look-ahead point
- adagrad: per-parameter rates scaled by the root of the summed squared gradients (Duchi et al. 2011)
- rmsprop: ... by the root of a decaying average of squared gradients (Tieleman & Hinton 2012)
- adam: momentum and RMSprop with bias correction (Kingma & Ba 2015)

Schedules are over the planned run (`plan.total_steps`), so they scale with `--epochs`:
`step` divides the rate by 1/gamma at each milestone (fractions of the run: He et al.
2015's ResNet divides by 10 at 32k and 48k of 64k iterations, 0.5 and 0.75), `cosine`
decays it to 0 (Loshchilov & Hutter 2017). Weight decay is L2 regularisation added
to the gradient (decoupled, AdamW-style, for adam).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zoo.config import hparam
from zoo.trainer import Progress, Schedule

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
SCHEDULES = ("constant", "step", "cosine")


@dataclass
class OptimizerOptions:
    """Fields a config inherits for the shared optimizer choice (override the defaults)."""

    optimizer: str = hparam("adam", "sgd, momentum, nesterov, adagrad, rmsprop or adam (EECS-498 lecture 4)", choices=OPTIMIZERS)
    momentum: float = hparam(
        0.9, "momentum of --optimizer momentum, nesterov and rmsprop (0.9: Sutskever et al. 2013)", at_least=0.0, below=1.0
    )
    weight_decay: float = hparam(0.0, "L2 weight decay (decoupled for adam, Loshchilov & Hutter 2019)", at_least=0.0)
    schedule: str = hparam(
        "constant", "learning-rate schedule over the run: constant, step or cosine (EECS-498 lecture 11)", choices=SCHEDULES
    )
    milestones: tuple[float, ...] = hparam(
        (0.5, 0.75), "--schedule step: where the rate drops, as fractions of the run (He et al. 2015: 32k and 48k of 64k iterations)"
    )
    gamma: float = hparam(0.1, "--schedule step: factor at each milestone (He et al. 2015: 0.1)", above=0.0, at_most=1.0)


def make_optimizer(config: Any, parameters: Iterable[Any]) -> Any:
    import torch

    params = list(parameters)
    lr, wd = config.lr, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if config.optimizer in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.optimizer == "nesterov", weight_decay=wd)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, momentum=0.0, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd) if wd else torch.optim.Adam(params, lr=lr)


def make_schedule(config: Any, optimizer: Any, total_steps: int) -> Any:
    """The torch scheduler of --schedule over `total_steps`, stepped after every step.
    Both keep their shape in their state (milestones, T_max), so a resumed run continues
    the schedule it started, even with more --epochs."""
    import torch

    if config.schedule == "step":
        milestones = sorted({max(1, round(f * total_steps)) for f in config.milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))


def optimization(config: Any, parameters: Iterable[Any], plan: Progress, name: str | None = None) -> tuple[dict, dict]:
    """(optimizers, schedules) for `configure_optimizers`: one optimizer named after its
    kind (or `name`), and its schedule when it is not constant."""
    optimizer = make_optimizer(config, parameters)
    key = name or config.optimizer
    schedules: dict[str, Schedule] = {}
    if config.schedule != "constant":
        schedules[config.schedule] = Schedule(make_schedule(config, optimizer, plan.total_steps))
    return {key: optimizer}, schedules
