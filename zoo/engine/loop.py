"""The training loop: devices, data, the lifecycle of `zoo.trainer`, evaluation,
checkpoints, exact resume, metrics and seeds, in one process or several.

Plugins own the math (`Trainer`); this module owns everything around it. A
checkpoint is written at the end of every epoch and where `--max-steps` stops a run,
with everything a resumed run needs to continue bit for bit: the model, the
optimizers, the schedules, the trainer's own state, every random generator, the
position inside the epoch (the epoch's data order is redrawn from its saved seed
state and the batches already done are skipped) and the epoch's running loss sums.
Under data-parallel training (`zoo.engine.distributed`) every process keeps its own
generators and running sums, all of which the checkpoint holds; only rank 0 writes.
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
from zoo.engine import distributed, rng, run_files
from zoo.engine.display import ProgressDisplay
from zoo.engine.precision import Precision, channels_last
from zoo.errors import CheckpointError, DiskFull, TrainingDiverged, UsageError, ZooError
from zoo.plugin import Plugin
from zoo.trainer import Progress, Schedule
from zoo.versions import plugin_version, zoo_version

# Seeds of process r's noise and jitter: seed + r * this (rank 0: the one-process seeds).
RANK_SEED_STRIDE = 1_000_003


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
    precision: str | None = None,
    compile: bool | None = None,
    channels_last: bool | None = None,
    data_mode: str = "auto",
) -> TrainResult:
    """Train `plugin` with `config`; returns where it wrote and the per-epoch records.
    A directory that holds a run is refused unless it is resumed or `overwrite` is given.
    `precision`, `compile` and `channels_last` left as None are fp32, off and off, or on
    resume what the checkpoint's run used (a different value given is refused: it would
    change the numbers the resumed run computes)."""
    run = Run(
        plugin,
        config,
        data=data,
        device=device,
        seed=seed,
        resume=resume,
        max_steps=max_steps,
        weights=weights,
        download=download,
        precision=precision,
        compile=compile,
        memory_format=channels_last,
        data_mode=data_mode,
    )
    try:
        return run.fit(out=out, overwrite=overwrite, progress=progress)
    finally:
        distributed.leave(run.context)


DEFAULT_OPTIONS = {"precision": "fp32", "compile": False, "channels_last": False}


def resolve_options(state: dict[str, Any] | None, resume: Any, **given: Any) -> dict[str, Any]:
    """The engine options of a run: those given, else (on resume) the checkpoint's, else
    the defaults. A resumed run computes what the uninterrupted one would, so an option
    given that differs from the checkpoint's is refused by name."""
    recorded = {**DEFAULT_OPTIONS, **((state or {}).get("options") or {})} if state is not None else dict(DEFAULT_OPTIONS)
    out = {}
    for name, value in given.items():
        if state is not None and value is not None and value != recorded[name]:
            flag = "--" + name.replace("_", "-")
            was = recorded[name] if name == "precision" else ("on" if recorded[name] else "off")
            now = value if name == "precision" else ("on" if value else "off")
            raise UsageError(f"--resume keeps the checkpoint's {flag} ({was}); only --epochs may change (got {flag} {now})")
        out[name] = recorded[name] if value is None else value
    return out


class Run:
    """One training run: everything set up on construction, trained by `fit`."""

    def __init__(
        self,
        plugin: Plugin,
        config: Any,
        *,
        data: str | None,
        device: str,
        seed: int | None,
        resume: Any,
        max_steps: int | None,
        weights: str | None,
        download: bool,
        precision: str | None,
        compile: bool | None,
        memory_format: bool | None,
        data_mode: str = "auto",
    ):
        import torch

        from zoo import data as zdata
        from zoo import datasets, models

        self.plugin = plugin
        self.config = config = zconfig.from_dict(type(config), zconfig.to_dict(config), plugin=plugin.name)  # ranges, choices
        if max_steps is not None and max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1, not {max_steps}")
        self.max_steps = max_steps
        self.resume = resume
        self.context = distributed.from_environment()
        self.device = distributed.device_for(self.context, devices.resolve(device))
        distributed.join(self.context, self.device)
        self.shard = {"rank": self.context.rank, "world": self.context.world} if self.context.active else {}

        state = self.state = checkpoint.load(resume, plugin=plugin.name, training=True) if resume is not None else None
        options = resolve_options(state, resume, precision=precision, compile=compile, channels_last=memory_format)
        self.options = options
        self.precision = Precision(options["precision"], self.device)
        self.memory_format = memory_format = options["channels_last"]
        compile = options["compile"]
        if state is not None:
            if seed is not None and seed != int(state.get("seed", 0)):
                raise UsageError(f"--resume keeps the checkpoint's seed {state.get('seed')}; only --epochs may change (got --seed {seed})")
            if data is not None and data != state["data"]:
                raise UsageError(f"--resume keeps the checkpoint's dataset {state['data']!r}; only --epochs may change (got --data {data})")
            written_by = int(state.get("world_size", 1))
            if written_by != self.context.world:
                raise UsageError(
                    f"checkpoint {resume} was written by {written_by} process(es); resume it with --nproc {written_by} "
                    f"(each process's data shard and random state depend on it), not {self.context.world}"
                )
            seed = int(state.get("seed", 0))
        self.seed = seed = 0 if seed is None else seed
        rng.seed_everything(seed)

        self.spec = state["data"] if state is not None else (data or plugin.default_dataset)
        self.request = plugin.data_request(config)
        self.splits = datasets.load(self.spec, self.request, download=download, plugin=plugin.name, mode=data_mode).to(self.device)
        self.info = info = dataclasses.replace(self.splits.info, train_size=len(self.splits.train))
        if state is not None and "data_info" in state:
            saved = zdata.DataInfo.from_json(state["data_info"])
            if saved.train_size is None:  # written before zoo recorded it
                saved = dataclasses.replace(saved, train_size=info.train_size)
            if saved != info:
                raise CheckpointError(
                    f"--data {self.spec} no longer gives what checkpoint {resume} was trained on (its classes, vocabulary or size changed)"
                )

        # The global generator seeded above draws the initial weights, so a run is reproduced
        # by its seed; a resumed run's weights are then replaced by its checkpoint's below.
        source = {"weights": weights} if weights is not None and state is None else {"random_init": True}
        self.model = models.build_model(plugin, config=config, data_info=info, seed=None, **source).model.to(self.device)
        if state is not None:  # before any wrapper renames its keys
            checkpoint.load_state_dict_strict(self.model, state["model"], what=f"checkpoint {resume}")
        if memory_format:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.trainer = plugin.trainer_class(self.model, config, self.device)
        self.steps_per_epoch = self.splits.train.num_batches(config.batch_size, **({"world": self.context.world} if self.shard else {}))
        self.total_steps = config.epochs * self.steps_per_epoch
        self.trainer.plan = Progress(0, 1, 0, self.steps_per_epoch, self.total_steps, config.epochs)
        self.trainer.data_info = info
        self.trainer._scaler = self.precision.scaler
        self.optimizers, self.schedules = optimization(plugin, self.trainer.configure_optimizers())
        trained, self.plain_state = distributed.wrap(self.model, self.optimizers, self.device, self.context)
        if compile:
            trained = _compiled(trained, self.model, self.optimizers)
        self.trainer.model = trained

        self.data_gen = torch.Generator().manual_seed(seed)  # the same order everywhere: each process takes its shard
        # Noise (dropout, a GAN's z) and jitter independent across processes; rank 0 keeps the
        # one-process streams. The initial weights were drawn before, and DDP gave every
        # process rank 0's.
        offset = RANK_SEED_STRIDE * self.context.rank
        if offset:
            torch.manual_seed(seed + offset)
        self.aug_gen = torch.Generator().manual_seed(seed + 1 + offset)
        self.epoch, self.step, self.complete, self.resume_at = 0, 0, True, 0
        self.sums: dict[str, float] = {}
        self.seen = 0
        self.logged_before: dict[str, Any] = {}
        if state is not None:
            self._restore(state)

    # ----------------------------------------------------------------- resume

    def _restore(self, state: dict[str, Any]) -> None:
        resume, config = self.resume, self.config
        saved = state.get("optimizers") or {}
        for name, opt in self.optimizers.items():
            if name not in saved:
                raise CheckpointError(f"checkpoint {resume} has no state for optimizer {name!r}")
            opt.load_state_dict(saved[name])
        saved_schedules = state.get("schedules") or {}
        for name, s in self.schedules.items():
            if name not in saved_schedules:
                raise CheckpointError(f"checkpoint {resume} has no state for schedule {name!r}")
            s.scheduler.load_state_dict(saved_schedules[name])
        self.precision.load_state_dict(state.get("scaler") or {})
        own = (state.get("ranks") or [state])[self.context.rank]  # each process's own generators and sums
        self.trainer.load_state_dict(own.get("trainer") or {})
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.complete = bool(state.get("epoch_complete", True))
        self.resume_at = 0 if self.complete else int(state.get("step_in_epoch", 0))
        rng.restore(own["rng"], self.data_gen, self.aug_gen)
        if not self.complete:
            self.sums = {k: float(v) for k, v in (own.get("sums") or {}).items()}
            self.seen = int(own.get("seen", 0))
            self.logged_before = dict(own.get("logged") or {})
            if self.epoch > config.epochs:
                raise UsageError(f"checkpoint {resume} stopped inside epoch {self.epoch}; pass --epochs N with N >= {self.epoch}")
        if self.complete and self.epoch >= config.epochs:
            raise UsageError(
                f"checkpoint {resume} already finished epoch {self.epoch}; pass --epochs N with N > {self.epoch} to train further"
            )
        if self.max_steps is not None and self.step >= self.max_steps:
            raise UsageError(
                f"checkpoint {resume} is at step {self.step} already; pass --max-steps N with N > {self.step}, or leave it out"
            )
        planned = int(state.get("total_steps") or self.total_steps)
        if planned != self.total_steps and self.context.is_main:
            print(
                f"note: --epochs {config.epochs} plans {self.total_steps} steps where the run planned {planned}; saved schedules "
                f"continue as they were saved (they are not rescaled), while progress.total_steps is now {self.total_steps}",
                flush=True,
            )

    # ----------------------------------------------------------------- the loop

    def progress_at(self, in_epoch: int) -> Progress:
        return Progress(self.step, self.epoch, in_epoch, self.steps_per_epoch, self.total_steps, self.config.epochs)

    def fit(self, *, out: Any, overwrite: bool, progress: str) -> TrainResult:
        main = self.context.is_main
        run_dir = run_files.RunDir(self.plugin.name, out, self.resume, overwrite, main)
        with run_dir as path:
            out_dir = Path(distributed.same_everywhere(self.context, str(path) if path is not None else None))
            self.ckpt_path = out_dir / run_files.CHECKPOINT
            metrics_path = out_dir / run_files.METRICS
            if main:
                self._write_config(out_dir)
                if self.state is not None:
                    run_files.truncate_records(metrics_path, self.epoch, self.complete)
                elif metrics_path.exists():
                    metrics_path.unlink()
            display = ProgressDisplay(progress if main else "none", self.config.epochs)
            history: list[dict[str, Any]] = []
            self.last_good = self.ckpt_path if self.ckpt_path.exists() and self.state is not None else None
            try:
                while self.epoch < self.config.epochs or not self.complete:
                    row, stopped, outputs = self._epoch(display)
                    history.append(row)
                    self._save(stopped, row)  # every process: gathering their states is a collective
                    if main:
                        run_dir.checkpointed = True
                        run_files.append_record(metrics_path, row)
                        for name, (kind, value) in outputs.items():
                            (run_files.save_grid if kind == "grid" else run_files.save_text)(value, out_dir / run_files.SAMPLES / name)
                    display.end_epoch(row)
                    if main and not stopped and self.epoch == self.config.epochs:
                        self._write_end_of_run(out_dir)
                    if stopped or (self.max_steps is not None and self.step >= self.max_steps):
                        break
            except KeyboardInterrupt:
                display.close()
                where = (
                    f"the last complete checkpoint is {self.last_good}"
                    if self.last_good
                    else "no epoch had finished, so no checkpoint was written"
                )
                raise Interrupted(f"interrupted at step {self.step}; {where}") from None
            finally:
                display.close()
            distributed.barrier(self.context)
            return TrainResult(out_dir=out_dir, checkpoint=self.last_good, history=history)

    def _epoch(self, display: ProgressDisplay) -> tuple[dict[str, Any], bool, dict[str, Any]]:
        import torch

        config, trainer = self.config, self.trainer
        if self.complete:
            self.epoch += 1
            self.sums, self.seen, start_at = {}, 0, 0
        else:
            start_at = self.resume_at  # in the middle of the checkpoint's epoch
        self.complete = True
        epoch_start_state = self.data_gen.get_state()  # the epoch's order is drawn from here
        trainer.model.train()  # the DDP or compiled wrapper too, not only the plain model
        trainer._logged, self.logged_before = dict(self.logged_before), {}
        trainer.on_epoch_start(self.progress_at(start_at))
        display.start_epoch(self.epoch, self.steps_per_epoch, start_at)
        in_epoch, stopped, seen_now, first_step = start_at, False, 0, None
        t0 = time.perf_counter()
        batches = self.splits.train.batches(
            config.batch_size, generator=self.data_gen if self.request.shuffle else None, start=start_at, **self.shard
        )
        for batch in batches:
            step_started = time.perf_counter()
            batch = trainer.augment(batch, self.aug_gen)
            if self.memory_format:
                batch = channels_last(batch)
            losses = self._train_step(batch, in_epoch)
            self.step += 1
            in_epoch += 1
            for s in self.schedules.values():
                if s.interval == "step":
                    s.scheduler.step()
            values = {k: float(v) for k, v in (losses or {}).items()}
            for k, v in values.items():
                if not math.isfinite(v):
                    raise TrainingDiverged(
                        f"{k if k.startswith('loss') else 'loss ' + k} became {v} at step {self.step} "
                        f"(epoch {self.epoch}); stopped, {self._kept()}"
                    )
                self.sums[k] = self.sums.get(k, 0.0) + v
            samples = len(next(iter(batch.values())))
            self.seen += samples
            seen_now += samples
            if first_step is None:
                first_step = time.perf_counter() - step_started
            display.step(values)
            if self.max_steps is not None and self.step >= self.max_steps and in_epoch < self.steps_per_epoch:
                stopped = True
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        # Where a stopped epoch resumes from: the state its order was drawn from.
        self.data_state = epoch_start_state if stopped else self.data_gen.get_state()
        self.in_epoch = in_epoch
        metrics, outputs = self._evaluate()
        if not stopped:
            for s in self.schedules.values():
                if s.interval == "epoch":
                    s.scheduler.step(metrics[s.monitor]) if s.monitor else s.scheduler.step()
            trainer.on_epoch_end(self.progress_at(in_epoch), metrics)
        row: dict[str, Any] = {"epoch": self.epoch, "step": self.step}
        if stopped:
            row["epoch_complete"] = False
            row["step_in_epoch"] = in_epoch
        row.update(distributed.mean(self.context, {k: s / max(in_epoch, 1) for k, s in self.sums.items()}))
        row.update({k: float(v) for k, v in metrics.items()})
        if self.schedules:
            row.update({("lr" if len(self.optimizers) == 1 else f"lr_{n}"): o.param_groups[0]["lr"] for n, o in self.optimizers.items()})
        row.update(trainer._logged)
        row["seconds"] = round(seconds, 4)
        row["samples_per_second"] = round(seen_now * self.context.world / seconds, 2) if seconds > 0 else None
        row["world_size"] = self.context.world
        row["global_batch_size"] = config.batch_size * self.context.world
        if first_step is not None and start_at == 0 and self.epoch == 1:
            row["first_step_seconds"] = round(first_step, 4)  # compilation and allocation, apart from throughput
        return row, stopped, outputs

    def _train_step(self, batch: dict[str, Any], in_epoch: int) -> Any:
        try:
            with self.precision.autocast():
                losses = self.trainer.train_step(batch, self.optimizers, self.progress_at(in_epoch))
        except ZooError:
            raise
        except Exception as exc:
            # A loss that leaves its domain (BCE of NaN pixels after --lr 1e30) raises inside
            # the step; when the weights are no longer finite, that is divergence.
            if not all(bool(torch_isfinite(p)) for p in self.model.parameters()):
                raise TrainingDiverged(
                    f"loss became nan at step {self.step + 1} (epoch {self.epoch}): the weights are no longer "
                    f"finite ({type(exc).__name__} in train_step); stopped, {self._kept()}"
                ) from None
            raise
        if self.precision.scaler is not None:
            self.precision.scaler.update()
        return losses

    def _kept(self) -> str:
        return f"the last good checkpoint {self.last_good} is intact" if self.last_good else "no checkpoint was written"

    def _evaluate(self) -> tuple[dict[str, float], dict[str, Any]]:
        """Validation metrics (averaged over the processes' shards) and the epoch's samples
        (rank 0), with the model in eval mode and every global random generator left as
        it was, so evaluating never changes training."""
        import torch

        trainer, batch_size = self.trainer, self.config.batch_size
        trainer.model.eval()
        outputs: dict[str, Any] = {}
        counted = [0]

        def counting(batches: Any) -> Any:
            for batch in batches:
                counted[0] += len(next(iter(batch.values())))
                yield batch

        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), torch.no_grad(), self.precision.autocast():
            metrics = trainer.evaluate(counting(self.splits.val.batches(batch_size, **self.shard))) or {}
            if self.context.is_main:
                val_batch = next(iter(self.splits.val.batches(16)))
                grid = trainer.sample_grid(torch.Generator().manual_seed(self.seed), val_batch)
                text = trainer.sample_text(torch.Generator().manual_seed(self.seed), val_batch)
                if grid is not None:
                    outputs[f"epoch_{self.epoch:03d}.png"] = ("grid", grid)
                if text is not None:
                    outputs[f"epoch_{self.epoch:03d}.txt"] = ("text", text)
        metrics = distributed.mean(self.context, {k: float(v) for k, v in metrics.items()}, weight=max(counted[0], 1))
        return metrics, outputs

    # ----------------------------------------------------------------- files

    def _own_state(self, complete: bool) -> dict[str, Any]:
        """What each process keeps to itself: its generators, trainer state and running sums."""
        return {
            "trainer": self.trainer.state_dict(),
            "rng": rng.capture(self.data_state, self.aug_gen),
            "sums": dict(self.sums) if not complete else {},
            "seen": self.seen if not complete else 0,
            "logged": dict(self.trainer._logged) if not complete else {},
        }

    def _save(self, stopped: bool, record: dict[str, Any]) -> None:
        complete = not stopped
        own = self._own_state(complete)
        ranks = distributed.gather(self.context, own)
        if not self.context.is_main:
            return
        state = {
            "plugin": self.plugin.name,
            "plugin_version": plugin_version(self.plugin),
            "zoo_version": zoo_version(),
            "config": zconfig.to_dict(self.config),
            "data": self.spec,
            "data_info": self.info.to_json(),
            "seed": self.seed,
            "epoch": self.epoch,
            "epoch_complete": complete,
            "step": self.step,
            "step_in_epoch": self.in_epoch,
            "total_steps": self.total_steps,
            "world_size": self.context.world,
            "model": self.plain_state(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedules": {n: s.scheduler.state_dict() for n, s in self.schedules.items()},
            "scaler": self.precision.state_dict(),
            "options": dict(self.options),
            **own,
            "metrics": record,
        }
        if self.context.active:
            state["ranks"] = ranks
        try:
            checkpoint.save(state, self.ckpt_path)
        except DiskFull as exc:
            hint = f"; free some space and --resume {self.last_good}" if self.last_good else ""
            raise DiskFull(f"{str(exc).split('; nothing was changed')[0]}; stopped at step {self.step}, {self._kept()}{hint}") from None
        self.last_good = self.ckpt_path

    def _write_config(self, out_dir: Path) -> None:
        checkpoint.write_json(
            {
                "plugin": self.plugin.name,
                "plugin_version": plugin_version(self.plugin),
                "zoo_version": zoo_version(),
                "data": self.spec,
                "data_details": self.splits.details,
                "data_info": self.info.to_json(),
                "seed": self.seed,
                "device": str(self.device),
                "world_size": self.context.world,
                "precision": self.precision.name,
                "config": zconfig.to_dict(self.config),
            },
            out_dir / run_files.CONFIG,
        )

    def _write_end_of_run(self, out_dir: Path) -> None:
        import torch

        self.model.eval()
        with torch.no_grad():
            files = self.trainer.end_of_run(self.splits.val.batches(self.config.batch_size)) or {}
        for name, value in files.items():
            if Path(name).name != name or name.startswith("."):
                raise ZooError(f"end_of_run returned the file name {name!r}; use a plain name such as confusion.png")
            if name.endswith(".png"):
                run_files.save_grid(value, out_dir / name)
            elif name.endswith(".json"):
                checkpoint.write_json(value, out_dir / name)
            else:
                run_files.save_text(str(value), out_dir / name)


def torch_isfinite(p: Any) -> Any:
    import torch

    return torch.isfinite(p).all()


def _compiled(trained: Any, model: Any, optimizers: dict[str, Any]) -> Any:
    """`torch.compile` on what the trainer calls: the whole module, or (several optimizers)
    each top-level child one optimizer trains."""
    import torch

    if trained is not model or len(optimizers) <= 1:
        return torch.compile(trained)
    owned = [{id(p) for g in opt.param_groups for p in g["params"]} for opt in optimizers.values()]
    for name, child in list(model.named_children()):
        params = {id(p) for p in child.parameters()}
        if params and any(params <= ids for ids in owned):
            setattr(model, name, torch.compile(child))
    return model
