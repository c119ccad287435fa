"""Every knob of omc, one frozen dataclass per stage, with the reference implementation's defaults.

Sources are cited as sections of `omc-reference.md` (the project's spec of the reference code,
JudasDie/SOTS branch MOT, folder OMC/). The CLI builds these from flags; nothing below `omc.cli`
sees an argparse namespace. `__post_init__` validates and raises `BadInput`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from omc.contract import FLOAT_PRECISIONS, WINDOW_MODES
from omc.errors import BadInput


def _check_unit_interval(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise BadInput(f"{owner}.{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of the OMC tracker (omc-reference.md sections 4 and 5)."""

    # Detection (section 4.2): candidates with obj*cls above this are kept; new tracks need it too.
    conf_thres: float = 0.5
    # Cluster-DIoU NMS (4.2): a box's threshold is max(density at its centre cell, nms_thres).
    nms_thres: float = 0.6
    # Exponent on the normalised centre distance in DIoU (4.2).
    nms_diou_exponent: float = 0.7
    # Fixed-point rounds of cluster NMS (4.2).
    nms_max_rounds: int = 200
    # At most this many basic detections per frame after NMS (4.2).
    max_detections: int = 300
    # Re-check peaks with heat above this become transductive boxes (2, "Peaks").
    recheck_score_thres: float = 0.3
    # A transductive box is added when its IoU with every basic box is at most this (4.3).
    fusion_iou_thres: float = 0.5
    # Frames a lost track is kept, at 30 fps; scaled by frame_rate / 30 (4).
    track_buffer: int = 30
    # Smoothing factor of the track embedding: f = f + alpha (new - f) (4.6).
    embedding_alpha: float = 0.1
    # First association: fused embedding + motion cost limit (4.5).
    match_thres_embedding: float = 0.4
    # Weight of the embedding cost against the Mahalanobis distance (4.5).
    motion_lambda: float = 0.98
    # Mahalanobis gate: chi-square 0.95 quantile with 4 degrees of freedom (4.5).
    gating_threshold: float = 9.4877
    # Second association: IoU distance limit for tracked tracks (4.5).
    match_thres_iou: float = 0.5
    # Third association: IoU distance limit for unconfirmed tracks (4.5).
    match_thres_unconfirmed: float = 0.7
    # Tracked and lost tracks closer than this IoU distance are duplicates (4, 4.8).
    duplicate_iou_distance: float = 0.15
    # Output filter of the reference entry script: area above this (frame pixels squared) ...
    min_box_area: float = 100.0
    # ... and width / height not above this.
    max_aspect_ratio: float = 4.0
    # Run the re-check network (OMC); False runs the CSTrack baseline on the same engines.
    recheck: bool = True

    def __post_init__(self) -> None:
        _check_unit_interval(
            "TrackerConfig",
            conf_thres=self.conf_thres,
            nms_thres=self.nms_thres,
            recheck_score_thres=self.recheck_score_thres,
            fusion_iou_thres=self.fusion_iou_thres,
            embedding_alpha=self.embedding_alpha,
            motion_lambda=self.motion_lambda,
        )
        for name in ("nms_max_rounds", "max_detections", "track_buffer"):
            if getattr(self, name) < 1:
                raise BadInput(f"TrackerConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("match_thres_embedding", "match_thres_iou", "match_thres_unconfirmed", "gating_threshold"):
            if getattr(self, name) <= 0:
                raise BadInput(f"TrackerConfig.{name} must be positive, got {getattr(self, name)}")

    def max_time_lost(self, frame_rate: float) -> int:
        """Frames a lost track survives at this frame rate (reference: int(frame_rate / 30 * buffer))."""
        return int(frame_rate / 30.0 * self.track_buffer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrackerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown tracker option(s): {', '.join(unknown)}")
        return cls(**dict(data))

    def with_overrides(self, **overrides: Any) -> "TrackerConfig":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# Inference backends (omc.runtime.backends): "ort" (ONNX Runtime) and "trt" (TensorRT) run the
# engines in this process (open_engines); "triton" sends each frame to a Triton server, where one
# request runs both engines (open_engine_pair only).
LOCAL_BACKENDS = ("ort", "trt")
SERVED_BACKENDS = ("triton",)
BACKENDS = LOCAL_BACKENDS + SERVED_BACKENDS
# ONNX Runtime's execution providers for each device it can run on, in its order of preference.
ORT_DEVICE_PROVIDERS: Mapping[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
# Devices a backend is opened on: "auto" (ONNX Runtime on the CPU, TensorRT on the first CUDA GPU,
# Triton where the server placed the engines) or an ONNX Runtime device; TensorRT also takes "cuda:N".
AUTO_DEVICE = "auto"
DEVICES = (AUTO_DEVICE, *ORT_DEVICE_PROVIDERS)

# How a stream's frames reach the engines: "every" (files: nothing dropped, the reader waits),
# "latest" (live: only the newest frame waits, older ones are dropped and counted), "auto" (latest
# for live sources, every for files).
STREAM_MODES = ("auto", "every", "latest")
# How track ids are written in JSON Lines records: "int" (3, counted per stream as in the
# MOTChallenge files) or "stream" ("door:3", unique across the streams of one file).
ID_LABELS = ("int", "stream")


@dataclass(frozen=True)
class StreamConfig:
    """How the multi-stream runtime reads, batches and recovers streams (omc.runtime.streams).

    Not from the reference (it tracks one file); the defaults favour low latency on live cameras.
    """

    # Frames a reader may hold ahead of the engines in every-frame mode (it waits when full).
    queue_frames: int = 4
    # Once one stream has a frame, wait at most this long (ms) for the other running streams'
    # frames so the detector batch fills; never waits for a stream that is reconnecting or done.
    batch_wait_ms: float = 10.0
    # Largest detector batch; 0 takes the export's max_batch (and more is refused).
    max_batch: int = 0
    # Live sources that fail or end reconnect after this delay (s), doubled after each failed
    # attempt up to reconnect_max_s; a frame read resets it.
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    # Failed reconnects in a row after which a live stream gives up (0: it never does).
    max_reconnect_attempts: int = 0
    # A live source that does not open, or sends no frame, within this long (s) has failed.
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.queue_frames < 1:
            raise BadInput(f"StreamConfig.queue_frames must be at least 1, got {self.queue_frames}")
        if self.max_batch < 0 or self.max_reconnect_attempts < 0:
            raise BadInput("StreamConfig.max_batch and max_reconnect_attempts must not be negative")
        for name in ("batch_wait_ms", "reconnect_initial_s", "reconnect_max_s", "open_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise BadInput(f"StreamConfig.{name} must be a finite number >= 0, got {value}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise BadInput("StreamConfig.reconnect_max_s must be at least reconnect_initial_s")

    def reconnect_delay_s(self, attempt: int) -> float:
        """Delay before reconnect attempt `attempt` (1-based): capped exponential backoff."""
        return min(self.reconnect_initial_s * 2.0 ** (attempt - 1), self.reconnect_max_s)


@dataclass(frozen=True)
class ClusterConfig:
    """How `omc cluster` spreads a streams file's streams over Ray workers (omc.apps.cluster).

    The [cluster] table of the streams file. Not from the reference (it tracks one file).
    """

    # Stream workers (Ray actors, each one StreamRuntime) for the streams without a pin; 0: as
    # many as streams_per_worker needs (at least 1). Pinned streams get workers of their own.
    workers: int = 0
    # Ray CPUs each worker reserves; with ONNX Runtime it also runs this many threads per operator
    # (rounded up), so workers sharing a machine do not oversubscribe its cores.
    cpus_per_worker: float = 1.0
    # Ray GPUs each worker reserves (a fraction shares a GPU); set it where the engines run on a GPU.
    gpus_per_worker: float = 0.0
    # Most streams one worker tracks (0: no limit). A dead worker's streams go to live workers of
    # their placement with room; when none has room a replacement worker is started.
    streams_per_worker: int = 0
    # Longest the workers may take to start and open their engines (s) before the run gives up.
    start_timeout_s: float = 120.0
    # Longest a local Ray (omc cluster run without --address) may take to start (s).
    ray_start_timeout_s: float = 60.0
    # How often (s) the driver collects results and health from each worker: results reach the
    # files up to this late. Each collection costs CPU in the driver and the worker (1.2 to 4.6 ms
    # together on the 2-core machine, by its load), so a short interval is a steady cost.
    poll_interval_s: float = 0.25
    # How often (s) the status table that `omc cluster status` reads is refreshed.
    status_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.workers < 0 or self.streams_per_worker < 0:
            raise BadInput("[cluster] workers and streams_per_worker must not be negative")
        if not 0 < self.cpus_per_worker < float("inf"):
            raise BadInput(f"[cluster] cpus_per_worker must be a positive number, got {self.cpus_per_worker}")
        for name in ("gpus_per_worker", "start_timeout_s", "ray_start_timeout_s", "poll_interval_s", "status_interval_s"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise BadInput(f"[cluster] {name} must be a finite number >= 0, got {value}")
        if self.start_timeout_s == 0 or self.ray_start_timeout_s == 0:
            raise BadInput("[cluster] start_timeout_s and ray_start_timeout_s must be positive")


@dataclass(frozen=True)
class ExportConfig:
    """How `omc export` shapes the two engines (engine-contract.md)."""

    # Network input (width, height); multiples of 32. The reference runs 1088 x 608.
    img_size: tuple[int, int] = (1088, 608)
    # Largest detector batch the engines accept (B runs from 1 to this).
    max_batch: int = 4
    # Largest tracklet count n of the re-check engine.
    max_tracklets: int = 512
    # Detector candidates kept by top-K, by score (K).
    topk: int = 1000
    # Re-check heat-map peaks kept (P; the reference decodes 100).
    peaks: int = 100
    # Shrink-window radius r; the checkpoint's stored `radius` when None (reference default 3).
    shrink_radius: int | None = None
    # Shrink-window mode (WINDOW_MODES): "reference" as the released weights were trained, or "paper".
    shrink_window: str = "reference"
    # ONNX opset of the written graphs.
    opset: int = 18
    # fp32, or fp16 (half compute, float32 at the contract's boundary and for coordinates).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        width, height = self.img_size
        if width <= 0 or height <= 0 or width % 32 or height % 32:
            raise BadInput(f"image size {width}x{height} must be positive multiples of 32 (e.g. 1088x608)")
        for name in ("max_batch", "max_tracklets", "topk", "peaks"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.shrink_radius is not None and self.shrink_radius < 1:
            raise BadInput(f"--shrink-radius must be at least 1, got {self.shrink_radius}")
        if self.shrink_window not in WINDOW_MODES:
            raise BadInput(f"--shrink-window must be one of {', '.join(WINDOW_MODES)}, got '{self.shrink_window}'")
        if self.precision not in FLOAT_PRECISIONS:
            raise BadInput(f"--precision must be one of {', '.join(FLOAT_PRECISIONS)}, got '{self.precision}'")
        if not 17 <= self.opset <= 21:
            raise BadInput(f"--opset must be between 17 and 21, got {self.opset}")


def parse_size(text: str) -> tuple[int, int]:
    """'1088x608' -> (1088, 608); BadInput on anything else."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise BadInput(f"size '{text}' must be WIDTHxHEIGHT, e.g. 1088x608")
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class EvalConfig:
    """How `omc eval` scores results against MOTChallenge ground truth (MOTChallenge devkit rules)."""

    # A result box matches a ground-truth box when their IoU is at least this (MOTChallenge).
    iou_threshold: float = 0.5
    # Ground-truth rows count only when their 7th column (the "consider" mark) equals this.
    consider_mark: int = 1
    # MOT16/17/20 class id of pedestrians, the only class scored; -1 (no class given) counts too.
    pedestrian_class: int = 1
    # Classes whose matched result boxes are dropped before scoring instead of counting as false
    # positives: person on vehicle, static person, distractor, reflection (the MOTChallenge
    # evaluation's distractor classes, as in TrackEval's MOT loader and py-motmetrics' preprocess).
    distractor_classes: tuple[int, ...] = (2, 7, 8, 12)

    def __post_init__(self) -> None:
        _check_unit_interval("EvalConfig", iou_threshold=self.iou_threshold)
        if self.iou_threshold == 0.0:
            raise BadInput("EvalConfig.iou_threshold must be above 0, got 0")


@dataclass(frozen=True)
class OverlayConfig:
    """How `omc track --save-video` draws tracks on frames (our choice; the reference draws none)."""

    # Centres of the last this many frames form a track's trail.
    trail_length_frames: int = 30
    # Box and trail line thickness, pixels.
    line_thickness_px: int = 2
    # Restored (re-check) boxes are dashed: dash and gap length along the edge, pixels.
    dash_length_px: int = 6
    # Label text scale (OpenCV Hershey font units).
    font_scale: float = 0.5

    def __post_init__(self) -> None:
        for name in ("trail_length_frames", "line_thickness_px", "dash_length_px"):
            if getattr(self, name) < 1:
                raise BadInput(f"OverlayConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.font_scale <= 0:
            raise BadInput(f"OverlayConfig.font_scale must be positive, got {self.font_scale}")


# INT8 targets of `omc quantize`: "cpu" (ONNX Runtime on x86: unsigned 8-bit activations, signed
# per-channel weights, fused into QLinearConv) and "tensorrt" (TensorRT's explicit quantization:
# symmetric signed 8-bit everywhere, zero points 0). export-and-tensorrt-notes.md, "CPU speed".
QUANT_TARGETS = ("cpu", "tensorrt")
# How activation ranges are taken from the calibration data (onnxruntime.quantization's methods).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Regions of a graph `omc quantize` can keep in float (omc.calib.regions): the last convolution
# of every output path ("head"), everything after it ("tail": box decode, top-K, gathers,
# normalisations, peaks) and the re-check's tracklet similarity and aggregation ("similarity").
FLOAT_REGIONS = ("head", "tail", "similarity")
# Operator types `omc quantize` quantizes (outside the float regions): convolutions and the
# element-wise, pooling and data-movement operators between them, so that consecutive
# convolutions stay in 8 bits. Not: MatMul (CCN affinities and averaging, SAAN attention),
# Softmax, normalisations (InstanceNorm, LayerNorm), Gemm; omc.calib.quantize says why.
QUANT_OP_TYPES = (
    "Conv", "ConvTranspose", "Add", "Mul", "Sigmoid", "LeakyRelu", "MaxPool", "Concat", "Resize",
    "Reshape", "Transpose", "Slice", "Split",
)  # fmt: skip


@dataclass(frozen=True)
class CalibConfig:
    """How `omc calib` builds a calibration set and `omc quantize` writes INT8 graphs (calib/).

    The reference has no INT8 path: these are our choices, each with its reason.
    """

    # Calibration frames, sampled evenly over all sources (TensorRT's and ONNX Runtime's guides
    # use a few hundred images of a dataset; consecutive video frames are correlated, so fewer,
    # evenly spread frames carry the same information).
    frames: int = 64
    # Held-out frames (never used for calibration), evenly spread between them: drift figures.
    holdout_frames: int = 8
    # Calibration frames that also get a re-check sample (tracklets from the float tracker).
    # The re-check graph is small; its activation ranges settle with fewer samples.
    recheck_frames: int = 16
    # Consecutive frames the float tracker runs before a re-check sample's frame: a track is
    # confirmed on its second frame and joins the re-check pool on the third.
    tracker_warmup_frames: int = 4
    # When the float tracker has no live tracklet at a sample's frame (untrained weights, an
    # empty scene), the embeddings of this many top detector candidates stand in for them.
    fallback_tracklets: int = 16
    # Activation ranges: "minmax", "entropy" or "percentile" (onnxruntime.quantization).
    method: str = "minmax"
    # Percentile of |activation| kept by the "percentile" method.
    percentile: float = 99.999
    # Per-output-channel weight scales (what QLinearConv and TensorRT both support).
    per_channel: bool = True
    # Operator types to quantize (QUANT_OP_TYPES).
    op_types: tuple[str, ...] = QUANT_OP_TYPES
    # Regions kept in float (FLOAT_REGIONS); omc.calib.regions defines them.
    keep_float: tuple[str, ...] = FLOAT_REGIONS
    # Drift of INT8 vs float on held-out frames (omc.calib.drift): the float graph's top this
    # many candidates per frame are compared. The pairing gate and the bounds the figures are
    # held to are the "int8-drift" row of omc.export.judge.BOUNDS, with every other comparison's.
    drift_candidates: int = 100

    def __post_init__(self) -> None:
        # The CLI flag of each count (`omc calib`), as users meet these values.
        flags = {"frames": "--frames", "holdout_frames": "--holdout", "recheck_frames": "--recheck-frames"}
        for name in ("frames", "fallback_tracklets"):
            if getattr(self, name) < 1:
                raise BadInput(f"{flags.get(name, 'CalibConfig.' + name)} must be at least 1, got {getattr(self, name)}")
        for name in ("holdout_frames", "recheck_frames", "tracker_warmup_frames"):
            if getattr(self, name) < 0:
                raise BadInput(f"{flags.get(name, 'CalibConfig.' + name)} must be 0 or more, got {getattr(self, name)}")
        if self.method not in CALIBRATION_METHODS:
            raise BadInput(f"--method must be one of {', '.join(CALIBRATION_METHODS)}, got '{self.method}'")
        if not 50.0 < self.percentile <= 100.0:
            raise BadInput(f"--percentile must lie in (50, 100], got {self.percentile}")
        unknown = [region for region in self.keep_float if region not in FLOAT_REGIONS]
        if unknown:
            raise BadInput(f"--keep-float {', '.join(unknown)} is not one of {', '.join(FLOAT_REGIONS)}")
        if not self.op_types:
            raise BadInput("CalibConfig.op_types must name at least one operator type")
        if self.drift_candidates < 1:
            raise BadInput(f"CalibConfig.drift_candidates must be at least 1, got {self.drift_candidates}")


# TensorRT editions `omc build` can use: NVIDIA TensorRT (data-centre GPUs, Jetson) and TensorRT
# for RTX (RTX-class GPUs; builds without a GPU). "auto" prefers full TensorRT when importable.
TRT_EDITIONS = ("auto", "tensorrt", "rtx")
# TensorRT for RTX compute-capability targets (export-and-tensorrt-notes.md, "Builder targets").
RTX_GPU_TARGETS = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")
# What a TensorRT for RTX build without --gpu-target runs on: NVIDIA's CPU-only AOT documentation
# says compute capability 8.0, 8.6, 8.9, 12.0 "and later" (SM121, GB10, since TensorRT for RTX
# 1.5). The runtime refuses other GPUs up to the newest listed one from the sidecar, and asks
# TensorRT itself (`Runtime.get_engine_validity`) on the host for everything else.
RTX_PORTABLE_TARGETS = ("SM80", "SM86", "SM89", "SM120", "SM121")


@dataclass(frozen=True)
class TensorRTBuildConfig:
    """How `omc build` turns an ONNX export into TensorRT engines (export-and-tensorrt-notes.md)."""

    # "auto" (full TensorRT when importable, else TensorRT for RTX), "tensorrt" or "rtx".
    edition: str = "auto"
    # TensorRT for RTX targets, e.g. ("SM86",); empty builds the portable engine (RTX_PORTABLE_TARGETS).
    gpu_targets: tuple[str, ...] = ()
    # Detector profile's optimum batch: live tracking sends one frame at a time.
    opt_batch: int = 1
    # Re-check profile's optimum tracklet count: a typical crowd (clipped to the export's max).
    opt_tracklets: int = 32

    def __post_init__(self) -> None:
        if self.edition not in TRT_EDITIONS:
            raise BadInput(f"--edition must be one of {', '.join(TRT_EDITIONS)}, got '{self.edition}'")
        unknown = [target for target in self.gpu_targets if target not in RTX_GPU_TARGETS]
        if unknown:
            raise BadInput(f"--gpu-target {', '.join(unknown)} is not one of {', '.join(RTX_GPU_TARGETS)}")
        if len(set(self.gpu_targets)) != len(self.gpu_targets):
            raise BadInput(f"--gpu-target lists a target twice: {', '.join(self.gpu_targets)}")
        for name in ("opt_batch", "opt_tracklets"):
            if getattr(self, name) < 1:
                raise BadInput(f"TensorRTBuildConfig.{name} must be at least 1, got {getattr(self, name)}")


# TensorRT for RTX's dynamic-shape kernel strategies (IRuntimeConfig): "lazy" runs a generic kernel
# at once and compiles a shape-specialised one in the background, "eager" compiles it before the
# first run of each new shape, "none" only ever runs the generic kernels.
RTX_KERNEL_STRATEGIES = ("lazy", "eager", "none")


@dataclass(frozen=True)
class TensorRTRuntimeConfig:
    """How the TensorRT backend runs the engines (our choices; TensorRT for RTX only, full
    TensorRT compiles every kernel at build time and has none of these settings)."""

    # The detector sees a handful of batch sizes (1 to max_batch): specialise each, in the background.
    detector_kernels: str = "lazy"
    # The re-check sees every tracklet count n from 1 to max_tracklets: specialising each would
    # compile up to max_tracklets kernel sets in the background (CPU load, latency jitter), for
    # the few n-dependent layers of a network that costs under a tenth of the detector.
    recheck_kernels: str = "none"
    # Keep the kernels TensorRT for RTX compiles on this GPU in `<plan>.runtime-cache` beside the
    # plan (read at activation, written at deactivation), so the next process does not compile again.
    runtime_cache: bool = True

    def __post_init__(self) -> None:
        for name in ("detector_kernels", "recheck_kernels"):
            value = getattr(self, name)
            if value not in RTX_KERNEL_STRATEGIES:
                raise BadInput(f"TensorRTRuntimeConfig.{name} must be one of {', '.join(RTX_KERNEL_STRATEGIES)}, got '{value}'")


# Backends `omc bench` can time: the PyTorch eager reference path, ONNX Runtime fp32, ONNX
# Runtime on the INT8 CPU graphs (calib's `int8-cpu` folder), TensorRT (needs an NVIDIA GPU).
# torch: the reference path, eager float32 on the CPU. torch-cuda: the same on a CUDA GPU as the
# reference runs there (float16, eager). torch-cuda-graph: float16, channels-last, the detector
# replayed from a CUDA graph (PyTorch at its best). ort / ort-int8: ONNX Runtime on the CPU.
# trt: TensorRT engines on an NVIDIA GPU.
BENCH_BACKENDS = ("torch", "torch-cuda", "torch-cuda-graph", "ort", "ort-int8", "trt")


@dataclass(frozen=True)
class BenchConfig:
    """What `omc bench` measures and how long (benchmarks/; our choices, not the reference's).

    Sizes that describe the reference's own workload are cited: 1088 x 608 input and at most
    100 re-check peaks (omc-reference.md sections 1 and 2).
    """

    # Backends timed side by side on the same frames, in this order.
    backends: tuple[str, ...] = ("torch", "ort", "ort-int8")
    # Timed frames per backend (after the warm-up); more frames, steadier medians.
    frames: int = 20
    # Untimed frames per backend first (lazy initialisation, caches, JIT kernels).
    warmup: int = 3
    # Tracklet counts n fed to the re-check engine (synthetic rows of the frame's own ID map):
    # the re-check cost at each n. 0 means no re-check call (the CSTrack baseline).
    tracklets: tuple[int, ...] = (0, 10, 50, 200)
    # n of the per-stage table, of "OMC vs CSTrack" and of the re-check's share of the detector.
    headline_tracklets: int = 50
    # Detector batch sizes timed on repeated frames (each at most the export's max batch).
    batch: tuple[int, ...] = (1, 2, 4)
    # Timed runs per batch size (after one untimed run).
    batch_repeats: int = 3
    # Threads of ONNX Runtime's intra-op pool and of torch.set_num_threads, the same for all;
    # 0: every core this process may use.
    threads: int = 0
    # Size (width, height) of the generated clip used when no --source is given (MOT17's frames).
    clip_size: tuple[int, int] = (1920, 1080)
    # Seed of the generated clip, the synthetic tracklets and the synthetic host workload.
    seed: int = 0
    # Host post-processing workload (NMS + fusion + association): live tracks, detections above
    # threshold and frames timed (after host_warmup), on synthetic, deterministic engine outputs.
    host_tracks: int = 50
    host_detections: int = 100
    host_frames: int = 100
    host_warmup: int = 10
    # Targets the report compares against: host post-processing median (ms) and the re-check
    # engine's time at headline_tracklets as a share of the detector's.
    host_target_ms: float = 2.0
    recheck_share_target: float = 0.12
    # Side of the square float32 matrix product timed as the machine's ceiling, and its runs.
    ceiling_size: int = 4096
    ceiling_repeats: int = 3
    # Side of the square float16 matrix product timed on the GPU when a GPU backend ran (its
    # ceiling: tensor cores need a large product to reach their rate).
    gpu_ceiling_size: int = 8192

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BENCH_BACKENDS]
        if unknown or not self.backends:
            raise BadInput(
                f"--backend {', '.join(unknown) or '(none)'} is not one of {', '.join(BENCH_BACKENDS)}"
            )
        if len(set(self.backends)) != len(self.backends):
            raise BadInput(f"--backend lists a backend twice: {', '.join(self.backends)}")
        for name in ("frames", "batch_repeats", "host_tracks", "host_detections", "host_frames",
                     "ceiling_size", "ceiling_repeats", "gpu_ceiling_size"):
            if getattr(self, name) < 1:
                raise BadInput(f"BenchConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup", "threads", "host_warmup", "headline_tracklets"):
            if getattr(self, name) < 0:
                raise BadInput(f"BenchConfig.{name} must be 0 or more, got {getattr(self, name)}")
        if not self.tracklets or any(n < 0 for n in self.tracklets):
            raise BadInput(f"--tracklets must be counts of 0 or more, got {list(self.tracklets)}")
        if not self.batch or any(b < 1 for b in self.batch):
            raise BadInput(f"--batch must be sizes of 1 or more, got {list(self.batch)}")
        if self.host_detections < self.host_tracks:
            raise BadInput(
                f"BenchConfig.host_detections ({self.host_detections}) must be at least host_tracks "
                f"({self.host_tracks}): every track has a detection"
            )
        width, height = self.clip_size
        if width < 1 or height < 1:
            raise BadInput(f"clip size {width}x{height} must be positive")

    @property
    def tracklet_counts(self) -> tuple[int, ...]:
        """The sweep's counts plus headline_tracklets, ascending, without repeats."""
        return tuple(sorted(set(self.tracklets) | {self.headline_tracklets}))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tracklets"] = list(self.tracklets)
        data["batch"] = list(self.batch)
        data["backends"] = list(self.backends)
        data["clip_size"] = list(self.clip_size)
        return data


# Backends of a Triton repository's engine models: Triton's ONNX Runtime backend on the export's
# ONNX files, Triton's TensorRT backend on `omc build`'s NVIDIA TensorRT plans, or ONNX Runtime
# inside Triton's Python backend (servers without the ONNX Runtime backend, such as the one
# PyTriton ships; the end-to-end tests use it).
TRITON_PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan", "python")
# Where Triton places the engine models' instances: auto (a GPU when there is one), gpu, cpu.
TRITON_INSTANCE_KINDS = ("auto", "gpu", "cpu")
# How the triton backend sends tensors: system shared memory when the server is on this host,
# else gRPC (auto); always shared memory (on, refused when the server cannot map it); never (off).
TRITON_SHARED_MEMORY = ("auto", "on", "off")


@dataclass(frozen=True)
class TritonRepoConfig:
    """How `omc triton-repo` writes a Triton model repository (our choices; see README, Triton)."""

    # Backend of the detector and re-check models (TRITON_PLATFORMS).
    platform: str = "onnxruntime_onnx"
    # The model a client calls (one frame per request); the engines are <name>_detector and
    # <name>_recheck, so several exports can share one repository.
    model_name: str = "omc"
    # Detector batch sizes the dynamic batcher aims for (empty: any size up to the export's max_batch).
    preferred_batch_sizes: tuple[int, ...] = ()
    # How long the detector's batcher may hold a request to fill a batch (microseconds): about a
    # fifth of a detector run of the L model on a data-centre GPU, so a lone stream loses little.
    max_queue_delay_us: int = 2000
    # Instances of each engine model (instance_group count) and where they run.
    detector_instances: int = 1
    recheck_instances: int = 1
    instance_kind: str = "auto"
    # Instances of the frame model: each runs one frame at a time, so this many frames (of
    # different streams) can wait in the detector's batcher together; the default export's max_batch.
    frame_instances: int = 4

    def __post_init__(self) -> None:
        if self.platform not in TRITON_PLATFORMS:
            raise BadInput(f"--platform must be one of {', '.join(TRITON_PLATFORMS)}, got '{self.platform}'")
        if self.instance_kind not in TRITON_INSTANCE_KINDS:
            raise BadInput(f"--instance-kind must be one of {', '.join(TRITON_INSTANCE_KINDS)}, got '{self.instance_kind}'")
        if not self.model_name or not all(c.isalnum() or c in "_-" for c in self.model_name):
            raise BadInput(f"--model-name must be letters, digits, '_' or '-', got '{self.model_name}'")
        if self.max_queue_delay_us < 0:
            raise BadInput(f"--max-queue-delay-us must be 0 or more, got {self.max_queue_delay_us}")
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise BadInput(f"--preferred-batch-sizes must be 1 or more, got {list(self.preferred_batch_sizes)}")
        for name in ("detector_instances", "recheck_instances", "frame_instances"):
            if getattr(self, name) < 1:
                raise BadInput(f"TritonRepoConfig.{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class TritonClientConfig:
    """How the `triton` backend talks to a Triton server (omc.runtime.backends.triton)."""

    # gRPC address of the server (host:port; Triton's default gRPC port is 8001).
    url: str = "127.0.0.1:8001"
    # The model `omc triton-repo` wrote (TritonRepoConfig.model_name).
    model_name: str = "omc"
    # TRITON_SHARED_MEMORY: auto uses system shared memory when the url names this host
    # (127.0.0.1, localhost, ::1) and falls back to gRPC when the server cannot map it.
    shared_memory: str = "auto"
    # A request still unanswered after this long fails the frame as an unavailable server (seconds).
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.shared_memory not in TRITON_SHARED_MEMORY:
            raise BadInput(f"shared_memory must be one of {', '.join(TRITON_SHARED_MEMORY)}, got '{self.shared_memory}'")
        if not self.url or "://" in self.url:
            raise BadInput(f"--url must be host:port of the server's gRPC endpoint (no scheme), got '{self.url}'")
        if not self.timeout_s > 0:
            raise BadInput(f"timeout_s must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class TritonBenchConfig:
    """What `omc bench-triton` measures (benchmarks/triton_bench.py; our choices)."""

    # Concurrent streams, each its own tracker and thread, and frames per stream and round.
    streams: int = 4
    frames: int = 16
    # Rounds per mode, the modes alternating (local, triton, triton, local, ...).
    rounds: int = 3
    # (width, height) of the generated clips (benchmarks/clip.py), letterboxed to the export's size.
    clip_size: tuple[int, int] = (640, 360)
    # The detector's batching window of the repository written for a local server (microseconds).
    max_queue_delay_us: int = 2000

    def __post_init__(self) -> None:
        for name in ("streams", "frames", "rounds"):
            if getattr(self, name) < 1:
                raise BadInput(f"TritonBenchConfig.{name} must be at least 1, got {getattr(self, name)}")
        if min(self.clip_size) < 1:
            raise BadInput(f"clip size {self.clip_size[0]}x{self.clip_size[1]} must be positive")
        if self.max_queue_delay_us < 0:
            raise BadInput(f"--max-queue-delay-us must be 0 or more, got {self.max_queue_delay_us}")
