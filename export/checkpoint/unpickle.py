"""The allow-list unpickler: a checkpoint's pickle is read without running anything it names.

`RestrictedUnpickler.find_class` maps the reference's classes and torch.nn modules to inert
records (`PickledObject`: their attributes are read, nothing of theirs runs) and allows only a
handful of data constructors (tensor/parameter rebuild, OrderedDict, set). Any other global,
e.g. `os.system` or `builtins.eval`, raises `UnsafeCheckpoint` before it is even looked up.
Refuse by default, name what was refused.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Mapping

import torch

from omc.errors import CheckpointError, UnsafeCheckpoint


# Allow-list: classes recreated as inert records (module -> class names).
REFERENCE_CLASSES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "models.mot.cstrack": frozenset(
            {"SiamMot", "Model", "Detect", "CCN", "SAAN", "SAAN_Attention", "DenseMask", "recheck_Box", "recheck_heatmap"}
        ),
        "models.mot.common": frozenset({"Conv", "Focus", "C3", "Bottleneck", "SPP", "Concat"}),
        "argparse": frozenset({"Namespace"}),
        # A real run's `best_fitness` is a NumPy array; its pieces stay records (never read).
        "numpy": frozenset({"ndarray", "dtype"}),
        "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
        "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    }
)
# torch.nn module classes (under torch.nn.modules.*) recreated as inert records.
TORCH_NN_CLASSES = frozenset(
    {
        "LeakyReLU", "SiLU", "Sigmoid", "ReLU", "Identity", "BatchNorm2d", "ModuleList", "Sequential",
        "Conv1d", "Conv2d", "ConvTranspose2d", "InstanceNorm2d", "Linear", "LayerNorm",
        "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "MaxPool2d", "Upsample",
    }
)  # fmt: skip
# Real callables allowed: data constructors with no side effects.
SAFE_GLOBALS: Mapping[tuple[str, str], Any] = MappingProxyType(
    {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,  # Python 2 name the reference's pickles use
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch", "Size"): torch.Size,
    }
)


class PickledObject:
    """Inert stand-in for an allow-listed class: keeps constructor args and state, runs nothing.

    `pickled_class` is the dotted name the pickle used, e.g. 'models.mot.cstrack.SiamMot'.
    """

    pickled_class = ""
    args: tuple[Any, ...] = ()
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def class_name(self) -> str:
        return self.pickled_class.rsplit(".", 1)[-1]

    def attributes(self) -> dict[str, Any]:
        """The pickled instance dict ({} when the state is not a dict)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (dict, slots) form
        return state if isinstance(state, dict) else {}

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_class}>"


def resolve_global(module: str, name: str) -> Any:
    """What the restricted unpickler returns for GLOBAL module.name; UnsafeCheckpoint otherwise."""
    safe = SAFE_GLOBALS.get((module, name))
    if safe is not None:
        return safe
    inert = name in REFERENCE_CLASSES.get(module, ()) or (
        module.startswith("torch.nn.modules.") and name in TORCH_NN_CLASSES
    )
    if inert:
        return type(name, (PickledObject,), {"pickled_class": f"{module}.{name}"})
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module == "torch" and name.endswith("Storage"):
        # Typed-storage names of the legacy (non-zip) format; torch maps them itself in zip files.
        return torch.serialization.StorageType(name)
    raise UnsafeCheckpoint(f"the pickle refers to '{module}.{name}', which is not on omc's allow-list; refused, nothing was run")


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come only from `resolve_global`."""

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name)


class RestrictedPickle:
    """The `pickle_module` handed to torch.load: its Unpickler and load are the restricted ones."""

    __name__ = "omc_restricted_pickle"
    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()



def first_line(exc: BaseException) -> str:
    """'Type: first line of the message' of an exception, for one-line errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_checkpoint_object(path: Path) -> Any:
    """Unpickle a checkpoint file with the restricted unpickler (tensors on the CPU).

    CheckpointError when unreadable, UnsafeCheckpoint (naming the global) when it refers to
    anything outside the allow-list.
    """
    if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        raise CheckpointError(
            "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which disables omc's restricted checkpoint reader; unset it"
        )
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"checkpoint {path} is not a readable zip archive ({first_line(exc)})") from None
        if any(name.endswith("constants.pkl") for name in names):
            # torch.load would hand a TorchScript archive to torch.jit.load, which runs its code.
            raise CheckpointError(f"{path} is a TorchScript archive, not a training checkpoint or state dict")
    try:
        return torch.load(path, map_location="cpu", pickle_module=RestrictedPickle, weights_only=False)
    except UnsafeCheckpoint as exc:
        raise UnsafeCheckpoint(f"checkpoint {path}: {exc}") from None
    except Exception as exc:  # torch/pickle raise many types for a damaged or foreign file
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint ({first_line(exc)})") from None

