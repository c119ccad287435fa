"""The OMC network in PyTorch (omc-reference.md section 2), built from a YOLOv5-style model config."""

from omc.export.model.architecture import (
    CUSTOM_VARIANT,
    DEFAULT_GLOBAL_POINT,
    DEFAULT_SHRINK_RADIUS,
    VARIANT_MULTIPLES,
    Architecture,
    architecture_for_variant,
    architecture_from_config,
    default_config,
    level_channels,
    level_strides,
    load_config,
    plan_layers,
)
from omc.export.model.network import DEFAULT_INPUT_HW, CSTrackBase, DetectorOutputs, OMCNetwork, build_network

__all__ = [
    "CUSTOM_VARIANT",
    "DEFAULT_GLOBAL_POINT",
    "DEFAULT_INPUT_HW",
    "DEFAULT_SHRINK_RADIUS",
    "VARIANT_MULTIPLES",
    "Architecture",
    "CSTrackBase",
    "DetectorOutputs",
    "OMCNetwork",
    "architecture_for_variant",
    "architecture_from_config",
    "build_network",
    "default_config",
    "level_channels",
    "level_strides",
    "load_config",
    "plan_layers",
]
