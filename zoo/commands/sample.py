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

from zoo.commands.images import check_output, png_path, to_unit_range, write_png, write_text
from zoo.commands.runner import Runner, get_plugin, open_runner, source_options
from zoo.errors import UsageError


@dataclass(frozen=True)
class SampleRequest:
    """What `zoo sample` was asked for; each writer reads the options of its kind and
    refuses those of another kind (None: not given)."""

    seed: int
    out: str | None
    n: int | None = None
    label: int | None = None
    nrow: int | None = None
    prompt: str | None = None
    length: int | None = None
    temperature: float | None = None
    top_k: int | None = None

    @property
    def samples(self) -> int:
        return self.n if self.n is not None else DEFAULT_N

    @property
    def characters(self) -> int:
        return self.length if self.length is not None else DEFAULT_LENGTH

    @property
    def softmax_temperature(self) -> float:
        return self.temperature if self.temperature is not None else DEFAULT_TEMPERATURE


DEFAULT_N = 64
DEFAULT_LENGTH = 200
DEFAULT_TEMPERATURE = 1.0
# The options only one kind of sample takes (field -> flag): the other kind refuses them.
IMAGE_OPTIONS = {"n": "-n", "label": "--label", "nrow": "--nrow"}
TEXT_OPTIONS = {"prompt": "--prompt", "length": "--length", "temperature": "--temperature", "top_k": "--top-k"}


def _refuse_options(request: SampleRequest, options: dict[str, str], what: str) -> None:
    given = [flag for name, flag in options.items() if getattr(request, name) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to {what}")


@dataclass(frozen=True)
class SampleWriter:
    # Refuses options it cannot honour, before any model is opened.
    check: Callable[[SampleRequest], None]
    # Makes the samples with the runner, writes them, and returns the line to print.
    write: Callable[[Runner, SampleRequest], str]


# The most images one grid holds: 100 x 100 digits make a 3,000-pixel-wide PNG, and
# the samples are held in memory at once (2,000,000 would take 24 GB).
MAX_GRID = 10_000


def _check_images(request: SampleRequest) -> None:
    _refuse_options(request, TEXT_OPTIONS, "language models; this plugin samples images")
    n = request.samples
    if n < 1:
        raise UsageError(f"-n must be at least 1, not {n}")
    if n > MAX_GRID:
        raise UsageError(f"-n {n}: a grid holds at most {MAX_GRID:,} images; write several grids with different --seed")
    if request.nrow is not None and request.nrow < 1:
        raise UsageError(f"--nrow must be at least 1, not {request.nrow}")
    if request.out is None:
        raise UsageError("images are written as a PNG grid: pass -o FILE.png")
    check_output(png_path(request.out))


def _write_images(runner: Runner, request: SampleRequest) -> str:
    import torch

    plugin = runner.plugin
    path = png_path(request.out or "")
    n = request.samples
    inputs = plugin.sample_inputs(runner.config, n, request.label, torch.Generator().manual_seed(request.seed))
    images = to_unit_range(runner(inputs)[0], runner.output_range())
    write_png(images, path, nrow=request.nrow or math.ceil(math.sqrt(n)))
    what = f" of class {request.label}" if request.label is not None else ""
    return f"wrote {path}: {n} samples{what} from {plugin.name} {runner.source} (seed {request.seed})"


def _check_text(request: SampleRequest) -> None:
    from zoo import textgen

    _refuse_options(request, IMAGE_OPTIONS, "image generators; a language model writes one text (--prompt, --length)")
    if request.prompt is None:
        raise UsageError("a language model continues a prompt: pass --prompt TEXT")
    textgen.check_options(request.prompt, request.characters, request.softmax_temperature, request.top_k)
    if request.out is not None:
        check_output(request.out)


def text_reader(runner: Runner):
    """How the runner's text target reads the next character (`zoo.textgen`): one step at
    a time with its state, or a sliding window as long as its sequence axis allows."""
    import torch

    from zoo import textgen

    target = runner.target
    if len(target.inputs) > 1:  # (token, state...) -> (logits, next state...)
        examples = target.make_inputs(runner.config, 1, torch.Generator().manual_seed(0), data=runner.data_info)
        zero = [torch.zeros_like(t) for t in examples[1:]]

        def step(token: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs = runner([token, *state])
            return (outputs[0].reshape(-1), *outputs[1:])

        return textgen.step_reader(step, zero)
    axis = target.dynamic_axes[0]
    context = max(target.sizes_of_axes(runner.config)[axis])
    return textgen.window_reader(lambda window: runner([window])[0][0, -1], context)


def _write_text(runner: Runner, request: SampleRequest) -> str:
    import sys

    import torch

    from zoo import textgen

    vocabulary = runner.data_info.vocabulary if runner.data_info is not None else None
    if not vocabulary:
        raise UsageError(f"{runner.source} carries no vocabulary (data_info); it cannot encode the prompt")
    text = textgen.generate(
        text_reader(runner),
        vocabulary,
        request.prompt or "",
        request.characters,
        request.softmax_temperature,
        request.top_k,
        torch.Generator().manual_seed(request.seed),
    )
    if request.out is None:
        sys.stdout.write(text + "\n")  # the prompt and its continuation alone on stdout
        sys.stdout.flush()
        return ""
    write_text(text + "\n", request.out)
    return f"wrote {request.out}: {request.characters} characters after the prompt from {runner.plugin.name} {runner.source} (seed {request.seed})"


# sample_kind(plugin) -> how its samples are made and written.
SAMPLE_WRITERS: dict[str, SampleWriter] = {
    "images": SampleWriter(check=_check_images, write=_write_images),
    "text": SampleWriter(check=_check_text, write=_write_text),
}


def samplers(kinds: tuple[str, ...] | None = None) -> list[str]:
    """Installed plugins whose samples `zoo sample` writes (of `kinds`, default: any)."""
    from zoo import _registry
    from zoo.capabilities import sample_kind

    kinds = tuple(SAMPLE_WRITERS) if kinds is None else kinds
    return [n for n, e in _registry.plugins.entries().items() if e.obj is not None and sample_kind(e.obj) in kinds]


@click.command("sample")
@click.argument("plugin_name", metavar="PLUGIN")
@click.option("-n", "--num", "n", type=click.INT, default=None, help=f"image generators: number of samples [default: {DEFAULT_N}]")
@click.option("--label", type=click.INT, default=None, help="class to sample (conditional image generators; default: cycle through all)")
@click.option("--seed", type=click.INT, default=0, show_default=True, help="seed of the noise (the same for every source)")
@click.option("--nrow", type=click.INT, default=None, help="images per grid row [default: about sqrt(n)]")
@click.option("--prompt", default=None, help="language models: the text to continue")
@click.option(
    "--length", type=click.INT, default=None, help=f"language models: characters to generate, at least 1 [default: {DEFAULT_LENGTH}]"
)
@click.option(
    "--temperature",
    type=click.FLOAT,
    default=None,
    help=f"language models: softmax temperature; 0 is greedy [default: {DEFAULT_TEMPERATURE:g}]",
)
@click.option("--top-k", "top_k", type=click.INT, default=None, help="language models: draw from the k likeliest characters only")
@source_options
@click.option(
    "-o", "--out", "out", default=None, help="where to write the samples: the grid (.png) for images; text goes to stdout without it"
)
def sample_command(
    plugin_name: str,
    n: int | None,
    label: int | None,
    seed: int,
    nrow: int | None,
    prompt: str | None,
    length: int | None,
    temperature: float | None,
    top_k: int | None,
    checkpoint: str | None,
    weights: str | None,
    random_init: bool,
    artifact: str | None,
    device: str,
    out: str | None,
) -> None:
    """Sample from a generative PLUGIN: a grid of N images, or a language model's
    continuation of --prompt (printed, or written to -o; notes go to stderr).

    The noise (and labels, and the characters drawn) come from --seed on the CPU, so
    `--checkpoint` and `--artifact` runs of the same model give the same samples."""
    from zoo.capabilities import sample_kind

    plugin = get_plugin(plugin_name)
    kind = sample_kind(plugin)
    writer = SAMPLE_WRITERS.get(kind) if kind is not None else None
    if writer is None:
        made = f"samples {kind}, which zoo sample cannot write yet" if kind else "does not sample"
        raise UsageError(f"{plugin.name} {made}; plugins that do: {', '.join(samplers()) or 'none'}")
    request = SampleRequest(
        n=n, seed=seed, out=out, label=label, nrow=nrow, prompt=prompt, length=length, temperature=temperature, top_k=top_k
    )
    writer.check(request)
    runner = open_runner(
        plugin, plugin.sample_target, checkpoint=checkpoint, weights=weights, random_init=random_init, artifact=artifact, device=device
    )
    line = writer.write(runner, request)
    if line:
        click.echo(line, err=kind == "text")  # with text on stdout, the note goes to stderr
