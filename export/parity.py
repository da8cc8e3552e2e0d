"""Parity: does an exported file compute what eager PyTorch computes?

Outputs are compared by name, shape, dtype and value: |artifact - eager| <= atol +
rtol * |eager| element-wise (numpy's `allclose` rule), integers exactly, NaN only
where eager has NaN. CUDA checks run with TF32 off, so fp32 means fp32 on every side.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# Inputs of every parity check come from this seed (one generator per batch size).
PARITY_SEED = 0


def compare(
    expected: Sequence[Any], actual: Sequence[Any], expected_names: Sequence[str], actual_names: Sequence[str], rtol: float, atol: float
) -> dict[str, Any]:
    """One parity verdict: {max_abs, max_rel, passed, reason}. `max_rel` is taken over
    elements where |eager| > atol (near zero the absolute tolerance governs)."""
    import numpy as np

    verdict: dict[str, Any] = {"max_abs": None, "max_rel": None, "passed": False, "reason": ""}
    if list(actual_names) != list(expected_names):
        verdict["reason"] = f"output names {list(actual_names)} != {list(expected_names)}"
        return verdict
    if len(actual) != len(expected):
        verdict["reason"] = f"{len(actual)} outputs, eager has {len(expected)}"
        return verdict
    max_abs = 0.0
    max_rel = 0.0
    problems = []
    for name, want, got in zip(expected_names, expected, actual):
        want = np.asarray(want)
        got = np.asarray(got)
        if got.shape != want.shape:
            problems.append(f"{name}: shape {list(got.shape)} != {list(want.shape)}")
            continue
        if got.dtype != want.dtype:
            problems.append(f"{name}: dtype {got.dtype} != {want.dtype}")
            continue
        if want.size == 0:
            continue
        if not np.issubdtype(want.dtype, np.floating):
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            max_abs = max(max_abs, float(diff.max()))
            if not np.array_equal(got, want):
                problems.append(f"{name}: integer values differ")
            continue
        want64 = want.astype(np.float64)
        got64 = got.astype(np.float64)
        nan_want, nan_got = np.isnan(want64), np.isnan(got64)
        if not np.array_equal(nan_want, nan_got):
            problems.append(f"{name}: NaN where eager has none (or the reverse)")
            continue
        finite = ~nan_want
        diff = np.abs(got64[finite] - want64[finite])
        scale = np.abs(want64[finite])
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
            big = scale > atol
            if big.any():
                max_rel = max(max_rel, float((diff[big] / scale[big]).max()))
            if not bool(np.all(diff <= atol + rtol * scale)):
                worst = int(np.argmax(diff - (atol + rtol * scale)))
                problems.append(f"{name}: |diff| {diff[worst]:.3g} > atol {atol:g} + rtol {rtol:g} x {scale[worst]:.3g}")
    verdict["max_abs"] = max_abs
    verdict["max_rel"] = max_rel
    verdict["passed"] = not problems
    verdict["reason"] = "; ".join(problems)
    return verdict


@contextlib.contextmanager
def strict_fp32(device_type: str) -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions inside the block (restored after):
    TF32 keeps 10 mantissa bits, which no fp32 tolerance survives."""
    import torch

    if device_type != "cuda":
        yield
        return
    saved: list[tuple[Any, str, Any]] = []

    def set_attr(obj: Any, name: str, value: Any) -> None:
        if hasattr(obj, name):
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)

    matmul = torch.backends.cuda.matmul
    cudnn = torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9 precision API
        set_attr(matmul, "fp32_precision", "ieee")
        set_attr(cudnn, "fp32_precision", "ieee")
        if hasattr(cudnn, "conv"):
            set_attr(cudnn.conv, "fp32_precision", "ieee")
        if hasattr(cudnn, "rnn"):
            set_attr(cudnn.rnn, "fp32_precision", "ieee")
    else:
        set_attr(matmul, "allow_tf32", False)
        set_attr(cudnn, "allow_tf32", False)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def median_ms(
    call: Callable[[], Any],
    sync: Callable[[], None] | None = None,
    budget_s: float = 0.4,
    min_runs: int = 10,
    max_runs: int = 200,
    warmup: int = 3,
) -> float:
    """Median wall time of `call()` in milliseconds, after warm-up calls, over at least
    `min_runs` and as many more as fit in `budget_s`. A model slower than a tenth of
    the budget per call gets one warm-up call and three timed ones, so measuring a
    large generator does not take longer than exporting it."""

    def timed() -> float:
        t0 = time.perf_counter()
        call()
        if sync:
            sync()
        return time.perf_counter() - t0

    first = timed()
    if first > budget_s / 10:
        warmup, min_runs = 1, 3
    for _ in range(warmup - 1):
        timed()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() - start < budget_s):
        times.append(timed())
    return statistics.median(times) * 1000.0
