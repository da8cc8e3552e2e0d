"""`zoo train PLUGIN --nproc N`: N training processes on this machine through torch's
elastic launcher (`torch.distributed.run`, what `torchrun` runs).

The launcher starts `python -m zoo train ...` N times with RANK, WORLD_SIZE and
LOCAL_RANK set, each with its share of the CPU threads (cores / N, unless --threads),
and waits. When a process fails, the agent stops the others (no hang) and this prints
one line: the failing process's own error, or how it died (a signal, an exit code).
For several machines, run `torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d
--rdzv-endpoint HOST:PORT -m zoo train PLUGIN ...` on each (see the README).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path

from zoo.errors import UsageError, ZooError

ENV_ERRORS = "ZOO_ERROR_DIR"  # where each process writes its one-line error for the launcher


class ProcessFailed(ZooError):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def launch(argv: list[str], nproc: int, threads: int | None = None) -> None:
    """Run `zoo <argv>` in `nproc` processes; returns when all succeeded."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, not {nproc}")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    per_process = threads or max(1, (os.cpu_count() or 1) // nproc)
    with tempfile.TemporaryDirectory(prefix="zoo-ranks-") as errors:
        os.environ["OMP_NUM_THREADS"] = str(per_process)
        os.environ[ENV_ERRORS] = errors
        os.environ["ZOO_PROCESS_THREADS"] = str(per_process)
        args = get_args_parser().parse_args(
            ["--nproc-per-node", str(nproc), "--standalone", "--max-restarts", "0", "--monitor-interval", "0.5", "--module", "zoo", *argv]
        )
        for name in ("torch.distributed.elastic", "torch.distributed.run"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # its report would bury the one line
        try:
            run(args)
        except ChildFailedError as exc:
            raise _explain(exc, Path(errors), nproc) from None
        finally:
            os.environ.pop(ENV_ERRORS, None)


def _explain(exc: object, errors: Path, nproc: int) -> ProcessFailed:
    failures = getattr(exc, "failures", {}) or {}
    if failures:
        # The cause, not its consequences: the processes the agent stopped (SIGTERM) and the
        # ones whose connection to a dead peer broke come last; a process killed by a signal
        # first, then the earliest failure.
        def order(rank: int) -> tuple:
            code = getattr(failures[rank], "exitcode", 1) or 1
            return (code == -signal.SIGTERM, code > 0, getattr(failures[rank], "timestamp", 0), rank)

        rank = min(failures, key=order)
        failure = failures[rank]
        written = errors / f"rank{rank}.txt"
        if written.is_file():
            code, _, message = written.read_text().partition("\t")
            return ProcessFailed(message.strip(), int(code) if code.isdigit() else 1)
        code = int(getattr(failure, "exitcode", 1) or 1)
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code < 0 and -code in signal.Signals._value2member_map_
            else f"exited with code {code}"
        )
        return ProcessFailed(
            f"training process {rank} of {nproc} {how} (pid {getattr(failure, 'pid', '?')}); the launcher stopped "
            "the others; the last checkpoint rank 0 wrote, if any, is intact"
        )
    return ProcessFailed(f"a training process failed: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else 'no details'}")


def report_error(message: str, exit_code: int) -> bool:
    """In a process started by `launch`: hand the one-line error to the launcher (True),
    so N processes failing alike print it once."""
    where = os.environ.get(ENV_ERRORS)
    rank = os.environ.get("RANK")
    if not where or rank is None:
        return False
    try:
        (Path(where) / f"rank{rank}.txt").write_text(f"{exit_code}\t{message}")
    except OSError:
        return False
    return True
