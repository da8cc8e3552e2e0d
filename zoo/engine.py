"""The training engine: devices, the loop, evaluation, checkpoints, resume, metrics, seeds.

Plugins own the math (`Trainer.train_step`, `Trainer.evaluate`); this module owns
everything around it. Only rank 0 writes files, so data-parallel training under
`torchrun` can be added by wrapping the model and sharding the batch order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from zoo import checkpoint, devices, paths
from zoo.errors import TrainingDiverged, UsageError, ZooError
from zoo.plugin import Plugin


class Interrupted(ZooError):
    """Ctrl-C: the last complete checkpoint is intact."""

    exit_code = 130


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def zoo_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zoo")
    except PackageNotFoundError:
        return "0+unknown"


def plugin_version(plugin: Plugin) -> str:
    from zoo import _registry

    entry = _registry.discover().get(plugin.name)
    return entry.version if entry is not None and entry.plugin is plugin else "0+unregistered"


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(plugin: Plugin, values: dict[str, Any]) -> Any:
    """Rebuild a config, refusing keys the plugin does not know (e.g. another plugin's)."""
    names = {f.name for f in dataclasses.fields(plugin.config_class)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"plugin {plugin.name!r} has no hyperparameter {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
    fixed = {}
    for f in dataclasses.fields(plugin.config_class):
        if f.name in values:
            v = values[f.name]
            fixed[f.name] = tuple(v) if isinstance(v, list) else v
    return plugin.config_class(**fixed)


def parse_config_pairs(plugin: Plugin, pairs: Sequence[str]) -> dict[str, Any]:
    """`--config NAME=VALUE` pairs (`zoo export`, `zoo weights import`) -> values typed
    by the plugin's config dataclass and checked against its choices."""
    import typing

    fields = {f.name: f for f in dataclasses.fields(plugin.config_class)}
    hints = typing.get_type_hints(plugin.config_class)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--config {pair!r}: write NAME=VALUE, e.g. --config latent_dim=8")
        if key not in fields:
            raise UsageError(f"--config {pair!r}: {plugin.name} has no hyperparameter {key!r} (valid: {', '.join(sorted(fields))})")
        kind = hints.get(key, str)
        raw = raw.strip()
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("true", "1", "yes", "on")
            elif kind in (int, float, str):
                value = kind(raw)
            else:
                value = json.loads(raw)
        except ValueError:  # json.JSONDecodeError is a ValueError
            type_name = getattr(kind, "__name__", kind)
            raise UsageError(f"--config {pair!r}: {key} takes a {type_name}; {raw!r} is not a valid {type_name}") from None
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise UsageError(f"--config {pair!r}: {key} is one of {', '.join(map(str, choices))}")
        out[key] = value
    return out


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state(data_gen: Any, aug_gen: Any) -> dict[str, Any]:
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "data": data_gen.get_state(),
        "augment": aug_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], data_gen: Any, aug_gen: Any) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    data_gen.set_state(state["data"])
    aug_gen.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Progress:
    """A tqdm bar with loss and ETA on a terminal; one plain line per epoch otherwise."""

    def __init__(self, mode: str, total_epochs: int):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        self.total_epochs = total_epochs
        self.bar = None

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.total_epochs}", unit="step", leave=True, dynamic_ncols=True)

    def step(self, losses: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
            self.bar.update(1)

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.mode in ("bar", "lines"):
            shown = " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in record.items()
                if k not in ("plugin",)
            )
            print(shown, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _append_line(path: Path, obj: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(obj) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_metrics(path: Path, epoch: int) -> None:
    """On resume, drop records after the checkpoint's epoch (a run that died later)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("epoch", 0) <= epoch:
                kept.append(line)
        except json.JSONDecodeError:
            continue
    checkpoint.atomic_write(path, lambda fh: fh.write("".join(k + "\n" for k in kept)), mode="w")


def _save_grid(grid: Any, path: Path) -> None:
    from torchvision.utils import save_image

    checkpoint.atomic_write(path, lambda fh: save_image(grid.float().cpu(), fh, format="png"))


def train(
    plugin: Plugin,
    config: Any,
    *,
    data: str | None = None,
    device: str = "auto",
    seed: int = 0,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    max_steps: int | None = None,
    weights: str | None = None,
    download: bool = False,
    progress: str = "auto",
) -> TrainResult:
    """Train `plugin` with `config`; returns where it wrote and the per-epoch records."""
    import torch

    if config.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, not {config.epochs}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {config.batch_size}")
    if max_steps is not None and max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, not {max_steps}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise UsageError(f"--lr must be a positive number, not {config.lr}")

    rank, _world = devices.distributed_rank()
    is_main = rank == 0
    dev = devices.resolve(device)

    state = checkpoint.load(resume, plugin=plugin.name) if resume is not None else None
    if state is not None:
        seed = int(state.get("seed", seed))  # fixed sample noise and init follow the original run
    seed_everything(seed)

    from zoo import data as zdata

    spec = data or (state["data"] if state is not None else plugin.default_dataset)
    splits = zdata.load(spec, plugin.data_request(config), download=download).to(dev)
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise UsageError(f"--data {spec}: the train or validation split is empty")

    model = plugin.build(config).to(dev)
    if weights is not None and state is None:
        from zoo import weights as zweights

        zweights.load_into(plugin, model, weights, config=config)
    trainer = plugin.trainer_class(model, config, dev)
    optimizers = trainer.configure_optimizers()

    data_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    epoch, step = 0, 0
    if state is not None:
        checkpoint.load_state_dict_strict(model, state["model"], what=f"checkpoint {resume}")
        for name, opt in optimizers.items():
            if name not in state["optimizers"]:
                raise checkpoint.CheckpointError(f"checkpoint {resume} has no state for optimizer {name!r}")
            opt.load_state_dict(state["optimizers"][name])
        epoch, step = int(state["epoch"]), int(state["step"])
        _set_rng_state(state["rng"], data_gen, aug_gen)
        if epoch >= config.epochs:
            raise UsageError(f"checkpoint {resume} already finished epoch {epoch}; pass --epochs N with N > {epoch} to train further")

    out_dir = Path(out) if out is not None else (Path(resume).parent if resume is not None else None)
    if is_main:
        if out_dir is None:
            out_dir = paths.new_run_dir(plugin.name)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / ".zoo-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    assert out_dir is not None
    ckpt_path = out_dir / "last.pt"
    metrics_path = out_dir / "metrics.jsonl"
    version = plugin_version(plugin)
    if is_main:
        checkpoint.write_json(
            {"plugin": plugin.name, "plugin_version": version, "zoo_version": zoo_version(), "data": spec,
             "seed": seed, "device": str(dev), "config": config_to_dict(config)},
            out_dir / "config.json",
        )
        if state is not None:
            _truncate_metrics(metrics_path, epoch)
        elif metrics_path.exists():
            metrics_path.unlink()

    bar = _Progress(progress, config.epochs)
    history: list[dict[str, Any]] = []
    last_good = ckpt_path if ckpt_path.exists() and state is not None else None
    batch_size = config.batch_size
    try:
        while epoch < config.epochs:
            epoch += 1
            model.train()
            bar.start_epoch(epoch, splits.train.num_batches(batch_size))
            sums: dict[str, float] = {}
            seen, steps_this_epoch = 0, 0
            t0 = time.perf_counter()
            for batch in splits.train.batches(batch_size, generator=data_gen):
                batch = trainer.augment(batch, aug_gen)
                losses = trainer.train_step(batch, optimizers, step)
                step += 1
                steps_this_epoch += 1
                values = {k: float(v) for k, v in losses.items()}
                for k, v in values.items():
                    if not math.isfinite(v):
                        where = f"the last good checkpoint {last_good} is intact" if last_good else "no checkpoint was written"
                        raise TrainingDiverged(f"loss {k} became {v} at step {step} (epoch {epoch}); stopped, {where}")
                    sums[k] = sums.get(k, 0.0) + v
                seen += len(next(iter(batch.values())))
                bar.step(values)
                if max_steps is not None and step >= max_steps:
                    break
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds = time.perf_counter() - t0
            model.eval()
            with torch.no_grad():
                metrics = trainer.evaluate(splits.val.batches(batch_size))
                grid = trainer.sample_grid(torch.Generator().manual_seed(seed), next(splits.val.batches(16)))
            record: dict[str, Any] = {"epoch": epoch, "step": step}
            record.update({k: s / max(steps_this_epoch, 1) for k, s in sums.items()})
            record.update({k: float(v) for k, v in metrics.items()})
            record["seconds"] = round(seconds, 4)
            record["samples_per_second"] = round(seen / seconds, 2) if seconds > 0 else None
            history.append(record)
            if is_main:
                checkpoint.save(
                    {
                        "plugin": plugin.name,
                        "plugin_version": version,
                        "zoo_version": zoo_version(),
                        "config": config_to_dict(config),
                        "data": spec,
                        "seed": seed,
                        "epoch": epoch,
                        "step": step,
                        "model": model.state_dict(),
                        "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                        "rng": _rng_state(data_gen, aug_gen),
                        "metrics": record,
                    },
                    ckpt_path,
                )
                last_good = ckpt_path
                _append_line(metrics_path, record)
                if grid is not None:
                    _save_grid(grid, out_dir / "samples" / f"epoch_{epoch:03d}.png")
            bar.end_epoch(record)
            if max_steps is not None and step >= max_steps:
                break
    except KeyboardInterrupt:
        bar.close()
        where = f"the last complete checkpoint is {last_good}" if last_good else "no epoch had finished, so no checkpoint was written"
        raise Interrupted(f"interrupted at step {step}; {where}") from None
    finally:
        bar.close()
    return TrainResult(out_dir=out_dir, checkpoint=last_good, history=history)
