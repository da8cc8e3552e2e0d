"""The model behind `zoo sample`, `zoo predict` and `zoo evaluate`: one export target of
a plugin, run eagerly or from an exported artifact, on CPU tensors in and out.

Eager models come from `zoo.models.build_model` (`--checkpoint`, `--weights`,
`--random-init`, or the newest run), exactly as `zoo export` builds them, so an
artifact and the model it was exported from can be compared image for image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from zoo.errors import UsageError, ZooError

if TYPE_CHECKING:
    import torch

    from zoo.data import DataInfo, Images
    from zoo.plugin import ExportTarget, Plugin

CHUNK = 256  # samples per forward pass: bounds memory whatever -n is


@dataclass
class Runner:
    """One export target of a plugin, runnable eagerly or from an artifact."""

    plugin: Plugin
    config: Any
    target: ExportTarget
    # inputs (CPU tensors) -> outputs (CPU tensors), one chunk at a time
    forward: Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor, ...]]
    source: str  # where the model came from, for messages: "checkpoint PATH", "artifact PATH", ...
    # The first input's shape as an artifact's metadata records it ("batch" and other
    # dynamic axes named), which wins over the config's where a size is fixed.
    recorded_input_shape: Sequence[Any] = ()
    # What the data knew (classes, vocabulary): ranges such as a vocabulary's size follow it.
    data_info: DataInfo | None = None

    def __call__(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        import torch

        n = inputs[0].shape[0]
        chunks = [self.forward([t[start : start + CHUNK] for t in inputs]) for start in range(0, n, CHUNK)]
        return tuple(torch.cat(parts) for parts in zip(*chunks))

    def input_request(self) -> Images:
        """How images must look for the target's first input (a `zoo.data.Images`): its
        channels and size as the example inputs have them (not the size training
        images are stored at) and the value range its spec declares."""
        from zoo.data import Images

        spec = self.target.inputs[0]
        _, channels, size = self.target.input_shapes(self.config, 1, data=self.data_info)[spec.name][:3]
        trained = next((t for t in self.plugin.data_request(self.config).tensors if isinstance(t, Images)), None)
        recorded = list(self.recorded_input_shape)
        if len(recorded) == 4:
            channels = recorded[1] if isinstance(recorded[1], int) else channels
            size = recorded[2] if isinstance(recorded[2], int) else size
        value_range = spec.resolved_range(self.config, self.data_info) or (trained.value_range if trained else (0.0, 1.0))
        return Images(spec.name, size=size, channels=channels, value_range=value_range)

    def output_range(self, index: int = 0) -> tuple[float, float]:
        spec = self.target.outputs[index]
        value_range = spec.resolved_range(self.config, self.data_info)
        if value_range is None:
            raise UsageError(f"{self.plugin.name}:{self.target.name} output {spec.name!r} is not an image (no value range)")
        return value_range


def source_options(command: Callable) -> Callable:
    """--checkpoint / --weights / --random-init / --artifact / --device, shared by the commands that use a model."""
    options = [
        click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="a `zoo train` checkpoint (last.pt)"),
        click.option("--weights", default=None, help="pretrained weights: a NAME of the plugin's table (or DEFAULT) or a file PATH"),
        click.option("--random-init", is_flag=True, help="an untrained model (initialised from seed 0): a baseline, or to try the tools"),
        click.option(
            "--artifact",
            type=click.Path(dir_okay=False),
            default=None,
            help="an exported file (.torchscript, .onnx, .pt2) to run instead of PyTorch",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def get_plugin(name: str) -> Plugin:
    from zoo import _registry

    return _registry.get_plugin(name)


def open_runner(
    plugin: Plugin,
    target_name: str,
    *,
    checkpoint: str | None,
    weights: str | None,
    artifact: str | None,
    device: str,
    random_init: bool = False,
) -> Runner:
    """The named export target of `plugin`, from whichever source the user gave (none:
    the newest `zoo train` run of the plugin)."""
    given = [
        flag
        for flag, value in (("--checkpoint", checkpoint), ("--weights", weights), ("--random-init", random_init), ("--artifact", artifact))
        if value
    ]
    if len(given) > 1:
        raise UsageError(f"pass one of --checkpoint, --weights, --random-init and --artifact, not {' and '.join(given)}")
    target = plugin.target(target_name)
    if artifact is not None:
        return _artifact_runner(plugin, target, artifact, device)

    import torch

    from zoo import devices, models
    from zoo.export_support import as_tuple

    dev = devices.resolve(device)
    # Weights may hold only some components (a GAN's generator): say so only when the
    # target runs one of the others, which then has its initial values.
    built = models.build_model(plugin, checkpoint=checkpoint, weights=weights, random_init=random_init, quiet=True)
    module = target.module(built.model.to(dev))
    untrained = _components_used(built.model, module, built.loaded.left_as_built if built.loaded is not None else [])
    if untrained:
        them = "it" if len(untrained) == 1 else "them"
        click.echo(
            f"note: {built.source.describe()} hold no {', '.join(untrained)}; {plugin.name}:{target.name} runs {them} as initialised",
            err=True,
        )

    def forward_eager(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(o.cpu() for o in as_tuple(module(*[t.to(dev) for t in inputs])))

    return Runner(plugin, built.config, target, forward_eager, built.source.describe(), data_info=built.data_info)


def _components_used(model: Any, module: Any, components: Sequence[str]) -> list[str]:
    """Those of the model's top-level `components` whose tensors `module` holds."""
    held = {id(t) for t in [*module.parameters(), *module.buffers()]}
    return [c for c in components if any(id(t) in held for t in [*getattr(model, c).parameters(), *getattr(model, c).buffers()])]


def _artifact_runner(plugin: Plugin, target: ExportTarget, artifact: str, device: str) -> Runner:
    from zoo import config as zconfig
    from zoo.data import DataInfo
    from zoo.export import artifacts

    loaded = artifacts.load(artifact, device=device)
    meta = loaded.metadata
    if meta.get("plugin") != plugin.name or meta.get("target") != target.name:
        raise UsageError(f"--artifact {artifact} is {meta.get('plugin')}:{meta.get('target')}, not {plugin.name}:{target.name}")

    def forward_artifact(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        import torch

        return tuple(torch.from_numpy(o) for o in loaded(*inputs))

    # The artifact checks its input shapes itself; the config only shapes the inputs we
    # make (e.g. the noise size), from the metadata where it has one.
    config = zconfig.from_dict(plugin.config_class, meta.get("config") or {}, plugin=plugin.name)
    try:
        info = DataInfo.from_json(meta.get("data_info"))
    except ValueError as exc:
        raise ZooError(f"--artifact {artifact}: its metadata's data_info is malformed ({exc})") from None
    shape = meta["inputs"][0].get("shape", ()) if meta.get("inputs") else ()
    return Runner(plugin, config, target, forward_artifact, f"artifact {artifact}", shape, data_info=info)
