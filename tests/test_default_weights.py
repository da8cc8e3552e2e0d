"""Every packaged DEFAULT weights entry still reaches the figures recorded in its meta,
recomputed on the bundled data: a change to a data pipeline, a model or an evaluation
that silently degrades shipped weights fails here.

Whole models are evaluated by their plugin's own `evaluate` on the dataset they were
trained on; generator-only weights (the GANs ship no discriminator, so their
`metrics` cannot be recomputed) are judged the way their meta's `judged` records. The
figures are those of the file as shipped: for weights stored at half precision
(`stored_dtype`), measured on the rounded weights, not on the float32 training run."""

from __future__ import annotations

import pytest
from conftest import registry_plugins

from zoo import get_plugin, models

WITH_DEFAULT = [name for name in registry_plugins() if get_plugin(name).default_weights]
TOLERANCE = 1e-4  # relative: summation order may differ between batch sizes and builds


def recorded(name: str) -> dict:
    return dict(get_plugin(name).get_weights("DEFAULT").meta)


@pytest.mark.parametrize("name", WITH_DEFAULT)
def test_default_weights_reach_their_recorded_figures(name, monkeypatch):
    import torch

    from zoo import datasets

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    plugin = get_plugin(name)
    meta = recorded(name)
    built = models.build_model(plugin, weights="DEFAULT")
    # Files stored at half precision ('stored_dtype') load into the model's float32: its
    # parameters and its floating-point buffers (batch norm's statistics, knn's stored images).
    state = [*built.model.parameters(), *built.model.buffers()]
    assert {t.dtype for t in state if t.is_floating_point()} == {torch.float32}
    if "components" in meta:
        judged = meta["judged"]
        from zoo.commands.evaluate import sample_quality
        from zoo.commands.runner import open_runner

        judge_plugin, judge_weights = judged["by"].split(":")
        runner = open_runner(plugin, plugin.sample_target, checkpoint=None, weights="DEFAULT", artifact=None, device="cpu")
        judge = open_runner(
            get_plugin(judge_plugin),
            get_plugin(judge_plugin).predict_target,
            checkpoint=None,
            weights=judge_weights,
            artifact=None,
            device="cpu",
        )
        now = sample_quality(runner, judge, judged["samples"], judged["seed"])
        want = judged["metrics"]
    else:
        splits = datasets.load(meta["dataset"], plugin.data_request(built.config), plugin=plugin.name)
        trainer = plugin.trainer_class(built.model, built.config, torch.device("cpu"))
        trainer.data_info = built.data_info
        with torch.no_grad():
            now = trainer.evaluate(splits.val.batches(built.config.batch_size))
        want = meta["metrics"]
    for key, value in want.items():
        assert now[key] == pytest.approx(value, rel=TOLERANCE, abs=1e-9), (name, key, now[key], value)


def test_the_figures_cover_every_default():
    """Nothing packaged goes unjudged: whole models have metrics, generators a judge."""
    assert WITH_DEFAULT, "no packaged DEFAULT weights"
    for name in WITH_DEFAULT:
        meta = recorded(name)
        assert meta["metrics"] if "components" not in meta else meta["judged"]["metrics"], name
