"""Keep the exporters' chatter off the user's terminal without hiding failures.

torch.onnx prints its progress, torch.jit warns that it is deprecated on every call,
onnxscript logs each optimisation pass and Inductor logs compiler discovery. None of
that is actionable for a `zoo export` user; exceptions still propagate unchanged and
the command turns them into one line. `ZOO_EXPORT_VERBOSE=1` shows everything.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

# Loggers whose INFO/WARNING output is progress or advice, never a failure.
NOISY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch._inductor",
    "torch.utils.cpp_extension",
    "torch.fx.experimental.symbolic_shapes",
    "onnxscript",
    "onnx_ir",
)


def verbose() -> bool:
    return os.environ.get("ZOO_EXPORT_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Silence deprecation warnings, progress prints and INFO/WARNING logs inside the
    block; yields the captured text so a caller can show it with an error."""
    captured = io.StringIO()
    if verbose():
        yield captured
        return
    saved = {}
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            try:
                from torch.jit import TracerWarning

                # A trace is checked by re-running it at another batch size, which
                # catches what these warnings guess at.
                warnings.simplefilter("ignore", TracerWarning)
            except ImportError:  # pragma: no cover - torch always has it
                pass
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                yield captured
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
