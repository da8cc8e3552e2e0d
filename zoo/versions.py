"""Versions recorded in runs, checkpoints, weights and artifacts."""

from __future__ import annotations

from typing import Any


def zoo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zoo")
    except PackageNotFoundError:
        return "0+unknown"


def plugin_version(plugin: Any) -> str:
    """The version of the distribution that registered `plugin` ("0+unregistered" for a
    plugin object that did not come from the registry, e.g. in a test)."""
    from zoo import _registry

    entry = _registry.plugins.entries().get(plugin.name)
    return entry.version if entry is not None and entry.obj is plugin else "0+unregistered"
