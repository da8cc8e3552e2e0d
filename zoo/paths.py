"""Where zoo keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """`$ZOO_HOME`, default `~/.cache/zoo`: prepared datasets, downloaded weights, built runners."""
    env = os.environ.get("ZOO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zoo"


def runs_root() -> Path:
    return Path(os.environ.get("ZOO_RUNS", "runs"))


def new_run_dir(plugin: str) -> Path:
    """The next numbered directory `runs/PLUGIN/NNN` (created, so two runs never share one)."""
    root = runs_root() / plugin
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    n = max(numbers, default=0) + 1
    while True:
        path = root / f"{n:03d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def latest_checkpoint(plugin: str) -> Path | None:
    """`last.pt` of the newest run of `plugin` under `runs/`, if any."""
    root = runs_root() / plugin
    if not root.is_dir():
        return None
    candidates = [p / "last.pt" for p in root.iterdir() if (p / "last.pt").is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


ENV_OFFLINE = "ZOO_OFFLINE"


def offline() -> bool:
    """`ZOO_OFFLINE=1`: no network connection at all (downloads are refused before any
    name is looked up)."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")
