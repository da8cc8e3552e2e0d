"""Test vectors: seeded inputs and the eager outputs, shipped beside every artifact.

At export, each target's `make_inputs` (seed `SEED`, batch `BATCH`, the export size of
every other dynamic axis) runs through the eager module on the CPU, and the inputs and
outputs are saved as `.npy` files in the export directory:

    vectors/<target>/inputs/<name>.npy
    vectors/<target>/outputs/<name>.npy

The artifact's `zoo.json` names them under `test_vectors` (paths relative to the
artifact's directory, sha256, shape, dtype) with the tolerances, so a runner given only
the file finds them: `zoo-run FILE --self-test` and `node export/node/zoo-run.js FILE
--self-test` run the artifact on them, with no Python on the machine. `export.json`
lists them in each artifact's record and `zoo verify` refuses one whose bytes changed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.export.metadata import TEST_VECTORS_KEY

if TYPE_CHECKING:
    import numpy

    from zoo.export.format import ExportJob

KEY = TEST_VECTORS_KEY  # where the metadata and the export.json records hold them
DIRECTORY = "vectors"
# A seed apart from the export inputs' (0) and a trace's check inputs' (1).
SEED = 2
# Above 1, so a graph that mixes samples across the batch fails; small, so the files are.
BATCH = 2
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _file_name(name: str, index: int, kind: str) -> str:
    """`name` if it is a safe file name, else its position (`input0`)."""
    return name if _SAFE.match(name) and not name.endswith(".") else f"{kind}{index}"


def _npy_bytes(array: numpy.ndarray) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _close(old: numpy.ndarray, new: numpy.ndarray, rtol: float, atol: float) -> bool:
    """Whether an existing output vector still stands for `new` (the parity rule)."""
    import numpy as np

    if old.shape != new.shape or old.dtype != new.dtype:
        return False
    if not np.issubdtype(new.dtype, np.floating):
        return bool(np.array_equal(old, new))
    return bool(np.allclose(old, new, rtol=rtol, atol=atol, equal_nan=True))


def save(
    directory: Path,
    target: str,
    inputs: Mapping[str, numpy.ndarray],
    outputs: Mapping[str, numpy.ndarray],
    rtol: float,
    atol: float,
    **extra: Any,
) -> dict[str, Any]:
    """Write one target's vectors under `directory` and return the `test_vectors`
    section of its metadata. Files already there from an export of the same weights
    (identical inputs, outputs within the tolerances) are kept as they are, so
    artifacts exported earlier into the directory still match their hashes."""
    import hashlib

    import numpy as np

    from zoo import checkpoint

    base = Path(DIRECTORY) / _file_name(target, 0, "target")
    encoded = {kind: {name: _npy_bytes(a) for name, a in arrays.items()} for kind, arrays in (("inputs", inputs), ("outputs", outputs))}
    planned = {
        kind: [(name, base / kind / f"{_file_name(name, i, kind[:-1])}.npy") for i, name in enumerate(arrays)]
        for kind, arrays in encoded.items()
    }

    def still_valid() -> bool:
        try:
            for name, rel in planned["inputs"]:
                if (directory / rel).read_bytes() != encoded["inputs"][name]:
                    return False
            for name, rel in planned["outputs"]:
                if not _close(np.load(directory / rel, allow_pickle=False), np.asarray(outputs[name]), rtol, atol):
                    return False
        except (OSError, ValueError):
            return False
        return True

    keep = still_valid()
    section: dict[str, Any] = {"rtol": rtol, "atol": atol, **extra}
    for kind, arrays in (("inputs", inputs), ("outputs", outputs)):
        entries = []
        for name, rel in planned[kind]:
            data = (directory / rel).read_bytes() if keep else encoded[kind][name]
            if not keep:
                checkpoint.atomic_write(directory / rel, lambda fh, data=data: fh.write(data), size_hint=len(data))
            array = np.asarray(arrays[name])
            entries.append(
                {
                    "name": name,
                    "path": rel.as_posix(),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data),
                    "shape": list(array.shape),
                    "dtype": str(array.dtype),
                }
            )
        section[kind] = entries
    return section


def write(directory: Path, job: ExportJob) -> dict[str, Any]:
    """The vectors of `job`'s target: its seeded example inputs at batch `BATCH` and
    what the eager module (on the CPU) gives for them."""
    import torch

    from zoo.export_support import as_tuple

    target = job.target
    tensors = target.make_inputs(job.config, BATCH, torch.Generator().manual_seed(SEED), data=job.data_info)
    with torch.inference_mode():
        results = as_tuple(job.module(*tensors))
    inputs = {spec.name: t.detach().cpu().numpy() for spec, t in zip(target.inputs, tensors)}
    outputs = {spec.name: t.detach().cpu().numpy() for spec, t in zip(target.outputs, results)}
    return save(directory, target.name, inputs, outputs, target.rtol, target.atol, seed=SEED, batch=BATCH)


def files(section: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every file a `test_vectors` section names (inputs, then outputs)."""
    if not section:
        return []
    return [*section.get("inputs", []), *section.get("outputs", [])]


def check(directory: Path, section: Mapping[str, Any] | None, listed_in: str) -> None:
    """Every vector `section` names exists under `directory` with the bytes it had at export."""
    from zoo.checkpoint import sha256_file

    for entry in files(section):
        path = directory / entry["path"]
        if not path.is_file():
            raise ZooError(f"test vector {path} listed in {listed_in} is missing")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ZooError(
                f"test vector {path} was modified after export (sha256 {actual[:12]}..., {listed_in} says {entry['sha256'][:12]}...); "
                "refusing to verify it"
            )


def intact(directory: Path, section: Mapping[str, Any] | None) -> bool:
    try:
        check(directory, section, "")
    except ZooError:
        return False
    return True
