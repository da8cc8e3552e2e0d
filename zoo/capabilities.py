"""What a plugin can do, read off what it provides (no closed list of tasks).

- train: every plugin.
- export: it declares export targets.
- sample-images / generate-text: it names a `sample_target`; images when that
  target's first output is a float image (it has a pixel `value_range`), text when
  its first input is integer token ids.
- predict-classes / translate-images: it names a `predict_target` whose first input
  is an image; images out (an output with a pixel range) means translation, class
  scores out means classification.
"""

from __future__ import annotations

from zoo.plugin import ExportTarget, Plugin, TensorSpec


def _is_image(spec: TensorSpec) -> bool:
    return not spec.is_integer and spec.value_range is not None


def sample_kind(plugin: Plugin) -> str | None:
    """ "images", "text" or None: what `zoo sample` makes for this plugin."""
    if plugin.sample_target is None:
        return None
    target = plugin.target(plugin.sample_target)
    if target.inputs and target.inputs[0].is_integer and not _is_image(target.outputs[0]):
        return "text"
    if target.outputs and _is_image(target.outputs[0]) and plugin.sample_inputs is not None:
        return "images"
    return None


def predict_kind(plugin: Plugin) -> str | None:
    """ "classes", "images" or None: what `zoo predict` does with input images."""
    target = predict_target(plugin)
    if target is None or not target.inputs or not _is_image(target.inputs[0]):
        return None
    return "images" if _is_image(target.outputs[0]) else "classes"


def predict_target(plugin: Plugin) -> ExportTarget | None:
    name = getattr(plugin, "predict_target", None)
    return plugin.target(name) if name else None


def capabilities(plugin: Plugin) -> list[str]:
    caps = ["train"]
    if plugin.export_targets:
        caps.append("export")
    sample = sample_kind(plugin)
    if sample == "images":
        caps.append("sample-images")
    elif sample == "text":
        caps.append("generate-text")
    predict = predict_kind(plugin)
    if predict == "classes":
        caps.append("predict-classes")
    elif predict == "images":
        caps.append("translate-images")
    return caps
