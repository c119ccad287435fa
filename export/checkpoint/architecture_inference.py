"""The architecture a checkpoint describes: from its stored config and options, else from its weight shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

from omc.errors import BadInput, CheckpointError
from omc.export.checkpoint.formats import OPTION_GLOBAL_POINT, OPTION_RADIUS, CheckpointContents
from omc.export.model import (
    DEFAULT_GLOBAL_POINT,
    DEFAULT_SHRINK_RADIUS,
    VARIANT_MULTIPLES,
    Architecture,
    architecture_from_config,
    default_config,
    level_channels,
    plan_layers,
)
from omc.export.model.architecture import head_layer, scaled_repeats

# Layer rows of the default config whose repeat counts reveal depth_multiple (index, repeats).
_DEPTH_PROBES = ((2, 3), (4, 9), (6, 9), (9, 3), (13, 3), (17, 3), (20, 3), (23, 3))
# Output channels of layer 0 (Focus) in the default config, before the width gain.
_FOCUS_CHANNELS = 64
# Text forms of an on/off run option (option_flag).
_FLAG_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


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


def option_flag(value: Any, name: str, path: Path) -> bool:
    """A stored on/off run option: a bool, 0 / 1, or the words true/false, yes/no, on/off (any case).

    The reference's argparse may store a flag as text: "False" must read as off, not as a
    non-empty string. CheckpointError for anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.strip().lower()]
    raise CheckpointError(f"checkpoint {path} records {name} {value!r}; expected true or false (or 1 / 0)")


def infer_architecture(contents: CheckpointContents, path: Path) -> Architecture:
    """The Architecture the file describes: omc's own record, else the stored config (or the default
    config with the multiples the weight shapes imply) with the stored run options."""
    if contents.architecture is not None:
        return contents.architecture
    state = contents.state
    config = contents.config if contents.config is not None else _config_from_shapes(state, path)
    options = contents.options
    global_point = option_flag(options.get(OPTION_GLOBAL_POINT, DEFAULT_GLOBAL_POINT), OPTION_GLOBAL_POINT, path)
    radius = options.get(OPTION_RADIUS, DEFAULT_SHRINK_RADIUS)
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 1:
        raise CheckpointError(f"checkpoint {path} records shrink radius {radius!r}; it must be a positive int")
    try:
        base = architecture_from_config(
            config, recheck_channels=0, global_point=global_point, shrink_radius=radius
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
            embedding_dim=int(embedding.shape[0]) if embedding is not None and embedding.ndim else None,
            global_point=global_point,
            shrink_radius=radius,
            anchors=anchors,
        )
    except BadInput as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
