"""The training loop: devices, data, the lifecycle of `zoo.trainer`, evaluation,
checkpoints, exact resume, metrics and seeds.

Plugins own the math (`Trainer`); this module owns everything around it. A
checkpoint is written at the end of every epoch and where `--max-steps` stops a run,
with everything a resumed run needs to continue bit for bit: the model, the
optimizers, the schedules, the trainer's own state, every random generator, the
position inside the epoch (the epoch's data order is redrawn from its saved seed
state and the batches already done are skipped) and the epoch's running loss sums.
Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import checkpoint, devices
from zoo import config as zconfig
from zoo.engine import rng, run_files
from zoo.engine.display import ProgressDisplay
from zoo.errors import CheckpointError, DiskFull, TrainingDiverged, UsageError, ZooError
from zoo.plugin import Plugin
from zoo.trainer import Progress, Schedule
from zoo.versions import plugin_version, zoo_version


class Interrupted(ZooError):
    """Ctrl-C: the last complete checkpoint is intact."""

    exit_code = 130


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def optimization(plugin: Plugin, returned: Any) -> tuple[dict[str, Any], dict[str, Schedule]]:
    """What `configure_optimizers` returned, as (optimizers, schedules), checked."""
    import torch

    optimizers, schedules = returned, {}
    if isinstance(returned, tuple):
        if len(returned) != 2:
            raise ZooError(
                f"plugin {plugin.name!r}: configure_optimizers returned a {len(returned)}-tuple; return optimizers or (optimizers, schedules)"
            )
        optimizers, schedules = returned
    if optimizers is None:
        optimizers = {}
    if not isinstance(optimizers, dict) or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers.values()):
        raise ZooError(f"plugin {plugin.name!r}: configure_optimizers must return a dict of named torch optimizers (or {{}})")
    fixed = {}
    for name, item in (schedules or {}).items():
        if not isinstance(item, Schedule):
            item = Schedule(item)  # a bare scheduler steps every optimisation step
        if not hasattr(item.scheduler, "state_dict") or not hasattr(item.scheduler, "step"):
            raise ZooError(f"plugin {plugin.name!r}: schedule {name!r} is not a torch LR scheduler")
        fixed[name] = item
    return optimizers, fixed


def _position(state: dict[str, Any]) -> tuple[int, int, bool, int]:
    """(epoch, step, epoch_complete, step_in_epoch) of a checkpoint."""
    complete = bool(state.get("epoch_complete", True))
    return int(state["epoch"]), int(state["step"]), complete, 0 if complete else int(state.get("step_in_epoch", 0))


def train(
    plugin: Plugin,
    config: Any,
    *,
    data: str | None = None,
    device: str = "auto",
    seed: int | None = None,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    max_steps: int | None = None,
    weights: str | None = None,
    download: bool = False,
    progress: str = "auto",
    overwrite: bool = False,
) -> TrainResult:
    """Train `plugin` with `config`; returns where it wrote and the per-epoch records.
    A directory that holds a run is refused unless it is resumed or `overwrite` is given."""
    import torch

    config = zconfig.from_dict(type(config), zconfig.to_dict(config), plugin=plugin.name)  # ranges and choices
    if max_steps is not None and max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, not {max_steps}")
    rank, _world = devices.distributed_rank()
    is_main = rank == 0
    dev = devices.resolve(device)

    state = checkpoint.load(resume, plugin=plugin.name, training=True) if resume is not None else None
    if state is not None:
        if seed is not None and seed != int(state.get("seed", 0)):
            raise UsageError(f"--resume keeps the checkpoint's seed {state.get('seed')}; only --epochs may change (got --seed {seed})")
        if data is not None and data != state["data"]:
            raise UsageError(f"--resume keeps the checkpoint's dataset {state['data']!r}; only --epochs may change (got --data {data})")
        seed = int(state.get("seed", 0))
    seed = 0 if seed is None else seed
    rng.seed_everything(seed)

    from zoo import data as zdata
    from zoo import datasets

    spec = state["data"] if state is not None else (data or plugin.default_dataset)
    request = plugin.data_request(config)
    splits = datasets.load(spec, request, download=download, plugin=plugin.name).to(dev)
    info = dataclasses.replace(splits.info, train_size=len(splits.train))
    if state is not None and "data_info" in state:
        saved = zdata.DataInfo.from_json(state["data_info"])
        if saved.train_size is None:  # written before zoo recorded it
            saved = dataclasses.replace(saved, train_size=info.train_size)
        if saved != info:
            raise CheckpointError(
                f"--data {spec} no longer gives what checkpoint {resume} was trained on (its classes, vocabulary or size changed)"
            )

    from zoo import models

    # The global generator seeded above draws the initial weights, so a run is reproduced
    # by its seed; a resumed run's weights are then replaced by its checkpoint's below.
    source = {"weights": weights} if weights is not None and state is None else {"random_init": True}
    model = models.build_model(plugin, config=config, data_info=info, seed=None, **source).model.to(dev)
    trainer = plugin.trainer_class(model, config, dev)
    steps_per_epoch = splits.train.num_batches(config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    trainer.plan = Progress(0, 1, 0, steps_per_epoch, total_steps, config.epochs)
    trainer.data_info = info
    optimizers, schedules = optimization(plugin, trainer.configure_optimizers())

    data_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    epoch, step, complete, resume_at = 0, 0, True, 0
    sums: dict[str, float] = {}
    seen = 0
    logged_before: dict[str, Any] = {}
    if state is not None:
        checkpoint.load_state_dict_strict(model, state["model"], what=f"checkpoint {resume}")
        _restore_optimization(resume, state, optimizers, schedules)
        trainer.load_state_dict(state.get("trainer") or {})
        epoch, step, complete, resume_at = _position(state)
        rng.restore(state["rng"], data_gen, aug_gen)
        if not complete:
            sums = {k: float(v) for k, v in (state.get("sums") or {}).items()}
            seen = int(state.get("seen", 0))
            logged_before = dict(state.get("logged") or {})
            if epoch > config.epochs:
                raise UsageError(f"checkpoint {resume} stopped inside epoch {epoch}; pass --epochs N with N >= {epoch}")
        if complete and epoch >= config.epochs:
            raise UsageError(f"checkpoint {resume} already finished epoch {epoch}; pass --epochs N with N > {epoch} to train further")
        if max_steps is not None and step >= max_steps:
            raise UsageError(f"checkpoint {resume} is at step {step} already; pass --max-steps N with N > {step}, or leave it out")
        planned = int(state.get("total_steps") or total_steps)
        if planned != total_steps and is_main:
            print(
                f"note: --epochs {config.epochs} plans {total_steps} steps where the run planned {planned}; "
                "saved schedules continue as they were saved (they are not rescaled), while progress.total_steps "
                f"is now {total_steps}",
                flush=True,
            )

    run_dir = run_files.RunDir(plugin.name, out, resume, overwrite, is_main)
    with run_dir as out_dir:
        ckpt_path = out_dir / run_files.CHECKPOINT
        metrics_path = out_dir / run_files.METRICS
        version = plugin_version(plugin)
        if is_main:
            checkpoint.write_json(
                {
                    "plugin": plugin.name,
                    "plugin_version": version,
                    "zoo_version": zoo_version(),
                    "data": spec,
                    "data_details": splits.details,
                    "data_info": info.to_json(),
                    "seed": seed,
                    "device": str(dev),
                    "config": zconfig.to_dict(config),
                },
                out_dir / run_files.CONFIG,
            )
            if state is not None:
                run_files.truncate_records(metrics_path, epoch, complete)
            elif metrics_path.exists():
                metrics_path.unlink()

        display = ProgressDisplay(progress, config.epochs)
        history: list[dict[str, Any]] = []
        last_good = ckpt_path if ckpt_path.exists() and state is not None else None
        batch_size = config.batch_size

        def progress_at(in_epoch: int) -> Progress:
            return Progress(step, epoch, in_epoch, steps_per_epoch, total_steps, config.epochs)

        def save(complete_now: bool, in_epoch: int, data_state: Any, record: dict[str, Any]) -> None:
            try:
                _save(complete_now, in_epoch, data_state, record)
            except DiskFull as exc:
                kept = f"the last good checkpoint {last_good} is intact" if last_good else "no checkpoint was written"
                hint = f"; free some space and --resume {last_good}" if last_good else ""
                raise DiskFull(f"{str(exc).split('; nothing was changed')[0]}; stopped at step {step}, {kept}{hint}") from None

        def _save(complete_now: bool, in_epoch: int, data_state: Any, record: dict[str, Any]) -> None:
            checkpoint.save(
                {
                    "plugin": plugin.name,
                    "plugin_version": version,
                    "zoo_version": zoo_version(),
                    "config": zconfig.to_dict(config),
                    "data": spec,
                    "data_info": info.to_json(),
                    "seed": seed,
                    "epoch": epoch,
                    "epoch_complete": complete_now,
                    "step": step,
                    "step_in_epoch": in_epoch,
                    "total_steps": total_steps,
                    "model": model.state_dict(),
                    "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                    "schedules": {n: s.scheduler.state_dict() for n, s in schedules.items()},
                    "trainer": trainer.state_dict(),
                    "rng": rng.capture(data_state, aug_gen),
                    "sums": dict(sums) if not complete_now else {},
                    "seen": seen if not complete_now else 0,
                    "logged": dict(trainer._logged) if not complete_now else {},
                    "metrics": record,
                },
                ckpt_path,
            )

        try:
            while epoch < config.epochs or not complete:
                if complete:
                    epoch += 1
                    sums, seen, start_at = {}, 0, 0
                else:
                    start_at = resume_at  # in the middle of the checkpoint's epoch
                complete = True
                epoch_start_state = data_gen.get_state()  # the epoch's order is drawn from here
                model.train()
                trainer._logged = dict(logged_before)
                logged_before = {}
                trainer.on_epoch_start(progress_at(start_at))
                display.start_epoch(epoch, steps_per_epoch, start_at)
                in_epoch = start_at
                stopped = False
                seen_now = 0
                t0 = time.perf_counter()
                batches = splits.train.batches(batch_size, generator=data_gen if request.shuffle else None, start=start_at)
                for batch in batches:
                    batch = trainer.augment(batch, aug_gen)
                    try:
                        losses = trainer.train_step(batch, optimizers, progress_at(in_epoch))
                    except ZooError:
                        raise
                    except Exception as exc:
                        # A loss that leaves its domain (BCE of NaN pixels after --lr 1e30) raises
                        # inside the step; when the weights are no longer finite, that is divergence.
                        if not _finite(model):
                            where = f"the last good checkpoint {last_good} is intact" if last_good else "no checkpoint was written"
                            raise TrainingDiverged(
                                f"loss became nan at step {step + 1} (epoch {epoch}): the weights are no longer finite "
                                f"({type(exc).__name__} in train_step); stopped, {where}"
                            ) from None
                        raise
                    step += 1
                    in_epoch += 1
                    for s in schedules.values():
                        if s.interval == "step":
                            s.scheduler.step()
                    values = {k: float(v) for k, v in (losses or {}).items()}
                    for k, v in values.items():
                        if not math.isfinite(v):
                            where = f"the last good checkpoint {last_good} is intact" if last_good else "no checkpoint was written"
                            raise TrainingDiverged(
                                f"{k if k.startswith('loss') else 'loss ' + k} became {v} at step {step} (epoch {epoch}); stopped, {where}"
                            )
                        sums[k] = sums.get(k, 0.0) + v
                    samples = len(next(iter(batch.values())))
                    seen += samples
                    seen_now += samples
                    display.step(values)
                    if max_steps is not None and step >= max_steps and in_epoch < steps_per_epoch:
                        stopped = True
                        break
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                seconds = time.perf_counter() - t0
                # Where a stopped epoch resumes from: the state its order was drawn from.
                data_state = epoch_start_state if stopped else data_gen.get_state()
                record = _evaluate(trainer, model, splits, batch_size, seed, dev)
                metrics = record.pop("__metrics")
                grid, text = record.pop("__grid"), record.pop("__text")
                if not stopped:
                    for s in schedules.values():
                        if s.interval == "epoch":
                            s.scheduler.step(metrics[s.monitor]) if s.monitor else s.scheduler.step()
                    trainer.on_epoch_end(progress_at(in_epoch), metrics)
                row: dict[str, Any] = {"epoch": epoch, "step": step}
                if stopped:
                    row["epoch_complete"] = False
                    row["step_in_epoch"] = in_epoch
                row.update({k: s / max(in_epoch, 1) for k, s in sums.items()})
                row.update({k: float(v) for k, v in metrics.items()})
                if schedules:
                    row.update({("lr" if len(optimizers) == 1 else f"lr_{n}"): o.param_groups[0]["lr"] for n, o in optimizers.items()})
                row.update(trainer._logged)
                row["seconds"] = round(seconds, 4)
                row["samples_per_second"] = round(seen_now / seconds, 2) if seconds > 0 else None
                history.append(row)
                if is_main:
                    save(not stopped, in_epoch, data_state, row)
                    last_good = ckpt_path
                    run_dir.checkpointed = True
                    run_files.append_record(metrics_path, row)
                    if grid is not None:
                        run_files.save_grid(grid, out_dir / run_files.SAMPLES / f"epoch_{epoch:03d}.png")
                    if text is not None:
                        run_files.save_text(text, out_dir / run_files.SAMPLES / f"epoch_{epoch:03d}.txt")
                display.end_epoch(row)
                if is_main and not stopped and epoch == config.epochs:
                    _write_end_of_run(trainer, model, splits, batch_size, out_dir)
                if stopped or (max_steps is not None and step >= max_steps):
                    break
        except KeyboardInterrupt:
            display.close()
            where = f"the last complete checkpoint is {last_good}" if last_good else "no epoch had finished, so no checkpoint was written"
            raise Interrupted(f"interrupted at step {step}; {where}") from None
        finally:
            display.close()
        return TrainResult(out_dir=out_dir, checkpoint=last_good, history=history)


def _write_end_of_run(trainer: Any, model: Any, splits: Any, batch_size: int, out_dir: Path) -> None:
    import torch

    model.eval()
    with torch.no_grad():
        files = trainer.end_of_run(splits.val.batches(batch_size)) or {}
    for name, value in files.items():
        if Path(name).name != name or name.startswith("."):
            raise ZooError(f"end_of_run returned the file name {name!r}; use a plain name such as confusion.png")
        if name.endswith(".png"):
            run_files.save_grid(value, out_dir / name)
        elif name.endswith(".json"):
            checkpoint.write_json(value, out_dir / name)
        else:
            run_files.save_text(str(value), out_dir / name)


def _finite(model: Any) -> bool:
    import torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _evaluate(trainer: Any, model: Any, splits: Any, batch_size: int, seed: int, dev: Any) -> dict[str, Any]:
    """Validation metrics and the epoch's samples, with the model in eval mode and every
    global random generator left as it was, so evaluating never changes training."""
    import torch

    model.eval()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.no_grad():
        metrics = trainer.evaluate(splits.val.batches(batch_size)) or {}
        val_batch = next(iter(splits.val.batches(16)))
        grid = trainer.sample_grid(torch.Generator().manual_seed(seed), val_batch)
        text = trainer.sample_text(torch.Generator().manual_seed(seed), val_batch)
    return {"__metrics": metrics, "__grid": grid, "__text": text}


def _restore_optimization(resume: Any, state: dict[str, Any], optimizers: dict[str, Any], schedules: dict[str, Schedule]) -> None:
    saved = state.get("optimizers") or {}
    for name, opt in optimizers.items():
        if name not in saved:
            raise CheckpointError(f"checkpoint {resume} has no state for optimizer {name!r}")
        opt.load_state_dict(saved[name])
    saved_schedules = state.get("schedules") or {}
    for name, s in schedules.items():
        if name not in saved_schedules:
            raise CheckpointError(f"checkpoint {resume} has no state for schedule {name!r}")
        s.scheduler.load_state_dict(saved_schedules[name])
