"""The PyTorch reference of the two graphs: the eager float32 OMCNetwork plus the post-graph maths
written plainly in NumPy / eager torch, independently of omc.export.graphs.

`omc verify` and the parity tests judge the exported graphs against it. Instead of a top-K list
it keeps every anchor candidate and the whole suppressed heat map, so ranked outputs can be
compared as sets (reference_tiny.md, "Comparing candidates").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from omc.export.model import OMCNetwork
from omc.runtime.boxes import centre_cells

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
# Peak suppression window of the reference decoder (omc-reference.md section 2, "Peaks").
PEAK_WINDOW = 3


@dataclass(frozen=True)
class ReferenceFrame:
    """The reference's view of one image (maps without the batch axis).

    corners: [N, 4] float32 (x1, y1, x2, y2) of every anchor candidate, input pixels, in the
    network's row order. scores: [N] float32 obj * cls. cells: [N] int64 flat centre cell
    (row * w + col). density: [h * w] float32. id_unit: [h, w, E] float32 L2-normalised ID map.
    recheck_features: [C, h, w]; recheck_boxes: [h, w, 4] corners; both None without re-check.
    stride: input pixels per map cell (8).
    """

    corners: F32
    scores: F32
    cells: I64
    density: F32
    id_unit: F32
    recheck_features: F32 | None
    recheck_boxes: F32 | None
    stride: int

    @property
    def map_hw(self) -> tuple[int, int]:
        return int(self.id_unit.shape[0]), int(self.id_unit.shape[1])

    def ranked_rows(self) -> I64:
        """Candidate rows by score descending, ties by row index (a stable sort)."""
        return np.argsort(-self.scores, kind="stable").astype(np.int64)


@dataclass(frozen=True)
class ReferenceHeatmap:
    """The reference re-check of one image: heat [h, w] (M_p) and suppressed [h, w] (the heat at
    3 x 3 local maxima, 0 elsewhere), both float32."""

    heat: F32
    suppressed: F32


def network_input(images: npt.NDArray[np.uint8], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, H, W, 3] BGR -> [B, 3, H, W] RGB / 255 (divided in float32, as the reference's
    host code, then cast to `dtype`)."""
    rgb = np.ascontiguousarray(images[..., ::-1])
    return (torch.from_numpy(rgb).permute(0, 3, 1, 2).to(torch.float32) / 255.0).to(dtype)


def _dtype(network: OMCNetwork) -> torch.dtype:
    return next(network.parameters()).dtype


def _host(tensor: torch.Tensor) -> F32:
    return tensor.to(torch.float32).numpy()


def candidate_corners(candidates: F32) -> F32:
    """[N, >= 4] (cx, cy, w, h, ...) float32 -> [N, 4] corners, x1 = cx - w / 2 in float32."""
    centre = candidates[:, 0:2]
    half = candidates[:, 2:4] / np.float32(2)
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32, copy=False)


def reference_detector(network: OMCNetwork, images: npt.NDArray[np.uint8]) -> list[ReferenceFrame]:
    """Run the eager network on uint8 [B, H, W, 3] BGR images; one ReferenceFrame per image.

    The network computes in its own dtype (float32; a float64 copy measures float32's rounding);
    every array is returned in float32.
    """
    stride = network.model.level_strides[0]
    with torch.no_grad():
        outputs = network.forward_detector(network_input(images, _dtype(network)))
        id_unit = network.normalize_id_map(outputs.id_map)
        boxes = None
        if outputs.siambox_raw is not None:
            boxes = network.decode_recheck_boxes(outputs.siambox_raw)
    frames = []
    for item in range(images.shape[0]):
        candidates = _host(outputs.candidates[item])
        corners = candidate_corners(candidates)
        unit = _host(id_unit[item])
        frames.append(
            ReferenceFrame(
                corners=corners,
                scores=(candidates[:, 4] * candidates[:, 5]).astype(np.float32),
                cells=centre_cells(corners, unit.shape[:2], stride),
                density=_host(outputs.dense[item, 0].reshape(-1)),
                id_unit=unit,
                recheck_features=None if outputs.recheck_features is None else _host(outputs.recheck_features[item]),
                recheck_boxes=None if boxes is None else _host(boxes[item]),
                stride=stride,
            )
        )
    return frames


def reference_heatmap(
    network: OMCNetwork, frame: ReferenceFrame, tracklets: F32, radius: int, window: str, global_point: bool
) -> ReferenceHeatmap:
    """M_p of one image for tracklets [n, E] float32, and its 3 x 3 peak-suppressed copy
    (computed in the network's dtype, returned in float32)."""
    if frame.recheck_features is None:
        raise ValueError("the reference frame has no re-check features (a network without re-check)")
    dtype = _dtype(network)
    with torch.no_grad():
        id_unit = torch.from_numpy(frame.id_unit).to(dtype)[None]
        aggregated = network.aggregate_similarity(
            id_unit, torch.from_numpy(tracklets).to(dtype), radius, window, global_point
        )
        heat = network.recheck_heatmap(aggregated, torch.from_numpy(frame.recheck_features).to(dtype)[None])
        pooled = F.max_pool2d(heat, PEAK_WINDOW, stride=1, padding=PEAK_WINDOW // 2)
        suppressed = heat * (heat == pooled).to(heat.dtype)
    return ReferenceHeatmap(_host(heat[0, 0]), _host(suppressed[0, 0]))
