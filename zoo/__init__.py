"""zoo: a plugin-based PyTorch model zoo whose models leave Python.

The public surface, all a plugin or dataset package needs:

- the plugin contract: `Plugin`, `TrainConfig`, `hparam`, `ExportTarget`, `TensorSpec`,
  `Weights`, and `TaskCheck` / `Measure` with the helpers of `zoo.tasks` (how a
  target is judged on real data);
- the training lifecycle: `Trainer`, `Progress`, `Schedule`;
- the data contract: `DataRequest`, `Images`, `Labels`, `Tokens`, `DataInfo`,
  `Dataset`, `DataSplits`, `TensorData`;
- the registries: `list_plugins`, `get_plugin`, `list_datasets`, `get_dataset`.

Importing `zoo` does not import torch.
"""

from zoo._registry import get_dataset, get_plugin, list_datasets, list_plugins
from zoo.config import TrainConfig, hparam
from zoo.data import DataInfo, DataRequest, Dataset, DataSplits, Images, Labels, TensorData, Tokens
from zoo.plugin import ExportTarget, Plugin, TensorSpec, Weights
from zoo.tasks import Measure, TaskCheck
from zoo.trainer import Progress, Schedule, Trainer

__all__ = [
    "DataInfo",
    "DataRequest",
    "DataSplits",
    "Dataset",
    "ExportTarget",
    "Images",
    "Labels",
    "Measure",
    "Plugin",
    "Progress",
    "Schedule",
    "TaskCheck",
    "TensorData",
    "TensorSpec",
    "Tokens",
    "TrainConfig",
    "Trainer",
    "Weights",
    "get_dataset",
    "get_plugin",
    "hparam",
    "list_datasets",
    "list_plugins",
]
