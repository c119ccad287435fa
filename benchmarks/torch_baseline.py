"""The PyTorch eager path: the reference implementation's per-frame computation, as a backend.

Every benchmark reports this project's speed-up over the way the reference runs a frame, on the
same machine, frames and thread count. This module does that computation with the project's own
PyTorch network (`omc.export.model.OMCNetwork`, full float32, NCHW, no autograd), in the
reference's order and form (omc-reference.md sections 1-4), not with the reference's code:

1. Host pre-processing: letterbox, then BGR -> RGB, / 255, NCHW float32 (the reference's data
   loader does this on the host; the exported graph does it inside).
2. Full network forward: backbone, neck, CCN, SAAN, DenseMask and Detect, which decodes EVERY
   anchor candidate (40698 at 1088 x 608), plus the frame-only parts of the re-check network.
3. With tracklets: similarity, shrink window, aggregation and the heat-map head, decoding of
   the re-check boxes over the whole map, then 3 x 3 peak suppression and the top 100 peaks.
4. Host post-processing as the reference does it: threshold, then cluster-DIoU NMS in torch over
   ALL candidates above the threshold (the engines keep the K best first), embeddings read at the
   centre cells, fusion of the re-check boxes by "+1" IoU in NumPy (the reference's
   cython_bbox), then association.

Association (Kalman, embedding and IoU matching, life cycle) is the runtime's own
(`Tracker.update_from_detections`), so the decisions of this path equal the runtime's whenever the networks
agree: the comparison isolates what the engines and the host code around them change. The
reference's per-tracklet Python loop in step 3 is vectorised here (the network's
`aggregate_similarity`), and boxes map back to the frame with the runtime's exact letterbox
inverse (omc-reference.md 4.8): both choices can only make this path faster or equal, so the
reported speed-ups are, if anything, conservative.

On a CUDA device the same path runs as the reference runs on a GPU: the network in float16
(`precision="fp16"`, the reference calls `.half()` on CUDA), eager. Two options go beyond it and
show what PyTorch alone can reach: `channels_last` (NHWC activations, the layout cuDNN's
tensor-core convolutions want) and `cuda_graph` (the detector replayed from a captured CUDA graph,
one per input shape, so its hundreds of kernel launches cost one). Host post-processing reads float32
either way. Every stage waits for the device before it returns, so each stage's time is its own.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from omc.config import TrackerConfig
from omc.contract import FLOAT_PRECISIONS, MAP_STRIDE, WINDOW_MODES, EngineMeta
from omc.errors import BadInput
from omc.runtime.boxes import DIOU_DIAGONAL_EPS
from omc.runtime.detections import DetectionRows, FrameDetections, assemble_detections
from omc.runtime.fusion import fuse_transductive
from omc.runtime.letterbox import LetterboxTransform, letterbox
from omc.runtime.tracker import STAGES as TRACKER_STAGES
from omc.runtime.tracker import Tracker
from omc.runtime.tracks import Track


if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from omc.export.model import DetectorOutputs, OMCNetwork

# Row layout of Detect's decoded candidates: cx, cy, w, h (input pixels), obj, cls.
_CX, _CY, _W, _H, _OBJ, _CLS = range(6)
# Peak suppression window of the re-check heat map (omc-reference.md 2, "Peaks").
PEAK_WINDOW = 3
# Scale from pixel coordinates to map cells: (x1 + x2) / 2 / MAP_STRIDE.
CELL_DIVISOR = 2.0 * MAP_STRIDE
# The reference's preprocessing scale of uint8 pixels.
PIXEL_SCALE = 255.0
# Eager runs of the detector on a side stream before its CUDA graph is captured (cuDNN picks its
# algorithms and the caching allocator settles; PyTorch's documented capture recipe).
GRAPH_WARMUP_RUNS = 3


@dataclass(frozen=True)
class RecheckPeaks:
    """The re-check's top-P peaks: boxes [P, 4] corners (input pixels), scores [P] (heat, descending),
    rows / cols [P] int64 cells of the stride-8 map."""

    boxes: Tensor
    scores: Tensor
    rows: Tensor
    cols: Tensor


def box_diou_torch(a: Tensor, b: Tensor, exponent: float) -> Tensor:
    """DIoU of every box in `a` [N, 4] with every box in `b` [M, 4] (corners), as the NMS uses it:
    IoU (plain widths, 0 where the union is empty) - (d^2 / (c^2 + 1e-7)) ** exponent. [N, M]."""
    import torch

    x1 = torch.maximum(a[:, None, 0], b[None, :, 0])
    y1 = torch.maximum(a[:, None, 1], b[None, :, 1])
    x2 = torch.minimum(a[:, None, 2], b[None, :, 2])
    y2 = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clamp_min(0) * (y2 - y1).clamp_min(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), torch.zeros_like(union))
    dx = ((b[:, 0] + b[:, 2]) / 2)[None, :] - ((a[:, 0] + a[:, 2]) / 2)[:, None]
    dy = ((b[:, 1] + b[:, 3]) / 2)[None, :] - ((a[:, 1] + a[:, 3]) / 2)[:, None]
    ew = torch.maximum(a[:, None, 2], b[None, :, 2]) - torch.minimum(a[:, None, 0], b[None, :, 0])
    eh = torch.maximum(a[:, None, 3], b[None, :, 3]) - torch.minimum(a[:, None, 1], b[None, :, 1])
    ratio = (dx * dx + dy * dy) / (ew * ew + eh * eh + DIOU_DIAGONAL_EPS)
    return iou - ratio**exponent


def cluster_diou_nms_torch(
    boxes: Tensor, scores: Tensor, thresholds: Tensor, *, exponent: float, max_rounds: int, max_keep: int
) -> Tensor:
    """Indices of the boxes cluster-DIoU NMS keeps, highest score first (torch, on the boxes' device).

    boxes [N, 4] corners, scores [N], thresholds [N] (a box is suppressed when its DIoU with a kept
    higher-scoring box is >= its threshold). Iterates "kept = max overlap with kept < threshold"
    from all kept to a fixed point, at most max_rounds rounds; returns int64 [M <= max_keep].
    """
    import torch

    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order]
    overlap = torch.triu(box_diou_torch(ranked, ranked, exponent), diagonal=1)
    limit = thresholds[order]
    zero = torch.zeros((), dtype=overlap.dtype, device=overlap.device)
    keep = updated = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for _ in range(max_rounds):  # each round is one [N, N] operation; few rounds in practice
        worst = torch.where(keep[:, None], overlap, zero).amax(dim=0)
        updated = worst < limit
        if torch.equal(updated, keep):
            break
        keep = updated
    return order[updated][:max_keep]


def centre_cells_torch(boxes: Tensor, map_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(rows, cols) int64 [N] of the boxes' centre cells on the stride-8 map, clipped to it."""
    import torch

    h, w = map_hw
    cols = torch.floor((boxes[:, 0] + boxes[:, 2]) / CELL_DIVISOR).clamp(0, w - 1).to(torch.int64)
    rows = torch.floor((boxes[:, 1] + boxes[:, 3]) / CELL_DIVISOR).clamp(0, h - 1).to(torch.int64)
    return rows, cols


def _numpy(tensor: Tensor) -> np.ndarray:
    """A host copy; floating tensors as float32 (an fp16 network's outputs included)."""
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


class CapturedDetector:
    """`network.forward_detector` replayed from CUDA graphs, one captured per input shape.

    Call it with a float [B, 3, H, W] tensor on the network's CUDA device, under inference mode.
    The returned DetectorOutputs are the graph's static output tensors: the next call overwrites
    them, so copy what must outlive the frame.
    """

    def __init__(self, network: OMCNetwork, memory_format: torch.memory_format) -> None:
        self.network = network
        self.memory_format = memory_format
        self._graphs: dict[tuple[int, ...], tuple[Tensor, torch.cuda.CUDAGraph, DetectorOutputs]] = {}

    def __call__(self, images: Tensor) -> DetectorOutputs:
        entry = self._graphs.get(tuple(images.shape))
        if entry is None:
            entry = self._graphs[tuple(images.shape)] = self._capture(images)
        static_input, graph, outputs = entry
        static_input.copy_(images)
        graph.replay()
        return outputs

    def _capture(self, images: Tensor) -> tuple[Tensor, torch.cuda.CUDAGraph, DetectorOutputs]:
        import torch

        static_input = images.clone(memory_format=self.memory_format)
        side = torch.cuda.Stream(images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_RUNS):
                self.network.forward_detector(static_input)
        torch.cuda.current_stream(images.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.network.forward_detector(static_input)
        return static_input, graph, outputs


class TorchReferencePath:
    """The reference's per-frame computation on an `OMCNetwork` (see the module docstring).

    network: float32, eval mode (omc.export load_checkpoint / random_checkpoint give one); left
    untouched off the CPU (the path runs a copy converted to `device` and `precision`).
    config: the tracker's thresholds.  peaks: P, the re-check peaks decoded (the reference's 100).
    window: shrink-window mode ("reference" or "paper"); radius and Global_Point come from the
    network's architecture (its checkpoint's stored options).  device: where the network runs.
    precision: "fp32" or "fp16" (the network's weights and activations).  channels_last: NHWC
    activations.  cuda_graph: replay the detector from CUDA graphs (a CUDA device only).
    """

    def __init__(
        self,
        network: OMCNetwork,
        config: TrackerConfig = TrackerConfig(),
        peaks: int = 100,
        window: str = WINDOW_MODES[0],
        device: str = "cpu",
        precision: str = "fp32",
        channels_last: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        import torch

        if window not in WINDOW_MODES:
            raise BadInput(f"shrink window '{window}' is not one of {', '.join(WINDOW_MODES)}")
        if peaks < 1:
            raise BadInput(f"peaks must be at least 1, got {peaks}")
        if precision not in FLOAT_PRECISIONS:
            raise BadInput(f"precision '{precision}' is not one of {', '.join(FLOAT_PRECISIONS)}")
        self.device = torch.device(device)
        if cuda_graph and self.device.type != "cuda":
            raise BadInput(f"CUDA graphs need a CUDA device, not '{device}'")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        converted = self.device.type != "cpu" or self.dtype != torch.float32 or channels_last
        network = copy.deepcopy(network) if converted else network
        # Module.to takes memory_format (documented) but torch's type stubs omit it.
        self.network = network.to(self.device, self.dtype, memory_format=self.memory_format).eval()  # type: ignore[call-overload]
        self.captured = CapturedDetector(self.network, self.memory_format) if cuda_graph else None
        self.config = config
        self.peaks = peaks
        self.window = window
        arch = network.architecture
        self.radius = arch.shrink_radius
        self.global_point = arch.global_point
        self.has_recheck = arch.has_recheck
        self.input_hw = network.input_hw
        self.map_hw = network.map_hw

    def meta(self, max_tracklets: int = EngineMeta.max_tracklets) -> EngineMeta:
        """An EngineMeta describing this network as an export would (for a tracker around it)."""
        meta: EngineMeta = self.network.engine_meta(peaks=self.peaks, shrink_window=self.window, max_tracklets=max_tracklets)
        return meta

    # --- 1. host pre-processing ---------------------------------------------------------------

    def preprocess(self, frame_bgr: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], LetterboxTransform]:
        """uint8 [h, w, 3] BGR frame -> (float32 [1, 3, H, W] RGB in [0, 1], letterbox transform)."""
        images, transform = letterbox(frame_bgr, self.input_hw)
        return self.normalise(images), transform

    @staticmethod
    def normalise(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """uint8 [B, H, W, 3] BGR -> new float32 [B, 3, H, W] RGB / 255 (the reference's host step)."""
        rgb = images[..., ::-1].transpose(0, 3, 1, 2)
        return np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(PIXEL_SCALE)

    def to_device(self, images: npt.NDArray[np.float32]) -> Tensor:
        """Host float32 [B, 3, H, W] -> tensor on the network's device, in its dtype and layout."""
        import torch

        tensor = torch.from_numpy(images).to(self.device).to(self.dtype, memory_format=self.memory_format)
        self.synchronize()
        return tensor

    def synchronize(self) -> None:
        """Wait for the device's queued work (a no-op on the CPU), so a stage's time is its own."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- 2. network ---------------------------------------------------------------------------

    def detect(self, images: Tensor) -> DetectorOutputs:
        """Full network forward on [B, 3, H, W] from `to_device` (every candidate decoded).

        With CUDA graphs the outputs are overwritten by the next call (see CapturedDetector)."""
        import torch

        with torch.inference_mode():
            outputs = self.captured(images) if self.captured is not None else self.network.forward_detector(images)
        self.synchronize()
        return outputs

    # --- 3. re-check ----------------------------------------------------------------------------

    def recheck(self, outputs: DetectorOutputs, tracklets: Tensor) -> RecheckPeaks:
        """Re-check of batch item 0 against tracklets [n, E] (n >= 1): the top-P heat-map peaks."""
        import torch

        if not self.has_recheck or outputs.recheck_features is None or outputs.siambox_raw is None:
            raise BadInput("this network has no re-check network (a stage-1 / CSTrack checkpoint)")
        network = self.network
        with torch.inference_mode():
            id_unit = network.normalize_id_map(outputs.id_map[0:1])
            aggregated = network.aggregate_similarity(
                id_unit, tracklets.to(self.device, id_unit.dtype), self.radius, self.window, bool(self.global_point)
            )
            heatmap = network.recheck_heatmap(aggregated, outputs.recheck_features[0:1])
        peaks = self.decode_peaks(heatmap, outputs.siambox_raw[0:1])
        self.synchronize()
        return peaks

    def decode_peaks(self, heatmap: Tensor, siambox_raw: Tensor) -> RecheckPeaks:
        """The reference's re-check decode: boxes over the whole map, 3 x 3 peak suppression, top P.

        heatmap: M_p [1, 1, h, w]; siambox_raw: raw re-check boxes [1, h, w, 4].
        """
        import torch

        with torch.inference_mode():
            # Boxes decode in float32 whatever the network's precision (fp16 rounds pixels).
            box_map = self.network.decode_recheck_boxes(siambox_raw.float())[0]  # [h, w, 4], every cell
            pooled = torch.nn.functional.max_pool2d(heatmap, PEAK_WINDOW, stride=1, padding=PEAK_WINDOW // 2)
            peaks_only = torch.where(pooled == heatmap, heatmap, torch.zeros_like(heatmap))[0, 0]
            width = peaks_only.shape[1]
            scores, index = torch.topk(peaks_only.flatten(), min(self.peaks, peaks_only.numel()))
            rows = torch.div(index, width, rounding_mode="floor")
            cols = index % width
            return RecheckPeaks(box_map[rows, cols], scores.float(), rows, cols)

    # --- 4. host post-processing ----------------------------------------------------------------

    def detections(
        self, outputs: DetectorOutputs, peaks: RecheckPeaks | None, transform: LetterboxTransform
    ) -> FrameDetections:
        """The frame's detections (batch item 0): basic ones by score, then fused re-check boxes.

        Basic: candidates with obj > conf_thres, score = obj * cls > conf_thres, cluster-DIoU NMS
        with thresholds max(density at the centre cell, nms_thres), at most max_detections.
        Re-check: peaks with heat > recheck_score_thres, by heat, kept when their "+1" IoU with
        every basic box is <= fusion_iou_thres. Embeddings: the ID map at the centre / peak cell.
        """
        import torch

        config = self.config
        with torch.inference_mode():
            candidates = outputs.candidates[0]
            confident = candidates[candidates[:, _OBJ] > config.conf_thres].float()
            scores = confident[:, _OBJ] * confident[:, _CLS]
            confident, scores = confident[scores > config.conf_thres], scores[scores > config.conf_thres]
            centre, half = confident[:, _CX:_CY + 1], confident[:, _W:_H + 1] / 2
            boxes = torch.cat((centre - half, centre + half), dim=1)
            rows, cols = centre_cells_torch(boxes, self.map_hw)
            density = outputs.dense[0, 0][rows, cols].float()
            thresholds = density.clamp_min(config.nms_thres)
            kept = cluster_diou_nms_torch(
                boxes, scores, thresholds, exponent=config.nms_diou_exponent,
                max_rounds=config.nms_max_rounds, max_keep=config.max_detections,
            )  # fmt: skip
            id_map = outputs.id_map[0]
            basic = DetectionRows(_numpy(boxes[kept]), _numpy(scores[kept]), _numpy(id_map[rows[kept], cols[kept]]),
                                  _numpy(kept))  # fmt: skip
            restored = None
            if peaks is not None:
                confident_peaks = torch.nonzero(peaks.scores > config.recheck_score_thres).flatten()
                peak_boxes = _numpy(peaks.boxes[confident_peaks])
                fused = confident_peaks[torch.from_numpy(fuse_transductive(basic.boxes, peak_boxes, config.fusion_iou_thres))]
                restored = DetectionRows(_numpy(peaks.boxes[fused]), _numpy(peaks.scores[fused]),
                                         _numpy(id_map[peaks.rows[fused], peaks.cols[fused]]), _numpy(fused))  # fmt: skip
        return assemble_detections(basic, restored, transform)


class TorchReferenceTracker:
    """The whole tracker on the PyTorch eager path: `update(frame)` like the runtime's `Tracker`.

    Association is a runtime `Tracker` without engines, driven through its public API: the
    re-check gets its `tracklet_features()` (the tracklet pool the runtime would send), the frame's
    detections go to its `update_from_detections`. Per-stage times of the last frame are in
    `last_timings_ms` (the runtime tracker's stage names).
    """

    def __init__(self, path: TorchReferencePath, config: TrackerConfig = TrackerConfig(), frame_rate: float = 30.0) -> None:
        self.path = path
        self.config = config
        self.tracker = Tracker(None, None, path.meta(), config, frame_rate)
        self.last_timings_ms: dict[str, float] = dict.fromkeys(TRACKER_STAGES, 0.0)
        self.last_tracklet_count = 0

    @property
    def last_detections(self) -> FrameDetections | None:
        """The last frame's detections (frame pixels)."""
        return self.tracker.last_detections

    def update(self, frame_bgr: npt.NDArray[np.uint8]) -> list[Track]:
        """Track one uint8 [H, W, 3] BGR frame; returns its confirmed tracks."""
        start = time.perf_counter()
        images, transform = self.path.preprocess(frame_bgr)
        tensor = self.path.to_device(images)
        letterbox_ms = _since(start)
        start = time.perf_counter()
        outputs = self.path.detect(tensor)
        detector_ms = _since(start)
        tracks = self.update_from_torch(outputs, transform)
        self.last_timings_ms.update(letterbox=letterbox_ms, detector=detector_ms)
        return tracks

    def update_from_torch(
        self, outputs: DetectorOutputs, transform: LetterboxTransform, heatmap: Tensor | None = None
    ) -> list[Track]:
        """The post-network half of a frame: re-check (with tracklets), detections, association.

        outputs: the network's outputs for this frame. heatmap: M_p [1, 1, h, w] to use instead
        of running the re-check network (a stand-in's); its decode (peaks, boxes) still runs here.
        """
        import torch

        timings = dict.fromkeys(TRACKER_STAGES, 0.0)
        start = time.perf_counter()
        pool = self.tracker.tracklet_features() if self.config.recheck and self.path.has_recheck else None
        self.last_tracklet_count = 0 if pool is None else len(pool)
        peaks = None
        if pool is not None and len(pool) and heatmap is not None and outputs.siambox_raw is not None:
            peaks = self.path.decode_peaks(heatmap, outputs.siambox_raw[0:1])
        elif pool is not None and len(pool):
            peaks = self.path.recheck(outputs, torch.from_numpy(pool))
        timings["recheck"] = _since(start)
        start = time.perf_counter()
        detections = self.path.detections(outputs, peaks, transform)
        timings["nms_fusion"] = _since(start)
        tracks = self.tracker.update_from_detections(detections)
        timings["association"] = self.tracker.last_timings_ms["association"]
        self.last_timings_ms = timings
        return tracks


def _since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
