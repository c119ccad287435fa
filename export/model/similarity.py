"""Transductive detection: tracklet-to-map similarity, shrink window and aggregation.

omc-reference.md section 2, "Similarity", and section 5 (defects fixed here). All functions are
pure, loop-free and export-friendly: the tracklet count n may be dynamic, the map size (h, w)
is static, windows are comparisons against constant row/column index vectors, and divisions
are guarded with clamp_min (an `x + eps` would be folded away by the ONNX exporter).
"""

from __future__ import annotations

import torch
from torch import Tensor

from omc.contract import WINDOW_MODES

REFERENCE_WINDOW, PAPER_WINDOW = WINDOW_MODES
# Guard of the L2 normalisation, as torch.nn.functional.normalize (the reference's).
NORMALIZE_EPS = 1e-12
# The smallest guard used on half-precision tensors (an fp16 export): 1e-12 rounds to 0 in
# float16, so an all-zero row would give 0 / 0 = NaN; 1e-4 is a normal float16 number.
HALF_PRECISION_EPS = 1e-4
# Guard of Ms / max(Ms): an all-zero Ms gives 0 instead of NaN (the reference's defect). 1e-4
# stays a normal number in float16, whose subnormals TensorRT may flush to zero.
AGGREGATE_EPS = 1e-4


def l2_normalize(x: Tensor, dim: int, eps: float = NORMALIZE_EPS) -> Tensor:
    """x / max(||x||_2 over dim, eps): torch.nn.functional.normalize written out for export.

    On float16 / bfloat16 tensors eps is at least HALF_PRECISION_EPS.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        eps = max(eps, HALF_PRECISION_EPS)
    norm = torch.linalg.vector_norm(x, ord=2, dim=dim, keepdim=True)
    return x / norm.clamp_min(eps)


def similarity_maps(id_unit: Tensor, tracklets: Tensor) -> Tensor:
    """Positive cosine similarity of every tracklet with every cell.

    id_unit: [1, h, w, E] L2-normalised ID map. tracklets: [n, E] (normalised again here).
    Returns [n, h, w] = max(cos, 0), float like id_unit.
    """
    _, h, w, dim = id_unit.shape
    unit_tracklets = l2_normalize(tracklets.to(id_unit.dtype), dim=1)
    cosine = torch.matmul(id_unit.reshape(h * w, dim), unit_tracklets.transpose(0, 1))  # [h*w, n]
    return cosine.transpose(0, 1).reshape(-1, h, w).clamp_min(0)


def window_centres(maps: Tensor) -> Tensor:
    """[n, h, w] -> [n, 2] int64 (row, col) of each map's first maximum in row-major order."""
    w = maps.shape[-1]
    flat_index = torch.argmax(maps.flatten(1), dim=1)
    return torch.stack((torch.div(flat_index, w, rounding_mode="floor"), flat_index % w), 1)


def shrink_window_mask(
    centres: Tensor, row_index: Tensor, col_index: Tensor, radius: int, window: str = REFERENCE_WINDOW
) -> Tensor:
    """Boolean [n, h, w] window around each centre, clipped at the map border.

    centres: [n, 2] int64 (row, col). row_index: [h] int64 0..h-1; col_index: [w] 0..w-1.
    window "reference": rows [c - r, c + r) and cols likewise (2r x 2r, half-open), as the
    released weights were trained; "paper": |x - c| <= r (2r + 1 wide). A window reaching past
    the top/left border keeps its in-map part (the reference's negative slice start wraps
    and drops it, omc-reference.md section 5).
    """
    if window not in WINDOW_MODES:
        raise ValueError(f"window must be one of {WINDOW_MODES}, got {window!r}")
    rows = row_index.to(centres.dtype)[None, :] - centres[:, 0:1]  # [n, h] offset from centre
    cols = col_index.to(centres.dtype)[None, :] - centres[:, 1:2]  # [n, w]
    if window == REFERENCE_WINDOW:
        row_inside = (rows >= -radius) & (rows < radius)
        col_inside = (cols >= -radius) & (cols < radius)
    else:
        row_inside = rows.abs() <= radius
        col_inside = cols.abs() <= radius
    return row_inside[:, :, None] & col_inside[:, None, :]


def normalise_by_maximum(aggregated: Tensor, eps: float = AGGREGATE_EPS) -> Tensor:
    """[..., h, w] / max(max over (h, w), eps): an all-zero map stays zero."""
    return aggregated / aggregated.amax(dim=(-2, -1), keepdim=True).clamp_min(eps)


def aggregate_similarity(
    id_unit: Tensor,
    tracklets: Tensor,
    row_index: Tensor,
    col_index: Tensor,
    *,
    radius: int,
    window: str,
    global_point: bool,
) -> Tensor:
    """Ms: the tracklets' positive similarity maps, windowed, summed and max-normalised.

    id_unit: [1, h, w, E] L2-normalised ID map; tracklets: [n, E]; row_index/col_index: [h]/[w]
    int64 iota. global_point False sums the whole maps (the reference's `Global_Point` off).
    Returns [1, 1, h, w] in [0, 1], float like id_unit.
    """
    maps = similarity_maps(id_unit, tracklets)
    if global_point:
        mask = shrink_window_mask(window_centres(maps), row_index, col_index, radius, window)
        maps = maps * mask.to(maps.dtype)
    return normalise_by_maximum(maps.sum(0))[None, None]
