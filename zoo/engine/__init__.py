"""The training engine (`zoo.engine.train`): the loop, checkpoints, exact resume,
metrics and seeds around a plugin's `Trainer`."""

from zoo.engine.loop import Interrupted, TrainResult, optimization, train

__all__ = ["Interrupted", "TrainResult", "optimization", "train"]
