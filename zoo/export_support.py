"""Small helpers shared by the engine-side tools and the exporters."""

from __future__ import annotations

from typing import Any


def as_tuple(result: Any) -> tuple[Any, ...]:
    """A module's output as a tuple of tensors (single tensors become 1-tuples)."""
    if isinstance(result, (tuple, list)):
        return tuple(result)
    return (result,)
