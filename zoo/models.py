"""One way from (plugin, checkpoint | weights | random init, config overrides) to a
ready model, used by every command: train (`--weights`), export, verify, sample,
predict, evaluate and `zoo weights`.

`build_model` returns the model in eval mode on the CPU with its config, the data's
`DataInfo` (classes, vocabulary) it was built for, and a `Source` saying where its
weights came from, with a digest of its state so a rebuilt model can be proven to be
the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo import config as zconfig
from zoo.data import DataInfo
from zoo.errors import UsageError
from zoo.plugin import Plugin

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass
class Source:
    """Where a model's weights came from, enough to rebuild them."""

    kind: str  # "checkpoint", "weights" or "random-init"
    path: str | None = None
    name: str | None = None
    sha256: str | None = None
    seed: int | None = None
    # Digest of the model's state dict: proves a rebuilt eager model is the same one.
    state_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        if self.kind == "checkpoint":
            return f"checkpoint {self.path}"
        if self.kind == "weights":
            return f"weights {self.name or self.path}"
        return f"random init (seed {self.seed})"


@dataclass
class Built:
    model: Any
    config: Any
    data_info: DataInfo
    source: Source
    # What `zoo.weights` read, when the model came from weights (components loaded, ...).
    loaded: Any = None
    # The `--data` spec the weights were trained on, where the checkpoint or the weights'
    # meta records it (export's task-level parity judges on it by default).
    trained_on: str | None = None


def state_digest(model: Any) -> str:
    """sha256 over names, dtypes, shapes and bytes of every tensor in the state dict."""
    import torch

    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            continue
        h.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_info_for(plugin: Plugin, config: Any, data: str | None = None) -> DataInfo:
    """What the data knows, for a model built without a checkpoint (random init): read
    from the dataset (`data`, else the plugin's default) only when `build` needs it."""
    if not plugin.build_takes_data:
        return DataInfo()
    from zoo import datasets

    return datasets.load(data or plugin.default_dataset, plugin.data_request(config), plugin=plugin.name).info


def build_model(
    plugin: Plugin,
    *,
    checkpoint: str | None = None,
    weights: str | None = None,
    random_init: bool = False,
    seed: int | None = 0,
    overrides: dict[str, Any] | None = None,
    config: Any = None,
    data: str | None = None,
    data_info: DataInfo | None = None,
    latest: bool = True,
    log: Log = _quiet,
    quiet: bool = False,
) -> Built:
    """The model `plugin` builds from exactly one source of weights, in eval mode on the
    CPU. With no source, the newest `zoo train` run of the plugin (when `latest`).

    Training passes its own `config` and the data's `data_info`: random init then draws
    from the global generator the engine seeded (`seed=None`), and `--weights` load into
    the run's config, refusing weights of another architecture by name. `quiet` drops
    the note on stderr naming components the weights do not hold (for a caller that
    reports what they hold itself, such as `zoo weights import`)."""
    from zoo import checkpoint as ckpt
    from zoo import paths
    from zoo import weights as zweights

    weights_read = None
    given = [name for name, value in (("--checkpoint", checkpoint), ("--weights", weights), ("--random-init", random_init)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} exclude each other; pick one source of weights")
    if overrides and not random_init:
        raise UsageError("--config applies only with --random-init (a checkpoint or weights file brings its own config)")
    if config is not None and checkpoint is not None:
        raise UsageError("a checkpoint brings its own config; pass one or the other")
    if not given:
        found = paths.latest_checkpoint(plugin.name) if latest else None
        if found is None:
            raise UsageError(
                f"no trained {plugin.name} under {paths.runs_root() / plugin.name}: train one first (zoo train {plugin.name}), "
                f"or pass --checkpoint PATH, --weights NAME or --random-init"
            )
        log(f"using the newest checkpoint of {plugin.name}: {found}")
        checkpoint = str(found)

    if checkpoint is not None:
        state = ckpt.load(checkpoint, plugin=plugin.name)
        config = zconfig.from_dict(plugin.config_class, state.get("config") or {}, plugin=plugin.name)
        info = _data_info(state.get("data_info"), f"checkpoint {checkpoint}")
        model = _instantiate(plugin, config, info, seed)
        ckpt.load_state_dict_strict(model, state["model"], what=f"checkpoint {checkpoint}")
        source = Source("checkpoint", path=str(Path(checkpoint).resolve()), sha256=ckpt.sha256_file(checkpoint))
        trained_on = state.get("data") if isinstance(state.get("data"), str) else None
    elif weights is not None:
        loaded = zweights.read(plugin, weights)
        if config is None:
            config = zconfig.from_dict(plugin.config_class, loaded.config or {}, plugin=plugin.name)
        if data_info is not None:
            info = data_info
        elif loaded.meta.get("data_info"):
            info = _data_info(loaded.meta.get("data_info"), f"weights {weights}")
        else:  # a foreign file knows nothing of the data: ask the plugin's default dataset, where build needs it
            info = data_info_for(plugin, config)
        model = _instantiate(plugin, config, info, seed)  # components the file lacks keep these values
        zweights.load_into(plugin, model, loaded, config=config, quiet=quiet)
        is_path = Path(weights).expanduser().exists()
        source = Source("weights", path=str(loaded.path.resolve()), name=None if is_path else weights, sha256=loaded.sha256)
        weights_read = loaded
        trained_on = loaded.meta.get("dataset") if isinstance(loaded.meta.get("dataset"), str) else None
    else:
        if config is None:
            config = zconfig.from_dict(plugin.config_class, overrides or {}, plugin=plugin.name)
        info = data_info if data_info is not None else data_info_for(plugin, config, data)
        model = _instantiate(plugin, config, info, seed)
        source = Source("random-init", seed=seed)
        trained_on = None
    model.eval()
    source.state_sha256 = state_digest(model)
    return Built(model, config, info, source, weights_read, trained_on)


def _instantiate(plugin: Plugin, config: Any, info: DataInfo, seed: int | None) -> Any:
    """With a seed, on a forked generator: the same seed gives the same weights and the
    caller's global random state is left as it was. Without one, from the global
    generator as it stands (a training run seeded it; its later draws follow on)."""
    import torch

    if seed is None:
        return plugin.instantiate(config, info)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return plugin.instantiate(config, info)


def _data_info(raw: Any, what: str) -> DataInfo:
    from zoo.errors import CheckpointError

    try:
        return DataInfo.from_json(raw)
    except ValueError as exc:
        raise CheckpointError(f"{what}: {exc}") from None
