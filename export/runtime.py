"""What a runtime is, and the registry of installed ones (`zoo.runtimes`).

A runtime runs artifacts where they will be deployed: `python` in this process,
`cpp` in libtorch C++ (`zoo-run`), `node` in onnxruntime-node. Each is one `Runtime`
object registered under the `zoo.runtimes` entry-point group (zoo's own in its
`pyproject.toml`, like a third party's). It says which formats it runs, whether it
is available here (and why not), opens an artifact as a `Session` that runs inputs
and measures latency. `zoo verify --runtime NAME` takes its choices from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import _registry

if TYPE_CHECKING:
    import numpy
    import torch

    from zoo.export.format import Format


class Session:
    """One artifact opened in one runtime on one device."""

    def run(self, inputs: Sequence[torch.Tensor]) -> dict[str, numpy.ndarray]:
        """Outputs by name, in the artifact's metadata order, for inputs in metadata order."""
        raise NotImplementedError

    def latency_ms(self, inputs: Sequence[torch.Tensor]) -> float:
        """Median milliseconds of one call on `inputs`, timed around the model call alone."""
        raise NotImplementedError


class Runtime:
    """Subclass it, set the class attributes, implement `available` and `open`, and
    register an instance under `zoo.runtimes`."""

    name: str = ""
    summary: str = ""
    # Formats it runs (None: every installed format).
    formats: tuple[str, ...] | None = ()
    # Where it goes among the runtimes in tables and `--runtime all` (lower first).
    order: int = 100

    def available(self) -> tuple[bool, str]:
        """Whether it can run here, and a sentence saying why (not)."""
        raise NotImplementedError

    def runs(self, fmt: str) -> bool:
        return self.formats is None or fmt in self.formats

    def skip_reason(self, device: str) -> str | None:
        """Why it cannot run on `device` ("cpu", "cuda"), or None."""
        return None

    def format_skip_reason(self, fmt: Format, device: str) -> str | None:
        """Why it cannot run `fmt` files on `device` although it runs that device (a
        library built without it), or None."""
        return None

    def open(self, path: Path, device: torch.device) -> Session:
        """The artifact at `path` ready to run on `device`; a ZooError says why not."""
        raise NotImplementedError

    def checks_per_case(self, fmt: Format) -> int:
        """Runs per parity check (a runtime that re-optimises after its first calls is
        checked in its steady state too)."""
        return 1

    def latency_label(self, fmt: Format) -> str:
        """How latency rows name this runtime running `fmt`."""
        return f"{self.name}:{fmt.name}"

    def __repr__(self) -> str:
        return f"<zoo runtime {self.name}>"


def _runtime_class() -> type:
    return Runtime


def _check_runtime(runtime: Any) -> str | None:
    if not runtime.name:
        return "a runtime needs a name"
    return None


runtimes = _registry.Registry("zoo.runtimes", "runtime", _runtime_class, "ZOO_RUNTIMES", validate=_check_runtime)
_registry._extra.append(runtimes)


def installed() -> list[Runtime]:
    loaded = [e.obj for e in runtimes.entries().values() if e.obj is not None]
    return sorted(loaded, key=lambda r: (r.order, r.name))


def names() -> list[str]:
    return [r.name for r in installed()]


def get(name: str) -> Runtime:
    return runtimes.get(name, what="unknown runtime")


def feed(session_inputs: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """{name: numpy array} of inputs in metadata order (what native runners read)."""
    import numpy as np

    arrays = {}
    for name, value in zip(names, session_inputs):
        arrays[name] = value if isinstance(value, np.ndarray) else value.detach().cpu().numpy()
    return arrays
