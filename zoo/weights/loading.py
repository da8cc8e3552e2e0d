"""Loading weights into a built model: strictly, per component, refusing another architecture.

Loading is strict per component: weights may hold only some top-level children of the
model (a GAN's generator), declared in the meta as `components`; every key of those
must be present and match, the rest stay as built. Foreign layouts go through the
plugin's `checkpoint_filter`. Weights trained with other architecture hyperparameters
are refused naming the flags to pass, not with a wall of shape mismatches. Tensors
stored at another precision (a float16 file) are cast to the dtype of the model's
tensor they load into (`to_model_dtypes`): the model keeps its own dtype.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from zoo import checkpoint
from zoo import config as zconfig
from zoo.errors import CheckpointError, UsageError
from zoo.plugin import Plugin
from zoo.weights.reading import LoadedWeights, read


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


def component_tensors(model: Any, components: Iterable[str]) -> dict[str, Any]:
    """The model's state dict restricted to some top-level children."""
    keep = set(components)
    return {k: v for k, v in model.state_dict().items() if _top(k) in keep}


def num_params(model: Any, components: Iterable[str] | None = None) -> int:
    """Parameters (buffers excluded) of the model, or of some of its top-level children."""
    keep = None if components is None else set(components)
    return sum(p.numel() for name, p in model.named_parameters() if keep is None or _top(name) in keep)


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


def _kind(dtype: Any) -> str:
    import torch

    if dtype.is_floating_point:
        return "floating"
    if dtype.is_complex:
        return "complex"
    return "bool" if dtype == torch.bool else "integer"


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def to_model_dtypes(state: Mapping[str, Any], own: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`state` with each tensor cast to the dtype of the model's tensor of the same key
    (float16 or bfloat16 weights into a float32 model, or the other way round), so
    loading never depends on `load_state_dict`'s silent copy. A tensor of another kind
    (a float where the model counts in integers) is refused, naming the keys."""
    out, wrong = {}, []
    for key, value in state.items():
        mine = own.get(key)
        if mine is None or not hasattr(value, "dtype") or value.dtype == mine.dtype:
            out[key] = value
        elif _kind(value.dtype) == _kind(mine.dtype):
            out[key] = value.to(mine.dtype)
        else:
            wrong.append(f"{key} is {_dtype_name(value.dtype)}, the model's is {_dtype_name(mine.dtype)}")
    if wrong:
        shown = ", ".join(wrong[:6]) + (f", ... ({len(wrong)} in all)" if len(wrong) > 6 else "")
        raise CheckpointError(f"{what} do not fit this model: {shown}")
    return out


def meta_model(plugin: Plugin, config: Any, data_info: Any = None) -> Any:
    """The model `config` builds, on the meta device where the plugin allows (no memory,
    no random numbers drawn); on the CPU under a forked generator otherwise. For
    counting parameters and comparing shapes, never for running."""
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
    if _shapes(meta_model(plugin, theirs_config), scope) == own:
        return
    culprits = []
    for k in differing:
        try:
            candidate = dataclasses.replace(config, **{k: theirs[k]})
        except Exception:
            continue
        if _shapes(meta_model(plugin, candidate), scope) != own:
            culprits.append(k)
    culprits = culprits or differing
    want = " ".join(zconfig.flag(k, theirs[k]) for k in culprits)
    have = " ".join(zconfig.flag(k, ours[k]) for k in culprits)
    raise UsageError(
        f"{what} were trained with {want}, but this model has {have}; pass {want} (architecture hyperparameters must match the weights)"
    )


def _components_to_load(plugin: Plugin, loaded: LoadedWeights, state: Mapping[str, Any], children: list[str]) -> list[str]:
    if loaded.declared is not None:
        return list(loaded.declared)
    tops_in_state = {_top(k) for k in state}
    if loaded.kind == "foreign" and plugin.checkpoint_filter is not None and tops_in_state and tops_in_state < set(children):
        # The plugin's filter says what a foreign file provides (pix2pix: the generator);
        # zoo's own files declare their components, so without a declaration they are whole.
        return [c for c in children if c in tops_in_state]
    return list(children)


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
    state = to_model_dtypes(state, own, what)
    components = _components_to_load(plugin, loaded, state, children)
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
