"""Shared fixtures: an isolated $ZOO_HOME and runs/ per test, and the CLI run in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache and runs directory, and starts in tmp_path."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo-home"))
    monkeypatch.setenv("ZOO_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory):
    """A cache shared by the whole session for prepared datasets (built once)."""
    return tmp_path_factory.mktemp("shared-zoo-home")


class Result:
    def __init__(self, r):
        self.exit_code = r.exit_code
        self.stdout = r.stdout
        self.stderr = r.stderr
        self.exception = r.exception

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self):
        return f"<exit {self.exit_code}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}>"


@pytest.fixture
def zoo():
    """Run `zoo ARGS...` in-process: `zoo("train", "vae", "--max-steps", "2")`."""
    from zoo.cli import cli

    def run(*args: str | Path) -> Result:
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return Result(r)

    return run


def registry_plugins() -> list[str]:
    from zoo import list_plugins

    return list_plugins()
