"""The two exported graphs as PyTorch modules: `DetectorGraph` and `RecheckGraph` (engine-contract.md).

Each wraps an `OMCNetwork` and adds what the contract puts inside the engine, written only with
operators TensorRT's ONNX parser takes with static shapes apart from the batch B (detector) and
the tracklet count n (re-check):
- detector: uint8 BGR NHWC bytes -> float RGB NCHW / 255; the network; top-K candidates by
  obj * cls (constant K, sorted); corners; centre-cell gathers of the L2-normalised ID map and of
  the density; the decoded re-check boxes.
- re-check: tracklet similarity, shrink window, aggregation, refinement (M_p), 3x3 peak
  suppression, top-P peaks and their gathers.

Precision: the network may be a float16 copy (omc.export.precision.half_precision_network);
the graph then feeds it half tensors and casts back at the contract's boundary, while every
coordinate (decoded boxes, corners, centre cells, re-check boxes), every score ranking and the
ID-map normalisation stay float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omc.export.model import OMCNetwork

# Pixel value range of the uint8 input.
PIXEL_SCALE = 255.0
# Peak suppression window (3 x 3 max-pool, omc-reference.md section 2, "Peaks").
PEAK_WINDOW = 3
# Candidate columns: cx, cy, w, h (input pixels), obj, cls.
CENTRE_COLUMNS, SIZE_COLUMNS, OBJECTNESS_COLUMN, CLASS_COLUMN = slice(0, 2), slice(2, 4), 4, 5
FLOAT32 = torch.float32


def compute_dtype(network: nn.Module) -> torch.dtype:
    """The dtype the network's first convolution computes in (float32, or float16 for an fp16 export)."""
    return next(network.parameters()).dtype


def normalise_images(images: Tensor, dtype: torch.dtype) -> Tensor:
    """uint8 [B, H, W, 3] BGR -> [B, 3, H, W] RGB in [0, 1], in `dtype`.

    Divided by 255 in float32 (as the reference's host code does), then cast.
    """
    scaled = images.to(FLOAT32) / PIXEL_SCALE
    return scaled.flip(-1).permute(0, 3, 1, 2).to(dtype)


def centre_corners(centres: Tensor, sizes: Tensor) -> Tensor:
    """[..., 2] centres and [..., 2] sizes (float32 pixels) -> [..., 4] corners (x1, y1, x2, y2).

    x1 = cx - w / 2, x2 = cx + w / 2, as the reference computes them.
    """
    half = sizes / 2
    return torch.cat((centres - half, centres + half), -1)


def centre_cells(corners: Tensor, stride: int, map_hw: tuple[int, int]) -> Tensor:
    """Flat cell index (row * w + col) of each box's centre, int64 [...].

    corners: [..., 4] float32 pixels. col = clip(floor((x1 + x2) / (2 stride)), 0, w - 1), row
    likewise with y and h (engine-contract.md); computed from the same float32 corners the
    graph outputs. A NaN centre (NaN scores and boxes from damaged weights) gets cell 0: cast
    to int64 it would be an arbitrary index, and the gathers that use the cells would fail
    instead of passing the NaN rows on for the runtime to drop.
    """
    h, w = map_hw
    twice = 2.0 * stride
    col = _nan_to_zero(torch.floor((corners[..., 0] + corners[..., 2]) / twice)).clamp(0, w - 1)
    row = _nan_to_zero(torch.floor((corners[..., 1] + corners[..., 3]) / twice)).clamp(0, h - 1)
    return row.to(torch.int64) * w + col.to(torch.int64)


def _nan_to_zero(values: Tensor) -> Tensor:
    """`values` with NaN replaced by 0; infinities are left to the clamp.

    Written as `values == values` (false only for NaN): Equal and Where are already in the
    graphs' operator list (tests/unit/test_export_ops.py), IsNaN would add one to check against
    every TensorRT parser omc targets.
    """
    return torch.where(values == values, values, values.new_zeros(()))


def gather_rows(values: Tensor, index: Tensor) -> Tensor:
    """values [B, N, D], index int64 [B, K] -> [B, K, D]: values[b, index[b, k]]."""
    return torch.gather(values, 1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def top_candidates(candidates: Tensor, topk: int) -> tuple[Tensor, Tensor]:
    """The K best anchor candidates by obj * cls.

    candidates: [B, N, 6] float32 (cx, cy, w, h, obj, cls). Returns (corners [B, K, 4] float32
    pixels, scores [B, K] float32 descending). The product is taken in float32.
    """
    scores = candidates[..., OBJECTNESS_COLUMN] * candidates[..., CLASS_COLUMN]
    best, index = torch.topk(scores, topk, dim=1, largest=True, sorted=True)
    chosen = gather_rows(candidates[..., 0:4], index)
    return centre_corners(chosen[..., CENTRE_COLUMNS], chosen[..., SIZE_COLUMNS]), best


def suppress_non_peaks(heatmap: Tensor) -> Tensor:
    """[B, 1, h, w] -> same shape: the value where it equals its 3 x 3 max-pooled value, else 0."""
    pooled = F.max_pool2d(heatmap, PEAK_WINDOW, stride=1, padding=PEAK_WINDOW // 2)
    return torch.where(heatmap == pooled, heatmap, torch.zeros_like(heatmap))


class DetectorGraph(nn.Module):
    """detector.onnx: images uint8 [B, H, W, 3] BGR -> the contract's detector outputs.

    Outputs, in order: det_boxes [B, K, 4], det_scores [B, K], det_density [B, K],
    det_embeddings [B, K, E], id_embeddings [B, h, w, E], and with the re-check network
    recheck_features [B, C, h, w], recheck_boxes [B, h, w, 4]; all float32.
    """

    def __init__(self, network: OMCNetwork, topk: int) -> None:
        super().__init__()
        self.network = network
        self.topk = topk
        self.stride = network.model.level_strides[0]
        self.map_hw = network.map_hw

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        network = self.network
        outputs = network.forward_detector(normalise_images(images, compute_dtype(network)))
        boxes, scores = top_candidates(outputs.candidates.to(FLOAT32), self.topk)
        cells = centre_cells(boxes, self.stride, self.map_hw)
        # Normalised in float32: a half-precision sum of 512 squares can overflow.
        id_unit = network.normalize_id_map(outputs.id_map.to(FLOAT32))
        density = torch.gather(outputs.dense.to(FLOAT32).flatten(1), 1, cells)
        embeddings = gather_rows(id_unit.flatten(1, 2), cells)
        result: tuple[Tensor, ...] = (boxes, scores, density, embeddings, id_unit)
        if outputs.recheck_features is not None and outputs.siambox_raw is not None:
            recheck_boxes = network.decode_recheck_boxes(outputs.siambox_raw.to(FLOAT32))
            result += (outputs.recheck_features.to(FLOAT32), recheck_boxes)
        return result


class RecheckGraph(nn.Module):
    """recheck.onnx: (id_embeddings, recheck_features, recheck_boxes, tracklets) -> re-check outputs.

    Inputs: id_embeddings [1, h, w, E] (L2-normalised, from the detector), recheck_features
    [1, C, h, w], recheck_boxes [1, h, w, 4] corners, tracklets [n, E]. Outputs, in order:
    trans_boxes [1, P, 4], trans_scores [1, P] (suppressed heat, descending), trans_embeddings
    [1, P, E], recheck_heatmap [1, 1, h, w] (M_p); all float32.
    radius, window, global_point: the shrink window (omc.export.model.similarity).
    """

    def __init__(self, network: OMCNetwork, peaks: int, radius: int, window: str, global_point: bool) -> None:
        super().__init__()
        self.network = network
        self.peaks = peaks
        self.radius = radius
        self.window = window
        self.global_point = global_point

    def forward(
        self, id_embeddings: Tensor, recheck_features: Tensor, recheck_boxes: Tensor, tracklets: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        network = self.network
        dtype = compute_dtype(network)
        aggregated = network.aggregate_similarity(
            id_embeddings.to(dtype), tracklets.to(dtype), self.radius, self.window, self.global_point
        )
        heatmap = network.recheck_heatmap(aggregated, recheck_features.to(dtype)).to(FLOAT32)
        scores, cells = torch.topk(suppress_non_peaks(heatmap).flatten(1), self.peaks, dim=1, largest=True, sorted=True)
        boxes = gather_rows(recheck_boxes.flatten(1, 2), cells)
        embeddings = gather_rows(id_embeddings.flatten(1, 2), cells)
        return boxes, scores, embeddings, heatmap
