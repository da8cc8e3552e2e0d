"""The plugin contract: what every architecture gives the engine, the CLI and the exporters.

A plugin is one `Plugin` object, reached through the `zoo.plugins` entry-point group.
It owns the math (model, losses, one training step, evaluation: `zoo.trainer`); the
engine owns everything else (devices, loop, checkpoints, metrics, seeds). Everything
a tool needs to know about a plugin is data on this object, so tests can read and
check it. What a plugin can do (sample images, classify, translate images, ...)
follows from what it provides: `zoo.capabilities`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.config import TrainConfig, check_config_class, hparam
from zoo.data import DataRequest
from zoo.tasks import TaskCheck
from zoo.trainer import Trainer

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ExportTarget", "Plugin", "TaskCheck", "TensorSpec", "TrainConfig", "Trainer", "Weights", "hparam", "DataRequest"]

INTEGER_DTYPES = ("int64", "int32", "int16", "int8", "uint8", "bool")
BATCH_AXIS = "batch"


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of an export target. Shapes are not written here:
    exporters read them off `example_inputs` and the module's outputs.

    - `dtype`: checked against the example inputs and the module's outputs.
    - `batch_axis`: the dimension that is the dynamic ``batch`` axis (None: the tensor
      has none). Checked: it must be the one dimension that follows the batch size.
    - `value_range`: for float images, the pixel range, e.g. (-1.0, 1.0); for integer
      tensors (class labels, token ids), the inclusive range of valid values, enforced
      by zoo-run and the Node runner. A callable `(config, data_info) -> (lo, hi)` for
      ranges the data decides (a vocabulary's size).
    """

    name: str
    dtype: str = "float32"
    # What values the model expects or produces, in words, e.g. "images in [-1, 1]".
    range: str = ""
    value_range: Any = None
    batch_axis: int | None = 0

    def resolved_range(self, config: Any = None, data_info: Any = None) -> tuple[float, float] | None:
        value = self.value_range
        if callable(value):
            value = value(config, data_info)
        if value is None:
            return None
        lo, hi = value
        if self.dtype in INTEGER_DTYPES:
            return (int(lo), int(hi))
        return (float(lo), float(hi))

    @property
    def is_integer(self) -> bool:
        return self.dtype in INTEGER_DTYPES

    def to_json(self, config: Any = None, data_info: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "range": self.range}
        # A range the data decides is known only once there is a config (and data).
        resolved = None if callable(self.value_range) and config is None else self.resolved_range(config, data_info)
        if resolved is not None:
            out["value_range"] = list(resolved)
        if self.batch_axis != 0:
            out["batch_axis"] = self.batch_axis
        return out


@dataclass(frozen=True)
class ExportTarget:
    """A named sub-module of a built model that leaves Python.

    `module(model)` returns the `nn.Module` to export (already a pure function of its
    inputs: no sampling inside, noise enters as an input). `example_inputs(config,
    batch, generator)` returns a tuple of tensors matching `inputs`; a target with
    dynamic axes besides the batch gets a fourth argument, `sizes`, mapping each axis
    name to the size to make (the first of its `axis_sizes` when exporting, each of
    them for parity).
    """

    name: str
    module: Callable[[nn.Module], nn.Module]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example_inputs: Callable[..., tuple[torch.Tensor, ...]]
    # fp32 parity tolerances; a plugin loosens them only with a comment saying why.
    rtol: float = 1e-4
    atol: float = 1e-5
    # Script by default; tracing only where a plugin declares it (the trace is checked).
    # Same as exporters={"torchscript": "trace"}.
    trace: bool = False
    description: str = ""
    # Extra dynamic dimensions beyond the batch: {tensor name: {dim index: axis name}}.
    # Inputs' entries make those axes dynamic in exports; outputs' entries say which
    # input axis an output axis follows (`zoo info` shows it; exports read it off the
    # exported program, and a test checks the two agree).
    dynamic_dims: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    # Sizes of each non-batch dynamic axis at which parity is checked, the first being
    # the size the graph is captured at: {"seq": (64, 1, 17)}, or a callable
    # config -> that mapping where the valid sizes depend on the config. Required for
    # every dynamic axis of an input: only the plugin knows which sizes are valid.
    axis_sizes: Any = field(default_factory=dict)
    # The largest valid size of a dynamic axis where there is one (a Transformer's
    # context), {"seq": 128} or config -> that: the exported graph is dynamic up to it,
    # and the metadata says so; parity checks it. "batch" may be named too (parity adds
    # it to the batch sizes it checks). Axes not named here have no upper bound.
    max_sizes: Any = field(default_factory=dict)
    # Which exporter a format uses where its default cannot keep an axis dynamic, e.g.
    # {"onnx": "torchscript"} (torch.onnx's TorchScript-based exporter) for recurrent
    # layers. Recorded in the artifact's metadata and export.json.
    exporters: Mapping[str, str] = field(default_factory=dict)
    # Formats this target cannot be exported to, with the reason: {"pt2": "why"}.
    # Shown by `zoo info`, recorded in export.json as skipped (never as passed).
    skip_formats: Mapping[str, str] = field(default_factory=dict)
    # How the target is judged on real data (`zoo.tasks`): its metric computed through
    # the eager module and through each artifact must agree (task-level parity).
    task_check: TaskCheck | None = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.inputs + self.outputs]
        if len(set(s.name for s in self.inputs)) != len(self.inputs) or len(set(s.name for s in self.outputs)) != len(self.outputs):
            raise ValueError(f"export target {self.name!r}: input and output names must be unique, got {names}")
        if self.trace and self.exporters.get("torchscript", "trace") != "trace":
            raise ValueError(f"export target {self.name!r}: trace=True contradicts exporters['torchscript']")
        known = {s.name for s in self.inputs} | {s.name for s in self.outputs}
        for tensor in self.dynamic_dims:
            if tensor not in known:
                raise ValueError(f"export target {self.name!r}: dynamic_dims names {tensor!r}, which is not an input or output")
        for tensor, dims in self.dynamic_dims.items():
            for dim, axis in dims.items():
                if axis == BATCH_AXIS:
                    raise ValueError(f"export target {self.name!r}: {tensor} dim {dim} is named 'batch'; set TensorSpec.batch_axis instead")
        if not callable(self.axis_sizes):
            self.sizes_of_axes(None)
        if self.task_check is not None and not isinstance(self.task_check, TaskCheck):
            raise TypeError(f"export target {self.name!r}: task_check must be a zoo.tasks.TaskCheck, not {type(self.task_check).__name__}")

    @property
    def dynamic_axes(self) -> list[str]:
        """Names of the non-batch dynamic axes of the inputs, in order."""
        names = {s.name for s in self.inputs}
        out: list[str] = []
        for tensor, dims in self.dynamic_dims.items():
            for axis in dims.values():
                if tensor in names and axis not in out:
                    out.append(axis)
        return out

    def sizes_of_axes(self, config: Any) -> dict[str, tuple[int, ...]]:
        """`axis_sizes` for `config`, checked: every dynamic input axis has its export
        size and at least one other valid size, all positive ints."""
        sizes = self.axis_sizes(config) if callable(self.axis_sizes) else self.axis_sizes
        out = {}
        for axis in self.dynamic_axes:
            values = tuple(sizes.get(axis, ()))
            if len(values) < 2:
                raise ValueError(
                    f"export target {self.name!r}: dynamic axis {axis!r} needs axis_sizes with its export size "
                    f"and at least one other valid size, e.g. axis_sizes={{{axis!r}: (64, 17)}}"
                )
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                raise ValueError(f"export target {self.name!r}: axis_sizes[{axis!r}] must be positive ints, not {values!r}")
            out[axis] = values
        return out

    def max_sizes_of(self, config: Any) -> dict[str, int]:
        sizes = self.max_sizes(config) if callable(self.max_sizes) else self.max_sizes
        return {str(axis): int(size) for axis, size in dict(sizes).items()}

    def axes(self, config: Any) -> dict[str, int]:
        """The export size of every non-batch dynamic axis."""
        return {axis: sizes[0] for axis, sizes in self.sizes_of_axes(config).items()}

    def make_inputs(
        self, config: Any, batch: int, generator: torch.Generator, sizes: Mapping[str, int] | None = None, data: Any = None
    ) -> tuple[torch.Tensor, ...]:
        """`example_inputs` at `batch` (and, for targets with dynamic axes, at `sizes`,
        default: the export sizes). An `example_inputs` with a parameter named `data` is
        given the data's `DataInfo` too (token ids must stay inside the vocabulary)."""
        args: list[Any] = [config, batch, generator]
        if self.dynamic_axes:
            args.append({**self.axes(config), **(sizes or {})})
        kwargs = {}
        if _takes(self.example_inputs, "data"):
            from zoo.data import DataInfo

            kwargs["data"] = data if data is not None else DataInfo()
        return tuple(self.example_inputs(*args, **kwargs))

    def exporter(self, fmt: str, default: str) -> str:
        if fmt == "torchscript" and self.trace:
            return "trace"
        return self.exporters.get(fmt, default)

    def input_shapes(self, config: Any, batch: int, data: Any = None) -> dict[str, tuple[int, ...]]:
        import torch

        tensors = self.make_inputs(config, batch, torch.Generator().manual_seed(0), data=data)
        return {spec.name: tuple(t.shape) for spec, t in zip(self.inputs, tensors)}


@dataclass(frozen=True)
class Weights:
    """Pretrained weights as data: where to get them, how to check them, what they are."""

    name: str
    # https://, http:// or file:// URL, or "package:<file>" for a file shipped in zoo.plugins/weights.
    source: str
    sha256: str
    meta: Mapping[str, Any] = field(default_factory=dict)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether `fn` has a parameter called `name`."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _positional_arity(fn: Callable[..., Any]) -> int:
    """How many positional arguments `fn` accepts (a class: its __init__ without self)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    params = list(signature.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 99
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


@dataclass(frozen=True)
class Plugin:
    """Everything zoo knows about one architecture."""

    name: str
    summary: str
    config_class: type
    # config -> nn.Module, or (config, data_info) -> nn.Module when the model's shape
    # depends on the data (its classes, its vocabulary: `zoo.data.DataInfo`). A GAN's
    # module holds generator and discriminator.
    build: Callable[..., nn.Module]
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
    # Generative plugins: the export target `zoo sample` runs, eagerly or from an exported
    # artifact. Images: it turns noise (and a label) into images, and `sample_inputs`
    # makes its inputs: (config, n, label or None, generator) -> input tensors. Text: it is
    # either tokens -> logits (generation slides a window as long as the largest size of
    # its sequence axis) or (token, state...) -> (logits, next state...), the state
    # outputs fed, in order, to the state inputs of the next step.
    sample_target: str | None = None
    sample_inputs: Callable[[Any, int, int | None, torch.Generator], tuple[torch.Tensor, ...]] | None = None
    # The export target `zoo predict` runs on input images: class scores out make it a
    # classifier (classes named by the data's DataInfo), images out an image translator.
    predict_target: str | None = None
    # A free label shown by `zoo list` ("classification", "generative", "language model",
    # ...). Nothing depends on it: what the plugin can do follows from what it provides.
    task: str = ""

    DEFAULT: ClassVar[str] = "DEFAULT"

    def __post_init__(self) -> None:
        try:
            check_config_class(self.config_class)
        except TypeError as exc:
            raise TypeError(f"plugin {self.name!r}: {exc}") from None
        if not isinstance(self.trainer_class, type) or not issubclass(self.trainer_class, Trainer):
            raise TypeError(f"plugin {self.name!r}: trainer_class must subclass zoo.Trainer")
        if not self.datasets or self.default_dataset not in self.datasets:
            raise ValueError(f"plugin {self.name!r}: default_dataset {self.default_dataset!r} must be one of its datasets {self.datasets}")
        names = [t.name for t in self.export_targets]
        if len(set(names)) != len(names):
            raise ValueError(f"plugin {self.name!r}: duplicate export target names {names}")
        wnames = [w.name for w in self.weights]
        if len(set(wnames)) != len(wnames) or self.DEFAULT in wnames:
            raise ValueError(f"plugin {self.name!r}: weights names must be unique and not {self.DEFAULT!r}")
        if self.sample_inputs is not None and self.sample_target is None:
            raise ValueError(f"plugin {self.name!r}: sample_inputs needs a sample_target to feed")
        if self.sample_target is not None and self.sample_target not in names:
            raise ValueError(f"plugin {self.name!r}: sample_target {self.sample_target!r} is not an export target")
        if self.predict_target is not None and self.predict_target not in names:
            raise ValueError(f"plugin {self.name!r}: predict_target {self.predict_target!r} is not an export target")
        if self.default_weights is not None and self.default_weights not in wnames:
            raise ValueError(f"plugin {self.name!r}: default_weights {self.default_weights!r} is not in its weights table")

    @property
    def build_takes_data(self) -> bool:
        """Whether `build` takes the data's `DataInfo` as its second argument."""
        return _positional_arity(self.build) >= 2

    def config(self, **overrides: Any) -> Any:
        return self.config_class(**overrides)

    def instantiate(self, config: Any, data_info: Any = None) -> nn.Module:
        """The model for `config` (and the data's `DataInfo` where `build` takes it):
        the one place `build` is called."""
        if self.build_takes_data:
            from zoo.data import DataInfo

            return self.build(config, data_info if data_info is not None else DataInfo())
        return self.build(config)

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
