"""Reading OMC / CSTrack checkpoints without running code from the file, and writing omc's own.

Formats read (omc-reference.md section 6):
- reference stage-2 training checkpoints: `torch.save` of a dict whose `model` (or `ema`) is a
  pickled float16 `SiamMot` (base `Model` in `.model`, config dict in `.model.yaml`, run options
  in `.opt`, an argparse Namespace);
- reference stage-1 checkpoints: the same with a bare `Model` (no re-check network);
- plain state dicts, at the top level or under `model` / `state_dict`, in either key layout;
- omc's own format (`save_checkpoint`): {'format': 'omc-checkpoint', 'version': 1,
  'architecture': Architecture.to_dict(), 'state_dict': {...}, 'training_options': {...},
  'source_sha256': str}, readable by `torch.load(weights_only=True)`.

Safety: the pickle is read by `RestrictedUnpickler`, whose `find_class` maps the reference's
classes and torch.nn modules to inert records (their attributes are read, nothing of theirs
runs) and allows only a handful of data constructors (tensor/parameter rebuild, OrderedDict,
set). Any other global, e.g. `os.system` or `builtins.eval`, raises `UnsafeCheckpoint` before
it is even looked up. The architecture is inferred from the stored config and the weight shapes;
no reference code is needed.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Mapping, cast

import torch
from torch import Tensor

from omc.errors import BadInput, CheckpointError, UnsafeCheckpoint
from omc.files import file_sha256, replacing
from omc.export.model import (
    DEFAULT_GLOBAL_POINT,
    DEFAULT_INPUT_HW,
    DEFAULT_SHRINK_RADIUS,
    VARIANT_MULTIPLES,
    Architecture,
    OMCNetwork,
    architecture_for_variant,
    architecture_from_config,
    build_network,
    default_config,
    level_channels,
    plan_layers,
)
from omc.export.model.architecture import head_layer, scaled_repeats
from omc.export.model.random_init import randomize_network

log = logging.getLogger(__name__)

OMC_FORMAT = "omc-checkpoint"
OMC_FORMAT_VERSION = 1

# Where each kind of checkpoint came from (LoadedCheckpoint.source_format).
FORMAT_REFERENCE_STAGE2 = "reference-stage2"
FORMAT_REFERENCE_STAGE1 = "reference-stage1"
FORMAT_STATE_DICT = "state-dict"
FORMAT_OMC = "omc"
FORMAT_RANDOM = "random"
FORMAT_DESCRIPTIONS = {
    FORMAT_REFERENCE_STAGE2: "reference stage-2 training checkpoint (pickled SiamMot: CSTrack + re-check)",
    FORMAT_REFERENCE_STAGE1: "reference stage-1 training checkpoint (pickled Model: CSTrack only)",
    FORMAT_STATE_DICT: "plain state dict",
    FORMAT_OMC: f"omc checkpoint (format version {OMC_FORMAT_VERSION})",
    FORMAT_RANDOM: "seeded random weights (no checkpoint)",
}

# Run options of the reference's training script that the network uses (omc-reference.md 2).
OPTION_GLOBAL_POINT = "Global_Point"
OPTION_RADIUS = "radius"

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
# Printed keys per category in a does-not-fit error.
MAX_LISTED_KEYS = 6
# Layer rows of the default config whose repeat counts reveal depth_multiple (index, repeats).
_DEPTH_PROBES = ((2, 3), (4, 9), (6, 9), (9, 3), (13, 3), (17, 3), (20, 3), (23, 3))
# Output channels of layer 0 (Focus) in the default config, before the width gain.
_FOCUS_CHANNELS = 64


# --- restricted unpickling ---------------------------------------------------------------------


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


# --- the result --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A network ready to run (float32, eval mode, no gradients) and what the file said about it.

    config: the recorded model-config dict (reference schema). training_options: the reference's
    `opt` Namespace as a dict ({} when the file has none). source_sha256: hex digest of the file
    ("" for random weights). parameter_count: learnable parameters of `network`.
    """

    network: OMCNetwork
    architecture: Architecture
    config: dict[str, Any]
    training_options: dict[str, Any]
    source_path: Path | None
    source_sha256: str
    source_format: str
    parameter_count: int
    epoch: int | None = None

    @property
    def has_recheck(self) -> bool:
        return self.architecture.has_recheck

    @property
    def random_weights(self) -> bool:
        return self.source_format == FORMAT_RANDOM

    def summary(self) -> dict[str, Any]:
        """JSON-able facts (what `omc inspect` prints)."""
        arch = self.architecture
        base = sum(p.numel() for p in self.network.model.parameters())
        return {
            "checkpoint": str(self.source_path) if self.source_path else None,
            "sha256": self.source_sha256,
            "format": self.source_format,
            "variant": arch.variant,
            "depth_multiple": arch.depth_multiple,
            "width_multiple": arch.width_multiple,
            "parameters": self.parameter_count,
            "base_parameters": base,
            "recheck_parameters": self.parameter_count - base,
            "has_recheck": arch.has_recheck,
            "recheck_channels": arch.recheck_channels,
            "global_point": arch.global_point,
            "shrink_radius": arch.shrink_radius,
            "embedding_dim": arch.embedding_dim,
            "level_channels": list(self.network.model.level_channels),
            "level_strides": list(self.network.model.level_strides),
            "anchors": [list(level) for level in arch.anchors],
            "epoch": self.epoch,
            "config": self.config,
            "training_options": self.training_options,
        }


# --- reading -----------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
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
            raise CheckpointError(f"checkpoint {path} is not a readable zip archive ({_first_line(exc)})") from None
        if any(name.endswith("constants.pkl") for name in names):
            # torch.load would hand a TorchScript archive to torch.jit.load, which runs its code.
            raise CheckpointError(f"{path} is a TorchScript archive, not a training checkpoint or state dict")
    try:
        return torch.load(path, map_location="cpu", pickle_module=RestrictedPickle, weights_only=False)
    except UnsafeCheckpoint as exc:
        raise UnsafeCheckpoint(f"checkpoint {path}: {exc}") from None
    except Exception as exc:  # torch/pickle raise many types for a damaged or foreign file
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint ({_first_line(exc)})") from None


def _is_record(value: Any, *class_names: str) -> bool:
    return isinstance(value, PickledObject) and (not class_names or value.class_name in class_names)


def module_state_dict(record: PickledObject, prefix: str = "") -> dict[str, Tensor]:
    """State dict of a pickled nn.Module tree: persistent parameters and buffers, by module path."""
    attributes = record.attributes()
    tables = [attributes.get(key) for key in ("_parameters", "_buffers", "_modules")]
    if not all(isinstance(table, Mapping) for table in tables):
        raise CheckpointError(f"pickled {record.pickled_class} at '{prefix or '<root>'}' is not a module")
    parameters, buffers, modules = (cast(Mapping[str, Any], table) for table in tables)
    transient = attributes.get("_non_persistent_buffers_set") or set()
    state: dict[str, Tensor] = {}
    for name, value in list(parameters.items()) + [(k, v) for k, v in buffers.items() if k not in transient]:
        if value is None:
            continue
        if not isinstance(value, Tensor):
            raise CheckpointError(f"'{prefix}{name}' in the pickled model is not a tensor")
        state[prefix + name] = value
    for name, child in modules.items():
        if child is None:
            continue
        if not isinstance(child, PickledObject):
            raise CheckpointError(f"'{prefix}{name}' in the pickled model is not a module")
        state.update(module_state_dict(child, f"{prefix}{name}."))
    return state


def _namespace_dict(value: Any) -> dict[str, Any]:
    if _is_record(value, "Namespace"):
        return dict(value.attributes())
    if isinstance(value, Mapping):
        return dict(value)
    return {}


def _plain(value: Any) -> Any:
    """JSON-able copy of a recorded value (records and other objects become strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, Tensor) and value.numel() <= 16:
        return value.tolist()
    return repr(value)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()
    )


@dataclass(frozen=True)
class _Contents:
    """What a checkpoint file holds, before any network is built (state dict in OMCNetwork keys)."""

    state: dict[str, Tensor]
    source_format: str
    config: dict[str, Any] | None
    options: dict[str, Any]
    epoch: int | None
    architecture: Architecture | None = None


_STAGE1_KEY = re.compile(r"^model\.\d+\.")


def _to_network_keys(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """Map a state dict's keys to OMCNetwork's; returns (state, was_stage1_layout)."""
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(_STAGE1_KEY.match(k) for k in state):
        return {"model." + k if _STAGE1_KEY.match(k) else k: v for k, v in state.items()}, True
    return dict(state), False


def _interpret(obj: Any, path: Path) -> _Contents:
    if not isinstance(obj, Mapping):
        if _is_record(obj):
            obj = {"model": obj}
        else:
            raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict")
    if obj.get("format") == OMC_FORMAT:
        return _interpret_omc(obj, path)
    epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
    model = obj.get("model")
    if model is None:
        model = obj.get("ema")
    if model is None and _is_state_dict(obj.get("state_dict")):
        model = obj["state_dict"]
    if _is_record(model, "SiamMot"):
        attrs = model.attributes()
        base = attrs.get("_modules", {}).get("model")
        config = base.attributes().get("yaml") if _is_record(base) else None
        options = _namespace_dict(attrs.get("opt"))
        if OPTION_RADIUS not in options and isinstance(attrs.get("r"), int):
            options[OPTION_RADIUS] = attrs["r"]
        state = module_state_dict(model)
        return _Contents(state, FORMAT_REFERENCE_STAGE2, _config_or_none(config), options, epoch)
    if _is_record(model, "Model"):
        config = model.attributes().get("yaml")
        state, _ = _to_network_keys(module_state_dict(model))
        options = _namespace_dict(obj.get("opt"))
        return _Contents(state, FORMAT_REFERENCE_STAGE1, _config_or_none(config), options, epoch)
    if _is_record(model):
        raise CheckpointError(f"checkpoint {path} holds a pickled {model.pickled_class}, not an OMC or CSTrack model")
    if model is None and _is_state_dict(obj):
        model = obj
    if _is_state_dict(model):
        state, stage1 = _to_network_keys(model)
        config = obj.get("yaml") if isinstance(obj.get("yaml"), Mapping) else None
        return _Contents(state, FORMAT_STATE_DICT, _config_or_none(config), _namespace_dict(obj.get("opt")), epoch)
    raise CheckpointError(f"checkpoint {path} has no model: expected a 'model' entry (pickled model or state dict)")


def _config_or_none(config: Any) -> dict[str, Any] | None:
    return dict(config) if isinstance(config, Mapping) else None


def _interpret_omc(obj: Mapping[str, Any], path: Path) -> _Contents:
    version = obj.get("version")
    if version != OMC_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} is omc format version {version}; this omc reads version {OMC_FORMAT_VERSION}"
        )
    state = obj.get("state_dict")
    if not _is_state_dict(state):
        raise CheckpointError(f"checkpoint {path} (omc format) has no state dict")
    try:
        arch = Architecture.from_dict(obj.get("architecture") or {})
    except BadInput as exc:
        raise CheckpointError(f"checkpoint {path} (omc format): {exc}") from None
    options = obj.get("training_options")
    return _Contents(
        dict(cast(Mapping[str, Tensor], state)), FORMAT_OMC, arch.config, dict(options) if isinstance(options, Mapping) else {}, None, arch
    )


# --- architecture inference --------------------------------------------------------------------


def _config_from_shapes(state: Mapping[str, Tensor], path: Path) -> dict[str, Any]:
    """Default CSTrack config with the multiples a plain state dict's shapes imply."""
    first = state.get("model.model.0.conv.conv.weight")
    if first is None or first.ndim != 4:
        raise CheckpointError(
            f"checkpoint {path} stores no model config and its weights are not CSTrack's layout "
            "(no model.0.conv.conv.weight); cannot infer the architecture"
        )
    width = first.shape[0] / _FOCUS_CHANNELS
    counts = {
        index: len({k.split(".")[4] for k in state if k.startswith(f"model.model.{index}.m.")})
        for index, _ in _DEPTH_PROBES
    }
    depth = next(
        (
            d
            for d, _ in VARIANT_MULTIPLES.values()
            if all(counts[i] == scaled_repeats(n, d) for i, n in _DEPTH_PROBES)
        ),
        max(counts[4], 1) / 9,
    )
    config = default_config()
    config["depth_multiple"], config["width_multiple"] = depth, width
    return config


def _infer_architecture(contents: _Contents, path: Path) -> Architecture:
    if contents.architecture is not None:
        return contents.architecture
    state = contents.state
    config = contents.config if contents.config is not None else _config_from_shapes(state, path)
    options = contents.options
    global_point = options.get(OPTION_GLOBAL_POINT, DEFAULT_GLOBAL_POINT)
    radius = options.get(OPTION_RADIUS, DEFAULT_SHRINK_RADIUS)
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 1:
        raise CheckpointError(f"checkpoint {path} records shrink radius {radius!r}; it must be a positive int")
    try:
        base = architecture_from_config(
            config, recheck_channels=0, global_point=bool(global_point), shrink_radius=radius
        )
        plans = plan_layers(base)
    except BadInput as exc:
        raise CheckpointError(f"checkpoint {path}: its model config is not a buildable OMC network ({exc})") from None
    saan = head_layer(plans, "SAAN").spec.index
    detect = head_layer(plans, "Detect").spec.index
    embedding = state.get(f"model.model.{saan}.node.2.weight")
    anchor_grid = state.get(f"model.model.{detect}.anchor_grid")
    anchors: Any = None
    if anchor_grid is not None and anchor_grid.numel() == sum(len(level) for level in base.anchors):
        anchors = anchor_grid.float().reshape(len(base.anchors), -1).tolist()
    has_recheck = any(k.startswith(("siambox.", "siamheatmap.")) for k in state)
    # C is the stride-8 level's channel count; a file whose re-check weights disagree fails the
    # shape check below with the offending keys listed.
    recheck_channels = level_channels(base)[0] if has_recheck else 0
    try:
        return architecture_from_config(
            config,
            recheck_channels=recheck_channels,
            embedding_dim=int(embedding.shape[0]) if embedding is not None else None,
            global_point=bool(global_point),
            shrink_radius=radius,
            anchors=anchors,
        )
    except BadInput as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    more = f" (+{len(items) - MAX_LISTED_KEYS} more)" if len(items) > MAX_LISTED_KEYS else ""
    return f"{len(items)} {label}: {shown}{more}"


def check_state_fits(network: OMCNetwork, state: Mapping[str, Tensor], what: str) -> None:
    """CheckpointError listing missing, unexpected and mis-shaped keys, when `state` does not fit."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (file {_shape(state[k])}, model {_shape(v)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshaped:
        parts = [
            _listing(label, items)
            for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if items
        ]
        raise CheckpointError(f"{what} does not fit the architecture it describes: " + "; ".join(parts))


def _finish(network: OMCNetwork) -> OMCNetwork:
    network.float().eval()
    network.requires_grad_(False)
    return network


def load_checkpoint(path: str | Path, input_hw: tuple[int, int] = DEFAULT_INPUT_HW) -> LoadedCheckpoint:
    """Read any supported checkpoint into a float32 eval-mode OMCNetwork built for input_hw (H, W).

    Raises CheckpointError (missing/unreadable file, no model, weights that do not fit) or
    UnsafeCheckpoint (a global outside the allow-list; nothing from the file ran).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        sha256 = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path} ({exc.strerror or exc})") from None
    contents = _interpret(read_checkpoint_object(path), path)
    arch = _infer_architecture(contents, path)
    try:
        network = OMCNetwork(arch, input_hw)
    except BadInput as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    check_state_fits(network, contents.state, f"checkpoint {path}")
    network.load_state_dict(contents.state, strict=False)
    _finish(network)
    log.info("loaded %s (%s, variant %s, %s parameters)", path, contents.source_format, arch.variant,
             f"{sum(p.numel() for p in network.parameters()):,}")
    return LoadedCheckpoint(
        network=network,
        architecture=arch,
        config=_plain(contents.config if contents.config is not None else arch.config),
        training_options=_plain(contents.options),
        source_path=path,
        source_sha256=sha256,
        source_format=contents.source_format,
        parameter_count=sum(p.numel() for p in network.parameters()),
        epoch=contents.epoch,
    )


# --- writing -----------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    network: OMCNetwork,
    *,
    training_options: Mapping[str, Any] = MappingProxyType({}),
    source_sha256: str = "",
) -> Path:
    """Write `network` in omc's format (readable with torch.load(weights_only=True)); returns the path.

    Tensors are stored as they are (float32 after load_checkpoint); written to a temporary name
    in the same folder, then renamed.
    """
    path = Path(path)
    payload = {
        "format": OMC_FORMAT,
        "version": OMC_FORMAT_VERSION,
        "architecture": network.architecture.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        "training_options": json.loads(json.dumps(_plain(training_options))),
        "source_sha256": source_sha256,
    }
    with replacing(path) as temporary:
        torch.save(payload, temporary)
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


# --- random weights ----------------------------------------------------------------------------


def random_checkpoint(
    variant: str | Architecture = "l",
    seed: int = 0,
    with_recheck: bool = True,
    input_hw: tuple[int, int] = DEFAULT_INPUT_HW,
) -> LoadedCheckpoint:
    """A seeded random OMC network (for pipeline tests and benchmarks): its detections mean nothing.

    variant: 's', 'm', 'l', 'x' or an Architecture. Weights: PyTorch's default init, the
    reference's objectness/class bias prior, BatchNorm statistics from one pass over seeded
    synthetic images (omc.export.model.random_init). Same seed, same weights; the global RNG
    is left untouched.
    """
    arch = variant if isinstance(variant, Architecture) else architecture_for_variant(variant, with_recheck=with_recheck)
    if not with_recheck:
        arch = arch.without_recheck()
    log.warning(
        "RANDOM WEIGHTS (variant %s, seed %d): this network has not been trained; its detections and tracks "
        "are meaningless. Use it only to test the pipeline or measure speed.", arch.variant, seed
    )
    with torch.random.fork_rng(devices=[]):  # building draws from the global RNG; keep it untouched
        network = build_network(arch, input_hw)
    network = _finish(randomize_network(network, seed))
    return LoadedCheckpoint(
        network=network,
        architecture=arch,
        config=_plain(arch.config),
        training_options={},
        source_path=None,
        source_sha256="",
        source_format=FORMAT_RANDOM,
        parameter_count=sum(p.numel() for p in network.parameters()),
    )


def describe_format(source_format: str) -> str:
    return FORMAT_DESCRIPTIONS.get(source_format, source_format)
