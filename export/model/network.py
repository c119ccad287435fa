"""The OMC network in PyTorch: CSTrack base model plus the re-check network.

Module paths equal the reference's state-dict keys (omc-reference.md section 6): `OMCNetwork`
holds `model` (the base; its layers in `model.model.<i>`), `siambox` and `siamheatmap`, as the
reference's stage-2 `SiamMot` does. A stage-1 checkpoint (bare `Model`, keys `model.<i>...`)
loads after prefixing its keys with `model.` (omc.export.checkpoint does that).

Every constant that depends on the input size (CCN pooling matrices, Detect grids, the map's
row/column iota) is a non-persistent buffer built for `input_hw` at construction, so an exported
graph sees constants; an eager call at another size (a multiple of 32) computes them on the fly.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, cast

import torch
from torch import Tensor, nn

from omc.contract import EngineMeta
from omc.errors import BadInput
from omc.export.model.architecture import Architecture, LayerPlan, head_layer, level_strides, plan_layers
from omc.export.model.blocks import C3, SPP, Bottleneck, Concat, Conv, Focus
from omc.export.model.ccn import CCN
from omc.export.model.heads import CENTRE_OFFSET, DenseMask, Detect
from omc.export.model.recheck import RecheckBoxHead, RecheckHeatmapHead
from omc.export.model.saan import SAAN
from omc.export.model.similarity import REFERENCE_WINDOW, aggregate_similarity, l2_normalize

# Default network input (H, W): the reference runs 1088 wide x 608 high.
DEFAULT_INPUT_HW = (608, 1088)


class DetectorOutputs(NamedTuple):
    """What one detector pass produces (omc-reference.md section 2).

    candidates: [B, N, 6] decoded (cx, cy, w, h in input pixels, obj, cls), rows P3, P4, P5,
        within a level (anchor, row, col). dense: [B, 1, h, w] density in (0, 1).
    id_map: [B, h, w, E] raw ID embeddings (not normalised).
    recheck_features: [B, C, h, w] F_t of the heat-map head, None without re-check.
    siambox_raw: [B, h, w, 4] raw re-check boxes, None without re-check.
    (h, w) = (H / 8, W / 8).
    """

    candidates: Tensor
    dense: Tensor
    id_map: Tensor
    recheck_features: Tensor | None
    siambox_raw: Tensor | None


def _check_input_hw(input_hw: Sequence[int], multiple: int) -> tuple[int, int]:
    height, width = (int(v) for v in input_hw)
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise BadInput(f"input size {width}x{height} (WxH) must be positive multiples of {multiple}")
    return height, width


def _build_layer(plan: LayerPlan, arch: Architecture, plans: Sequence[LayerPlan], input_hw: tuple[int, int]) -> nn.Module:
    spec, args = plan.spec, plan.scaled_args
    c_in = plan.in_channels[0]

    def one() -> nn.Module:
        if spec.module == "Focus":
            return Focus(c_in, *args)
        if spec.module == "Conv":
            return Conv(c_in, *args)
        if spec.module == "C3":
            return C3(c_in, args[0], spec.repeats, *args[1:])
        if spec.module == "Bottleneck":
            return Bottleneck(c_in, *args)
        if spec.module == "SPP":
            return SPP(c_in, *args)
        if spec.module == "nn.Upsample":
            size, scale, mode = (list(args) + [None, None, "nearest"])[:3]
            return nn.Upsample(size=size, scale_factor=scale, mode=mode)
        if spec.module == "Concat":
            return Concat(*args)
        if spec.module == "CCN":
            stride = plan.stride
            return CCN(c_in, (input_hw[0] // stride, input_hw[1] // stride))
        level_channels = [plans[s].out_channels for s in spec.sources]
        if spec.module == "SAAN":
            return SAAN(level_channels, arch.embedding_dim)
        if spec.module == "DenseMask":
            return DenseMask(level_channels)
        strides = [plans[s].stride for s in spec.sources]
        return Detect(
            arch.anchors,
            level_channels,
            strides,
            [(input_hw[0] // s, input_hw[1] // s) for s in strides],
            arch.outputs_per_anchor,
        )

    try:
        # C3 takes the repeats itself; other modules repeated n times become a Sequential (reference rule).
        if spec.repeats > 1 and spec.module != "C3":
            return nn.Sequential(*(one() for _ in range(spec.repeats)))
        return one()
    except (TypeError, ValueError) as exc:
        raise BadInput(f"model config layer {spec.index} ({spec.module}, args {list(spec.args)}) is invalid: {exc}") from None


class CSTrackBase(nn.Module):
    """The reference's `Model`: YOLOv5 backbone + PAN neck + CCN + SAAN + DenseMask + Detect.

    Layers live in `self.model` (keys `model.<i>...`) and run in config order, each reading the
    outputs of its `from` layers. BatchNorm eps is 1e-3 throughout (the reference's reset).
    """

    def __init__(self, arch: Architecture, input_hw: tuple[int, int]) -> None:
        super().__init__()
        plans = plan_layers(arch)
        self.sources: list[tuple[int, ...]] = [p.spec.sources for p in plans]
        self.model = nn.ModuleList(_build_layer(p, arch, plans, input_hw) for p in plans)
        self.saan_index = head_layer(plans, "SAAN").spec.index
        self.dense_index = head_layer(plans, "DenseMask").spec.index
        self.detect_index = head_layer(plans, "Detect").spec.index
        self.level_sources: tuple[int, ...] = head_layer(plans, "Detect").spec.sources
        self.level_strides: tuple[int, ...] = tuple(plans[s].stride for s in self.level_sources)
        self.level_channels: tuple[int, ...] = tuple(plans[s].out_channels for s in self.level_sources)
        # Which layer outputs must be kept for later layers (others are dropped as soon as used).
        consumers = {s for p in plans[1:] for s in p.spec.sources}
        self.kept: frozenset[int] = frozenset(consumers)

    @property
    def detect(self) -> Detect:
        return cast(Detect, self.model[self.detect_index])  # plan_layers guarantees the type

    def set_input_hw(self, input_hw: tuple[int, int]) -> None:
        sizes = [(input_hw[0] // s, input_hw[1] // s) for s in self.level_strides]
        for source, size in zip(self.level_sources, sizes):
            cast(CCN, self.model[source]).set_map_size(size)
        self.detect.set_map_sizes(sizes)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """images [B, 3, H, W] -> (candidates, dense, id_map, levels).

        levels: the three CCN outputs (detection branch, ID branch) the heads read, stride 8 first.
        """
        outputs: dict[int, Any] = {}
        x: Any = images
        for index, layer in enumerate(self.model):
            if index in (self.saan_index, self.dense_index, self.detect_index):
                continue
            if index > 0:
                sources = self.sources[index]
                x = outputs[sources[0]] if len(sources) == 1 else [outputs[s] for s in sources]
            x = layer(x)
            if index in self.kept:
                outputs[index] = x
        levels: list[tuple[Tensor, Tensor]] = [outputs[s] for s in self.level_sources]
        det_levels = [level[0] for level in levels]
        id_levels = [level[1] for level in levels]
        id_map = self.model[self.saan_index](id_levels)
        dense = self.model[self.dense_index](det_levels)
        candidates = self.model[self.detect_index](det_levels)
        return candidates, dense, id_map, levels


class OMCNetwork(nn.Module):
    """CSTrack base + (optional) re-check network, with the per-frame pieces as methods.

    arch: the Architecture (arch.recheck_channels == 0 builds plain CSTrack: no `siambox`,
    `siamheatmap`, and forward_detector returns None for the re-check outputs).
    input_hw: (H, W) the input-size constants are built for; multiples of 32.
    """

    map_rows: Tensor  # [h] int64 0..h-1 of the stride-8 map (non-persistent buffer)
    map_cols: Tensor  # [w]

    def __init__(self, arch: Architecture, input_hw: tuple[int, int] = DEFAULT_INPUT_HW) -> None:
        super().__init__()
        self.architecture = arch
        self.input_hw = _check_input_hw(input_hw, max(level_strides(arch)))
        self.model = CSTrackBase(arch, self.input_hw)
        self.siambox: RecheckBoxHead | None = None
        self.siamheatmap: RecheckHeatmapHead | None = None
        if arch.has_recheck:
            self.siambox = RecheckBoxHead(arch.recheck_channels)
            self.siamheatmap = RecheckHeatmapHead(arch.recheck_channels)
        self._register_map_constants()

    # --- input-size constants ------------------------------------------------------------------

    @property
    def map_hw(self) -> tuple[int, int]:
        """(h, w) of the stride-8 maps for `input_hw`."""
        stride = self.model.level_strides[0]
        return self.input_hw[0] // stride, self.input_hw[1] // stride

    def engine_meta(self, **fields: Any) -> EngineMeta:
        """The export.json of an export of this network: its own facts (input size, embedding
        size, re-check channels, level strides, shrink radius, Global_Point, variant) with
        `fields` (EngineMeta's other fields, or overrides of these) on top."""
        arch = self.architecture
        facts: dict[str, Any] = {
            "input_hw": tuple(self.input_hw), "embedding_dim": arch.embedding_dim,
            "recheck_channels": arch.recheck_channels, "strides": tuple(self.model.level_strides),
            "has_recheck": arch.has_recheck, "shrink_radius": arch.shrink_radius,
            "global_point": bool(arch.global_point), "variant": arch.variant,
        }  # fmt: skip
        return EngineMeta(**{**facts, **fields})

    def _register_map_constants(self) -> None:
        h, w = self.map_hw
        self.register_buffer("map_rows", torch.arange(h, dtype=torch.int64), persistent=False)
        self.register_buffer("map_cols", torch.arange(w, dtype=torch.int64), persistent=False)

    def set_input_hw(self, input_hw: tuple[int, int]) -> None:
        """Rebuild every input-size constant for another (H, W) (multiples of 32), e.g. before export."""
        self.input_hw = _check_input_hw(input_hw, max(self.model.level_strides))
        self.model.set_input_hw(self.input_hw)
        h, w = self.map_hw
        device = self.map_rows.device
        self.map_rows = torch.arange(h, dtype=torch.int64, device=device)
        self.map_cols = torch.arange(w, dtype=torch.int64, device=device)

    def _map_index(self, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
        rows, cols = self.map_rows, self.map_cols
        if rows.shape[0] != h or cols.shape[0] != w:
            rows = torch.arange(h, dtype=torch.int64, device=device)
            cols = torch.arange(w, dtype=torch.int64, device=device)
        return rows, cols

    # --- detector ------------------------------------------------------------------------------

    def forward_detector(self, images: Tensor) -> DetectorOutputs:
        """images: float [B, 3, H, W], RGB, scaled to [0, 1] (H, W multiples of 32)."""
        candidates, dense, id_map, levels = self.model(images)
        det_levels = [level[0] for level in levels]
        features = box_raw = None
        if self.siambox is not None and self.siamheatmap is not None:
            # Both re-check heads read the CCN detection branches (omc-reference.md section 2).
            box_raw = self.siambox(det_levels)
            features = self.siamheatmap.fuse_levels(det_levels)
        return DetectorOutputs(candidates, dense, id_map, features, box_raw)

    def forward(self, images: Tensor) -> DetectorOutputs:
        return self.forward_detector(images)

    # --- re-check ------------------------------------------------------------------------------

    @staticmethod
    def normalize_id_map(id_map: Tensor) -> Tensor:
        """[B, h, w, E] raw -> unit-length embeddings per cell (F.normalize's eps 1e-12)."""
        return l2_normalize(id_map, dim=-1)

    def decode_recheck_boxes(self, siambox_raw: Tensor) -> Tensor:
        """[B, h, w, 4] raw -> [B, h, w, 4] corners (x1, y1, x2, y2) in input pixels.

        cx, cy = ((sigmoid(raw_xy) - 0.5) * k + grid_P3) * 8 (Detect's k and stride-8 grid);
        w, h = raw_wh * 8 (linear, not the anchor form); corners = centre -/+ size / 2.
        """
        detect = self.model.detect
        stride = detect.strides[0]
        h, w = siambox_raw.shape[1:3]
        grid = detect.level_grid(0, (int(h), int(w)), siambox_raw)
        centre = ((torch.sigmoid(siambox_raw[..., 0:2]) - CENTRE_OFFSET) * detect.k + grid) * stride
        half = siambox_raw[..., 2:4] * stride / 2
        return torch.cat((centre - half, centre + half), -1)

    def aggregate_similarity(
        self, id_unit: Tensor, tracklets: Tensor, radius: int, window: str = REFERENCE_WINDOW,
        global_point: bool = True,
    ) -> Tensor:
        """Ms [1, 1, h, w]: see omc.export.model.similarity.aggregate_similarity.

        id_unit: [1, h, w, E] L2-normalised ID map; tracklets: [n, E] (normalised again).
        Window "reference" rows/cols [c - r, c + r), "paper" |x - c| <= r, both clipped at the
        border; all-zero sum -> zeros.
        """
        rows, cols = self._map_index(int(id_unit.shape[1]), int(id_unit.shape[2]), id_unit.device)
        return aggregate_similarity(
            id_unit, tracklets, rows, cols, radius=radius, window=window, global_point=global_point
        )

    def recheck_heatmap(self, aggregated: Tensor, recheck_features: Tensor) -> Tensor:
        """M_p [B, 1, h, w] = sigmoid(conv2(conv1(Ms) * F_t)); needs the re-check network."""
        if self.siamheatmap is None:
            raise BadInput("this network has no re-check network (a stage-1 / CSTrack checkpoint)")
        result: Tensor = self.siamheatmap(aggregated, recheck_features)
        return result


def build_network(arch: Architecture, input_hw: tuple[int, int] = DEFAULT_INPUT_HW) -> OMCNetwork:
    """A freshly initialised OMCNetwork (PyTorch default init, BN eps as the reference), eval mode."""
    return OMCNetwork(arch, input_hw).eval()
