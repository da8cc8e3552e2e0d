"""`zoo sample`, `zoo predict` and `zoo evaluate`: use a trained model, or a file
exported from one, on new inputs.

Every command takes the model from one source: `--checkpoint` (a `zoo train`
checkpoint), `--weights` (a NAME of the plugin's weights table or a file), or
`--artifact` (an exported TorchScript/ONNX/.pt2 file, run by its own runtime); with
none, the newest run of the plugin under `runs/`. Inputs are made on the CPU from a
seeded generator before they reach either runtime, so eager PyTorch and an exported
file see identical noise and can be compared image for image.

torch is imported inside the commands only (`zoo --help` stays fast).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zoo.errors import DataError, UsageError

if TYPE_CHECKING:
    import torch

    from zoo.plugin import ExportTarget, Plugin

CHUNK = 256  # samples per forward pass: bounds memory whatever -n is


# --------------------------------------------------------------------------- the model behind a command


@dataclass
class Runner:
    """One export target of a plugin, runnable eagerly or from an artifact."""

    plugin: Plugin
    config: Any
    target: ExportTarget
    # inputs (CPU tensors) -> outputs (CPU tensors), one chunk at a time
    forward: Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor, ...]]
    source: str  # what the user pointed at, for messages
    # The first input's shape as an artifact's metadata records it ("batch" and other
    # dynamic axes named), which wins over the config's where a size is fixed.
    recorded_input_shape: Sequence[Any] = ()

    def __call__(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        import torch

        n = inputs[0].shape[0]
        chunks = [self.forward([t[start : start + CHUNK] for t in inputs]) for start in range(0, n, CHUNK)]
        return tuple(torch.cat(parts) for parts in zip(*chunks))

    def input_request(self) -> Any:
        """How images must look for the target's first input (a `zoo.data.Images`): its
        channels and size as the example inputs have them (not the size training
        images are stored at) and the value range its spec declares."""
        from zoo.data import Images

        spec = self.target.inputs[0]
        _, channels, size = self.target.input_shapes(self.config, 1)[spec.name][:3]
        trained = next((t for t in self.plugin.data_request(self.config).tensors if isinstance(t, Images)), None)
        recorded = list(self.recorded_input_shape)
        if len(recorded) == 4:
            channels = recorded[1] if isinstance(recorded[1], int) else channels
            size = recorded[2] if isinstance(recorded[2], int) else size
        value_range = spec.resolved_range(self.config) or (trained.value_range if trained else (0.0, 1.0))
        return Images(spec.name, size=size, channels=channels, value_range=value_range)

    def output_range(self, index: int = 0) -> tuple[float, float]:
        spec = self.target.outputs[index]
        if spec.value_range is None:
            raise UsageError(f"{self.plugin.name}:{self.target.name} output {spec.name!r} is not an image (no value range)")
        return spec.value_range


def source_options(command: Callable) -> Callable:
    """--checkpoint / --weights / --artifact / --device, shared by the commands here."""
    options = [
        click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="a `zoo train` checkpoint (last.pt)"),
        click.option("--weights", default=None, help="pretrained weights: a NAME of the plugin's table (or DEFAULT) or a file PATH"),
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


def _eager_model(plugin: Plugin, checkpoint: str | None, weights: str | None) -> tuple[Any, Any, str]:
    """(model in eval mode, config, source description) from a checkpoint, weights, or
    the newest run; built the way `zoo export` builds it."""
    from zoo import models, paths

    if checkpoint is None and weights is None:
        latest = paths.latest_checkpoint(plugin.name)
        if latest is None:
            raise UsageError(
                f"no trained {plugin.name} under {paths.runs_root() / plugin.name}: train one first "
                f"(zoo train {plugin.name}) or pass --weights NAME|PATH, --checkpoint or --artifact"
            )
        checkpoint = str(latest)
    built = models.build_model(plugin, checkpoint=checkpoint, weights=weights)
    return built.model.eval(), built.config, f"checkpoint {checkpoint}" if checkpoint is not None else f"weights {weights}"


def open_runner(
    plugin: Plugin, target_name: str, *, checkpoint: str | None, weights: str | None, artifact: str | None, device: str
) -> Runner:
    """The named export target of `plugin`, from whichever source the user gave."""
    given = [flag for flag, value in (("--checkpoint", checkpoint), ("--weights", weights), ("--artifact", artifact)) if value]
    if len(given) > 1:
        raise UsageError(f"pass one of --checkpoint, --weights and --artifact, not {' and '.join(given)}")
    target = plugin.target(target_name)
    if artifact is not None:
        from zoo import config as zconfig
        from zoo.export import artifacts

        loaded = artifacts.load(artifact, device=device)
        meta = loaded.metadata
        if meta.get("plugin") != plugin.name or meta.get("target") != target.name:
            raise UsageError(f"--artifact {artifact} is {meta.get('plugin')}:{meta.get('target')}, not {plugin.name}:{target.name}")

        def forward_artifact(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
            import torch

            return tuple(torch.from_numpy(o) for o in loaded(*inputs))

        # The artifact checks its input shapes itself; the config only shapes the
        # inputs we make (e.g. the noise size), from the metadata where it has one.
        config = zconfig.from_dict(plugin.config_class, meta.get("config") or {}, plugin=plugin.name)
        shape = meta["inputs"][0].get("shape", ()) if meta.get("inputs") else ()
        return Runner(plugin, config, target, forward_artifact, f"artifact {artifact}", shape)

    import torch

    from zoo import devices
    from zoo.export_support import as_tuple

    dev = devices.resolve(device)
    model, config, source = _eager_model(plugin, checkpoint, weights)
    module = target.module(model.to(dev))

    def forward_eager(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(o.cpu() for o in as_tuple(module(*[t.to(dev) for t in inputs])))

    return Runner(plugin, config, target, forward_eager, source)


def to_unit_range(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Images in `value_range` -> [0, 1] (clamped: a generator may overshoot a little)."""
    lo, hi = value_range
    return ((images.float() - lo) / (hi - lo)).clamp(0.0, 1.0)


def write_png(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """A (C, H, W) image or an (N, C, H, W) batch laid out as a grid, in [0, 1], written atomically."""
    from torchvision.utils import make_grid, save_image

    from zoo import checkpoint

    if images.dim() == 4:
        images = make_grid(images, nrow=nrow or 8, padding=2)
    try:
        checkpoint.atomic_write(path, lambda fh: save_image(images, fh, format="png"))
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror or exc})") from None


def _png_path(out: str, flag: str = "-o") -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise UsageError(f"{flag} {out}: images are written as PNG, so the name must end in .png")
    return path


def _plugin(name: str) -> Plugin:
    from zoo import _registry

    return _registry.get_plugin(name)


def _generators() -> list[str]:
    from zoo import _registry
    from zoo.capabilities import sample_kind

    return [n for n, e in _registry.plugins.entries().items() if e.obj is not None and sample_kind(e.obj) == "images"]


# --------------------------------------------------------------------------- zoo sample


@click.command("sample")
@click.argument("plugin_name", metavar="PLUGIN")
@click.option("-n", "--num", "n", type=click.INT, default=64, show_default=True, help="number of samples")
@click.option("--label", type=click.INT, default=None, help="class to sample (conditional plugins; default: cycle through all)")
@click.option("--seed", type=click.INT, default=0, show_default=True, help="seed of the noise (the same for every source)")
@click.option("--nrow", type=click.INT, default=None, help="images per grid row [default: about sqrt(n)]")
@source_options
@click.option("-o", "--out", "out", required=True, help="the grid to write (.png)")
def sample_command(
    plugin_name: str,
    n: int,
    label: int | None,
    seed: int,
    nrow: int | None,
    checkpoint: str | None,
    weights: str | None,
    artifact: str | None,
    device: str,
    out: str,
) -> None:
    """Sample a grid of N images from a generative PLUGIN.

    The noise (and labels) come from --seed on the CPU, so `--checkpoint` and
    `--artifact` runs of the same model give the same grid."""
    import torch

    from zoo.capabilities import sample_kind

    plugin = _plugin(plugin_name)
    if sample_kind(plugin) != "images" or plugin.sample_target is None or plugin.sample_inputs is None:
        raise UsageError(f"{plugin.name} does not sample images; plugins that do: {', '.join(_generators()) or 'none'}")
    if n < 1:
        raise UsageError(f"-n must be at least 1, not {n}")
    if nrow is not None and nrow < 1:
        raise UsageError(f"--nrow must be at least 1, not {nrow}")
    path = _png_path(out)
    runner = open_runner(plugin, plugin.sample_target, checkpoint=checkpoint, weights=weights, artifact=artifact, device=device)
    inputs = plugin.sample_inputs(runner.config, n, label, torch.Generator().manual_seed(seed))
    images = to_unit_range(runner(inputs)[0], runner.output_range())
    write_png(images, path, nrow=nrow or math.ceil(math.sqrt(n)))
    what = f" of class {label}" if label is not None else ""
    click.echo(f"wrote {path}: {n} samples{what} from {plugin.name} {runner.source} (seed {seed})")


# --------------------------------------------------------------------------- zoo predict


def read_image(path: Path, channels: int) -> torch.Tensor:
    """One image file -> uint8 (1, channels, H, W); a path that is not a readable image
    raises a one-line DataError naming it."""
    import numpy as np
    import torch

    from zoo.datasets._images import open_image

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    pixels = np.asarray(open_image(path, "L" if channels == 1 else "RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(pixels.copy())
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)  # (H, W[, C]) -> (C, H, W)
    return tensor.unsqueeze(0)


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given; a directory stands for the images directly inside it (the
    extensions torchvision's ImageFolder reads)."""
    from zoo.datasets._images import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{p}: no images in this directory ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        else:
            paths.append(p)
    return paths


def _load_batch(paths: Sequence[Path], request: Any) -> torch.Tensor:
    """Images resized and scaled the way the plugin trained: (N, C, size, size) in its range."""
    import torch

    from zoo.data import to_request

    return torch.cat([to_request(read_image(p, request.channels), request) for p in paths])


def _classify(runner: Runner, paths: list[Path], request: Any) -> list[dict[str, Any]]:
    import torch

    probabilities = torch.softmax(runner([_load_batch(paths, request)])[0].float(), dim=1)
    best, classes = probabilities.max(dim=1)
    return [
        {"input": str(p), "class": int(c), "probability": float(b), "probabilities": [round(float(v), 6) for v in row]}
        for p, c, b, row in zip(paths, classes, best, probabilities)
    ]


def _translate(runner: Runner, paths: list[Path], request: Any, out: str | None) -> list[dict[str, Any]]:
    if out is None:
        raise UsageError(f"{runner.plugin.name} writes images: pass -o FILE.png (one input) or -o DIR")
    out_path = Path(out)
    if len(paths) == 1 and out_path.suffix.lower() == ".png":
        targets = [out_path]
    else:
        if out_path.suffix.lower() == ".png":
            raise UsageError(f"-o {out}: {len(paths)} inputs need a directory, not one .png file")
        stems = [p.stem for p in paths]
        clash = sorted({s for s in stems if stems.count(s) > 1})
        if clash:
            raise UsageError(f"inputs share the name {clash[0]!r}; their outputs would overwrite each other in {out}")
        targets = [out_path / f"{p.stem}.png" for p in paths]
    value_range = runner.output_range()
    results = []
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        outputs = to_unit_range(runner([_load_batch(chunk, request)])[0], value_range)
        for src, image, dst in zip(chunk, outputs, targets[start:]):
            write_png(image, dst)
            results.append({"input": str(src), "output": str(dst)})
    return results


@click.command("predict")
@click.argument("plugin_name", metavar="PLUGIN")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o", "--out", "out", default=None, help="image-to-image: output .png (one input) or directory; classifiers: write the results here too"
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@source_options
def predict_command(
    plugin_name: str,
    inputs: tuple[str, ...],
    out: str | None,
    as_json: bool,
    checkpoint: str | None,
    weights: str | None,
    artifact: str | None,
    device: str,
) -> None:
    """Run PLUGIN on image files (or directories of them).

    Classifiers print the class and its probability per image; image-to-image plugins
    write the translated images to -o. Images are resized and scaled the way the
    plugin was trained (see `zoo info PLUGIN`)."""
    from zoo import checkpoint as zcheckpoint
    from zoo.capabilities import predict_kind

    plugin = _plugin(plugin_name)
    kind = predict_kind(plugin)
    if kind is None:
        raise UsageError(
            f"{plugin.name} has no predict target: zoo predict runs classifiers and image-to-image plugins"
            + (" (use zoo sample)" if plugin.sample_target else "")
        )
    paths = expand_inputs(inputs)
    target = plugin.target(plugin.predict_target)
    runner = open_runner(plugin, target.name, checkpoint=checkpoint, weights=weights, artifact=artifact, device=device)
    request = runner.input_request()
    if kind == "classes":
        results = _classify(runner, paths, request)
        if as_json:
            text = json.dumps(results, indent=2)
        else:
            text = "\n".join(f"{r['input']}\tclass {r['class']}\tprobability {r['probability']:.4f}" for r in results)
        if out is not None:
            zcheckpoint.atomic_write(out, lambda fh: fh.write(text + "\n"), mode="w")
        click.echo(text)
        return
    results = _translate(runner, paths, request, out)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            click.echo(f"{r['input']} -> {r['output']}")


# --------------------------------------------------------------------------- zoo evaluate


def _classifier(spec: str | None, device: str) -> Runner:
    """A classifier to judge samples: a checkpoint of any classification plugin, or
    convnet weights (NAME or file); by default the newest convnet run."""
    from zoo import checkpoint, paths
    from zoo.capabilities import predict_kind

    if spec is None:
        latest = paths.latest_checkpoint("convnet")
        if latest is None:
            raise UsageError(
                f"no trained convnet under {paths.runs_root() / 'convnet'} to judge the samples: "
                "train one (zoo train convnet) or pass --classifier CHECKPOINT|WEIGHTS"
            )
        spec = str(latest)
    plugin_name = "convnet"
    if Path(spec).suffix == ".pt" and Path(spec).is_file():
        plugin_name = checkpoint.load(spec)["plugin"]
        plugin = _plugin(plugin_name)
        if predict_kind(plugin) != "classes":
            raise UsageError(f"--classifier {spec} is a {plugin_name} checkpoint; a classifier (e.g. convnet) is needed")
        return open_runner(plugin, plugin.predict_target, checkpoint=spec, weights=None, artifact=None, device=device)
    plugin = _plugin(plugin_name)
    return open_runner(plugin, plugin.predict_target, checkpoint=None, weights=spec, artifact=None, device=device)


def sample_quality(runner: Runner, classifier: Runner, n: int, seed: int) -> dict[str, Any]:
    """Issue 4's figures for `n` samples: the classifier's mean max-probability, the
    classes it sees, and, when the generator takes a label, how often it sees that label."""
    import torch

    from zoo.data import to_request

    plugin = runner.plugin
    inputs = plugin.sample_inputs(runner.config, n, None, torch.Generator().manual_seed(seed))
    images = to_unit_range(runner(inputs)[0], runner.output_range())
    # e.g. dcgan's 32x32 in [-1, 1] -> convnet's 28x28 in [0, 1]
    images = to_request(images, classifier.input_request())
    probabilities = torch.softmax(classifier([images])[0].float(), dim=1)
    best, predicted = probabilities.max(dim=1)
    counts = torch.bincount(predicted, minlength=probabilities.shape[1])
    result: dict[str, Any] = {
        "plugin": plugin.name,
        "source": runner.source,
        "classifier": f"{classifier.plugin.name} {classifier.source}",
        "samples": n,
        "seed": seed,
        "mean_max_probability": float(best.mean()),
        "distinct_classes": int((counts > 0).sum()),
        "class_counts": [int(c) for c in counts],
    }
    names = [spec.name for spec in runner.target.inputs]
    groups = predicted
    if "label" in names:
        groups = inputs[names.index("label")]
        result["conditional_accuracy"] = float((predicted == groups).float().mean())
    result["within_class_std"] = within_class_std(images, groups)
    return result


def within_class_std(images: torch.Tensor, groups: torch.Tensor) -> float:
    """Pixel standard deviation among images of one class, averaged over pixels and
    classes: near 0 when a generator draws the same image for every noise (a collapse
    that max-probability and class counts cannot see). The bundled digits score 0.13."""
    stds = [images[groups == c].std(dim=0).mean() for c in groups.unique() if int((groups == c).sum()) >= 2]
    return float(sum(stds) / len(stds)) if stds else 0.0


@click.command("evaluate")
@click.argument("plugin_name", metavar="PLUGIN")
@click.option(
    "--classifier",
    default=None,
    help="classifier that judges the samples: a checkpoint, or convnet weights NAME|PATH [default: newest convnet run]",
)
@click.option("-n", "--num", "n", type=click.INT, default=1000, show_default=True, help="number of samples")
@click.option("--seed", type=click.INT, default=0, show_default=True, help="seed of the noise")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@source_options
def evaluate_command(
    plugin_name: str,
    classifier: str | None,
    n: int,
    seed: int,
    as_json: bool,
    checkpoint: str | None,
    weights: str | None,
    artifact: str | None,
    device: str,
) -> None:
    """Judge a generative PLUGIN's samples with a trained classifier.

    Prints the classifier's mean max-probability over N samples (do they look like
    digits?), the number of distinct classes it predicts (are they varied?), the
    pixel spread among samples of one class (near 0: one image per class), and for
    conditional plugins (cgan) the fraction classified as the class they were
    conditioned on. `--classifier DEFAULT` uses convnet's pretrained weights."""
    plugin = _plugin(plugin_name)
    if plugin.sample_target is None:
        raise UsageError(
            f"{plugin.name} does not sample images; zoo evaluate judges generative plugins ({', '.join(_generators()) or 'none'})"
        )
    if n < 1:
        raise UsageError(f"-n must be at least 1, not {n}")
    runner = open_runner(plugin, plugin.sample_target, checkpoint=checkpoint, weights=weights, artifact=artifact, device=device)
    judge = _classifier(classifier, device)
    result = sample_quality(runner, judge, n, seed)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{plugin.name} ({runner.source}), {n} samples judged by {result['classifier']}:")
    if "conditional_accuracy" in result:
        click.echo(f"  conditional accuracy   {result['conditional_accuracy']:.4f}  (classified as the class they were conditioned on)")
    click.echo(f"  mean max-probability   {result['mean_max_probability']:.4f}")
    click.echo(f"  distinct classes       {result['distinct_classes']} of {len(result['class_counts'])}  counts {result['class_counts']}")
    click.echo(
        f"  within-class std       {result['within_class_std']:.4f}  (pixel spread among samples of one class; 0 = one image per class)"
    )
