"""zoo: a plugin-based PyTorch model zoo whose models leave Python.

Public surface: the plugin contract (`Plugin`, `TrainConfig`, `Trainer`,
`ExportTarget`, `TensorSpec`, `Weights`, `DataRequest`, `hparam`) and the registry
(`list_plugins`, `get_plugin`). Importing `zoo` does not import torch.
"""

from zoo._registry import get_plugin, list_plugins
from zoo.plugin import DataRequest, ExportTarget, Plugin, TensorSpec, Trainer, TrainConfig, Weights, hparam

__all__ = [
    "DataRequest",
    "ExportTarget",
    "Plugin",
    "TensorSpec",
    "TrainConfig",
    "Trainer",
    "Weights",
    "get_plugin",
    "hparam",
    "list_plugins",
]
