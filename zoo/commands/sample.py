"""`zoo sample`: draw samples from a generative plugin and write them.

What a plugin samples is read off its sample target (`zoo.capabilities.sample_kind`);
each kind has one writer in `SAMPLE_WRITERS`: "images" writes a PNG grid. A new kind
(text from a language model) is one more writer and the options it reads, not a new
command. The noise (and labels) come from `--seed` on the CPU, so every source of the
same model (checkpoint, weights, artifact) gives the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import click

from zoo.commands.images import png_path, to_unit_range, write_png
from zoo.commands.runner import Runner, get_plugin, open_runner, source_options
from zoo.errors import UsageError


@dataclass(frozen=True)
class SampleRequest:
    """What `zoo sample` was asked for; each writer reads the options of its kind."""

    n: int
    seed: int
    out: str | None
    label: int | None = None
    nrow: int | None = None


@dataclass(frozen=True)
class SampleWriter:
    # Refuses options it cannot honour, before any model is opened.
    check: Callable[[SampleRequest], None]
    # Makes the samples with the runner, writes them, and returns the line to print.
    write: Callable[[Runner, SampleRequest], str]


def _check_images(request: SampleRequest) -> None:
    if request.nrow is not None and request.nrow < 1:
        raise UsageError(f"--nrow must be at least 1, not {request.nrow}")
    if request.out is None:
        raise UsageError("images are written as a PNG grid: pass -o FILE.png")
    png_path(request.out)


def _write_images(runner: Runner, request: SampleRequest) -> str:
    import torch

    plugin = runner.plugin
    path = png_path(request.out or "")
    inputs = plugin.sample_inputs(runner.config, request.n, request.label, torch.Generator().manual_seed(request.seed))
    images = to_unit_range(runner(inputs)[0], runner.output_range())
    write_png(images, path, nrow=request.nrow or math.ceil(math.sqrt(request.n)))
    what = f" of class {request.label}" if request.label is not None else ""
    return f"wrote {path}: {request.n} samples{what} from {plugin.name} {runner.source} (seed {request.seed})"


# sample_kind(plugin) -> how its samples are made and written.
SAMPLE_WRITERS: dict[str, SampleWriter] = {
    "images": SampleWriter(check=_check_images, write=_write_images),
}


def samplers(kinds: tuple[str, ...] | None = None) -> list[str]:
    """Installed plugins whose samples `zoo sample` writes (of `kinds`, default: any)."""
    from zoo import _registry
    from zoo.capabilities import sample_kind

    kinds = tuple(SAMPLE_WRITERS) if kinds is None else kinds
    return [n for n, e in _registry.plugins.entries().items() if e.obj is not None and sample_kind(e.obj) in kinds]


@click.command("sample")
@click.argument("plugin_name", metavar="PLUGIN")
@click.option("-n", "--num", "n", type=click.INT, default=64, show_default=True, help="number of samples")
@click.option("--label", type=click.INT, default=None, help="class to sample (conditional plugins; default: cycle through all)")
@click.option("--seed", type=click.INT, default=0, show_default=True, help="seed of the noise (the same for every source)")
@click.option("--nrow", type=click.INT, default=None, help="images per grid row [default: about sqrt(n)]")
@source_options
@click.option("-o", "--out", "out", default=None, help="where to write the samples: the grid (.png) for images")
def sample_command(
    plugin_name: str,
    n: int,
    label: int | None,
    seed: int,
    nrow: int | None,
    checkpoint: str | None,
    weights: str | None,
    random_init: bool,
    artifact: str | None,
    device: str,
    out: str | None,
) -> None:
    """Sample a grid of N images from a generative PLUGIN.

    The noise (and labels) come from --seed on the CPU, so `--checkpoint` and
    `--artifact` runs of the same model give the same grid."""
    from zoo.capabilities import sample_kind

    plugin = get_plugin(plugin_name)
    kind = sample_kind(plugin)
    writer = SAMPLE_WRITERS.get(kind) if kind is not None else None
    if writer is None:
        made = f"samples {kind}, which zoo sample cannot write yet" if kind else "does not sample"
        raise UsageError(f"{plugin.name} {made}; plugins that do: {', '.join(samplers()) or 'none'}")
    if n < 1:
        raise UsageError(f"-n must be at least 1, not {n}")
    request = SampleRequest(n=n, seed=seed, out=out, label=label, nrow=nrow)
    writer.check(request)
    runner = open_runner(
        plugin, plugin.sample_target, checkpoint=checkpoint, weights=weights, random_init=random_init, artifact=artifact, device=device
    )
    click.echo(writer.write(runner, request))
