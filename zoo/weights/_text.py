"""Exceptions as the one line of text an error message quotes."""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of `exc`'s message (its type's name when it has none), cut to `limit`."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]
