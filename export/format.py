"""What an export format is, and the registry of installed ones (`zoo.formats`).

A format is one `Format` object registered under the `zoo.formats` entry-point group;
zoo's own (TorchScript, ONNX, AOTInductor `.pt2`) are registered in its
`pyproject.toml` exactly as a third party's would be:

    [project.entry-points."zoo.formats"]
    myformat = "my_package.my_format:format"

It knows how to export a target to a file (`export`), recognise its files by their
bytes (`sniff`), read the `zoo.json` metadata back (`read_metadata`) and load a file
into something that runs (`load`). The pipeline, `zoo verify`, the artifact loader and
the CLI flags (`--NAME`, `--format NAME`, `--all-formats`) all come from this registry.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import _registry
from zoo.errors import ZooError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from zoo.plugin import ExportTarget, Plugin

Log = Callable[[str], None]


@dataclass
class Loaded:
    """A loaded artifact: `run(inputs)` takes inputs in metadata order, already
    converted to what the runtime takes: torch tensors on the device (`takes="torch"`)
    or host numpy arrays (`takes="numpy"`), and returns the outputs in metadata order."""

    run: Callable[[list], Sequence[Any]]
    takes: str = "torch"


@dataclass
class Probe:
    """What `sniff` looks at: the first bytes of a file and, for a zip archive, its member names."""

    path: Path
    head: bytes
    names: list[str] | None = None  # None: not a zip archive


@dataclass
class ExportJob:
    """One export target on its way out: what every format's `export` is given."""

    plugin: Plugin
    target: ExportTarget
    model: nn.Module  # the whole model, eval mode, on the CPU
    module: nn.Module  # target.module(model)
    config: Any
    data_info: Any
    export_inputs: tuple  # at the export batch and the export size of every axis
    check_inputs: tuple  # one batch larger, from another seed: what a trace is re-run on
    metadata: dict[str, Any]  # the `zoo.json` part every format of this target shares
    options: dict[str, Any] = field(default_factory=dict)  # resolved format options, e.g. {"opset": 25}
    _programs: dict[str, Any] = field(default_factory=dict)

    def module_on(self, device: torch.device) -> nn.Module:
        """The target's module on `device` (a copy of the model for any device but the CPU)."""
        if device.type == "cpu":
            return self.module
        return self.target.module(copy.deepcopy(self.model).to(device)).eval()

    def program(self, device: torch.device | None = None, purpose: str = "") -> Any:
        """The `torch.export` program of the module on `device` (cached): one capture
        serves every format that needs it. `purpose` names them in an error."""
        import torch

        from zoo.export.parity import strict_fp32
        from zoo.export.program import torch_export

        device = device or torch.device("cpu")
        if device.type not in self._programs:
            # On CUDA with TF32 off: Inductor fixes its kernels' matmul precision at capture.
            with strict_fp32(device.type):
                inputs = tuple(t.to(device) for t in self.export_inputs)
                self._programs[device.type] = torch_export(self.module_on(device), self.target, inputs, purpose=purpose, config=self.config)
        return self._programs[device.type]


class Format:
    """One kind of artifact. Subclass it, set the class attributes, implement the four
    methods, and register an instance under `zoo.formats`."""

    name: str = ""
    # One line for `zoo export --help` (the `--NAME` flag).
    summary: str = ""
    # The exporters this format offers: {exporter name: what the metadata's
    # `exported_with` records}. A target picks one with `exporters={name: exporter}`.
    exporters: Mapping[str, str] = {}
    default_exporter: str = ""
    # Whether a plain `zoo export` (no format option) writes it.
    in_default_export: bool = True
    # Where it goes among the formats, in tables and exports (lower first).
    order: int = 100
    # One artifact per device kind (machine code for one device), named by `file_name`.
    per_device: bool = False
    # Export options this format takes (`opset` for ONNX); see `prepare`.
    options: tuple[str, ...] = ()
    # Metadata keys also listed in the artifact's export.json record (opset, device).
    record_keys: tuple[str, ...] = ()
    # How the in-process runtime's latency row names it (default: the format's name).
    latency_name: str = ""
    # Calls per parity check in process: a runtime that re-optimises after its first
    # calls (TorchScript's profiling executor) is checked in its steady state too.
    parity_runs: int = 1
    # Bytes a file takes beyond the target's weights (code, graph, compiled kernels): with
    # the weights, what `zoo export` checks is free before it writes anything.
    size_overhead: int = 256 << 10

    def file_name(self, target: str, device: str = "cpu") -> str:
        return f"{target}.{self.name}"

    def prepare(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check and resolve the export options this format takes, before any slow
        work: e.g. {"opset": None} -> {"opset": 25}. Recorded in export.json."""
        return {}

    def exporter_for(self, target: ExportTarget) -> str:
        """The exporter `target` uses for this format, checked to be one it offers."""
        choice = target.exporter(self.name, self.default_exporter)
        if choice not in self.exporters:
            raise ZooError(f"target {target.name!r} asks for exporter {choice!r} for {self.name}, which offers {', '.join(self.exporters)}")
        return choice

    def needs_program(self, target: ExportTarget) -> bool:
        """Whether exporting `target` goes through `torch.export` (`ExportJob.program`)."""
        return False

    def export(self, job: ExportJob, path: Path, device: torch.device) -> dict[str, Any]:
        """Write `job`'s target to `path` (atomically) for `device`; return its metadata."""
        raise NotImplementedError

    def skip_reason(self, device: str) -> str | None:
        """Why files of this format cannot run on `device` ("cpu", "cuda") in this
        process (a library built without that device), or None. Such checks are skipped
        with the reason, never failed and never passed."""
        return None

    def training_ops(self, job: ExportJob, path: Path, device: torch.device) -> list[str]:
        """Operations in the written file that belong only in training (dropout still
        dropping, batch norm using the batch's statistics, random sampling), each named
        with its module (`zoo.export.graph_checks`); [] when there are none. A format
        that cannot look inside its files returns []: parity's repeated calls remain."""
        return []

    def intermediate_values(self, path: Path, trace: list, inputs: Sequence[Any], input_names: Sequence[str]) -> list:
        """For localizing a parity failure (`zoo.export.localize`): the artifact's value of
        each submodule output in `trace` (eager `Seen` records), as (seen, value, op)."""
        raise ZooError(f"{self.name} files do not expose their intermediate values; this artifact cannot be localized")

    def sniff(self, probe: Probe) -> bool:
        """Whether the probed file is one of this format's, judged by content."""
        raise NotImplementedError

    def read_metadata(self, path: Path) -> dict[str, Any]:
        """The file's `zoo.json` document, without loading its code."""
        raise NotImplementedError

    def load(self, path: Path, metadata: dict[str, Any], device: torch.device) -> Loaded:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<zoo format {self.name}>"


def _format_class() -> type:
    return Format


def _check_format(fmt: Any) -> str | None:
    if not fmt.name or not fmt.name.replace("-", "").replace("_", "").isalnum():
        return f"format {fmt.name!r}: a name of letters, digits, - and _ is required"
    if fmt.default_exporter not in fmt.exporters:
        return f"format {fmt.name!r}: default_exporter {fmt.default_exporter!r} is not one of its exporters {list(fmt.exporters)}"
    return None


formats = _registry.Registry("zoo.formats", "format", _format_class, "ZOO_FORMATS", validate=_check_format)
_registry._extra.append(formats)


def installed() -> list[Format]:
    """Every format that loaded, in export order."""
    loaded = [e.obj for e in formats.entries().values() if e.obj is not None]
    return sorted(loaded, key=lambda f: (f.order, f.name))


def names() -> list[str]:
    return [f.name for f in installed()]


def get(name: str) -> Format:
    return formats.get(name, what="unknown format")


def default_names() -> list[str]:
    return [f.name for f in installed() if f.in_default_export]


def order_key(name: str) -> int:
    """Where format `name` sorts (one that is not installed goes last)."""
    known = names()
    return known.index(name) if name in known else len(known)
