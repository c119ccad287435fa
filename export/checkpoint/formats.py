"""Which kind of checkpoint a file holds, and its contents in OMCNetwork's state-dict keys.

Formats (omc-reference.md section 6): the reference's stage-2 (pickled `SiamMot`) and stage-1
(pickled `Model`) training checkpoints, plain state dicts in either key layout, and omc's own
format (omc.export.checkpoint.saving). `interpret` turns the unpickled object into
`CheckpointContents`; nothing here builds a network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, cast

from torch import Tensor

from omc.errors import BadInput, CheckpointError
from omc.export.checkpoint.unpickle import PickledObject
from omc.export.model import Architecture

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


def describe_format(source_format: str) -> str:
    return FORMAT_DESCRIPTIONS.get(source_format, source_format)


def is_record(value: Any, *class_names: str) -> bool:
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
    if is_record(value, "Namespace"):
        return dict(value.attributes())
    if isinstance(value, Mapping):
        return dict(value)
    return {}


def plain_value(value: Any) -> Any:
    """JSON-able copy of a recorded value (records and other objects become strings)."""
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
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
class CheckpointContents:
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


def interpret(obj: Any, path: Path) -> CheckpointContents:
    if not isinstance(obj, Mapping):
        if is_record(obj):
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
    if is_record(model, "SiamMot"):
        attrs = model.attributes()
        base = attrs.get("_modules", {}).get("model")
        config = base.attributes().get("yaml") if is_record(base) else None
        options = _namespace_dict(attrs.get("opt"))
        if OPTION_RADIUS not in options and isinstance(attrs.get("r"), int):
            options[OPTION_RADIUS] = attrs["r"]
        state = module_state_dict(model)
        return CheckpointContents(state, FORMAT_REFERENCE_STAGE2, _config_or_none(config), options, epoch)
    if is_record(model, "Model"):
        config = model.attributes().get("yaml")
        state, _ = _to_network_keys(module_state_dict(model))
        options = _namespace_dict(obj.get("opt"))
        return CheckpointContents(state, FORMAT_REFERENCE_STAGE1, _config_or_none(config), options, epoch)
    if is_record(model):
        raise CheckpointError(f"checkpoint {path} holds a pickled {model.pickled_class}, not an OMC or CSTrack model")
    if model is None and _is_state_dict(obj):
        model = obj
    if _is_state_dict(model):
        state, stage1 = _to_network_keys(model)
        config = obj.get("yaml") if isinstance(obj.get("yaml"), Mapping) else None
        return CheckpointContents(state, FORMAT_STATE_DICT, _config_or_none(config), _namespace_dict(obj.get("opt")), epoch)
    raise CheckpointError(f"checkpoint {path} has no model: expected a 'model' entry (pickled model or state dict)")


def _config_or_none(config: Any) -> dict[str, Any] | None:
    return dict(config) if isinstance(config, Mapping) else None


def _interpret_omc(obj: Mapping[str, Any], path: Path) -> CheckpointContents:
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
    return CheckpointContents(
        dict(cast(Mapping[str, Tensor], state)), FORMAT_OMC, arch.config, dict(options) if isinstance(options, Mapping) else {}, None, arch
    )
