"""`zoo evaluate`: judge a generative plugin's samples with a trained classifier.

Issue 4's figures: the classifier's mean max-probability (do the samples look like
digits?), the classes it predicts (are they varied?), the pixel spread among samples
of one class (a collapse to one image per class shows as 0) and, for conditional
generators, how often the classifier sees the class a sample was conditioned on.
`benchmarks/generative_quality.py` computes the same figures after default training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zoo.commands.images import to_unit_range
from zoo.commands.runner import Runner, get_plugin, open_runner, source_options
from zoo.errors import UsageError

if TYPE_CHECKING:
    import torch

DEFAULT_CLASSIFIER = "convnet"
DEFAULT_SAMPLES = 1000


def open_classifier(spec: str | None, device: str) -> Runner:
    """A classifier to judge samples: a checkpoint of any classification plugin, or
    convnet weights (NAME or file); by default the newest convnet run."""
    from zoo import checkpoint, paths
    from zoo.capabilities import predict_kind

    if spec is None:
        latest = paths.latest_checkpoint(DEFAULT_CLASSIFIER)
        if latest is None:
            raise UsageError(
                f"no trained {DEFAULT_CLASSIFIER} under {paths.runs_root() / DEFAULT_CLASSIFIER} to judge the samples: "
                f"train one (zoo train {DEFAULT_CLASSIFIER}) or pass --classifier CHECKPOINT|WEIGHTS"
            )
        spec = str(latest)
    if Path(spec).suffix == ".pt" and Path(spec).is_file():
        plugin = get_plugin(checkpoint.load(spec)["plugin"])
        if predict_kind(plugin) != "classes":
            raise UsageError(f"--classifier {spec} is a {plugin.name} checkpoint; a classifier (e.g. {DEFAULT_CLASSIFIER}) is needed")
        return open_runner(plugin, plugin.predict_target, checkpoint=spec, weights=None, artifact=None, device=device)
    plugin = get_plugin(DEFAULT_CLASSIFIER)
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


def validation_report(
    plugin: Any, data: str | None, *, checkpoint: str | None, weights: str | None, random_init: bool, device: str
) -> dict[str, Any]:
    """The plugin's own validation metrics (and report) of a model on a dataset's validation split."""
    import torch

    from zoo import datasets, devices, models

    built = models.build_model(plugin, checkpoint=checkpoint, weights=weights, random_init=random_init)
    dev = devices.resolve(device)
    spec = data or plugin.default_dataset
    splits = datasets.load(spec, plugin.data_request(built.config), plugin=plugin.name).to(dev)
    trainer = plugin.trainer_class(built.model.to(dev), built.config, dev)
    trainer.data_info = built.data_info
    with torch.no_grad():
        metrics = trainer.evaluate(splits.val.batches(built.config.batch_size)) or {}
        report = trainer.report(splits.val.batches(built.config.batch_size)) or {}
    return {
        "plugin": plugin.name,
        "source": built.source.describe(),
        "data": spec,
        "samples": len(splits.val),
        "metrics": {k: float(v) for k, v in metrics.items()},
        **report,
    }


def render_report(result: dict[str, Any]) -> str:
    lines = [f"{result['plugin']} ({result['source']}) on the {result['samples']} validation samples of --data {result['data']}:"]
    lines += [f"  {name:22} {value:.4f}" for name, value in result["metrics"].items()]
    if "per_class_accuracy" in result:
        names = result["class_names"]
        lines.append(
            "  per-class accuracy     "
            + "  ".join(f"{n}:{a:.3f}" if a is not None else f"{n}:-" for n, a in zip(names, result["per_class_accuracy"]))
        )
        lines.append("  confusion matrix (rows: true class, columns: predicted)")
        width = max(len(str(v)) for row in result["confusion_matrix"] for v in row + [max(len(n) for n in names)])
        lines.append("    " + " " * (width + 1) + " ".join(n.rjust(width) for n in names))
        for name, row in zip(names, result["confusion_matrix"]):
            lines.append("    " + name.rjust(width) + " " + " ".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


@click.command("evaluate")
@click.argument("plugin_name", metavar="PLUGIN")
@click.option(
    "--classifier",
    default=None,
    help="classifier that judges the samples: a checkpoint, or convnet weights NAME|PATH [default: newest convnet run]",
)
@click.option("-n", "--num", "n", type=click.INT, default=None, help=f"image generators: number of samples [default: {DEFAULT_SAMPLES}]")
@click.option("--data", default=None, help="plugins evaluated on data: the dataset whose validation split to use [default: the plugin's]")
@click.option("--seed", type=click.INT, default=0, show_default=True, help="seed of the noise")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@source_options
def evaluate_command(
    plugin_name: str,
    classifier: str | None,
    n: int | None,
    data: str | None,
    seed: int,
    as_json: bool,
    checkpoint: str | None,
    weights: str | None,
    random_init: bool,
    artifact: str | None,
    device: str,
) -> None:
    """Evaluate PLUGIN: its validation metrics on data, or a generator's samples judged.

    Classifiers, language models and other plugins that do not sample images: the
    plugin's own validation metrics on the validation split of --data (classifiers
    add per-class accuracy and the confusion matrix; --json gives them as data).

    Image generators: prints a trained classifier's mean max-probability over N samples (do they look like
    digits?), the number of distinct classes it predicts (are they varied?), the
    pixel spread among samples of one class (near 0: one image per class), and for
    conditional plugins (cgan) the fraction classified as the class they were
    conditioned on. `--classifier DEFAULT` uses convnet's pretrained weights;
    `--random-init` gives the figures of an untrained generator, for comparison."""
    from zoo.capabilities import sample_kind
    from zoo.commands.sample import samplers

    plugin = get_plugin(plugin_name)
    if sample_kind(plugin) != "images":
        if classifier is not None:
            raise UsageError(f"--classifier judges generated images; {plugin.name} is evaluated on data (--data)")
        if artifact is not None:
            raise UsageError("--artifact: an exported file's validation metrics come with zoo export and zoo verify (task parity)")
        if n is not None:
            raise UsageError(f"-n counts generated images; {plugin.name} is evaluated on the validation split of --data")
        result = validation_report(plugin, data, checkpoint=checkpoint, weights=weights, random_init=random_init, device=device)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            click.echo(render_report(result))
        return
    del samplers
    if data is not None:
        raise UsageError(f"--data: {plugin.name} generates images, judged by --classifier; plugins evaluated on data take --data")
    n = n if n is not None else DEFAULT_SAMPLES
    if n < 1:
        raise UsageError(f"-n must be at least 1, not {n}")
    runner = open_runner(
        plugin, plugin.sample_target, checkpoint=checkpoint, weights=weights, random_init=random_init, artifact=artifact, device=device
    )
    judge = open_classifier(classifier, device)
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
