"""Seeds and random-number-generator state, saved in every checkpoint so a resumed run
draws exactly the numbers an uninterrupted one would."""

from __future__ import annotations

import random
from typing import Any


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def capture(data_epoch_start: Any, augment: Any) -> dict[str, Any]:
    """The global torch, Python and CUDA states, the augmentation generator's state, and
    the state the data order of the current (or next) epoch is drawn from."""
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "data": data_epoch_start,
        "augment": augment.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any], data_gen: Any, aug_gen: Any) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    data_gen.set_state(state["data"])
    aug_gen.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
