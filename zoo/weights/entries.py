"""Which file a weights NAME or PATH means, and getting it onto this machine verified.

Entries come from the plugin's table (`Plugin.weights`) and from `zoo weights import`,
whose records live in the cache's `imported.json`. Sources:

- `package:<file>`: shipped in the `weights/` directory beside the plugin's module
  (`zoo/plugins/weights/` for the built-ins); used in place, hashed before use.
- `https://`, `http://`, `file://` URLs: downloaded once into
  `$ZOO_HOME/weights/<plugin>/` (`zoo.weights.download`), re-verified before every use
  (`zoo.weights.hashing`); a corrupt cached file is downloaded again.
- `imported:<file>`: a file `zoo weights import` wrote into that same cache.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from zoo import paths
from zoo.errors import CheckpointError, UsageError
from zoo.plugin import Plugin, Weights
from zoo.weights._text import one_line
from zoo.weights.download import ENV_OFFLINE, DownloadError, download, offline
from zoo.weights.hashing import file_sha256, remove_verified, verified_sha256

SOURCE_SCHEMES = ("https://", "http://", "file://", "package:")
# Names given to `zoo weights import` only need to be safe in a file name.
IMPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# File suffixes that make a --weights argument a path rather than a name.
SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
IMPORTED_INDEX = "imported.json"


def cache_dir(plugin: Plugin | str) -> Path:
    name = plugin if isinstance(plugin, str) else plugin.name
    return paths.home() / "weights" / name


def package_file(plugin: Plugin, source: str) -> Path:
    """The file a `package:<file>` source names: in the `weights/` directory beside the
    module that defines the plugin (`zoo/plugins/weights/` for zoo's built-ins)."""
    name = source.split(":", 1)[1]
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(f"weights source {source!r}: a packaged file is named by its file name alone")
    module = sys.modules.get(plugin.config_class.__module__)
    if module is None or not getattr(module, "__file__", None):
        raise CheckpointError(f"plugin {plugin.name!r}: cannot tell where its package is, so {source} cannot be found")
    return Path(module.__file__).resolve().parent / "weights" / name


def cache_file_name(entry: Weights) -> str:
    """The cached file's name: the URL's file name, with the sha256's first 8 hex digits
    in front unless the name carries them already (torchvision style)."""
    from urllib.parse import unquote, urlparse

    base = Path(unquote(urlparse(entry.source).path)).name or "weights"
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".") or "weights"
    return base if entry.sha256[:8] in base else f"{entry.sha256[:8]}-{base}"


# --------------------------------------------------------------------------- the entries


def imported_entries(plugin: Plugin | str) -> dict[str, dict[str, Any]]:
    """Entries made by `zoo weights import` for `plugin`: {name: record}."""
    index = cache_dir(plugin) / IMPORTED_INDEX
    if not index.is_file():
        return {}
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{index} is unreadable ({one_line(exc)}); delete it and import again") from None
    return data if isinstance(data, dict) else {}


def _imported_as_weights(name: str, record: dict[str, Any]) -> Weights:
    if not isinstance(record, dict) or Path(str(record.get("file"))).name != record.get("file") or "sha256" not in record:
        raise CheckpointError(f"imported weights {name!r}: their record in {IMPORTED_INDEX} is malformed; import them again with --force")
    return Weights(name=name, source=f"imported:{record['file']}", sha256=record["sha256"], meta=record.get("meta", {}))


def all_entries(plugin: Plugin) -> list[tuple[Weights, str]]:
    """(entry, origin) for the plugin's table ("table") and its imported entries ("imported")."""
    out = [(w, "table") for w in plugin.weights]
    out += [(_imported_as_weights(n, r), "imported") for n, r in sorted(imported_entries(plugin).items())]
    return out


def find_entry(plugin: Plugin, name: str) -> Weights:
    """The table entry (or DEFAULT's) or imported entry called `name`."""
    if name == plugin.DEFAULT:
        if plugin.default_weights is None:
            raise UsageError(f"plugin {plugin.name!r} has no DEFAULT weights; {_available(plugin)}")
        name = plugin.default_weights
    for w in plugin.weights:
        if w.name == name:
            return w
    record = imported_entries(plugin).get(name)
    if record is not None:
        return _imported_as_weights(name, record)
    raise UsageError(f"plugin {plugin.name!r} has no weights {name!r}; {_available(plugin)}")


def _available(plugin: Plugin) -> str:
    names = [w.name for w in plugin.weights] + sorted(imported_entries(plugin))
    if plugin.default_weights:
        names.append(plugin.DEFAULT)
    if names:
        return f"available: {', '.join(names)}"
    return f"none are published or imported (train with `zoo train {plugin.name}`, or `zoo weights import {plugin.name} FILE`)"


# --------------------------------------------------------------------------- the files


def local_path(plugin: Plugin, entry: Weights) -> Path:
    """Where `entry` is (or would be) on this machine."""
    if entry.source.startswith("package:"):
        return package_file(plugin, entry.source)
    if entry.source.startswith("imported:"):
        return cache_dir(plugin) / entry.source.split(":", 1)[1]
    return cache_dir(plugin) / cache_file_name(entry)


def fetch(plugin: Plugin, entry: Weights) -> Path:
    """A verified local file for `entry`, downloading it when needed and allowed."""
    what = f"weights {plugin.name}:{entry.name}"
    source = entry.source
    if source.startswith("package:"):
        path = package_file(plugin, source)
        if not path.is_file():
            raise CheckpointError(f"{what}: packaged file {path} is missing; reinstall the package that provides {plugin.name}")
        actual = file_sha256(path)
        if actual != entry.sha256:
            raise CheckpointError(f"{what}: packaged file {path} has sha256 {actual}, expected {entry.sha256}; reinstall the package")
        return path
    if source.startswith("imported:"):
        path = local_path(plugin, entry)
        if not path.is_file():
            raise CheckpointError(
                f"{what}: imported file {path} is missing; import it again (zoo weights import {plugin.name} FILE --name {entry.name} --force)"
            )
        actual = verified_sha256(path, entry.sha256)
        if actual != entry.sha256:
            raise CheckpointError(
                f"{what}: imported file {path} is corrupt (sha256 {actual}, expected {entry.sha256}); import it again with --force"
            )
        return path
    if not source.startswith(("https://", "http://", "file://")):
        raise CheckpointError(f"{what}: unknown source {source!r} (expected one of {', '.join(SOURCE_SCHEMES)})")
    dest = local_path(plugin, entry)
    network = not source.startswith("file://")
    if dest.is_file():
        actual = verified_sha256(dest, entry.sha256)
        if actual == entry.sha256:
            return dest
        if offline() and network:
            raise DownloadError(
                f"{what}: cached {dest} is corrupt (sha256 {actual}, expected {entry.sha256}) and {ENV_OFFLINE}=1 forbids downloading it again"
            )
        print(f"{what}: cached {dest} is corrupt (sha256 {actual}, expected {entry.sha256}); downloading it again", file=sys.stderr)
        remove_verified(dest)
    if offline() and network:
        raise DownloadError(
            f"{ENV_OFFLINE}=1: {what} are not in the cache ({dest} is missing); "
            f"run `zoo weights download {plugin.name} {entry.name}` with network access, or copy the file from {source} there"
        )
    size = entry.meta.get("bytes")
    download(source, dest, entry.sha256, size=size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None)
    verified_sha256(dest, entry.sha256)  # writes the sidecar: the next use skips hashing
    return dest


def status(plugin: Plugin, entry: Weights) -> str:
    """'packaged', 'cached', 'imported', 'not cached', 'corrupt' or 'missing', without downloading."""
    path = local_path(plugin, entry)
    if entry.source.startswith("package:"):
        if not path.is_file():
            return "missing"
        return "packaged" if file_sha256(path) == entry.sha256 else "corrupt"
    if entry.source.startswith("imported:"):
        if not path.is_file():
            return "missing"
        return "imported" if verified_sha256(path, entry.sha256) == entry.sha256 else "corrupt"
    if not path.is_file():
        return "not cached"
    return "cached" if verified_sha256(path, entry.sha256) == entry.sha256 else "corrupt"


# --------------------------------------------------------------------------- NAME or PATH


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith(("~", ".")) or text.lower().endswith(SUFFIXES)


def resolve_labelled(plugin: Plugin, name_or_path: str) -> tuple[Path, str]:
    """`resolve`, with what to call the weights in messages: "vae:DIGITS_V1" or the path."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p, str(p)
    if p.is_dir():
        if (p / "last.pt").is_file():
            return p / "last.pt", str(p / "last.pt")
        raise UsageError(f"--weights {name_or_path}: is a directory without a last.pt")
    if _looks_like_path(name_or_path):
        raise UsageError(f"--weights {name_or_path}: no such file")
    entry = find_entry(plugin, name_or_path)
    return fetch(plugin, entry), f"{plugin.name}:{entry.name}"


def resolve(plugin: Plugin, name_or_path: str) -> Path:
    """A local, verified file for `name_or_path`: an existing path (a run directory means
    its last.pt), or an entry of the plugin's table or of its imported weights."""
    return resolve_labelled(plugin, name_or_path)[0]
