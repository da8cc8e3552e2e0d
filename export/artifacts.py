"""Load any file `zoo export` wrote and run it: `zoo.export.artifacts.load(path)`.

The format is read from the file's content, not its name: ONNX is a protobuf,
TorchScript and `.pt2` are zip archives told apart by their layout. Every failure
(missing, truncated, foreign, wrong device, wrong inputs) is one `ZooError` line.

    art = load("exports/vae/decoder.onnx")
    art.metadata["inputs"]        # [{"name": "z", "shape": ["batch", 20], ...}]
    (image,) = art(z)             # numpy arrays (or torch tensors) in, numpy out
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

METADATA_KEY = "zoo.json"
NUMPY_DTYPES = {
    "float32": "float32",
    "float64": "float64",
    "float16": "float16",
    "int64": "int64",
    "int32": "int32",
    "bool": "bool",
    "uint8": "uint8",
}


def sniff(path: Path) -> str:
    """`torchscript`, `pt2` or `onnx` from the bytes of `path`."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise ZooError(f"{path} is empty")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ZooError(f"{path} is truncated or corrupt ({exc})") from None
        if any("/aotinductor/" in n for n in names):
            return "pt2"
        if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
            return "torchscript"
        raise ZooError(f"{path} is a zip archive but neither TorchScript nor an AOTInductor .pt2 package")
    return "onnx"


def _parse(text: str | bytes, path: Path) -> dict[str, Any]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text:
        raise ZooError(f"{path} has no zoo metadata ({METADATA_KEY}); it was not written by `zoo export`")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path}: its {METADATA_KEY} metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "inputs" not in meta or "outputs" not in meta:
        raise ZooError(f"{path}: its {METADATA_KEY} metadata lacks inputs/outputs")
    return meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The `zoo.json` document of an artifact without loading its code."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"artifact {path} does not exist")
    fmt = sniff(path)
    try:
        if fmt == "onnx":
            import onnx

            try:
                model = onnx.load(str(path), load_external_data=False)
            except Exception as exc:
                raise ZooError(
                    f"{path} is not a readable ONNX model (truncated or corrupt?): {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}"
                ) from None
            props = {p.key: p.value for p in model.metadata_props}
            return _parse(props.get(METADATA_KEY, ""), path)
        with zipfile.ZipFile(path) as archive:
            if fmt == "torchscript":
                entry = next((n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_KEY}")), None)
                return _parse(archive.read(entry) if entry else "", path)
            for name in archive.namelist():
                if "/aotinductor/" in name and name.endswith("_metadata.json"):
                    return _parse(json.loads(archive.read(name)).get(METADATA_KEY, ""), path)
            return _parse("", path)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ZooError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None


class Artifact:
    """One loaded artifact on one device: call it with inputs in metadata order."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        metadata: dict[str, Any],
        device: str,
        run: Callable[[list], Sequence[Any]],
        to_native: Callable[[Any, str], Any],
    ):
        self.path = path
        self.format = fmt
        self.metadata = metadata
        self.device = device
        self._run = run
        self._to_native = to_native

    @property
    def input_names(self) -> list[str]:
        return [spec["name"] for spec in self.metadata["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [spec["name"] for spec in self.metadata["outputs"]]

    def __repr__(self) -> str:
        return f"<Artifact {self.format} {self.metadata.get('plugin')}:{self.metadata.get('target')} on {self.device} from {self.path}>"

    def prepare(self, *inputs: Any) -> list[Any]:
        """Check inputs against the metadata (count, dtype, rank, fixed sizes) and
        convert them to what the runtime takes (tensors on the device, or numpy)."""
        specs = self.metadata["inputs"]
        if len(inputs) != len(specs):
            names = ", ".join(self.input_names)
            raise ZooError(f"{self.path.name} takes {len(specs)} input(s) ({names}), got {len(inputs)}")
        prepared = []
        for spec, value in zip(specs, inputs):
            shape = tuple(value.shape)
            dtype = str(value.dtype).replace("torch.", "")
            want = spec["shape"]
            if dtype != spec["dtype"]:
                raise ZooError(f"input {spec['name']!r} of {self.path.name} must be {spec['dtype']}, got {dtype}")
            if len(shape) != len(want) or any(isinstance(w, int) and w != s for w, s in zip(want, shape)):
                raise ZooError(f"input {spec['name']!r} of {self.path.name} must have shape {want}, got {list(shape)}")
            prepared.append(self._to_native(value, spec["dtype"]))
        return prepared

    def run_prepared(self, prepared: list[Any]) -> tuple[Any, ...]:
        """Run on inputs from `prepare`; outputs stay in the runtime's own type."""
        try:
            outputs = self._run(prepared)
        except ZooError:
            raise
        except Exception as exc:
            from zoo.export.formats import one_line

            raise ZooError(f"{self.path.name} failed to run: {one_line(exc)}") from None
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)

    def __call__(self, *inputs: Any) -> tuple[Any, ...]:
        """Run the artifact; returns numpy arrays in metadata output order."""
        outputs = self.run_prepared(self.prepare(*inputs))
        return tuple(_to_numpy(o) for o in outputs)


def _to_numpy(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()


def _torch_device(device: str) -> Any:
    from zoo import devices

    return devices.resolve(device)


def _tensor_converter(device: Any) -> Callable[[Any, str], Any]:
    import numpy as np
    import torch

    def convert(value: Any, dtype: str) -> Any:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        return value.to(device)

    return convert


def _numpy_converter(value: Any, dtype: str) -> Any:
    import numpy as np

    if not isinstance(value, np.ndarray):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=NUMPY_DTYPES.get(dtype, dtype))


def _load_torchscript(path: Path, metadata: dict[str, Any], device: Any) -> Callable[[list], Any]:
    import torch

    from zoo.export._quiet import quiet

    with quiet():
        module = torch.jit.load(str(path), map_location=device)
    module.eval()

    def run(inputs: list) -> Any:
        with torch.inference_mode():
            return module(*inputs)

    return run


def _load_pt2(path: Path, metadata: dict[str, Any], device: Any) -> Callable[[list], Any]:
    import torch
    import torch._inductor

    from zoo.export._quiet import quiet

    built_for = metadata.get("device", "cpu")
    if built_for != device.type:
        if built_for == "cuda" and not torch.cuda.is_available():
            raise ZooError(f"{path.name} was compiled for CUDA and this machine has no CUDA device; export a CPU .pt2 here")
        raise ZooError(f"{path.name} was compiled for {built_for}; load it with device={built_for!r}, not {device.type!r}")
    with quiet():
        model = torch._inductor.aoti_load_package(str(path), device_index=device.index if device.index is not None else -1)

    def run(inputs: list) -> Any:
        with torch.inference_mode():
            return model(*inputs)

    return run


_ORT_PRELOADED = False


def onnxruntime_session(path: Path, device: Any) -> Any:
    """An InferenceSession on the CPU, or on CUDA with TF32 off (parity is fp32)."""
    import onnxruntime as ort

    global _ORT_PRELOADED
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if "torch" in sys.modules:
        import torch

        # Same thread budget as eager PyTorch, so latency comparisons are fair.
        options.intra_op_num_threads = torch.get_num_threads()
    if device.type == "cuda":
        if not _ORT_PRELOADED and hasattr(ort, "preload_dlls"):
            # Finds the CUDA and cuDNN libraries that the torch wheel installed.
            ort.preload_dlls()
            _ORT_PRELOADED = True
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0, "use_tf32": 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    if device.type == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise ZooError(
            f"onnxruntime {ort.__version__} cannot use CUDA here (providers: {', '.join(session.get_providers())}); install onnxruntime-gpu built for this CUDA"
        )
    return session


def _load_onnx(path: Path, metadata: dict[str, Any], device: Any) -> Callable[[list], Any]:
    session = onnxruntime_session(path, device)
    input_names = [spec["name"] for spec in metadata["inputs"]]
    output_names = [spec["name"] for spec in metadata["outputs"]]
    graph_inputs = [i.name for i in session.get_inputs()]
    if graph_inputs != input_names:
        raise ZooError(f"{path.name}: graph inputs {graph_inputs} differ from its metadata {input_names}")

    def run(inputs: list) -> Any:
        return session.run(output_names, dict(zip(input_names, inputs)))

    return run


LOADERS = {"torchscript": _load_torchscript, "pt2": _load_pt2, "onnx": _load_onnx}


def load(path: str | Path, device: str = "cpu") -> Artifact:
    """Load an artifact written by `zoo export` onto `device` (`cpu`, `cuda`, `cuda:N`, or
    `auto`: CUDA when present, and a `.pt2` on the device it was compiled for)."""
    path = Path(path)
    metadata = read_metadata(path)
    fmt = sniff(path)
    if metadata.get("format") not in (None, fmt):
        raise ZooError(f"{path}: its metadata says format {metadata.get('format')!r} but the file is {fmt}")
    if device == "auto" and fmt == "pt2":
        device = metadata.get("device", "cpu")  # a .pt2 holds code for one device kind
    dev = _torch_device(device)
    try:
        run = LOADERS[fmt](path, metadata, dev)
    except ZooError:
        raise
    except Exception as exc:
        from zoo.export.formats import one_line

        raise ZooError(f"{path} cannot be loaded as {fmt} (truncated or corrupt?): {one_line(exc)}") from None
    convert = _numpy_converter if fmt == "onnx" else _tensor_converter(dev)
    return Artifact(path, fmt, metadata, str(dev), run, convert)
