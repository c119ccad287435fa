"""What network a checkpoint describes: the parsed model config and the OMC options around it.

The config is the reference's YOLOv5 (v5.0) model-config schema (omc-reference.md section 2):
a dict with `nc`, `id_embedding`, `depth_multiple`, `width_multiple`, `anchors` and the
`backbone` + `head` layer lists, each layer `[from, repeats, module, args]`. Reference
checkpoints carry this dict (`Model.yaml`); `export/configs/cstrack_l.yaml` is the default.
Strings in args are never evaluated: only the names `nc`, `anchors`, `None`, `True` and
`False` are resolved, everything else stays a string (e.g. the upsampling mode).

`plan_layers` turns an `Architecture` into per-layer channel counts and strides without
building any module, so variants can be checked cheaply.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from omc.errors import BadInput

# (depth_multiple, width_multiple) of the standard variants (YOLOv5 v5.0 s/m/l/x).
VARIANT_MULTIPLES: dict[str, tuple[float, float]] = {
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
    "x": (1.33, 1.25),
}
# Name given to any config whose multiples are not a standard pair.
CUSTOM_VARIANT = "custom"
# Packaged default config (CSTrack-L).
DEFAULT_CONFIG_NAME = "cstrack_l.yaml"
# Reference run options when a checkpoint records none (omc-reference.md section 2, "Window").
DEFAULT_GLOBAL_POINT = True
DEFAULT_SHRINK_RADIUS = 3
# Output channels of Focus/Conv/C3/SPP are rounded up to a multiple of this (YOLOv5 rule).
CHANNEL_DIVISOR = 8
# Columns per anchor candidate: x, y, w, h, objectness, then one per class.
BOX_AND_OBJECTNESS = 5
# Module names a config may use, as the reference spells them.
CONV_MODULES = ("Focus", "Conv", "C3", "SPP", "Bottleneck")
HEAD_MODULES = ("SAAN", "DenseMask", "Detect")
KNOWN_MODULES = CONV_MODULES + ("nn.Upsample", "Concat", "CCN") + HEAD_MODULES
# Relative strides of the three levels the heads read: their up-sampling factors (2 and 4)
# are fixed in SAAN, DenseMask and the re-check network (omc-reference.md section 2).
HEAD_LEVEL_STRIDE_RATIOS = (1, 2, 4)

_NAMED_ARGS_FIXED: dict[str, Any] = {"None": None, "True": True, "False": False}
_REQUIRED_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Smallest multiple of `divisor` that is >= value (the YOLOv5 channel rounding)."""
    return int(math.ceil(value / divisor) * divisor)


def scaled_repeats(repeats: int, depth_multiple: float) -> int:
    """Repeats after the depth gain: max(round(n * d), 1) for n > 1 (Python rounding), else n."""
    return max(round(repeats * depth_multiple), 1) if repeats > 1 else repeats


def variant_of(depth_multiple: float, width_multiple: float) -> str:
    """'s', 'm', 'l' or 'x' when the multiples are a standard pair, else 'custom'."""
    for name, (depth, width) in VARIANT_MULTIPLES.items():
        if math.isclose(depth, depth_multiple, abs_tol=1e-9) and math.isclose(width, width_multiple, abs_tol=1e-9):
            return name
    return CUSTOM_VARIANT


@dataclass(frozen=True)
class LayerSpec:
    """One config row with its names resolved.

    sources: absolute indices of the layers it reads (-1 in the config is index - 1).
    repeats: after the depth gain. args: as in the config, names resolved, channels unscaled.
    """

    index: int
    sources: tuple[int, ...]
    repeats: int
    module: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class LayerPlan:
    """A layer with its channel counts and stride worked out.

    in_channels: channels of each source. out_channels: channels of its output (for CCN,
    each of its two branches). stride: input pixels per output cell (0 for the heads,
    whose outputs are not one feature map). scaled_args: args with channels width-scaled.
    """

    spec: LayerSpec
    in_channels: tuple[int, ...]
    out_channels: int
    stride: int
    scaled_args: tuple[Any, ...]


@dataclass(frozen=True)
class Architecture:
    """Everything needed to build the network, independent of any weights.

    config: the model-config dict (reference schema, see module docstring).
    variant: 's', 'm', 'l', 'x' or 'custom', from the multiples.
    anchors: per level, the (w, h) pixel pairs flattened, as in the config.
    embedding_dim: ID embedding size E (SAAN output channels; 512 in the reference).
    recheck_channels: channel base C of the re-check network, 0 when there is none
        (C equals the stride-8 level's channels: 128/192/256/320 for s/m/l/x).
    global_point, shrink_radius: the checkpoint's run options `Global_Point` and `radius`
        (omc-reference.md section 2, "Similarity"), defaults True and 3.
    """

    config: dict[str, Any] = field(hash=False)
    variant: str
    depth_multiple: float
    width_multiple: float
    nc: int
    anchors: tuple[tuple[float, ...], ...]
    embedding_dim: int
    recheck_channels: int
    global_point: bool = DEFAULT_GLOBAL_POINT
    shrink_radius: int = DEFAULT_SHRINK_RADIUS

    @property
    def has_recheck(self) -> bool:
        return self.recheck_channels > 0

    @property
    def anchors_per_level(self) -> int:
        return len(self.anchors[0]) // 2

    @property
    def outputs_per_anchor(self) -> int:
        """Columns of a candidate row: x, y, w, h, obj and nc class scores (6 for OMC)."""
        return self.nc + BOX_AND_OBJECTNESS

    def layers(self) -> tuple[LayerSpec, ...]:
        return parse_layers(self.config)

    def without_recheck(self) -> "Architecture":
        return replace(self, recheck_channels=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (the omc checkpoint format and `omc inspect --json`)."""
        return {
            "config": copy.deepcopy(self.config),
            "variant": self.variant,
            "depth_multiple": self.depth_multiple,
            "width_multiple": self.width_multiple,
            "nc": self.nc,
            "anchors": [list(level) for level in self.anchors],
            "embedding_dim": self.embedding_dim,
            "recheck_channels": self.recheck_channels,
            "global_point": self.global_point,
            "shrink_radius": self.shrink_radius,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        """Inverse of `to_dict`; BadInput when a key is missing or the config is invalid."""
        try:
            config = dict(data["config"])
            arch = architecture_from_config(
                config,
                recheck_channels=int(data["recheck_channels"]),
                embedding_dim=int(data["embedding_dim"]),
                global_point=bool(data["global_point"]),
                shrink_radius=int(data["shrink_radius"]),
                anchors=data["anchors"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"architecture description is incomplete or malformed ({exc!r})") from None
        return arch


def _resolve_arg(value: Any, names: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        if value in names:
            return copy.deepcopy(names[value])
        return value
    if isinstance(value, list):
        return [_resolve_arg(item, names) for item in value]
    return value


def _check_config(config: Mapping[str, Any]) -> None:
    if not isinstance(config, Mapping):
        raise BadInput(f"model config must be a mapping, got {type(config).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in config]
    if missing:
        raise BadInput(f"model config lacks {', '.join(missing)}")
    for key in ("depth_multiple", "width_multiple"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise BadInput(f"model config '{key}' must be a positive number, got {value!r}")
    if isinstance(config["nc"], bool) or not isinstance(config["nc"], int) or config["nc"] < 1:
        raise BadInput(f"model config 'nc' must be a positive int, got {config['nc']!r}")
    for key in ("backbone", "head"):
        if not isinstance(config[key], list):
            raise BadInput(f"model config '{key}' must be a list of [from, repeats, module, args]")
    anchors = config["anchors"]
    if not isinstance(anchors, list) or not anchors or not all(isinstance(a, list) and a for a in anchors):
        raise BadInput("model config 'anchors' must be a list of (w, h) pixel lists, one per level")
    if any(len(level) % 2 or len(level) != len(anchors[0]) for level in anchors):
        raise BadInput("model config 'anchors' must hold the same even number of values on every level")


def parse_layers(config: Mapping[str, Any]) -> tuple[LayerSpec, ...]:
    """Config rows -> LayerSpecs with names resolved and depth applied; BadInput if malformed."""
    _check_config(config)
    names = dict(_NAMED_ARGS_FIXED, nc=config["nc"], anchors=config["anchors"])
    depth = float(config["depth_multiple"])
    specs: list[LayerSpec] = []
    for index, row in enumerate(list(config["backbone"]) + list(config["head"])):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise BadInput(f"model config layer {index} must be [from, repeats, module, args], got {row!r}")
        source, repeats, module, args = row
        if module not in KNOWN_MODULES:
            raise BadInput(
                f"model config layer {index} uses module '{module}'; supported: {', '.join(KNOWN_MODULES)}"
            )
        raw_sources = list(source) if isinstance(source, (list, tuple)) else [source]
        if not raw_sources or not all(isinstance(s, int) for s in raw_sources):
            raise BadInput(f"model config layer {index} has an invalid 'from' entry {source!r}")
        # Negative entries count back from this layer, as the reference indexes its output list.
        sources = tuple(index + s if s < 0 else s for s in raw_sources)
        if any(not 0 <= s < index for s in sources) and index > 0:
            raise BadInput(f"model config layer {index} reads layer(s) {source!r}, which do not precede it")
        if not isinstance(repeats, int) or repeats < 1:
            raise BadInput(f"model config layer {index} has an invalid repeat count {repeats!r}")
        if not isinstance(args, list):
            raise BadInput(f"model config layer {index} args must be a list, got {args!r}")
        specs.append(
            LayerSpec(
                index=index,
                sources=sources if index > 0 else (-1,),
                repeats=scaled_repeats(repeats, depth),
                module=module,
                args=tuple(_resolve_arg(a, names) for a in args),
            )
        )
    return tuple(specs)


def _scale_channels(channels: Any, width: float, index: int) -> int:
    if not isinstance(channels, int) or channels < 1:
        raise BadInput(f"model config layer {index}: output channels must be a positive int, got {channels!r}")
    return make_divisible(channels * width)


def plan_layers(arch: Architecture, in_channels: int = 3) -> tuple[LayerPlan, ...]:
    """Channels and strides of every layer; BadInput when the graph is not a valid OMC network.

    Channel rules (omc-reference.md section 2): Focus/Conv/C3/SPP/Bottleneck output
    make_divisible(args[0] * width); Concat sums its inputs; CCN keeps the channels of the layer
    it reads (its config args are ignored: not width-scaled and off by one in the reference).
    Stride: Focus doubles then applies its conv stride; Conv applies its stride; nn.Upsample
    divides by its scale factor; Concat requires equal strides.
    """
    width = arch.width_multiple
    plans: list[LayerPlan] = []
    channels: list[int] = []
    strides: list[int] = []
    for spec in arch.layers():
        if spec.index == 0:
            sources_channels: tuple[int, ...] = (in_channels,)
            source_stride = 1
        else:
            sources_channels = tuple(channels[s] for s in spec.sources)
            source_strides = {strides[s] for s in spec.sources}
            if len(source_strides) != 1 and spec.module not in HEAD_MODULES:
                raise BadInput(f"model config layer {spec.index} ({spec.module}) joins maps of different strides")
            source_stride = strides[spec.sources[0]]
        args = spec.args
        stride = source_stride
        if spec.module in CONV_MODULES:
            out = _scale_channels(args[0] if args else None, width, spec.index)
            scaled = (out,) + tuple(args[1:])
            if spec.module in ("Conv", "Focus"):
                conv_stride = int(args[2]) if len(args) > 2 else 1
                stride = source_stride * conv_stride * (2 if spec.module == "Focus" else 1)
            if len(sources_channels) != 1:
                raise BadInput(f"model config layer {spec.index} ({spec.module}) must read exactly one layer")
        elif spec.module == "nn.Upsample":
            scale = args[1] if len(args) > 1 else None
            if not isinstance(scale, (int, float)) or scale <= 0 or source_stride % scale:
                raise BadInput(f"model config layer {spec.index}: nn.Upsample needs a scale factor dividing the stride")
            out, scaled, stride = sources_channels[0], tuple(args), int(source_stride // scale)
        elif spec.module == "Concat":
            out, scaled = sum(sources_channels), tuple(args)
        elif spec.module == "CCN":
            if len(sources_channels) != 1:
                raise BadInput(f"model config layer {spec.index} (CCN) must read exactly one layer")
            out, scaled = sources_channels[0], tuple(args)
        else:  # heads
            out, scaled, stride = 0, tuple(args), 0
        plans.append(LayerPlan(spec, sources_channels, out, stride, scaled))
        channels.append(out)
        strides.append(stride)
    _check_heads(plans)
    return tuple(plans)


def _check_heads(plans: Sequence[LayerPlan]) -> None:
    for module in HEAD_MODULES:
        found = [p for p in plans if p.spec.module == module]
        if len(found) != 1:
            raise BadInput(f"model config must have exactly one {module} layer, found {len(found)}")
        plan = found[0]
        if len(plan.spec.sources) != len(HEAD_LEVEL_STRIDE_RATIOS):
            raise BadInput(f"{module} (layer {plan.spec.index}) must read three levels")
        for source in plan.spec.sources:
            if plans[source].spec.module != "CCN":
                raise BadInput(f"{module} (layer {plan.spec.index}) must read CCN layers; layer {source} is not one")
        base = plans[plan.spec.sources[0]].stride
        ratios = tuple(plans[s].stride // base for s in plan.spec.sources)
        if ratios != HEAD_LEVEL_STRIDE_RATIOS or any(plans[s].stride % base for s in plan.spec.sources):
            strides = [plans[s].stride for s in plan.spec.sources]
            raise BadInput(f"{module} (layer {plan.spec.index}) must read strides s, 2s, 4s; got {strides}")


def head_layer(plans: Sequence[LayerPlan], module: str) -> LayerPlan:
    """The (unique) SAAN, DenseMask or Detect layer."""
    return next(p for p in plans if p.spec.module == module)


def level_channels(arch: Architecture) -> tuple[int, ...]:
    """Channels of the three levels the detection heads read (CCN outputs), stride 8 first."""
    plans = plan_layers(arch)
    detect = head_layer(plans, "Detect")
    return tuple(plans[s].out_channels for s in detect.spec.sources)


def level_strides(arch: Architecture) -> tuple[int, ...]:
    plans = plan_layers(arch)
    detect = head_layer(plans, "Detect")
    return tuple(plans[s].stride for s in detect.spec.sources)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a model-config YAML file (safe loader); BadInput when unreadable."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BadInput(f"cannot read model config {path} ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"model config {path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"model config {path} must hold a mapping")
    _check_config(data)
    return data


def default_config() -> dict[str, Any]:
    """The packaged CSTrack-L config (export/configs/cstrack_l.yaml) as a fresh dict."""
    import yaml

    text = (resources.files("omc.export") / "configs" / DEFAULT_CONFIG_NAME).read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def architecture_from_config(
    config: Mapping[str, Any],
    *,
    recheck_channels: int,
    embedding_dim: int | None = None,
    global_point: bool = DEFAULT_GLOBAL_POINT,
    shrink_radius: int = DEFAULT_SHRINK_RADIUS,
    anchors: Sequence[Sequence[float]] | None = None,
) -> Architecture:
    """Architecture of a config dict; BadInput when it does not describe a buildable OMC network.

    embedding_dim: None takes the config's `id_embedding` (512 when absent).
    anchors: None takes the config's; a checkpoint passes its stored `anchor_grid` instead.
    """
    config_dict: dict[str, Any] = copy.deepcopy(dict(config))
    _check_config(config_dict)
    nc = config_dict["nc"]
    if nc != 1:
        raise BadInput(f"OMC detects one class, but the model config has nc={nc}")
    if embedding_dim is None:
        embedding_dim = int(config_dict.get("id_embedding", 512))
    anchor_values = anchors if anchors is not None else config_dict["anchors"]
    arch = Architecture(
        config=config_dict,
        variant=variant_of(float(config_dict["depth_multiple"]), float(config_dict["width_multiple"])),
        depth_multiple=float(config_dict["depth_multiple"]),
        width_multiple=float(config_dict["width_multiple"]),
        nc=int(nc),
        anchors=tuple(tuple(float(v) for v in level) for level in anchor_values),
        embedding_dim=int(embedding_dim),
        recheck_channels=int(recheck_channels),
        global_point=bool(global_point),
        shrink_radius=int(shrink_radius),
    )
    if len(arch.anchors) != len(HEAD_LEVEL_STRIDE_RATIOS):
        raise BadInput(f"OMC needs anchors for 3 levels, the config has {len(arch.anchors)}")
    if arch.embedding_dim < 1 or arch.shrink_radius < 1 or arch.recheck_channels < 0:
        raise BadInput(
            f"invalid architecture: embedding {arch.embedding_dim}, radius {arch.shrink_radius}, "
            f"re-check channels {arch.recheck_channels}"
        )
    channels = level_channels(arch)
    if arch.has_recheck and channels != (arch.recheck_channels, 2 * arch.recheck_channels, 4 * arch.recheck_channels):
        raise BadInput(
            f"re-check channel base {arch.recheck_channels} does not fit the level channels {list(channels)} "
            "(it must equal the stride-8 level's channels, the others being 2x and 4x)"
        )
    return arch


def architecture_for_variant(
    variant: str = "l",
    *,
    with_recheck: bool = True,
    global_point: bool = DEFAULT_GLOBAL_POINT,
    shrink_radius: int = DEFAULT_SHRINK_RADIUS,
) -> Architecture:
    """The default CSTrack config at a standard variant's multiples (s, m, l, x).

    With the re-check network its channel base C is the stride-8 level's channel count:
    128/192/256/320 for s/m/l/x, as the reference's table by variant letter.
    """
    if variant not in VARIANT_MULTIPLES:
        raise BadInput(f"variant '{variant}' is not one of {', '.join(VARIANT_MULTIPLES)}")
    config = default_config()
    config["depth_multiple"], config["width_multiple"] = VARIANT_MULTIPLES[variant]
    base = architecture_from_config(config, recheck_channels=0, global_point=global_point, shrink_radius=shrink_radius)
    if not with_recheck:
        return base
    return replace(base, recheck_channels=level_channels(base)[0])
