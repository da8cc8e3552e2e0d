"""`zoo sample`, `zoo predict` and `zoo evaluate`: use a trained model, or a file
exported from one, on new inputs.

Every command takes the model from one source: `--checkpoint` (a `zoo train`
checkpoint), `--weights` (a NAME of the plugin's weights table or a file),
`--random-init` (an untrained model, a baseline), or `--artifact` (an exported
TorchScript/ONNX/.pt2 file, run by its own runtime); with none, the newest run of the
plugin under `runs/`. Inputs are made on the CPU from a seeded generator before they
reach either runtime, so eager PyTorch and an exported file see identical noise and
can be compared image for image.

The commands live one a module: `zoo.commands.sample`, `.predict` and `.evaluate`,
over `zoo.commands.runner` (the model behind a command) and `zoo.commands.images`
(image files in and out). This module is the name `cli.py` loads them by. torch is
imported inside the commands only (`zoo --help` stays fast).
"""

from __future__ import annotations

from zoo.commands.evaluate import evaluate_command
from zoo.commands.predict import predict_command
from zoo.commands.sample import sample_command

__all__ = ["evaluate_command", "predict_command", "sample_command"]
