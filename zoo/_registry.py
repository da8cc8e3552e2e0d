"""Plugin discovery through the `zoo.plugins` entry-point group.

Built-in plugins are found exactly like third-party ones. A plugin that fails to
import is kept as a `BrokenPlugin` with its error, so one bad package never takes
the others down. Two entry points with the same name are an error, not a warning.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from zoo.errors import UsageError, ZooError

if TYPE_CHECKING:
    from zoo.plugin import Plugin

GROUP = "zoo.plugins"
# Comma-separated plugin names to load (all when unset); "none" loads none.
ENV_ONLY = "ZOO_PLUGINS"


@dataclass
class PluginEntry:
    """One entry point: where it comes from, and the loaded plugin or the load error."""

    name: str
    value: str
    distribution: str
    version: str
    plugin: "Plugin | None" = None
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.error is None else "broken"


_cache: dict[str, PluginEntry] | None = None


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=GROUP))


def _load(ep: EntryPoint) -> PluginEntry:
    dist = ep.dist
    entry = PluginEntry(
        name=ep.name,
        value=ep.value,
        distribution=dist.metadata["Name"] if dist is not None else "?",
        version=dist.version if dist is not None else "?",
    )
    try:
        obj = ep.load()
    except Exception as exc:  # any import-time failure marks only this plugin broken
        entry.error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        return entry
    from zoo.plugin import Plugin

    if not isinstance(obj, Plugin):
        entry.error = f"entry point {ep.value} is a {type(obj).__name__}, not a zoo.Plugin"
    elif obj.name != ep.name:
        entry.error = f"entry point name {ep.name!r} does not match the plugin's name {obj.name!r}"
    else:
        entry.plugin = obj
    return entry


def discover(refresh: bool = False) -> dict[str, PluginEntry]:
    """All plugin entries by name, loaded once and cached."""
    global _cache
    if _cache is not None and not refresh:
        return _cache
    only = os.environ.get(ENV_ONLY)
    wanted = None if not only else {n.strip() for n in only.split(",") if n.strip()} - {"none"}
    found: dict[str, PluginEntry] = {}
    seen: dict[str, str] = {}
    for ep in sorted(_entry_points(), key=lambda e: e.name):
        if wanted is not None and ep.name not in wanted:
            continue
        if ep.name in seen and seen[ep.name] != ep.value:
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "?"
            raise ZooError(
                f"two plugins are named {ep.name!r}: {seen[ep.name]} and {ep.value} (from {dist}); uninstall one"
            )
        if ep.name in seen:  # the same entry point seen twice on sys.path
            continue
        seen[ep.name] = ep.value
        found[ep.name] = _load(ep)
    _cache = found
    return found


def list_plugins() -> list[str]:
    """Names of plugins that loaded."""
    return [name for name, e in discover().items() if e.plugin is not None]


def get_entry(name: str) -> PluginEntry:
    entries = discover()
    if name not in entries:
        available = sorted(entries)
        close = difflib.get_close_matches(name, available, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown plugin {name!r}{hint} (available: {', '.join(available) or 'none'})")
    return entries[name]


def get_plugin(name: str) -> "Plugin":
    entry = get_entry(name)
    if entry.plugin is None:
        raise ZooError(f"plugin {name!r} from {entry.distribution} {entry.version} is broken: {entry.error}")
    return entry.plugin
