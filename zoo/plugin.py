"""The plugin contract: what every architecture gives the engine, the CLI and the exporters.

A plugin is one `Plugin` object, reached through the `zoo.plugins` entry-point group.
It owns the math (model, losses, one training step, evaluation); the engine
(`zoo.engine`) owns everything else (devices, loop, checkpoints, metrics, seeds).
Everything a tool needs to know about a plugin is data on this object, so tests can
read and check it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

if TYPE_CHECKING:  # torch stays out of `zoo --help`
    import torch
    from torch import nn

TASKS = ("classification", "generative", "image-to-image")


@dataclass
class TrainConfig:
    """Hyperparameters every plugin has. Plugins subclass it and override the defaults
    with their reference values; each field's `metadata["help"]` becomes the CLI help."""

    epochs: int = field(default=10, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=64, metadata={"help": "samples per optimisation step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate of every optimizer"})


def hparam(default: Any, help: str, choices: Sequence[Any] | None = None) -> Any:
    """A config field with its CLI help (and optional allowed values)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of an export target. Shapes are not written here:
    exporters read them off `example_inputs` and the module's outputs (dimension 0 is
    the dynamic ``batch`` axis; `ExportTarget.dynamic_dims` names any others)."""

    name: str
    dtype: str = "float32"
    # What values the model expects or produces, e.g. "images in [-1, 1]".
    range: str = ""
    # Numeric pixel range for image tensors (None for anything that is not an image).
    value_range: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "range": self.range}
        if self.value_range is not None:
            out["value_range"] = list(self.value_range)
        return out


@dataclass(frozen=True)
class ExportTarget:
    """A named sub-module of a built model that leaves Python.

    `module(model)` returns the `nn.Module` to export (already a pure function of its
    inputs: no sampling inside, noise enters as an input). `example_inputs(config,
    batch, generator)` returns a tuple of tensors matching `inputs`.
    """

    name: str
    module: Callable[["nn.Module"], "nn.Module"]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example_inputs: Callable[[Any, int, "torch.Generator"], tuple["torch.Tensor", ...]]
    # fp32 parity tolerances; a plugin loosens them only with a comment saying why.
    rtol: float = 1e-4
    atol: float = 1e-5
    # Script by default; tracing only where a plugin declares it (the trace is checked).
    trace: bool = False
    description: str = ""
    # Extra dynamic dimensions beyond the batch: {tensor name: {dim index: axis name}}.
    # Inputs' entries make those axes dynamic in exports; outputs' entries say which
    # input axis an output axis follows (`zoo info` shows it; exports read it off the
    # exported program, and a test checks the two agree).
    dynamic_dims: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    def input_shapes(self, config: Any, batch: int) -> dict[str, tuple[int, ...]]:
        import torch

        tensors = self.example_inputs(config, batch, torch.Generator().manual_seed(0))
        return {spec.name: tuple(t.shape) for spec, t in zip(self.inputs, tensors)}


@dataclass(frozen=True)
class Weights:
    """Pretrained weights as data: where to get them, how to check them, what they are."""

    name: str
    # https://, http:// or file:// URL, or "package:<file>" for a file shipped in zoo.plugins/weights.
    source: str
    sha256: str
    meta: Mapping[str, Any] = field(default_factory=dict)


class Trainer:
    """The math of training, one step at a time. Subclass per plugin.

    The engine constructs it with the built model (already on its device) and the
    config, calls `configure_optimizers` once, then `train_step` for every batch and
    `evaluate` once per epoch. GANs use several optimizers: `train_step` decides their
    order (discriminator, then generator) and returns every loss it wants logged.
    """

    def __init__(self, model: "nn.Module", config: Any, device: "torch.device"):
        self.model = model
        self.config = config
        self.device = device

    def configure_optimizers(self) -> dict[str, "torch.optim.Optimizer"]:
        raise NotImplementedError

    def train_step(
        self, batch: dict[str, "torch.Tensor"], optimizers: dict[str, "torch.optim.Optimizer"], step: int
    ) -> dict[str, "torch.Tensor"]:
        """One optimisation step on `batch`; returns detached scalar losses by name."""
        raise NotImplementedError

    def evaluate(self, batches: Any) -> dict[str, float]:
        """Metrics on the validation split (an iterable of batches), names prefixed `val_`."""
        raise NotImplementedError

    def augment(self, batch: dict[str, "torch.Tensor"], generator: "torch.Generator") -> dict[str, "torch.Tensor"]:
        """Training-time jitter on a batch already on the device (default: none)."""
        return batch

    def sample_grid(self, generator: "torch.Generator", val_batch: dict[str, "torch.Tensor"] | None) -> "torch.Tensor | None":
        """An image grid (C, H, W) in [0, 1] to save each epoch, or None."""
        return None


@dataclass(frozen=True)
class DataRequest:
    """What tensors a plugin wants from a dataset: images of `channels` x `size` x `size`,
    with pixel values mapped into `value_range`."""

    size: int
    channels: int = 1
    value_range: tuple[float, float] = (0.0, 1.0)
    labels: bool = True


@dataclass(frozen=True)
class Plugin:
    """Everything zoo knows about one architecture."""

    name: str
    summary: str
    task: str
    config_class: type
    build: Callable[[Any], "nn.Module"]
    trainer_class: type[Trainer]
    data_request: Callable[[Any], DataRequest]
    default_dataset: str
    datasets: tuple[str, ...]
    export_targets: tuple[ExportTarget, ...] = ()
    weights: tuple[Weights, ...] = ()
    # Name of the `weights` entry that DEFAULT resolves to (None: no pretrained weights).
    default_weights: str | None = None
    # Maps a state dict from a foreign layout (another repository's checkpoint) to this
    # plugin's module names; identity for zoo's own checkpoints.
    checkpoint_filter: Callable[[Mapping[str, Any], Any], dict[str, Any]] | None = None
    # Module-level docs: paper and reference implementation.
    reference: str = ""
    # Generative plugins: the export target that turns noise (and a label) into images,
    # and how to make its inputs: (config, n, label or None, generator) -> input tensors.
    # `zoo sample` runs it eagerly or from an exported artifact with the same inputs.
    sample_target: str | None = None
    sample_inputs: Callable[[Any, int, int | None, "torch.Generator"], tuple["torch.Tensor", ...]] | None = None

    DEFAULT: ClassVar[str] = "DEFAULT"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"plugin {self.name!r}: task must be one of {TASKS}, not {self.task!r}")
        if not dataclasses.is_dataclass(self.config_class) or not issubclass(self.config_class, TrainConfig):
            raise TypeError(f"plugin {self.name!r}: config_class must be a dataclass subclassing zoo.TrainConfig")
        names = [t.name for t in self.export_targets]
        if len(set(names)) != len(names):
            raise ValueError(f"plugin {self.name!r}: duplicate export target names {names}")
        wnames = [w.name for w in self.weights]
        if len(set(wnames)) != len(wnames) or self.DEFAULT in wnames:
            raise ValueError(f"plugin {self.name!r}: weights names must be unique and not {self.DEFAULT!r}")
        if (self.sample_target is None) != (self.sample_inputs is None):
            raise ValueError(f"plugin {self.name!r}: sample_target and sample_inputs come together")
        if self.sample_target is not None and self.sample_target not in names:
            raise ValueError(f"plugin {self.name!r}: sample_target {self.sample_target!r} is not an export target")
        if self.default_weights is not None and self.default_weights not in wnames:
            raise ValueError(f"plugin {self.name!r}: default_weights {self.default_weights!r} is not in its weights table")

    def config(self, **overrides: Any) -> Any:
        return self.config_class(**overrides)

    def target(self, name: str) -> ExportTarget:
        for t in self.export_targets:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.export_targets) or "none"
        from zoo.errors import UsageError

        raise UsageError(f"plugin {self.name!r} has no export target {name!r} (targets: {known})")

    def get_weights(self, name: str) -> Weights:
        from zoo.errors import UsageError

        resolved = self.default_weights if name == self.DEFAULT else name
        for w in self.weights:
            if w.name == resolved:
                return w
        known = ", ".join([w.name for w in self.weights] + ([self.DEFAULT] if self.default_weights else [])) or "none"
        raise UsageError(f"plugin {self.name!r} has no weights {name!r} (available: {known})")
