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


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The most specific line of an exception chain: exporters wrap the real cause
    (an unsupported operator, a data-dependent branch) in generic 'step 1/3' errors."""
    import re
    from pathlib import Path

    chain = []
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    for err in reversed(chain):
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        # Skip banner lines that only say which step failed or link to docs.
        useful = [ln for ln in lines if not ln.startswith(("Failed to export", "For detailed", "Please ", "Traceback", "##"))]
        # TorchScript's interpreter wraps the real error ("RuntimeError: shape ...") last.
        nested = [ln for ln in useful[1:] if re.match(r"^[A-Za-z_.]*(Error|Exception): ", ln)]
        if nested:
            useful = [nested[-1].split(": ", 1)[1]]
        if useful:
            text = useful[0]
            where = next((ln for ln in lines if ln.startswith('File "')), None)
            if where is not None:
                m = re.match(r'File "([^"]+)", line (\d+)', where)
                if m:
                    text += f" ({Path(m.group(1)).name}:{m.group(2)})"
            return f"{type(err).__name__}: {text}"[:limit]
    return type(chain[0]).__name__ if chain else "unknown error"
