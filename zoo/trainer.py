"""The training lifecycle a plugin's `Trainer` sees.

The engine owns the loop; a `Trainer` owns the math and is told where it is:

    for epoch in 1..epochs:
        model.train(); trainer.on_epoch_start(progress)
        for each batch:  batch = trainer.augment(batch, generator)
                         losses = trainer.train_step(batch, optimizers, progress)
                         (schedules with interval "step" advance)
        model.eval(); metrics = trainer.evaluate(validation batches)
        (schedules with interval "epoch" advance); trainer.on_epoch_end(progress, metrics)
        checkpoint: model, optimizers, schedules, trainer.state_dict(), RNG, position

Before `configure_optimizers` the engine sets `trainer.plan` (a `Progress` at step 0,
whose `total_steps` and `steps_per_epoch` size a schedule) and `trainer.data_info`
(classes, vocabulary). Everything is resume-exact: a run stopped anywhere, even in
the middle of an epoch by `--max-steps`, and resumed, computes what an uninterrupted
run computes, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from zoo.data import DataInfo

INTERVALS = ("step", "epoch")


@dataclass(frozen=True)
class Progress:
    """Where the run is. `step` counts the optimisation steps already taken (it is the
    0-based index of the step about to run), `epoch` is 1-based, `step_in_epoch`
    0-based. `total_steps` is the planned run, epochs x steps_per_epoch: `--max-steps`
    stops a run early without changing it, so a schedule is the full run's and a
    resumed run continues it exactly."""

    step: int
    epoch: int
    step_in_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int

    @property
    def fraction(self) -> float:
        """How much of the planned run is done, in [0, 1]: the input of a stateless
        schedule, `lr = base * f(progress.fraction)`."""
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def epoch_fraction(self) -> float:
        return self.step_in_epoch / self.steps_per_epoch if self.steps_per_epoch else 0.0


@dataclass(frozen=True)
class Schedule:
    """A torch learning-rate scheduler the engine steps and checkpoints: after every
    optimisation step (`interval="step"`) or after every epoch's evaluation
    (`interval="epoch"`; `monitor` names the validation metric handed to schedulers
    such as ReduceLROnPlateau)."""

    scheduler: Any
    interval: str = "step"
    monitor: str | None = None

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise ValueError(f"Schedule interval must be one of {INTERVALS}, not {self.interval!r}")
        if self.monitor is not None and self.interval != "epoch":
            raise ValueError("a Schedule with a monitor steps once per epoch: use interval='epoch'")


class Trainer:
    """The math of training, one step at a time. Subclass per plugin.

    Required: `configure_optimizers` and `train_step` (and `evaluate` for metrics).
    Optional: `augment`, `on_epoch_start`, `on_epoch_end`, `state_dict` /
    `load_state_dict` (state of your own, checkpointed with the model), `sample_grid`
    and `sample_text` (written each epoch under samples/), `report` (what `zoo evaluate`
    shows) and `end_of_run` (files written when the last epoch is done). `self.log(name, value)`
    records a value that is not a loss (a learning rate, a phase name) in the epoch's
    metrics.jsonl row.
    """

    def __init__(self, model: nn.Module, config: Any, device: torch.device):
        from zoo.data import DataInfo

        self.model = model
        self.config = config
        self.device = device
        # Set by the engine before configure_optimizers.
        self.plan: Progress = Progress(0, 1, 0, 1, 1, 1)
        self.data_info: DataInfo = DataInfo()
        self._logged: dict[str, Any] = {}
        self._scaler: Any = None  # set by the engine for --precision fp16-mixed on CUDA

    # ----------------------------------------------------------------- step helpers
    # Calling these instead of loss.backward() / optimizer.step() lets the engine scale
    # the loss under fp16 mixed precision without the trainer knowing of it.

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, scaled when the run uses fp16 mixed precision."""
        (self._scaler.scale(loss) if self._scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.step()`, skipped by the scaler when fp16 gradients overflowed."""
        if self._scaler is not None:
            self._scaler.step(optimizer)
        else:
            optimizer.step()

    @contextlib.contextmanager
    def frozen(self, *modules: nn.Module) -> Iterator[None]:
        """Inside, `modules` take no gradients for their own parameters; their inputs still
        do. For a step that only passes through a module (a GAN's generator step through
        the discriminator, as the pix2pix reference's `set_requires_grad(netD, False)`):
        the gradients that would be thrown away are not computed and, under data
        parallelism, not synchronised. Run the forward and the backward inside.
        Parameters frozen before stay frozen after."""
        with contextlib.ExitStack() as stack:
            for module in modules:
                no_sync = getattr(module, "no_sync", None)  # DistributedDataParallel's
                if callable(no_sync):
                    stack.enter_context(no_sync())
            thawed = [p for module in modules for p in module.parameters() if p.requires_grad]
            for p in thawed:
                p.requires_grad_(False)
            try:
                yield
            finally:
                for p in thawed:
                    p.requires_grad_(True)

    def clip_grad_norm(self, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
        """Clip the gradients `optimizer` will apply to norm `max_norm` (unscaled first under fp16)."""
        import torch

        if self._scaler is not None:
            self._scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def configure_optimizers(self) -> Any:
        """Named optimizers, `{"adam": Adam(...)}`; or `(optimizers, schedules)` with
        schedules `{"cosine": Schedule(CosineAnnealingLR(opt, self.plan.total_steps))}`;
        or `{}` for a plugin that trains without one (a k-NN stores its data)."""
        raise NotImplementedError

    def train_step(
        self, batch: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer], progress: Progress
    ) -> dict[str, torch.Tensor]:
        """One optimisation step on `batch`; returns detached scalar losses by name
        (checked to be finite: a NaN stops the run and keeps the last checkpoint)."""
        raise NotImplementedError

    def evaluate(self, batches: Any) -> dict[str, float]:
        """Metrics on the validation split (an iterable of batches), names prefixed `val_`."""
        return {}

    def augment(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Training-time jitter on a batch already on the device (default: none). Draw
        randomness from `generator` only: it is checkpointed."""
        return batch

    def on_epoch_start(self, progress: Progress) -> None:
        """Called with the model in train mode before an epoch's first step, and again
        when a run resumes in the middle of an epoch (progress.step_in_epoch > 0).
        Write it as a function of `progress` (freeze a stage while progress.epoch <= N),
        so it sets the same state either way."""

    def on_epoch_end(self, progress: Progress, metrics: dict[str, float]) -> None:
        """Called after an epoch's evaluation, before its checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        """State of the trainer's own (tensors, numbers, strings, lists, dicts), saved in
        every checkpoint; e.g. a recurrent state carried across batches."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, on resume."""

    def log(self, name: str, value: Any) -> None:
        """Record a value that is not a loss in this epoch's metrics.jsonl row (the last
        value logged in the epoch wins): a number, a string or a bool."""
        if not isinstance(value, (int, float, str, bool)):
            value = float(value)
        self._logged[name] = value

    def report(self, batches: Any) -> dict[str, Any]:
        """A fuller account of the validation split than `evaluate`'s numbers, as JSON-able
        data (a classifier: per-class accuracy and the confusion matrix); `zoo evaluate`
        prints it. Default: none."""
        return {}

    def end_of_run(self, batches: Any) -> dict[str, Any]:
        """Files to write next to metrics.jsonl once the last epoch is done: {file name:
        an image (C, H, W) in [0, 1] for .png, a str for .txt, JSON-able data for .json}."""
        return {}

    def sample_grid(self, generator: torch.Generator, val_batch: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
        """An image grid (C, H, W) in [0, 1] to save each epoch as samples/epoch_NNN.png, or None."""
        return None

    def sample_text(self, generator: torch.Generator, val_batch: dict[str, torch.Tensor] | None) -> str | None:
        """Text to save each epoch as samples/epoch_NNN.txt, or None."""
        return None
