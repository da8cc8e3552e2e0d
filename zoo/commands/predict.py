"""`zoo predict`: run a plugin's predict target on image files.

What it does follows from the target (`zoo.capabilities.predict_kind`): class scores
out make it a classifier (class and probability per image), images out an image
translator (one PNG per input). Images are resized and scaled the way the plugin
trained (`Runner.input_request`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from zoo.commands.images import check_output, expand_inputs, load_batch, read_image, to_unit_range, write_png, write_text
from zoo.commands.runner import CHUNK, Runner, get_plugin, open_runner, source_options
from zoo.errors import UsageError


def classify(runner: Runner, paths: list[Path]) -> list[dict[str, Any]]:
    """{input, class, name, probability, probabilities} per image: the softmax of the
    class scores, and the class's name where the data the model learnt from had names
    (its data_info, e.g. CIFAR-10's "cat"; the digits are named "0".."9")."""
    import torch

    probabilities = torch.softmax(runner([load_batch(paths, runner.input_request())])[0].float(), dim=1)
    best, classes = probabilities.max(dim=1)
    names = runner.data_info.class_names if runner.data_info is not None else None
    return [
        {
            "input": str(p),
            "class": int(c),
            **({"name": names[int(c)]} if names and int(c) < len(names) else {}),
            "probability": float(b),
            "probabilities": [round(float(v), 6) for v in row],
        }
        for p, c, b, row in zip(paths, classes, best, probabilities)
    ]


def translation_targets(plugin_name: str, paths: list[Path], out: str | None) -> list[Path]:
    """Where the translations of `paths` go: -o FILE.png for one input, else -o DIR with
    one FILE.png per input stem; refused before any model is built."""
    if out is None:
        raise UsageError(f"{plugin_name} writes images: pass -o FILE.png (one input) or -o DIR")
    out_path = Path(out)
    if len(paths) == 1 and out_path.suffix.lower() == ".png":
        return [check_output(out_path)]
    if out_path.suffix.lower() == ".png":
        raise UsageError(f"-o {out}: {len(paths)} inputs need a directory, not one .png file")
    if out_path.exists() and not out_path.is_dir():
        raise UsageError(f"-o {out} is a file; {len(paths)} translated images need a directory")
    stems = [p.stem for p in paths]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise UsageError(f"inputs share the name {clash[0]!r}; their outputs would overwrite each other in {out}")
    return [check_output(out_path / f"{p.stem}.png") for p in paths]


def translate(runner: Runner, paths: list[Path], out: str | None) -> list[dict[str, Any]]:
    """{input, output} per image, each output written as a PNG (see `translation_targets`)."""
    targets = translation_targets(runner.plugin.name, paths, out)
    request, value_range = runner.input_request(), runner.output_range()
    for path in paths:  # every input readable before the first output is written: all or nothing
        read_image(path, request.channels)
    results = []
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        outputs = to_unit_range(runner([load_batch(chunk, request)])[0], value_range)
        for src, image, dst in zip(chunk, outputs, targets[start:]):
            write_png(image, dst)
            results.append({"input": str(src), "output": str(dst)})
    return results


def _print_classes(runner: Runner, paths: list[Path], out: str | None, as_json: bool) -> None:
    results = classify(runner, paths)
    if as_json:
        text = json.dumps(results, indent=2)
    else:
        text = "\n".join(
            f"{r['input']}\tclass {r['class']}"
            + (f" ({r['name']})" if "name" in r and r["name"] != str(r["class"]) else "")
            + f"\tprobability {r['probability']:.4f}"
            for r in results
        )
    if out is not None:
        write_text(text + "\n", out)
    click.echo(text)


def _print_images(runner: Runner, paths: list[Path], out: str | None, as_json: bool) -> None:
    results = translate(runner, paths, out)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            click.echo(f"{r['input']} -> {r['output']}")


# predict_kind(plugin) -> what to do with the inputs and how to report it.
PREDICTORS = {"classes": _print_classes, "images": _print_images}


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
    random_init: bool,
    artifact: str | None,
    device: str,
) -> None:
    """Run PLUGIN on image files (or directories of them).

    Classifiers print the class and its probability per image; image-to-image plugins
    write the translated images to -o. Images are resized and scaled the way the
    plugin was trained (see `zoo info PLUGIN`)."""
    from zoo.capabilities import predict_kind

    plugin = get_plugin(plugin_name)
    kind = predict_kind(plugin)
    if kind is None or plugin.predict_target is None:
        raise UsageError(
            f"{plugin.name} has no predict target: zoo predict runs classifiers and image-to-image plugins"
            + (" (use zoo sample)" if plugin.sample_target else "")
        )
    paths = expand_inputs(inputs)
    outputs = translation_targets(plugin.name, paths, out) if kind == "images" else [check_output(out)] if out is not None else []
    given = {p.resolve() for p in paths}
    clobbered = next((o for o in outputs if o.resolve() in given), None)
    if clobbered is not None:
        raise UsageError(f"-o {out} would write over the input {clobbered}; name another file or directory")
    runner = open_runner(
        plugin, plugin.predict_target, checkpoint=checkpoint, weights=weights, random_init=random_init, artifact=artifact, device=device
    )
    PREDICTORS[kind](runner, paths, out, as_json)
