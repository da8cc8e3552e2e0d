"""Pretrained weights: resolve a NAME or PATH to a verified local file and load it.

A plugin's weights table (`Plugin.weights`, `zoo.plugin.Weights`) is data: a name such
as `DIGITS_V1`, a source, the file's sha256 and a meta dict whose schema is `META_FIELDS`
(checked by `validate_entry`). Sources:

- `package:<file>`: shipped beside the plugin's module, in its `weights/` directory
  (`zoo/plugins/weights/` for the built-ins); used in place, hashed before use.
- `https://`, `http://`, `file://` URLs: downloaded once into
  `$ZOO_HOME/weights/<plugin>/`, streamed into a temp file there, checked against the
  sha256 and only then renamed into place. A cached file is re-verified before every
  use (a sidecar records size, mtime, ctime and inode, so an unchanged file is not
  hashed twice); a corrupt one is downloaded again. `ZOO_OFFLINE=1` never touches the
  network; `ZOO_DOWNLOAD_TIMEOUT` (seconds, default 30) bounds every network wait.
- entries made by `zoo weights import` live in the same cache, listed in its
  `imported.json` with their sha256, and resolve by name like table entries.

Publishing weights (a team's own, or entries too large to ship, such as pix2pix's):
`zoo weights export PLUGIN --checkpoint RUN -o DIR [--components generator]
[--base-url https://host/path]` writes `PLUGIN-NAME-<sha256[:8]>.safetensors` and prints
the `Weights(...)` entry; upload the file to the URL, paste the entry into the plugin's
`weights=(...)` (and `default_weights=`), and `zoo weights download PLUGIN NAME` fetches
and verifies it from then on. Without `--base-url` the source is `package:<file>`: put
the file in the plugin's `weights/` directory and its package data.

Files are safetensors whose metadata holds the zoo meta as JSON under "zoo" (plugin,
config, components, ...). zoo training checkpoints (`last.pt`) and foreign state dicts
(`.pth`, a plain dict of tensors) are read with `torch.load(weights_only=True)`, so a
pickle that would run code is refused. Foreign layouts go through the plugin's
`checkpoint_filter`. Loading is strict per component: weights may hold only some
top-level children of the model (a GAN's generator), declared in the meta as
`components`; every key of those must be present and match, the rest stay as built.
torch is imported inside functions only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import checkpoint, paths
from zoo import config as zconfig
from zoo.errors import CheckpointError, UsageError, ZooError
from zoo.plugin import Plugin, Weights

ENV_OFFLINE = "ZOO_OFFLINE"
ENV_TIMEOUT = "ZOO_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
SOURCE_SCHEMES = ("https://", "http://", "file://", "package:")
# Table names follow torchvision's convention (IMAGENET1K_V1): upper case, data then version.
TABLE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Names given to `zoo weights import` only need to be safe in a file name.
IMPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
IMPORTED_INDEX = "imported.json"

# The meta of a table entry: what every key means. `validate_entry` enforces it.
META_FIELDS: dict[str, str] = {
    "dataset": "the --data spec the weights were trained on, e.g. 'digits'",
    "metrics": "validation metrics of the final epoch, {name: number}",
    "input": "the images trained on (the plugin's DataRequest): {'shape': [C, H, W], 'value_range': [lo, hi], 'normalization': text}",
    "num_params": "number of parameters the file holds (of the listed components; buffers excluded)",
    "license": "license of the weights",
    "command": "the exact `zoo train PLUGIN ...` command that produced them",
    "config": "every hyperparameter, as dataclasses.asdict(config); equal to what `command` gives",
}
OPTIONAL_META_FIELDS: dict[str, str] = {
    "components": "top-level child modules the file holds (default: the whole model), e.g. ['generator']",
    "description": "one line on what they are good for",
    "data_info": "what the training data knew that the model needs: {'num_classes', 'class_names', 'vocabulary'}",
}


class DownloadError(ZooError):
    """A download that failed, timed out, was cut short or did not match its sha256."""


@dataclass
class LoadedWeights:
    state_dict: dict[str, Any]
    # The hyperparameters the weights were trained with (None when the file has none).
    config: dict[str, Any] | None
    sha256: str
    path: Path
    meta: dict[str, Any]
    # "zoo" (safetensors with zoo meta), "checkpoint" (a zoo last.pt) or "foreign"
    # (a plain state dict, or safetensors without zoo meta).
    kind: str = "zoo"
    # Top-level children the file declares it holds (None: not declared, i.e. the whole
    # model for zoo's files; whatever the plugin's filter yields for foreign ones).
    declared: list[str] | None = None
    # After `load_into`: the top-level children loaded from the file.
    components: list[str] | None = None
    # After `load_into`: top-level children that kept the model's own values.
    left_as_built: list[str] = field(default_factory=list)
    # What to call the weights in messages: "vae:DIGITS_V1" or the path.
    label: str = ""


# --------------------------------------------------------------------------- settings


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def download_timeout() -> float:
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{ENV_TIMEOUT}={raw!r} must be a positive number of seconds")
    return value


def cache_dir(plugin: Plugin | str) -> Path:
    name = plugin if isinstance(plugin, str) else plugin.name
    return paths.home() / "weights" / name


# --------------------------------------------------------------------------- hashing


# sha256 of files already hashed in this process, keyed by path and stat fingerprint.
_hash_memo: dict[tuple[str, tuple[int, ...]], str] = {}


def _fingerprint(path: Path) -> tuple[int, ...]:
    # ctime changes on every write and on utime, so a rewrite that restores the
    # mtime still shows; the inode changes when a file is replaced.
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_sha256(path: Path) -> str:
    """sha256 of `path`, hashed once per process while the file is unchanged."""
    key = (str(path.resolve()), _fingerprint(path))
    if key not in _hash_memo:
        _hash_memo[key] = checkpoint.sha256_file(path)
    return _hash_memo[key]


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified.json")


def verified_sha256(path: Path, expected: str) -> str:
    """The sha256 of a cached file, read from its sidecar when the file has not changed
    since it was last verified to be `expected`, hashed (and the sidecar renewed) otherwise."""
    fingerprint = list(_fingerprint(path))
    side = _sidecar(path)
    try:
        record = json.loads(side.read_text())
        if record.get("fingerprint") == fingerprint and record.get("sha256") == expected:
            return expected
    except (OSError, ValueError, AttributeError):
        pass
    actual = checkpoint.sha256_file(path)
    if actual == expected:
        try:
            checkpoint.write_json({"file": path.name, "fingerprint": fingerprint, "sha256": actual}, side)
        except OSError:
            pass  # a read-only cache only costs a re-hash next time
        _hash_memo[(str(path.resolve()), tuple(fingerprint))] = actual
    return actual


def _remove(path: Path) -> None:
    for p in (path, _sidecar(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- download


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def download(url: str, dest: Path, sha256: str, *, timeout: float | None = None) -> Path:
    """Stream `url` into a temp file beside `dest`, check its sha256, then rename it into
    place. On any failure the temp file is deleted and nothing is left at `dest`."""
    import http.client
    import socket
    import urllib.error
    import urllib.request

    from zoo.versions import zoo_version

    timeout = download_timeout() if timeout is None else timeout
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DownloadError(f"cannot download {url}: the cache {dest.parent} is not writable ({exc.strerror or _one_line(exc)})") from None
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    received, total = 0, None
    try:
        with os.fdopen(fd, "wb") as fh:
            request = urllib.request.Request(url, headers={"User-Agent": f"zoo/{zoo_version()}"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                bar = None
                if sys.stderr.isatty():  # a bar on a terminal; logs and pipes stay one line per failure
                    from tqdm import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr, leave=False)
                try:
                    while True:
                        block = response.read(1 << 16)
                        if not block:
                            break
                        fh.write(block)
                        digest.update(block)
                        received += len(block)
                        if bar is not None:
                            bar.update(len(block))
                finally:
                    if bar is not None:
                        bar.close()
            if total is not None and received != total:
                raise DownloadError(f"download of {url} was cut short: {received} of {total} bytes arrived")
            fh.flush()
            os.fsync(fh.fileno())
        actual = digest.hexdigest()
        if actual != sha256:
            raise DownloadError(f"download of {url} has sha256 {actual}, expected {sha256}; the file was deleted")
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise DownloadError(f"download of {url} timed out after {timeout:g} s (set {ENV_TIMEOUT} to wait longer)") from None
        raise DownloadError(f"cannot download {url}: {_one_line(exc.reason) if exc.reason else _one_line(exc)}") from None
    except TimeoutError:
        raise DownloadError(f"download of {url} timed out after {timeout:g} s (set {ENV_TIMEOUT} to wait longer)") from None
    except http.client.IncompleteRead:
        announced = f" of {total}" if total is not None else ""
        raise DownloadError(f"download of {url} was cut short: {received}{announced} bytes arrived") from None
    except http.client.HTTPException as exc:
        raise DownloadError(f"cannot download {url}: {type(exc).__name__} {_one_line(exc)}") from None
    except ConnectionError as exc:
        raise DownloadError(f"cannot download {url}: {_one_line(exc)}") from None
    except OSError as exc:
        raise DownloadError(f"cannot download {url} into {dest.parent}: {exc.strerror or _one_line(exc)}") from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return dest


# --------------------------------------------------------------------------- entries


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


def imported_entries(plugin: Plugin | str) -> dict[str, dict[str, Any]]:
    """Entries made by `zoo weights import` for `plugin`: {name: record}."""
    index = cache_dir(plugin) / IMPORTED_INDEX
    if not index.is_file():
        return {}
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{index} is unreadable ({_one_line(exc)}); delete it and import again") from None
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
        path = cache_dir(plugin) / source.split(":", 1)[1]
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
    dest = cache_dir(plugin) / cache_file_name(entry)
    if dest.is_file():
        actual = verified_sha256(dest, entry.sha256)
        if actual == entry.sha256:
            return dest
        if offline() and not source.startswith("file://"):
            raise DownloadError(
                f"{what}: cached {dest} is corrupt (sha256 {actual}, expected {entry.sha256}) and {ENV_OFFLINE}=1 forbids downloading it again"
            )
        print(f"{what}: cached {dest} is corrupt (sha256 {actual}, expected {entry.sha256}); downloading it again", file=sys.stderr)
        _remove(dest)
    if offline() and not source.startswith("file://"):
        raise DownloadError(
            f"{ENV_OFFLINE}=1: {what} are not in the cache ({dest} is missing); "
            f"run `zoo weights download {plugin.name} {entry.name}` with network access, or copy the file from {source} there"
        )
    download(source, dest, entry.sha256)
    verified_sha256(dest, entry.sha256)  # writes the sidecar: the next use skips hashing
    return dest


def status(plugin: Plugin, entry: Weights) -> str:
    """'packaged', 'cached', 'imported', 'not cached', 'corrupt' or 'missing', without downloading."""
    if entry.source.startswith("package:"):
        path = package_file(plugin, entry.source)
        if not path.is_file():
            return "missing"
        return "packaged" if file_sha256(path) == entry.sha256 else "corrupt"
    if entry.source.startswith("imported:"):
        path = cache_dir(plugin) / entry.source.split(":", 1)[1]
        if not path.is_file():
            return "missing"
        return "imported" if verified_sha256(path, entry.sha256) == entry.sha256 else "corrupt"
    dest = cache_dir(plugin) / cache_file_name(entry)
    if not dest.is_file():
        return "not cached"
    return "cached" if verified_sha256(dest, entry.sha256) == entry.sha256 else "corrupt"


def local_path(plugin: Plugin, entry: Weights) -> Path:
    """Where `entry` is (or would be) on this machine."""
    if entry.source.startswith("package:"):
        return package_file(plugin, entry.source)
    if entry.source.startswith("imported:"):
        return cache_dir(plugin) / entry.source.split(":", 1)[1]
    return cache_dir(plugin) / cache_file_name(entry)


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith(("~", ".")) or text.lower().endswith(SUFFIXES)


def _resolve(plugin: Plugin, name_or_path: str) -> tuple[Path, str]:
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
    return _resolve(plugin, name_or_path)[0]


# --------------------------------------------------------------------------- reading


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    if path.suffix in SUFFIXES:
        return False
    # No telling suffix: safetensors starts with an 8-byte header length and then '{'.
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def torch_load_safely(path: Path) -> Any:
    """`torch.load(weights_only=True)` with one-line errors (see `zoo.checkpoint.torch_load`)."""
    return checkpoint.torch_load(path, what="weights")


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _components_of(meta: Mapping[str, Any], path: Path) -> list[str] | None:
    value = meta.get("components")
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value) or len(set(value)) != len(value):
        raise CheckpointError(f"weights {path}: meta 'components' must be a non-empty list of distinct module names, not {value!r}")
    return list(value)


def read(plugin: Plugin, name_or_path: str | LoadedWeights) -> LoadedWeights:
    """Read weights (safetensors, a zoo checkpoint or a foreign state dict) without running
    any pickled code. Names resolve through the table, downloading when needed."""
    if isinstance(name_or_path, LoadedWeights):
        return name_or_path
    path, label = _resolve(plugin, name_or_path)
    sha = file_sha256(path)
    if _is_safetensors(path):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                header = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"weights {path} are truncated or corrupt ({_one_line(exc)[:160]})") from None
        raw = header.get("zoo")
        if raw is None:
            return LoadedWeights(state, None, sha, path, {}, kind="foreign", label=label)
        try:
            meta = json.loads(raw)
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise CheckpointError(f"weights {path}: the 'zoo' metadata is not a JSON object")
        if meta.get("plugin") not in (None, plugin.name):
            raise CheckpointError(f"weights {path} are for plugin {meta.get('plugin')!r}, not {plugin.name!r}")
        config = meta.get("config")
        if config is not None and not isinstance(config, dict):
            raise CheckpointError(f"weights {path}: meta 'config' is not a dict")
        declared = _components_of(meta, path)
        return LoadedWeights(state, config, sha, path, meta, kind="zoo", declared=declared, components=declared, label=label)
    obj = torch_load_safely(path)
    if isinstance(obj, dict) and "model" in obj and "plugin" in obj:
        if obj["plugin"] != plugin.name:
            raise CheckpointError(f"checkpoint {path} was written by plugin {obj['plugin']!r}, not {plugin.name!r}")
        if not _is_state_dict(obj["model"]):
            raise CheckpointError(f"checkpoint {path}: its 'model' entry is not a state dict of tensors")
        meta = {k: obj.get(k) for k in ("plugin", "config", "data", "seed", "epoch", "step", "metrics") if k in obj}
        return LoadedWeights(dict(obj["model"]), obj.get("config"), sha, path, meta, kind="checkpoint", label=label)
    if _is_state_dict(obj):
        return LoadedWeights(dict(obj), None, sha, path, {}, kind="foreign", label=label)
    held = f"a dict with keys {', '.join(map(repr, list(obj)[:6]))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise CheckpointError(f"{path} is neither a zoo checkpoint nor a state dict of tensors (it holds {held})")


# --------------------------------------------------------------------------- loading


def _top(key: str) -> str:
    return key.split(".", 1)[0]


def top_level_children(model: Any) -> list[str]:
    """Names of the model's top-level children that hold parameters or buffers, in order."""
    out: list[str] = []
    for key in model.state_dict():
        top = _top(key)
        if top not in out:
            out.append(top)
    return out


class _Components:
    """The slice of a model made of some top-level children, shaped like a module for
    `checkpoint.load_state_dict_strict`, so its message names full keys."""

    def __init__(self, model: Any, names: Iterable[str]):
        self.model = model
        self.names = set(names)

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.state_dict().items() if _top(k) in self.names}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        result = self.model.load_state_dict(state, strict=False)
        stray = [k for k in result.missing_keys if _top(k) in self.names] + list(result.unexpected_keys)
        if strict and stray:  # load_state_dict_strict has checked already; this is a backstop
            raise CheckpointError(f"keys did not load: {', '.join(stray[:6])}")


def _same_storage(value: Any, own: Any) -> bool:
    """True when a filter handed back the model's own tensor (e.g. a GAN filter keeping
    the discriminator as built), so that component did not come from the file."""
    return (
        hasattr(value, "data_ptr")
        and hasattr(own, "data_ptr")
        and value.numel() > 0
        and value.device == own.device
        and value.data_ptr() == own.data_ptr()
    )


def _meta_model(plugin: Plugin, config: Any, data_info: Any = None) -> Any:
    """The model `config` builds, on the meta device where the plugin allows (no memory,
    no random numbers drawn); on the CPU under a forked generator otherwise."""
    import torch

    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                return plugin.instantiate(config, data_info)
        except Exception:
            return plugin.instantiate(config, data_info)


def _shapes(model: Any, scope: Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    keep = None if scope is None else set(scope)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if keep is None or _top(k) in keep}


def check_architecture(
    plugin: Plugin, model: Any, weights_config: Mapping[str, Any], config: Any, what: str, scope: Iterable[str] | None = None
) -> None:
    """Refuse weights trained with other architecture hyperparameters than `config`,
    naming them, instead of leaving it to a wall of shape mismatches. Hyperparameters
    that do not change any tensor shape (lr, epochs, dropout) may differ freely."""
    try:
        theirs_config = zconfig.from_dict(plugin.config_class, dict(weights_config), plugin=plugin.name)
    except UsageError as exc:
        raise CheckpointError(f"{what} were made with hyperparameters this version of {plugin.name} does not know ({exc})") from None
    ours, theirs = zconfig.to_dict(config), zconfig.to_dict(theirs_config)
    differing = [k for k in ours if ours[k] != theirs.get(k)]
    if not differing:
        return
    scope = list(scope) if scope is not None else None
    own = _shapes(model, scope)
    if _shapes(_meta_model(plugin, theirs_config), scope) == own:
        return
    culprits = []
    for k in differing:
        try:
            candidate = dataclasses.replace(config, **{k: theirs[k]})
        except Exception:
            continue
        if _shapes(_meta_model(plugin, candidate), scope) != own:
            culprits.append(k)
    culprits = culprits or differing
    want = " ".join(zconfig.flag(k, theirs[k]) for k in culprits)
    have = " ".join(zconfig.flag(k, ours[k]) for k in culprits)
    raise UsageError(
        f"{what} were trained with {want}, but this model has {have}; pass {want} (architecture hyperparameters must match the weights)"
    )


def load_into(plugin: Plugin, model: Any, name_or_path: str | LoadedWeights, config: Any = None, *, quiet: bool = False) -> LoadedWeights:
    """Load weights into `model` strictly, through the plugin's filter for foreign layouts.

    With `config` (what the model was built from), weights trained with other
    architecture hyperparameters are refused by name. Weights that declare
    `components` (or foreign ones whose keys, after the plugin's filter, cover only
    some top-level children) load strictly per component; the other children keep their
    values and are named in `left_as_built` and (unless `quiet`) in a note on stderr."""
    loaded = read(plugin, name_or_path)
    what = f"weights {loaded.label or loaded.path}"
    children = top_level_children(model)
    declared = loaded.declared
    state = loaded.state_dict
    if declared is not None:
        unknown = [c for c in declared if c not in children]
        if unknown:
            raise CheckpointError(
                f"{what} declare components {', '.join(unknown)} that this model does not have (it has {', '.join(children)})"
            )
        stray = sorted({_top(k) for k in state} - set(declared))
        if stray:
            raise CheckpointError(f"{what} declare components {', '.join(declared)} but also hold keys of {', '.join(stray)}")
    if config is not None and loaded.config is not None:
        check_architecture(plugin, model, loaded.config, config, what, scope=declared)
    if plugin.checkpoint_filter is not None:
        state = dict(plugin.checkpoint_filter(state, model))
    own = model.state_dict()
    tops_in_state = {_top(k) for k in state}
    if declared is not None:
        components = list(declared)
    elif loaded.kind == "foreign" and plugin.checkpoint_filter is not None and tops_in_state and tops_in_state < set(children):
        # The plugin's filter says what a foreign file provides (pix2pix: the generator);
        # zoo's own files declare their components, so without a declaration they are whole.
        components = [c for c in children if c in tops_in_state]
    else:
        components = list(children)
    if set(components) == set(children):
        checkpoint.load_state_dict_strict(model, state, what=what)
    else:
        part = {k: v for k, v in state.items() if _top(k) in components}
        checkpoint.load_state_dict_strict(_Components(model, components), part, what=f"{what} ({', '.join(components)})")
    # A component whose every tensor is the model's own came from the filter, not the file.
    kept = {
        c
        for c in components
        if any(_top(k) == c and _same_storage(v, own.get(k)) for k, v in state.items())
        and all(_same_storage(v, own.get(k)) for k, v in state.items() if _top(k) == c and v.numel() > 0)
    }
    loaded.components = [c for c in components if c not in kept]
    loaded.left_as_built = [c for c in children if c not in loaded.components]
    if loaded.left_as_built and not quiet:
        keep = "keeps its" if len(loaded.left_as_built) == 1 else "keep their"
        print(
            f"note: {what} hold {', '.join(loaded.components)} only; {', '.join(loaded.left_as_built)} {keep} initialisation",
            file=sys.stderr,
        )
    return loaded


# --------------------------------------------------------------------------- meta


def num_params(model: Any, components: Iterable[str] | None = None) -> int:
    keep = None if components is None else set(components)
    return sum(p.numel() for name, p in model.named_parameters() if keep is None or _top(name) in keep)


def input_spec(plugin: Plugin, config: Any) -> dict[str, Any]:
    """What the weights were trained on, for the meta's 'input': an image plugin's
    {shape, value_range, normalization}; for other data, the requested tensors."""
    from zoo.data import Images

    request = plugin.data_request(config)
    image = next((t for t in request.tensors if isinstance(t, Images)), None)
    if image is None:
        return {"tensors": request.to_json()["tensors"], "normalization": "none"}
    lo, hi = (float(v) for v in image.value_range)
    return {
        "shape": [image.channels, image.size, image.size],
        "value_range": [lo, hi],
        "normalization": "pixel intensities scaled to [0, 1], no mean/std normalisation"
        if (lo, hi) == (0.0, 1.0)
        else f"pixel intensities in [0, 1] mapped linearly to [{lo:g}, {hi:g}]",
    }


def train_command(plugin: Plugin, config: Any, *, data: str, seed: int, device: str | None = None, max_steps: int | None = None) -> str:
    """The `zoo train` command that reproduces a run: every hyperparameter spelled out,
    so later changes to the plugin's defaults do not change what it means."""
    parts = ["zoo", "train", plugin.name, "--data", shlex.quote(data), "--seed", str(seed)]
    if device:
        parts += ["--device", device]
    if max_steps is not None:
        parts += ["--max-steps", str(max_steps)]
    for name, value in zconfig.to_dict(config).items():
        parts.append(zconfig.flag(name, value))
    return " ".join(parts)


def parse_train_command(plugin: Plugin, command: str) -> dict[str, Any]:
    """What a recorded `zoo train` command means: {"config": full config dict, "data":
    spec or None, "seed": int or None}, parsed by `zoo.config` the way the CLI parses it."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"command {command!r} does not parse: {exc}") from None
    if words[:3] != ["zoo", "train", plugin.name]:
        raise UsageError(f"command {command!r} does not start with 'zoo train {plugin.name}'")
    try:
        values, options = zconfig.parse_train_words(plugin.config_class, words[3:], plugin=plugin.name)
    except UsageError as exc:
        raise UsageError(f"command {command!r}: {exc}") from None
    config = zconfig.from_dict(plugin.config_class, values, plugin=plugin.name)
    seed = options.get("seed")
    return {
        "config": zconfig.to_dict(config),
        "data": options.get("data"),
        "seed": int(seed) if isinstance(seed, str) and seed.lstrip("-").isdigit() else seed,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_meta(plugin: Plugin, meta: Mapping[str, Any], *, check_model: bool = True) -> list[str]:
    """Problems with a table entry's meta (empty when it is valid). With `check_model`,
    builds the model its config describes (on the meta device) to recount parameters."""
    from zoo import data as zdata
    from zoo import datasets

    problems: list[str] = []
    for key in META_FIELDS:
        if key not in meta:
            problems.append(f"meta has no {key!r} ({META_FIELDS[key]})")
    for key in meta:
        if key not in META_FIELDS and key not in OPTIONAL_META_FIELDS:
            problems.append(f"meta has an unknown key {key!r} (known: {', '.join([*META_FIELDS, *OPTIONAL_META_FIELDS])})")
    if problems:
        return problems
    dataset = meta["dataset"]
    if not isinstance(dataset, str) or not dataset:
        problems.append("meta 'dataset' must be a --data spec such as 'digits'")
    else:
        try:
            found, _ = datasets.parse_spec(dataset)
            if found.name not in plugin.datasets:
                problems.append(f"meta 'dataset' {dataset!r} is not one of the plugin's datasets {plugin.datasets}")
        except ZooError as exc:
            problems.append(f"meta 'dataset': {exc}")
    metrics = meta["metrics"]
    if not isinstance(metrics, Mapping) or not metrics or not all(isinstance(k, str) and _is_number(v) for k, v in metrics.items()):
        problems.append("meta 'metrics' must be a non-empty {name: finite number} dict")
    if not isinstance(meta["num_params"], int) or isinstance(meta["num_params"], bool) or meta["num_params"] <= 0:
        problems.append("meta 'num_params' must be a positive int")
    if not isinstance(meta["license"], str) or not meta["license"].strip():
        problems.append("meta 'license' must name a license")
    components = meta.get("components")
    if components is not None and (
        not isinstance(components, (list, tuple))
        or not components
        or not all(isinstance(c, str) for c in components)
        or len(set(components)) != len(components)
    ):
        problems.append("meta 'components' must be a non-empty list of distinct module names")
        components = None
    config = None
    if not isinstance(meta["config"], Mapping):
        problems.append("meta 'config' must be the full hyperparameter dict")
    else:
        try:
            config = zconfig.from_dict(plugin.config_class, dict(meta["config"]), plugin=plugin.name)
            full = zconfig.to_dict(config)
            missing = [k for k in full if k not in meta["config"]]
            if missing:
                problems.append(f"meta 'config' lacks {', '.join(missing)} (record every hyperparameter)")
        except (ZooError, TypeError) as exc:
            problems.append(f"meta 'config': {exc}")
            config = None
    command = meta["command"]
    if not isinstance(command, str):
        problems.append("meta 'command' must be the `zoo train` command line")
    elif config is not None:
        try:
            parsed = parse_train_command(plugin, command)
            if parsed["config"] != zconfig.to_dict(config):
                diff = sorted(k for k, v in parsed["config"].items() if zconfig.to_dict(config)[k] != v)
                problems.append(f"meta 'command' gives other hyperparameters than meta 'config': {', '.join(diff)}")
            if isinstance(dataset, str) and (parsed["data"] or plugin.default_dataset) != dataset:
                problems.append(f"meta 'command' trains on {parsed['data'] or plugin.default_dataset!r}, meta 'dataset' says {dataset!r}")
        except ZooError as exc:
            problems.append(f"meta 'command': {exc}")
    spec = meta["input"]
    if config is not None:
        expected = input_spec(plugin, config)
        if not isinstance(spec, Mapping) or not isinstance(spec.get("normalization"), str) or not spec.get("normalization"):
            problems.append(f"meta 'input' must be {{'shape', 'value_range', 'normalization'}}, e.g. {expected}")
        elif list(spec.get("shape", [])) != expected["shape"] or [float(v) for v in spec.get("value_range", [])] != expected["value_range"]:
            problems.append(f"meta 'input' {dict(spec)} disagrees with the plugin's data request for this config {expected}")
    info = None
    try:
        info = zdata.DataInfo.from_json(meta.get("data_info"))
    except ValueError as exc:
        problems.append(f"meta 'data_info': {exc}")
    if check_model and config is not None:
        model = _meta_model(plugin, config, info)
        children = top_level_children(model)
        unknown = [c for c in components or () if c not in children]
        if unknown:
            problems.append(f"meta 'components' {unknown} are not top-level children of the model ({', '.join(children)})")
        elif isinstance(meta["num_params"], int):
            counted = num_params(model, components)
            if counted != meta["num_params"]:
                problems.append(f"meta 'num_params' is {meta['num_params']}, the model (components {components or 'all'}) has {counted}")
    return problems


def validate_entry(plugin: Plugin, entry: Weights, *, check_model: bool = True) -> list[str]:
    """Problems with a table entry (empty when it is valid): name, source, sha256, meta."""
    problems = []
    if not TABLE_NAME.match(entry.name):
        problems.append(f"name {entry.name!r} must be upper case letters, digits and _ (e.g. DIGITS_V1)")
    if not entry.source.startswith(SOURCE_SCHEMES):
        problems.append(f"source {entry.source!r} must start with one of {', '.join(SOURCE_SCHEMES)}")
    if not SHA256.match(entry.sha256):
        problems.append(f"sha256 {entry.sha256!r} must be 64 lower-case hex digits")
    problems += validate_meta(plugin, entry.meta, check_model=check_model)
    return [f"{plugin.name}:{entry.name}: {p}" for p in problems]


# --------------------------------------------------------------------------- writing


def safetensors_bytes(tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
    """A safetensors file's bytes with the zoo meta in its metadata. Same tensors and
    meta give the same bytes, so re-exporting a checkpoint gives the same sha256."""
    from safetensors.torch import save

    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return save(plain, metadata={"zoo": json.dumps(meta, sort_keys=True)})


def _literal(value: Any, indent: str, width: int = 100) -> str:
    """A Python literal for JSON-like `value`: inline when it fits, one key a line otherwise."""
    flat = repr(value)
    if len(indent) + len(flat) <= width or not isinstance(value, dict) or not value:
        return flat
    inner = indent + "    "
    lines = [f"{inner}{key!r}: {_literal(item, inner, width)}," for key, item in value.items()]
    return "{\n" + "\n".join(lines) + f"\n{indent}}}"


def entry_source(entry: Weights, indent: str = "") -> str:
    """`entry` as Python source to paste into a plugin's weights table."""
    inner = indent + "    "
    return (
        f"{indent}Weights(\n"
        f"{inner}name={entry.name!r},\n"
        f"{inner}source={entry.source!r},\n"
        f"{inner}sha256={entry.sha256!r},\n"
        f"{inner}meta={_literal(dict(entry.meta), inner)},\n"
        f"{indent}),"
    )
