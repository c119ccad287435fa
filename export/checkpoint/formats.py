"""Which kind of checkpoint a file holds, and its contents in OMCNetwork's state-dict keys.

Formats (omc-reference.md section 6): the reference's stage-2 (pickled `SiamMot`) and stage-1
(pickled `Model`) training checkpoints, plain state dicts in either key layout, and omc's own
format (omc.export.checkpoint.saving). `interpret` turns the unpickled object into
`CheckpointContents`; nothing here builds a network.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, cast

from torch import Tensor

from omc.errors import BadInput, CheckpointError
from omc.export.checkpoint.unpickle import PickledObject
from omc.export.model import Architecture

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

# Stored config and options are data from the file: copies of them are bounded (bounded_copy).
# A real config nests 5 levels and holds a few hundred values; real options a few dozen.
MAX_VALUE_DEPTH = 16
MAX_VALUE_ITEMS = 2_000
MAX_TEXT_CHARS = 1_000
MAX_SHOWN_TENSOR_ITEMS = 16
TRUNCATED = "<truncated>"
# A real OMC model nests modules 5 levels deep (SiamMot > Model > ModuleList > C3 > Sequential ...).
MAX_MODULE_DEPTH = 64


def describe_format(source_format: str) -> str:
    return FORMAT_DESCRIPTIONS.get(source_format, source_format)


def is_record(value: Any, *class_names: str) -> bool:
    return isinstance(value, PickledObject) and (not class_names or value.class_name in class_names)


def module_state_dict(record: PickledObject, prefix: str = "", depth: int = 0) -> dict[str, Tensor]:
    """State dict of a pickled nn.Module tree: persistent parameters and buffers, by module path.

    CheckpointError when the tree is not modules and tensors, or nests deeper than MAX_MODULE_DEPTH.
    """
    if depth > MAX_MODULE_DEPTH:
        raise CheckpointError(f"the pickled model nests modules deeper than {MAX_MODULE_DEPTH} levels; it is not an OMC model")
    attributes = record.attributes()
    tables = [attributes.get(key) for key in ("_parameters", "_buffers", "_modules")]
    if not all(isinstance(table, Mapping) for table in tables):
        raise CheckpointError(f"pickled {record.pickled_class} at '{prefix or '<root>'}' is not a module")
    parameters, buffers, modules = (cast(Mapping[str, Any], table) for table in tables)
    transient = attributes.get("_non_persistent_buffers_set")
    transient = transient if isinstance(transient, (set, frozenset)) else set()
    state: dict[str, Tensor] = {}
    for name, value in list(parameters.items()) + [(k, v) for k, v in buffers.items() if k not in transient]:
        if value is None:
            continue
        if not isinstance(value, Tensor) or not isinstance(name, str):
            raise CheckpointError(f"'{prefix}{name}' in the pickled model is not a tensor")
        state[prefix + name] = value
    for name, child in modules.items():
        if child is None:
            continue
        if not isinstance(child, PickledObject) or not isinstance(name, str):
            raise CheckpointError(f"'{prefix}{name}' in the pickled model is not a module")
        state.update(module_state_dict(child, f"{prefix}{name}.", depth + 1))
    return state


def _namespace_dict(value: Any) -> dict[str, Any]:
    if is_record(value, "Namespace"):
        return dict(value.attributes())
    if isinstance(value, Mapping):
        return dict(value)
    return {}


def bounded_copy(value: Any) -> tuple[Any, bool]:
    """JSON-able copy of a value stored in a checkpoint, bounded in depth and size; (copy, truncated).

    Mappings become dicts with string keys, lists/tuples/sets become lists, tensors of at most
    MAX_SHOWN_TENSOR_ITEMS values their lists, other objects a short text. Parts nested deeper
    than MAX_VALUE_DEPTH or beyond the first MAX_VALUE_ITEMS values become TRUNCATED, long
    strings are cut to MAX_TEXT_CHARS: a value nested thousands deep or a list that holds itself
    (2^30 leaves in 30 levels) can neither crash nor hang a reader.
    """
    budget = [MAX_VALUE_ITEMS]
    truncated = [False]

    def copy(item: Any, depth: int) -> Any:
        budget[0] -= 1  # every value shown counts, markers too
        if depth > MAX_VALUE_DEPTH or budget[0] < 0:
            truncated[0] = True
            return TRUNCATED
        if isinstance(item, Mapping):
            mapping: dict[str, Any] = {}
            for k, v in item.items():
                if budget[0] <= 0:  # one marker for the rest, not one per remaining entry
                    truncated[0] = True
                    mapping[TRUNCATED] = TRUNCATED
                    break
                mapping[_key_text(k)] = copy(v, depth + 1)
            return mapping
        if isinstance(item, (list, tuple, set, frozenset)):
            items: list[Any] = []
            for v in item:
                if budget[0] <= 0:
                    truncated[0] = True
                    items.append(TRUNCATED)
                    break
                items.append(copy(v, depth + 1))
            return items
        if isinstance(item, str):
            if len(item) > MAX_TEXT_CHARS:
                truncated[0] = True
                return item[:MAX_TEXT_CHARS] + TRUNCATED
            return item
        if isinstance(item, (bool, int, float)) or item is None:
            return item
        if isinstance(item, Tensor) and item.numel() <= MAX_SHOWN_TENSOR_ITEMS:
            return item.tolist()
        if isinstance(item, (bytes, bytearray)):
            return f"<{len(item)} bytes>"
        return repr(item)[:MAX_TEXT_CHARS]

    result = copy(value, 0)
    return result, truncated[0]


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key[:MAX_TEXT_CHARS]
    if isinstance(key, (bool, int, float)) or key is None:
        return str(key)
    return f"<{type(key).__name__} key>"


def plain_value(value: Any) -> Any:
    """`bounded_copy(value)` without the truncation flag."""
    return bounded_copy(value)[0]


def stored_config(config: Any, path: Path) -> dict[str, Any] | None:
    """The model config a file records (a bounded copy), None when it records none.

    CheckpointError when it is larger or deeper than any model config (it is built from).
    """
    if not isinstance(config, Mapping):
        return None
    copied, truncated = bounded_copy(config)
    if truncated:
        raise CheckpointError(
            f"checkpoint {path}: its model config is nested deeper than {MAX_VALUE_DEPTH} levels or holds more "
            f"than {MAX_VALUE_ITEMS} values; it is not a model config omc can build"
        )
    return cast(dict[str, Any], copied)


def stored_options(options: Any, path: Path) -> dict[str, Any]:
    """The training options a file records, as a bounded copy ({} when none); truncation is logged."""
    copied, truncated = bounded_copy(_namespace_dict(options))
    if truncated:
        log.warning("checkpoint %s: training options nested deeper than %d levels or beyond %d values are "
                    "shown truncated", path, MAX_VALUE_DEPTH, MAX_VALUE_ITEMS)  # fmt: skip
    return cast(dict[str, Any], copied)


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
    """What the unpickled object `obj` of file `path` holds; CheckpointError when it is no checkpoint."""
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
        modules = attrs.get("_modules")
        base = modules.get("model") if isinstance(modules, Mapping) else None
        config = base.attributes().get("yaml") if isinstance(base, PickledObject) else None
        options = stored_options(attrs.get("opt"), path)
        if OPTION_RADIUS not in options and isinstance(attrs.get("r"), int):
            options[OPTION_RADIUS] = attrs["r"]
        state = module_state_dict(model)
        return CheckpointContents(state, FORMAT_REFERENCE_STAGE2, stored_config(config, path), options, epoch)
    if is_record(model, "Model"):
        config = model.attributes().get("yaml")
        state, _ = _to_network_keys(module_state_dict(model))
        options = stored_options(obj.get("opt"), path)
        return CheckpointContents(state, FORMAT_REFERENCE_STAGE1, stored_config(config, path), options, epoch)
    if is_record(model):
        raise CheckpointError(f"checkpoint {path} holds a pickled {model.pickled_class}, not an OMC or CSTrack model")
    if model is None and _is_state_dict(obj):
        model = obj
    if _is_state_dict(model):
        state, stage1 = _to_network_keys(model)
        options = stored_options(obj.get("opt"), path)
        return CheckpointContents(state, FORMAT_STATE_DICT, stored_config(obj.get("yaml"), path), options, epoch)
    raise CheckpointError(f"checkpoint {path} has no model: expected a 'model' entry (pickled model or state dict)")


def _interpret_omc(obj: Mapping[str, Any], path: Path) -> CheckpointContents:
    version = obj.get("version")
    if version != OMC_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} is omc format version {plain_value(version)}; this omc reads version {OMC_FORMAT_VERSION}"
        )
    state = obj.get("state_dict")
    if not _is_state_dict(state):
        raise CheckpointError(f"checkpoint {path} (omc format) has no state dict")
    try:
        arch = Architecture.from_dict(stored_config(obj.get("architecture"), path) or {})
    except BadInput as exc:
        raise CheckpointError(f"checkpoint {path} (omc format): {exc}") from None
    options = stored_options(obj.get("training_options"), path)
    return CheckpointContents(dict(cast(Mapping[str, Tensor], state)), FORMAT_OMC, arch.config, options, None, arch)
