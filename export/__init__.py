"""PyTorch network, checkpoints, ONNX export and TensorRT engine building (needs the export extra).

The names below load lazily (PEP 562), so `import omc.export` (done by the CLI to register its
subcommands) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_checkpoint": "omc.export.checkpoint",
    "save_checkpoint": "omc.export.checkpoint",
    "random_checkpoint": "omc.export.checkpoint",
    "LoadedCheckpoint": "omc.export.checkpoint",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omc.export' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
