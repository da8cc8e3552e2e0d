"""Plugin discovery through entry points, `zoo list` and `zoo info`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import readme_block, registry_plugins


def test_builtins_are_found_through_entry_points(zoo):
    r = zoo("list", "--json")
    assert r.exit_code == 0, r
    rows = {row["name"]: row for row in r.json()}
    for name in ("vae", "convnet"):
        row = rows[name]
        assert row["status"] == "ok"
        assert row["distribution"] == "zoo"
        assert row["entry_point"] == f"zoo.plugins.{name}:plugin"
        for key in ("summary", "task", "version", "default_dataset", "export_targets"):
            assert row[key], (name, key)


def test_list_table_shows_every_plugin(zoo):
    r = zoo("list")
    assert r.exit_code == 0, r
    for name in registry_plugins():
        assert name in r.stdout


@pytest.mark.parametrize("name", registry_plugins())
def test_info_describes_every_plugin(zoo, name):
    r = zoo("info", name, "--json")
    assert r.exit_code == 0, r
    info = r.json()
    assert info["name"] == name and info["hyperparameters"]
    for h in info["hyperparameters"]:
        assert h["help"], f"{name}: hyperparameter {h['name']} has no help"
    assert {"epochs", "batch_size", "lr"} <= {h["name"] for h in info["hyperparameters"]}
    for target in info["export_targets"]:
        for spec in target["inputs"] + target["outputs"]:
            # The batch axis is where the spec declares it (first unless it says otherwise).
            assert spec["shape"][spec.get("batch_axis", 0)] == "batch" and spec["dtype"], spec
    text = zoo("info", name)
    assert text.exit_code == 0 and "export targets" in text.stdout


def test_unknown_plugin_names_the_closest(zoo):
    r = zoo("info", "convent")
    assert r.exit_code == 2
    assert "did you mean 'convnet'" in r.stderr and "vae" in r.stderr
    assert "Traceback" not in r.stderr


BROKEN = "raise ImportError('needs libfoo 3')\n"


def test_broken_plugin_is_listed_and_the_others_still_work(zoo, install_dist):
    install_dist("zoo-broken", "1.2.3", {"zoo_broken": BROKEN}, {"broken": "zoo_broken:plugin"})
    rows = {row["name"]: row for row in zoo("list", "--json").json()}
    assert rows["broken"]["status"] == "broken"
    assert "needs libfoo 3" in rows["broken"]["error"]
    assert rows["broken"]["distribution"] == "zoo-broken" and rows["broken"]["version"] == "1.2.3"
    assert rows["vae"]["status"] == "ok"
    r = zoo("info", "broken")
    assert r.exit_code == 1 and "broken" in r.stderr and "needs libfoo 3" in r.stderr
    assert zoo("info", "vae").exit_code == 0


def test_entry_point_that_is_not_a_plugin_is_broken(zoo, install_dist):
    install_dist("zoo-odd", "0.1", {"zoo_odd": "plugin = 42\n"}, {"odd": "zoo_odd:plugin"})
    rows = {row["name"]: row for row in zoo("list", "--json").json()}
    assert rows["odd"]["status"] == "broken" and "not a zoo.Plugin" in rows["odd"]["error"]


def test_duplicate_plugin_names_fail_loudly(zoo, install_dist):
    install_dist("zoo-dup", "0.1", {"zoo_dup": "from zoo.plugins.vae import plugin\n"}, {"vae": "zoo_dup:plugin"})
    r = zoo("list")
    assert r.exit_code == 1
    assert "two plugins are named 'vae'" in r.stderr


def test_env_var_narrows_loading(zoo, monkeypatch):
    from zoo import _registry

    monkeypatch.setenv("ZOO_PLUGINS", "convnet")
    _registry.discover(refresh=True)
    try:
        assert [row["name"] for row in zoo("list", "--json").json()] == ["convnet"]
    finally:
        monkeypatch.delenv("ZOO_PLUGINS")
        _registry.discover(refresh=True)


def test_readme_third_party_plugin_is_discovered_and_trains(zoo, install_dist, tmp_path):
    """The README's 'Write a plugin' example, installed as its own distribution."""
    source = readme_block("python", 'name="my-mlp"')
    pyproject = readme_block("toml", "zoo.plugins")
    assert 'my-mlp = "zoo_my_mlp:plugin"' in pyproject
    install_dist("zoo-my-mlp", "0.1.0", {"zoo_my_mlp": source}, {"my-mlp": "zoo_my_mlp:plugin"})
    rows = {row["name"]: row for row in zoo("list", "--json").json()}
    assert rows["my-mlp"]["status"] == "ok" and rows["my-mlp"]["distribution"] == "zoo-my-mlp"
    help_text = zoo("train", "my-mlp", "--help").stdout
    assert "--hidden INTEGER" in help_text and "--dropout FLOAT" in help_text
    r = zoo("train", "my-mlp", "--epochs", "2", "--hidden", "32", "--out", tmp_path / "run", "--progress", "none")
    assert r.exit_code == 0, r
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[-1]["val_accuracy"] > 0.5
    # Its cosine schedule, stepped by the engine: at the end of the run the rate is 0.
    assert records[0]["lr"] == pytest.approx(0.5e-3, rel=1e-6) and records[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert zoo("info", "my-mlp").stdout.count("can: train, export, predict-classes") == 1
    r = zoo("export", "my-mlp", "--checkpoint", tmp_path / "run" / "last.pt", "--out", tmp_path / "export", "--no-latency")
    assert r.exit_code == 0, r


def test_help_is_fast_because_torch_is_not_imported():
    code = "import sys, zoo.cli; assert 'torch' not in sys.modules, 'zoo.cli imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout
