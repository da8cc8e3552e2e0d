"""Entry-point registries: plugins, datasets, export formats and runtimes.

Every extension point is an entry-point group whose entries resolve to one typed
object (`zoo.Plugin`, `zoo.data.Dataset`, an export format, a runtime). zoo's
built-ins are registered in its own `pyproject.toml` exactly like a third party's.
An entry that fails to import or to validate is kept as broken with its error, so
one bad package never takes the others down; two entries with the same name are an
error, not a warning. `ZOO_PLUGINS`, `ZOO_DATASETS`, ... narrow what loads
(comma-separated names; "none" loads none).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from zoo.errors import UsageError, ZooError


@dataclass
class Entry:
    """One entry point: where it comes from, and the loaded object or the load error."""

    name: str
    value: str
    distribution: str
    version: str
    obj: Any = None
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.error is None else "broken"

    # Older name, kept for callers written against the plugin registry.
    @property
    def plugin(self) -> Any:
        return self.obj


class Registry:
    """The entries of one entry-point group, loaded once and cached."""

    def __init__(self, group: str, kind: str, expected: Callable[[], type], env: str, validate: Callable[[Any], str | None] | None = None):
        self.group = group
        self.kind = kind  # "plugin", "dataset", ...: for messages
        self._expected = expected  # the class entries must resolve to (imported lazily)
        self.env = env
        self._validate = validate
        self._cache: dict[str, Entry] | None = None

    def clear(self) -> None:
        """Forget what was loaded; the next lookup scans the environment again."""
        self._cache = None

    def _entry_points(self) -> list[EntryPoint]:
        return list(entry_points(group=self.group))

    def _load(self, ep: EntryPoint) -> Entry:
        dist = ep.dist
        entry = Entry(ep.name, ep.value, dist.metadata["Name"] if dist is not None else "?", dist.version if dist is not None else "?")
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure marks only this entry broken
            entry.error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
            return entry
        expected = self._expected()
        if not isinstance(obj, expected):
            entry.error = f"entry point {ep.value} is a {type(obj).__name__}, not a zoo.{expected.__name__}"
        elif getattr(obj, "name", ep.name) != ep.name:
            entry.error = f"entry point name {ep.name!r} does not match the {self.kind}'s name {obj.name!r}"
        else:
            entry.obj = obj
        return entry

    def entries(self, refresh: bool = False) -> dict[str, Entry]:
        """Every entry by name (ok or broken)."""
        if self._cache is not None and not refresh:
            return self._cache
        only = os.environ.get(self.env)
        wanted = None if not only else {n.strip() for n in only.split(",") if n.strip()} - {"none"}
        found: dict[str, Entry] = {}
        seen: dict[str, str] = {}
        for ep in sorted(self._entry_points(), key=lambda e: e.name):
            if wanted is not None and ep.name not in wanted:
                continue
            if ep.name in seen and seen[ep.name] != ep.value:
                dist = ep.dist.metadata["Name"] if ep.dist is not None else "?"
                raise ZooError(f"two {self.kind}s are named {ep.name!r}: {seen[ep.name]} and {ep.value} (from {dist}); uninstall one")
            if ep.name in seen:  # the same entry point seen twice on sys.path
                continue
            seen[ep.name] = ep.value
            found[ep.name] = self._load(ep)
        self._cache = found
        # Validation may consult other registries (a plugin names its datasets), so it
        # runs once this registry's cache is in place.
        if self._validate is not None:
            for entry in found.values():
                if entry.obj is not None:
                    problem = self._validate(entry.obj)
                    if problem:
                        entry.obj, entry.error = None, problem
        return found

    def names(self) -> list[str]:
        """Names of the entries that loaded."""
        return [name for name, e in self.entries().items() if e.obj is not None]

    def entry(self, name: str, what: str | None = None, example: str = "") -> Entry:
        entries = self.entries()
        if name not in entries:
            available = sorted(entries)
            close = difflib.get_close_matches(name, available, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            extra = f"; {example}" if example else ""
            what = what or f"unknown {self.kind}"
            raise UsageError(f"{what} {name!r}{hint} (available: {', '.join(available) or 'none'}{extra})")
        return entries[name]

    def get(self, name: str, what: str | None = None, example: str = "") -> Any:
        entry = self.entry(name, what, example)
        if entry.obj is None:
            raise ZooError(f"{self.kind} {name!r} from {entry.distribution} {entry.version} is broken: {entry.error}")
        return entry.obj


def _plugin_class() -> type:
    from zoo.plugin import Plugin

    return Plugin


def _dataset_class() -> type:
    from zoo.data import Dataset

    return Dataset


def _check_plugin(plugin: Any) -> str | None:
    """A plugin's datasets must exist, and each must yield what the plugin's default
    config asks for: checked when the plugin loads, not when a run starts."""
    known = datasets.entries()
    unknown = [d for d in plugin.datasets if d not in known]
    if unknown:
        return f"plugin {plugin.name!r} names datasets that are not installed: {', '.join(unknown)} (installed: {', '.join(sorted(known)) or 'none'})"
    try:
        request = plugin.data_request(plugin.config())
    except Exception as exc:
        return f"plugin {plugin.name!r}: data_request(default config) failed: {type(exc).__name__}: {exc}"
    from zoo.data import DataRequest

    if not isinstance(request, DataRequest):
        return f"plugin {plugin.name!r}: data_request must return a zoo.DataRequest, not {type(request).__name__}"
    for name in plugin.datasets:
        dataset = known[name].obj
        if dataset is None:
            continue  # a broken dataset is reported on its own; the plugin still loads
        problems = dataset.problems_with(request, shapes=False)  # sizes and channels follow the config
        if problems:
            return (
                f"plugin {plugin.name!r} lists dataset {name!r}, which yields {dataset.describe_yields()} "
                f"({'; '.join(problems)}); the plugin needs {request.describe()}"
            )
    return None


plugins = Registry("zoo.plugins", "plugin", _plugin_class, "ZOO_PLUGINS", validate=_check_plugin)
datasets = Registry("zoo.datasets", "dataset", _dataset_class, "ZOO_DATASETS")


def clear() -> None:
    """Forget every registry's cache (tests that install distributions call it)."""
    for registry in (plugins, datasets, *_extra):
        registry.clear()


# Registries defined elsewhere (zoo.export's formats and runtimes) add themselves here
# so `clear()` reaches them; the core never imports them.
_extra: list[Registry] = []


# --------------------------------------------------------------------------- plugin shortcuts


def discover(refresh: bool = False) -> dict[str, Entry]:
    """All plugin entries by name."""
    return plugins.entries(refresh)


def list_plugins() -> list[str]:
    """Names of plugins that loaded."""
    return plugins.names()


def get_entry(name: str) -> Entry:
    return plugins.entry(name)


def get_plugin(name: str) -> Any:
    return plugins.get(name)


def list_datasets() -> list[str]:
    return datasets.names()


def get_dataset(name: str) -> Any:
    return datasets.get(name)
