"""Generating text from a language model's export target, eagerly or from an artifact.

Two forms of text target (see `Plugin.sample_target`):
- window: tokens (batch, seq) -> logits (batch, seq, vocab); each new character is
  predicted from the last `context` characters (a Transformer's block size);
- step: (token (batch, 1), state...) -> (logits (batch, vocab), state...); the prompt is
  fed one character at a time from a zero state, then each generated one.
The C++ and Node examples (export/*/examples/generate_text*) do exactly the same, so
greedy text (`temperature=0`) is identical in every runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from zoo.errors import UsageError

NextLogits = Callable[[int], Any]  # the id just read -> logits (vocab,) for what comes next


def check_options(prompt: str, length: int, temperature: float, top_k: int | None) -> None:
    """Refuse, in one line each, what no generation can honour: an empty prompt, nothing
    to generate, a temperature that is negative or not a number, a top-k below 1."""
    if not prompt:
        raise UsageError("--prompt must hold at least one character")
    if length < 1:
        raise UsageError(f"--length must be at least 1, not {length} (the characters to generate after the prompt)")
    if not math.isfinite(temperature):
        raise UsageError(f"--temperature must be a finite number, not {temperature}")
    if temperature < 0:
        raise UsageError(f"--temperature must be 0 (greedy) or more, not {temperature:g}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {top_k}")


def encode(vocabulary: Sequence[str], text: str) -> list[int]:
    """Character ids of `text`; characters outside the vocabulary are one line naming them."""
    index = {c: i for i, c in enumerate(vocabulary)}
    unknown = sorted({c for c in text if c not in index})
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10])
        raise UsageError(f"the prompt has characters the model's vocabulary lacks: {shown} (it knows {len(vocabulary)} characters)")
    return [index[c] for c in text]


def window_reader(logits_of: Callable[[Any], Any], context: int) -> Callable[[list[int]], Any]:
    """For a tokens -> logits target: logits of the next id after `ids`, from their last `context`."""
    import torch

    def read(ids: list[int]) -> Any:
        window = torch.tensor([ids[-context:]], dtype=torch.int64)
        return logits_of(window)

    return read


def step_reader(step: Callable[..., Any], zero_state: Sequence[Any]) -> Callable[[list[int]], Any]:
    """For a (token, state...) -> (logits, state...) target: feeds each new id once."""
    import torch

    state = list(zero_state)
    fed = 0

    def read(ids: list[int]) -> Any:
        nonlocal state, fed
        logits = None
        while fed < len(ids):
            outputs = step(torch.tensor([[ids[fed]]], dtype=torch.int64), *state)
            logits, state = outputs[0], list(outputs[1:])
            fed += 1
        return logits

    return read


def sample_next(logits: Any, temperature: float, top_k: int | None, generator: Any) -> int:
    """Greedy at temperature 0; otherwise a draw from softmax(logits / T), optionally
    restricted to the top k."""
    import torch

    logits = torch.as_tensor(logits).reshape(-1).double()
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        cutoff = torch.topk(logits, top_k).values[-1]
        logits = torch.where(logits < cutoff, torch.full_like(logits, float("-inf")), logits)
    return int(torch.multinomial(torch.softmax(logits, 0), 1, generator=generator))


def generate(
    read: Callable[[list[int]], Any],
    vocabulary: Sequence[str],
    prompt: str,
    length: int,
    temperature: float,
    top_k: int | None,
    generator: Any,
) -> str:
    """The prompt and `length` generated characters."""
    check_options(prompt, length, temperature, top_k)
    ids = encode(vocabulary, prompt)
    for _ in range(length):
        ids.append(sample_next(read(ids), temperature, top_k, generator))
    return "".join(vocabulary[i] for i in ids)
