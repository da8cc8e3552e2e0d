"""Task-level parity: how an export target is judged on real data.

Random-input parity proves an exported file computes the same tensors as eager
PyTorch on seeded inputs; users also need to know the file does the *job* as well:
the same validation accuracy, bits per character or reconstruction error on real
data. An `ExportTarget` declares a `TaskCheck`; `zoo export` and `zoo verify` then
compute its metric twice, once through the eager module and once through the
artifact (in each runtime and device checked), and fail when the metric moves by
more than the check's bound or when discrete decisions (predicted classes) disagree.

A check's `measure(run, batch, context)` is the plugin's own metric written against
`run`, the target as a function (`run(*inputs) -> tuple of outputs`): the same code
measures the eager module and the artifact. It returns a `Measure`: the metric summed
over the batch, how many things it was summed over, and optionally the decisions
whose agreement is checked. The helpers below cover the common tasks; a plugin with
its own metric (the VAE's reconstruction error) writes its own `measure`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Measure", "TaskCheck", "TaskContext", "bits_per_token", "classification", "image_distance", "judged_images"]

SOURCES = ("validation", "noise")


@dataclass(frozen=True)
class Measure:
    """One batch's share of a metric: `total / count` summed over batches is the metric."""

    total: float
    count: int
    # Discrete outcomes per sample (e.g. predicted classes), compared between eager and
    # artifact; None when the metric has none.
    decisions: torch.Tensor | None = None


@dataclass
class TaskContext:
    """What a `measure` may use besides the target: the whole eager model (a VAE's
    decoder judges its encoder's codes), the config, what the data knows, and a judge
    (`judge(images) -> class scores`, for checks that declare one)."""

    model: nn.Module
    config: Any
    data_info: Any
    judge: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class TaskCheck:
    """The metric a target is judged by on real data, and how far an artifact may move it.

    - `source`: "validation" batches of the plugin's data (`--data`), or "noise": the
      plugin's `sample_inputs` drawn from a fixed seed (`samples` of them), for
      generators that take noise.
    - `max_change`: the largest accepted relative change of the metric,
      |artifact - eager| / |eager|.
    - `min_agreement`: the fraction of decisions that must agree (1.0: all of them;
      None: reported, not checked).
    - `decisions`: what the measure's decisions are, in words ("predicted classes"),
      for `zoo info`; empty when it returns none.
    - `samples`: at most this many samples (None: the whole validation split).
    - `judge`: (plugin, weights) of a classifier whose `predict_target` scores the
      generated images for the `context.judge` of `measure` ("convnet", "DEFAULT").
    """

    metric: str
    measure: Callable[[Callable[..., tuple], dict[str, Any], TaskContext], Measure]
    source: str = "validation"
    max_change: float = 1e-4
    min_agreement: float | None = 1.0
    decisions: str = ""
    samples: int | None = None
    batch_size: int = 64
    judge: tuple[str, str] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"TaskCheck source must be one of {SOURCES}, not {self.source!r}")
        if not (self.max_change >= 0 and math.isfinite(self.max_change)):
            raise ValueError(f"TaskCheck max_change must be a finite number >= 0, not {self.max_change!r}")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"TaskCheck min_agreement must be in [0, 1], not {self.min_agreement!r}")
        if self.source == "noise" and not self.samples:
            raise ValueError("a TaskCheck on noise needs samples=N: how many fixed inputs to draw")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, "source": self.source, "max_change": self.max_change}
        if self.decisions:
            out["decisions"] = self.decisions
            out["min_agreement"] = self.min_agreement
        if self.samples:
            out["samples"] = self.samples
        if self.judge:
            out["judge"] = list(self.judge)
        if self.description:
            out["description"] = self.description
        return out


# --------------------------------------------------------------------------- the common tasks


def classification(image: str = "image", label: str = "label", metric: str = "val_accuracy", **kwargs: Any) -> TaskCheck:
    """Validation accuracy of class scores, and the predicted classes must agree (all of them by default)."""

    def measure(run: Callable[..., tuple], batch: dict[str, Any], context: TaskContext) -> Measure:
        predicted = run(batch[image])[0].argmax(1)
        return Measure(float((predicted == batch[label]).sum()), int(predicted.numel()), predicted)

    kwargs.setdefault("decisions", "predicted classes")
    return TaskCheck(metric, measure, description="accuracy on the validation split", **kwargs)


def bits_per_token(tokens: str = "tokens", metric: str = "val_bpc", **kwargs: Any) -> TaskCheck:
    """Bits per token of next-token logits over validation windows (B, T+1): the logits of
    the first T predict the last T. Greedy predictions are reported (ties between
    near-equal logits may flip), the metric is bounded."""
    import torch.nn.functional as F

    def measure(run: Callable[..., tuple], batch: dict[str, Any], context: TaskContext) -> Measure:
        window = batch[tokens]
        logits = run(window[:, :-1])[0].float()  # (B, T, vocab)
        targets = window[:, 1:]
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        return Measure(float(nats) / math.log(2), int(targets.numel()), logits.argmax(-1).flatten())

    kwargs.setdefault("min_agreement", None)
    kwargs.setdefault("decisions", "greedy next tokens (reported: near-equal logits may flip)")
    return TaskCheck(metric, measure, description="bits per token on validation windows", **kwargs)


def image_distance(source: str = "A", target: str = "B", metric: str = "val_l1", **kwargs: Any) -> TaskCheck:
    """Mean absolute difference between the translated `source` images and the `target` images."""

    def measure(run: Callable[..., tuple], batch: dict[str, Any], context: TaskContext) -> Measure:
        made = run(batch[source])[0].float()
        return Measure(float((made - batch[target].float()).abs().sum()), int(made.numel()))

    return TaskCheck(metric, measure, description="L1 between translated and true validation images", **kwargs)


def judged_images(judge: tuple[str, str] = ("convnet", "DEFAULT"), samples: int = 500, **kwargs: Any) -> TaskCheck:
    """A generator fed `samples` fixed noise inputs, its images scored by a trained
    classifier: the mean max-probability, and the judged classes must agree."""

    def measure(run: Callable[..., tuple], batch: dict[str, Any], context: TaskContext) -> Measure:
        import torch

        if context.judge is None:
            raise RuntimeError("judged_images needs context.judge")
        images = run(*batch.values())[0]
        probabilities = torch.softmax(context.judge(images).float(), dim=1)
        best, predicted = probabilities.max(dim=1)
        return Measure(float(best.sum()), int(best.numel()), predicted)

    kwargs.setdefault("metric", "judge_mean_max_probability")
    kwargs.setdefault("decisions", f"classes {judge[0]} sees")
    return TaskCheck(
        measure=measure,
        source="noise",
        samples=samples,
        judge=judge,
        description=f"{samples} fixed noise inputs, images judged by {judge[0]} {judge[1]}",
        **kwargs,
    )
