"""Shared fixtures: an isolated $ZOO_HOME and runs/ per test, and the CLI run in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("OMP_NUM_THREADS", "2")

# Read before the per-test isolation below replaces ZOO_HOME: the user's own build cache.
_USER_BUILD_CACHE = Path(
    os.environ.get("ZOO_BUILD_CACHE") or Path(os.environ.get("ZOO_HOME") or Path.home() / ".cache" / "zoo") / "build"
).expanduser()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache and runs directory, and starts in tmp_path."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo-home"))
    monkeypatch.setenv("ZOO_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="session")
def build_cache() -> Path:
    """Where the C++ runner is built and the Node runner installed: the same cache
    `zoo verify` uses (`$ZOO_BUILD_CACHE`, else `$ZOO_HOME/build`, else
    ~/.cache/zoo/build). Builds are keyed by a hash of their sources and toolchain, so
    sharing it across test sessions is safe and spares a minute-long build each run."""
    _USER_BUILD_CACHE.mkdir(parents=True, exist_ok=True)
    return _USER_BUILD_CACHE


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


@pytest.fixture
def install_dist(tmp_path, monkeypatch):
    """Install a third-party distribution the way pip would leave it: a module and a
    `*.dist-info` with `entry_points.txt`, on a temporary sys.path entry."""
    import sys

    from zoo import _registry

    site = tmp_path / "site-packages"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    added: list[str] = []

    def install(
        dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str], groups: dict[str, dict[str, str]] | None = None
    ) -> Path:
        """`entry_points` go in the `zoo.plugins` group; `groups` adds others, e.g.
        {"zoo.datasets": {"iris": "zoo_iris:dataset"}}."""
        for name, source in modules.items():
            (site / f"{name}.py").write_text(source)
            added.append(name)
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        all_groups = {"zoo.plugins": entry_points, **(groups or {})}
        text = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in all_groups.items() if eps)
        (info / "entry_points.txt").write_text(text)
        _registry.clear()  # the next lookup scans sys.path again
        return site

    yield install
    for name in added:
        sys.modules.pop(name, None)
    monkeypatch.undo()
    _registry.clear()


def readme_block(language: str, marker: str) -> str:
    """The first ```language block of README.md whose text contains `marker`."""
    import re

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for block in re.findall(rf"```{language}\n(.*?)```", text, flags=re.S):
        if marker in block:
            return block
    raise AssertionError(f"README.md has no {language} block containing {marker!r}")


def one_line_error(r, code: int, *needles: str) -> str:
    """Assert a CLI result failed the way zoo promises: exit `code`, exactly one line on
    stderr starting with "error: ", no traceback, and every needle in that line."""
    assert r.exit_code == code, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _native_runner(runtime: str, build_cache: Path) -> Path:
    """The runner of a native runtime, built or installed once into the shared build cache; a
    runtime that cannot work here fails the test: the runners are part of zoo."""
    from zoo.export import runtimes

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_BUILD_CACHE", str(build_cache))
        ok, reason = runtimes.available(runtime)
        if not ok:
            pytest.fail(f"the {runtime} runtime is part of zoo and must work on this machine: {reason}")
        return runtimes.cpp_runner() if runtime == "cpp" else runtimes.node_runner()


@pytest.fixture(scope="session")
def zoo_run(build_cache) -> Path:
    """The `zoo-run` executable (C++: TorchScript and .pt2)."""
    return _native_runner("cpp", build_cache)


@pytest.fixture(scope="session")
def node_script(build_cache) -> Path:
    """The Node runner's `zoo-run.js` (ONNX), with onnxruntime-node installed beside it."""
    return _native_runner("node", build_cache)
