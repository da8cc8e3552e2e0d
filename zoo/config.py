"""Hyperparameters in one place: the config dataclass, its fields' types, choices and
ranges, and every way a value reaches it (CLI options, `--config NAME=VALUE`, a
checkpoint's or weights file's recorded config).

A plugin's config is a dataclass subclassing `TrainConfig`; each field is made with
`hparam(default, help, ...)`, which records its help text (shown by `zoo train P
--help` and `zoo info P`), the values it may take (`choices`) and its valid range
(`at_least`, `above`, `at_most`, `below`). Every config zoo builds goes through
`from_dict`, which checks all of them, so `--latent-dim -5`, `--dropout 1.5` or
`--config latent_dim=-3` give one line naming the option instead of a torch traceback.

Field types: int, float, str, bool, and tuples of int or float (`tuple[int, ...]`,
written `256,128` on the command line).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import UsageError

BOUND_NAMES = ("at_least", "above", "at_most", "below")


@dataclass
class TrainConfig:
    """Hyperparameters every plugin has. Plugins subclass it and override the defaults
    with their reference values; each field's help becomes the CLI help."""

    epochs: int = field(default=10, metadata={"help": "passes over the training split", "bounds": {"at_least": 1}})
    batch_size: int = field(default=64, metadata={"help": "samples per optimisation step", "bounds": {"at_least": 1}})
    lr: float = field(default=1e-3, metadata={"help": "learning rate of every optimizer", "bounds": {"above": 0.0}})


def hparam(
    default: Any,
    help: str,
    choices: Sequence[Any] | None = None,
    *,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
) -> Any:
    """A config field with its CLI help, and optionally the values it may take
    (`choices`) or its range: `hparam(0.5, "dropout", at_least=0.0, below=1.0)`."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    bounds = {k: v for k, v in (("at_least", at_least), ("above", above), ("at_most", at_most), ("below", below)) if v is not None}
    if bounds:
        meta["bounds"] = bounds
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class Field:
    """One hyperparameter as data: what `zoo info`, the CLI and the parsers read."""

    name: str
    kind: Any  # int, float, str, bool, or tuple[int, ...] / tuple[float, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    bounds: Mapping[str, float]

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def item_kind(self) -> Any:
        """For tuple fields, the type of each item; otherwise None."""
        if typing.get_origin(self.kind) is tuple:
            return typing.get_args(self.kind)[0]
        return None

    @property
    def type_name(self) -> str:
        item = self.item_kind
        if item is not None:
            return f"list of {item.__name__}"
        return getattr(self.kind, "__name__", str(self.kind))

    def describe_range(self) -> str:
        """e.g. "[0, 1)", ">= 1", "> 0"; empty when unbounded."""
        b = self.bounds
        lo = f"[{_num(b['at_least'])}" if "at_least" in b else f"({_num(b['above'])}" if "above" in b else None
        hi = f"{_num(b['at_most'])}]" if "at_most" in b else f"{_num(b['below'])})" if "below" in b else None
        if lo and hi:
            return f"{lo}, {hi}"
        if lo:
            return (">= " if lo[0] == "[" else "> ") + lo[1:]
        if hi:
            return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
        return ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is not valid for this field ("must be at least 1, not -5"), or None."""
        values = value if self.item_kind is not None else (value,)
        if self.item_kind is not None and not isinstance(value, tuple):
            return f"must be a list of {self.item_kind.__name__}, not {value!r}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, not {value!r}"
        for v in values:
            if isinstance(v, float) and not math.isfinite(v) and self.bounds:
                return f"must be a finite number, not {v}"
            b = self.bounds
            shown = _num(v) if isinstance(v, (int, float)) else repr(v)
            if "at_least" in b and not v >= b["at_least"]:
                return f"must be at least {_num(b['at_least'])}, not {shown}"
            if "above" in b and not v > b["above"]:
                return f"must be above {_num(b['above'])}, not {shown}"
            if "at_most" in b and not v <= b["at_most"]:
                return f"must be at most {_num(b['at_most'])}, not {shown}"
            if "below" in b and not v < b["below"]:
                return f"must be below {_num(b['below'])}, not {shown}"
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "option": self.option,
            "type": self.type_name,
            "default": list(self.default) if isinstance(self.default, tuple) else self.default,
            "help": self.help,
        }
        if self.choices:
            out["choices"] = list(self.choices)
        if self.bounds:
            out["range"] = self.describe_range()
            out["bounds"] = dict(self.bounds)
        return out


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# Ranges every plugin's generic fields keep, whatever defaults and help the plugin gives them.
GENERIC_BOUNDS: dict[str, dict[str, float]] = {"epochs": {"at_least": 1}, "batch_size": {"at_least": 1}, "lr": {"above": 0.0}}


def fields(config_class: type) -> list[Field]:
    """The hyperparameters of a config class, in declaration order."""
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        bounds = {**GENERIC_BOUNDS.get(f.name, {}), **f.metadata.get("bounds", {})}
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out.append(Field(f.name, hints.get(f.name, str), default, f.metadata.get("help", ""), f.metadata.get("choices"), bounds))
    return out


def check_config_class(config_class: type) -> None:
    """Refuse a config class zoo cannot put on a command line (raised at plugin load)."""
    if not dataclasses.is_dataclass(config_class) or not issubclass(config_class, TrainConfig):
        raise TypeError("config_class must be a dataclass subclassing zoo.TrainConfig")
    for f in fields(config_class):
        item = f.item_kind
        if f.kind not in (int, float, str, bool) and item not in (int, float):
            raise TypeError(f"hyperparameter {f.name!r} has type {f.kind!r}; use int, float, str, bool or tuple[int, ...]")
        if f.default is None:
            raise TypeError(f"hyperparameter {f.name!r} needs a default")
        problem = f.problem(f.default)
        if problem:
            raise TypeError(f"the default of hyperparameter {f.name!r} {problem}")


# --------------------------------------------------------------------------- values


def parse_value(f: Field, raw: str) -> Any:
    """Text (a CLI value or the right side of `--config NAME=VALUE`) -> a value of the field's type.
    Raises ValueError with a short reason."""
    raw = raw.strip()
    if f.kind is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"{raw!r} is not true or false")
        return raw.lower() in ("true", "1", "yes", "on")
    item = f.item_kind
    if item is not None:
        text = raw.strip("[]() ")
        if not text:
            return ()
        try:
            return tuple(item(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a comma-separated list of {item.__name__}") from None
    if f.kind in (int, float):
        try:
            return f.kind(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a valid {f.kind.__name__}") from None
    return raw


def coerce(f: Field, value: Any) -> Any:
    """A value read from JSON (a recorded config) -> the field's type; lists become tuples."""
    if f.item_kind is not None and isinstance(value, list):
        return tuple(value)
    if f.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def from_dict(config_class: type, values: Mapping[str, Any], *, plugin: str = "", flag_style: str = "option") -> Any:
    """A validated config from `values` (missing fields take their defaults). Unknown
    keys, wrong types and out-of-range values are refused in one line naming the
    option (`--latent-dim must be at least 1, not -5`)."""
    known = {f.name: f for f in fields(config_class)}
    unknown = sorted(set(values) - set(known))
    who = f"plugin {plugin!r}" if plugin else "this plugin"
    if unknown:
        raise UsageError(f"{who} has no hyperparameter {', '.join(unknown)} (valid: {', '.join(sorted(known))})")
    fixed = {}
    for name, value in values.items():
        f = known[name]
        value = coerce(f, value)
        if not _has_type(f, value):
            raise UsageError(f"{_label(f, flag_style)} takes a {f.type_name}, not {value!r}")
        problem = f.problem(value)
        if problem:
            raise UsageError(f"{_label(f, flag_style)} {problem}")
        fixed[name] = value
    return config_class(**fixed)


def _label(f: Field, flag_style: str) -> str:
    return f.option if flag_style == "option" else f.name


def _has_type(f: Field, value: Any) -> bool:
    item = f.item_kind
    if item is not None:
        return isinstance(value, tuple) and all(_is(item, v) for v in value)
    return _is(f.kind, value)


def _is(kind: Any, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def parse_pairs(config_class: type, pairs: Sequence[str], *, plugin: str = "") -> dict[str, Any]:
    """`--config NAME=VALUE` pairs (`zoo export`, `zoo weights import`) -> values typed by
    the config dataclass and checked against its choices and ranges."""
    known = {f.name: f for f in fields(config_class)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--config {pair!r}: write NAME=VALUE, e.g. --config latent_dim=8")
        if key not in known:
            raise UsageError(
                f"--config {pair!r}: {plugin or 'the plugin'} has no hyperparameter {key!r} (valid: {', '.join(sorted(known))})"
            )
        f = known[key]
        try:
            value = parse_value(f, raw)
        except ValueError:
            raise UsageError(f"--config {pair!r}: {key} takes a {f.type_name}; {raw.strip()!r} is not a valid {f.type_name}") from None
        problem = f.problem(value)
        if problem:
            raise UsageError(f"--config {pair!r}: {key} {problem}")
        out[key] = value
    return out


def flag(name: str, value: Any) -> str:
    """The command-line form of one hyperparameter: `--latent-dim 20`, `--no-flip`, `--hidden 256,128`."""
    import shlex

    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return option if value else f"--no-{option[2:]}"
    if isinstance(value, (list, tuple)):
        return f"{option} {shlex.quote(','.join(map(str, value)))}"
    return f"{option} {shlex.quote(str(value))}"


def dumps(config: Any) -> str:
    return json.dumps(to_dict(config), sort_keys=True)


# `zoo train` options that take no value (every other option of `zoo train` takes one).
# A test checks this against the CLI, so a recorded command parses here the way the
# CLI parses it, without the core importing the CLI.
TRAIN_FLAGS = ("--download", "--overwrite", "--compile", "--channels-last")


def parse_train_words(config_class: type, words: Sequence[str], *, plugin: str = "") -> tuple[dict[str, Any], dict[str, str | bool]]:
    """The arguments of a recorded `zoo train PLUGIN ...` command (after PLUGIN) ->
    (hyperparameter values, other options by name such as {"data": "digits", "seed": "0"})."""
    known = {f.option: f for f in fields(config_class)}
    negations = {"--no-" + f.option[2:]: f for f in known.values() if f.kind is bool}
    values: dict[str, Any] = {}
    options: dict[str, str | bool] = {}
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, inline = word.partition("=")
        if not name.startswith("--"):
            raise UsageError(f"unexpected argument {word!r}")
        if name in negations:
            values[negations[name].name] = False
            i += 1
            continue
        f = known.get(name)
        if f is not None and f.kind is bool and not eq:
            values[f.name] = True
            i += 1
            continue
        if name in TRAIN_FLAGS:
            options[name[2:].replace("-", "_")] = True
            i += 1
            continue
        if eq:
            raw = inline
            i += 1
        else:
            if i + 1 >= len(words):
                raise UsageError(f"option {name} needs a value")
            raw = words[i + 1]
            i += 2
        if f is None:
            options[name[2:].replace("-", "_")] = raw
            continue
        try:
            values[f.name] = parse_value(f, raw)
        except ValueError as exc:
            raise UsageError(f"{name}: {exc}") from None
    return values, options
