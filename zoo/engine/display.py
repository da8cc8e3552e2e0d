"""What a training run shows while it runs: a tqdm bar with the losses and ETA on a
terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import sys
from typing import Any


class ProgressDisplay:
    def __init__(self, mode: str, total_epochs: int):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        self.total_epochs = total_epochs
        self.bar = None

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None:
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=steps, initial=done, desc=f"epoch {epoch}/{self.total_epochs}", unit="step", leave=True, dynamic_ncols=True
            )

    def step(self, losses: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
            self.bar.update(1)

    def end_epoch(self, record: dict[str, Any]) -> None:
        self.close()
        if self.mode in ("bar", "lines"):
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            print(shown, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
