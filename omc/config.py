"""Every knob of omc, one frozen dataclass per stage, with the reference implementation's defaults.

Sources are cited as sections of `omc-reference.md` (the project's spec of the reference code,
JudasDie/SOTS branch MOT, folder OMC/). Each field is an `option`: its default, its help text and,
for a string, the values it may take; the commands' flags are built from them (omc.flags), so a
field's documentation is written once. Nothing here knows a flag: `__post_init__` validates and
raises `InvalidConfig` naming the field, and each front end (flags, a streams file) words it with
its own name for the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence, TypeVar

from omc.contract import FLOAT_PRECISIONS, TRITON_MODEL, WINDOW_MODES
from omc.errors import BadInput, InvalidConfig

T = TypeVar("T")


def option(default: T, help: str, *, choices: Sequence[str] = (), default_text: str = "") -> T:
    """A config field: its default, what it means (the --help text; citations of omc-reference.md
    sections in parentheses are for readers of the source and left out of --help), for a string
    or a tuple of strings the values allowed (checked by `check_choices`), and, where the default
    needs words (None), how --help states it."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices), "default_text": default_text})


def _refuse(config: Any, name: str, problem: str) -> InvalidConfig:
    return InvalidConfig(type(config).__name__, name, problem)


def check_choices(config: Any) -> None:
    """InvalidConfig when a string field, or a string of a tuple field, is not one of its option's
    choices, or a tuple field lists a value twice."""
    for item in fields(config):
        choices = item.metadata.get("choices")
        if not choices:
            continue
        value = getattr(config, item.name)
        if isinstance(value, str):
            if value not in choices:
                raise _refuse(config, item.name, f"must be one of {', '.join(choices)}, got '{value}'")
            continue
        unknown = [v for v in value if v not in choices]
        if unknown:
            raise _refuse(config, item.name, f"{', '.join(map(str, unknown))} is not one of {', '.join(choices)}")
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise _refuse(config, item.name, f"lists {', '.join(repeated)} twice")


def _check_at_least(config: Any, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            bound = "0 or more" if minimum == 0 else f"at least {minimum}"
            raise _refuse(config, name, f"must be {bound}, got {value}")


def _check_unit_interval(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise _refuse(config, name, f"must lie in [0, 1], got {value}")


def _check_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise _refuse(config, name, f"must be positive, got {value}")


def _check_finite_seconds(config: Any, *names: str) -> None:
    """Durations and rates: finite, 0 or more (NaN refused)."""
    for name in names:
        value = getattr(config, name)
        if not (value >= 0 and math.isfinite(value)):
            raise _refuse(config, name, f"must be a finite number >= 0, got {value}")


def _check_size(config: Any, name: str) -> None:
    width, height = getattr(config, name)
    if width < 1 or height < 1:
        raise _refuse(config, name, f"must be positive, got {width}x{height}")


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of the OMC tracker (omc-reference.md sections 4 and 5)."""

    conf_thres: float = option(
        0.5, "Detection (section 4.2): candidates with obj*cls above this are kept; new tracks need it too."
    )
    nms_thres: float = option(
        0.6, "Cluster-DIoU NMS (4.2): a box's threshold is max(density at its centre cell, nms_thres)."
    )
    nms_diou_exponent: float = option(0.7, "Exponent on the normalised centre distance in DIoU (4.2).")
    nms_max_rounds: int = option(200, "Fixed-point rounds of cluster NMS (4.2).")
    max_detections: int = option(300, "At most this many basic detections per frame after NMS (4.2).")
    recheck_score_thres: float = option(0.3, 'Re-check peaks with heat above this become transductive boxes (2, "Peaks").')
    fusion_iou_thres: float = option(
        0.5, "A transductive box is added when its IoU with every basic box is at most this (4.3)."
    )
    track_buffer: int = option(30, "Frames a lost track is kept, at 30 fps; scaled by frame_rate / 30 (4).")
    embedding_alpha: float = option(0.1, "Smoothing factor of the track embedding: f = f + alpha (new - f) (4.6).")
    match_thres_embedding: float = option(0.4, "First association: fused embedding + motion cost limit (4.5).")
    motion_lambda: float = option(0.98, "Weight of the embedding cost against the Mahalanobis distance (4.5).")
    gating_threshold: float = option(
        9.4877, "Mahalanobis gate: chi-square 0.95 quantile with 4 degrees of freedom (4.5)."
    )
    match_thres_iou: float = option(0.5, "Second association: IoU distance limit for tracked tracks (4.5).")
    match_thres_unconfirmed: float = option(0.7, "Third association: IoU distance limit for unconfirmed tracks (4.5).")
    duplicate_iou_distance: float = option(
        0.15, "Tracked and lost tracks closer than this IoU distance are duplicates (4, 4.8)."
    )
    min_box_area: float = option(
        100.0, "Output filter of the reference entry script: a track is written when its area (frame pixels squared) is above this ..."
    )
    max_aspect_ratio: float = option(4.0, "... and its width / height is not above this.")
    recheck: bool = option(True, "Run the re-check network (OMC); off runs the CSTrack baseline on the same engines.")

    def __post_init__(self) -> None:
        _check_unit_interval(
            self, "conf_thres", "nms_thres", "recheck_score_thres", "fusion_iou_thres", "embedding_alpha", "motion_lambda"
        )
        _check_at_least(self, 1, "nms_max_rounds", "max_detections", "track_buffer")
        _check_positive(self, "match_thres_embedding", "match_thres_iou", "match_thres_unconfirmed", "gating_threshold")

    def max_time_lost(self, frame_rate: float) -> int:
        """Frames a lost track survives at this frame rate (reference: int(frame_rate / 30 * buffer))."""
        return int(frame_rate / 30.0 * self.track_buffer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# When the multi-stream runtime runs the detector one batch ahead (StreamConfig.overlap).
OVERLAP_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class StreamConfig:
    """How the multi-stream runtime reads, batches and recovers streams (omc.runtime.streams).

    Not from the reference (it tracks one file); the defaults favour low latency on live cameras.
    """

    queue_frames: int = option(4, "Frames a reader may hold ahead of the engines in every-frame mode (it waits when full).")
    batch_wait_ms: float = option(
        10.0,
        "Once one stream has a frame, wait at most this long (ms) for the other running streams' frames so the "
        "detector batch fills; never waits for a stream that is reconnecting or done.",
    )
    max_batch: int = option(
        0,
        "Largest detector batch (more than the export's max_batch is refused). 0: automatic: 1 when the detector "
        "runs on the CPU, where a batch of B frames costs as much as B single frames (ONNX Runtime; omc "
        "bench-streams) and would only add latency; the export's max_batch elsewhere (GPUs, a Triton server).",
    )
    overlap: str = option(
        "auto",
        "Run the detector one batch ahead in a thread of its own, overlapping the batch before's re-checks and "
        "host work, where the engines allow it (ONNX Runtime: new output buffers each run). auto: when the "
        "detector does not run on the CPU (there the detector and the re-check already use every core and "
        "overlapping them gained nothing in omc bench-streams); on / off: always / never.",
        choices=OVERLAP_MODES,
    )
    reconnect_initial_s: float = option(
        0.5,
        "Live sources that fail or end reconnect after this delay (s), doubled after each failed attempt up to "
        "reconnect_max_s; a frame read resets it.",
    )
    reconnect_max_s: float = option(10.0, "Longest delay (s) between reconnect attempts of a live source.")
    max_reconnect_attempts: int = option(0, "Failed reconnects in a row after which a live stream gives up (0: it never does).")
    open_timeout_s: float = option(10.0, "A live source that does not open within this long (s) has failed.")
    read_timeout_s: float = option(5.0, "A live source that sends no frame within this long (s) has failed.")

    def __post_init__(self) -> None:
        check_choices(self)
        _check_at_least(self, 1, "queue_frames")
        _check_at_least(self, 0, "max_batch", "max_reconnect_attempts")
        _check_finite_seconds(self, "batch_wait_ms", "reconnect_initial_s", "reconnect_max_s", "open_timeout_s", "read_timeout_s")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise _refuse(self, "reconnect_max_s", f"must be at least reconnect_initial_s ({self.reconnect_initial_s})")

    def reconnect_delay_s(self, attempt: int) -> float:
        """Delay before reconnect attempt `attempt` (1-based): capped exponential backoff."""
        return min(self.reconnect_initial_s * 2.0 ** (attempt - 1), self.reconnect_max_s)


@dataclass(frozen=True)
class ClusterConfig:
    """How `omc cluster` spreads a streams file's streams over Ray workers (omc.apps.cluster).

    The [cluster] table of the streams file. Not from the reference (it tracks one file).
    """

    workers: int = option(
        0,
        "Stream workers (Ray actors, each one StreamRuntime) for the streams without a pin; 0: as many as "
        "streams_per_worker needs (at least 1). Pinned streams get workers of their own.",
    )
    cpus_per_worker: float = option(
        1.0,
        "Ray CPUs each worker reserves; with ONNX Runtime it also runs this many threads per operator (rounded "
        "up), so workers sharing a machine do not oversubscribe its cores.",
    )
    gpus_per_worker: float = option(
        0.0, "Ray GPUs each worker reserves (a fraction shares a GPU); set it where the engines run on a GPU."
    )
    streams_per_worker: int = option(
        0,
        "Most streams one worker tracks (0: no limit). A dead worker's streams go to live workers of their "
        "placement with room; when none has room a replacement worker is started.",
    )
    start_timeout_s: float = option(
        120.0, "Longest the workers may take to start and open their engines (s) before the run gives up."
    )
    ray_start_timeout_s: float = option(60.0, "Longest a local Ray (omc cluster run without --address) may take to start (s).")
    poll_interval_s: float = option(
        0.25,
        "How often (s) the driver collects results and health from each worker: results reach the files up to "
        "this late. Each collection costs CPU in the driver and the worker (1.2 to 4.6 ms together on the 2-core "
        "machine, by its load), so a short interval is a steady cost.",
    )
    status_interval_s: float = option(1.0, "How often (s) the status table that `omc cluster status` reads is refreshed.")

    def __post_init__(self) -> None:
        _check_at_least(self, 0, "workers", "streams_per_worker")
        if not 0 < self.cpus_per_worker < float("inf"):
            raise _refuse(self, "cpus_per_worker", f"must be a positive number, got {self.cpus_per_worker}")
        _check_finite_seconds(self, "gpus_per_worker", "start_timeout_s", "ray_start_timeout_s", "poll_interval_s", "status_interval_s")
        _check_positive(self, "start_timeout_s", "ray_start_timeout_s")


@dataclass(frozen=True)
class ExportConfig:
    """How `omc export` shapes the two engines (engine-contract.md)."""

    img_size: tuple[int, int] = option(
        (1088, 608), "Network input (width, height), multiples of 32. The reference runs 1088 x 608."
    )
    max_batch: int = option(4, "Largest detector batch B the engines accept (B runs from 1 to this).")
    max_tracklets: int = option(512, "Largest tracklet count n of the re-check engine.")
    topk: int = option(1000, "Detector candidates K kept by top-K, by score.")
    peaks: int = option(100, "Re-check heat-map peaks P kept (the reference decodes 100).")
    shrink_radius: int | None = option(
        None, "Shrink-window radius r.", default_text="the checkpoint's stored radius, else 3 as the reference"
    )
    shrink_window: str = option(
        "reference",
        "Shrink window: rows/cols [c-r, c+r) as the released weights were trained (reference) or |x-c| <= r as "
        "the paper writes (paper).",
        choices=WINDOW_MODES,
    )
    opset: int = option(
        18, "ONNX opset of the written graphs: 18-21 use PyTorch's default (dynamo) exporter, 17 the TorchScript one."
    )
    precision: str = option(
        "fp32",
        "fp16: half-precision graphs, float32 at the inputs/outputs and for coordinates.",
        choices=FLOAT_PRECISIONS,
    )

    def __post_init__(self) -> None:
        check_choices(self)
        width, height = self.img_size
        if width <= 0 or height <= 0 or width % 32 or height % 32:
            raise _refuse(self, "img_size", f"must be positive multiples of 32 (e.g. 1088x608), got {width}x{height}")
        _check_at_least(self, 1, "max_batch", "max_tracklets", "topk", "peaks")
        if self.shrink_radius is not None:
            _check_at_least(self, 1, "shrink_radius")
        if not 17 <= self.opset <= 21:
            raise _refuse(self, "opset", f"must be between 17 and 21, got {self.opset}")


# Where `make export` puts an export of the default model at an input size (the Makefile's
# ENGINES ?= engines/omc_l_$(IMG_SIZE)): the commands' default engine folder.
DEFAULT_ENGINES_DIR = "engines/omc_l_{size}"


def default_engines_dir(img_size: tuple[int, int] = ExportConfig.img_size) -> str:
    """DEFAULT_ENGINES_DIR for an input size (width, height): 'engines/omc_l_1088x608'."""
    return DEFAULT_ENGINES_DIR.format(size=f"{img_size[0]}x{img_size[1]}")


# The tracklet count that stands for the export's maximum in VerifyConfig.tracklets.
MAX_TRACKLETS = "max"


@dataclass(frozen=True)
class VerifyConfig:
    """How much `omc verify` compares (our choices: a quick check; tests/parity runs more frames and counts)."""

    max_frames: int = option(
        2,
        "Frames to use: generated ones, the first of a source, or for an INT8 export the held-out frames of its "
        "calibration set.",
    )
    tracklets: tuple[str, ...] = option(
        ("1", "32", MAX_TRACKLETS),
        f"Tracklet counts n of the re-check runs: one, a typical crowd and the export's maximum ('{MAX_TRACKLETS}').",
    )

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "max_frames")
        if not self.tracklets or not all(t == MAX_TRACKLETS or t.isdigit() for t in self.tracklets):
            raise _refuse(
                self, "tracklets",
                f"must be comma-separated counts or '{MAX_TRACKLETS}', e.g. 1,32,max, got {','.join(self.tracklets) or 'none'}",
            )  # fmt: skip

    def tracklet_counts(self, maximum: int) -> tuple[int, ...]:
        """The counts as numbers, MAX_TRACKLETS standing for `maximum` (the export's)."""
        return tuple(maximum if text == MAX_TRACKLETS else int(text) for text in self.tracklets)


def parse_size(text: str) -> tuple[int, int]:
    """'1088x608' -> (1088, 608); BadInput on anything else."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise BadInput(f"size '{text}' must be WIDTHxHEIGHT, e.g. 1088x608")
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class EvalConfig:
    """How `omc eval` scores results against MOTChallenge ground truth (MOTChallenge devkit rules)."""

    iou_threshold: float = option(0.5, "A result box matches a ground-truth box when their IoU is at least this (MOTChallenge).")
    consider_mark: int = option(1, 'Ground-truth rows count only when their 7th column (the "consider" mark) equals this.')
    pedestrian_class: int = option(
        1, "MOT16/17/20 class id of pedestrians, the only class scored; -1 (no class given) counts too."
    )
    distractor_classes: tuple[int, ...] = option(
        (2, 7, 8, 12),
        "Classes whose matched result boxes are dropped before scoring instead of counting as false positives: "
        "person on vehicle, static person, distractor, reflection (the MOTChallenge evaluation's distractor "
        "classes, as in TrackEval's MOT loader and py-motmetrics' preprocess).",
    )

    def __post_init__(self) -> None:
        _check_unit_interval(self, "iou_threshold")
        _check_positive(self, "iou_threshold")


@dataclass(frozen=True)
class OverlayConfig:
    """How `omc track --save-video` draws tracks on frames (our choice; the reference draws none)."""

    trail_length_frames: int = option(30, "Centres of the last this many frames form a track's trail.")
    line_thickness_px: int = option(2, "Box and trail line thickness, pixels.")
    dash_length_px: int = option(6, "Restored (re-check) boxes are dashed: dash and gap length along the edge, pixels.")
    font_scale: float = option(0.5, "Label text scale (OpenCV Hershey font units).")

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "trail_length_frames", "line_thickness_px", "dash_length_px")
        _check_positive(self, "font_scale")


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

    frames: int = option(
        64,
        "Calibration frames, sampled evenly over all sources (TensorRT's and ONNX Runtime's guides use a few "
        "hundred images of a dataset; consecutive video frames are correlated, so fewer, evenly spread frames "
        "carry the same information).",
    )
    holdout_frames: int = option(
        8, "Held-out frames for the drift figures, never calibrated on, evenly spread between the calibration frames."
    )
    recheck_frames: int = option(
        16,
        "Calibration frames that also get a re-check sample (tracklets from the float tracker); the re-check "
        "graph is small, its activation ranges settle with fewer samples.",
    )
    tracker_warmup_frames: int = option(
        4,
        "Consecutive frames the float tracker runs before a re-check sample's frame: a track is confirmed on its "
        "second frame and joins the re-check pool on the third.",
    )
    fallback_tracklets: int = option(
        16,
        "When the float tracker has no live tracklet at a sample's frame (untrained weights, an empty scene), the "
        "embeddings of this many top detector candidates stand in for them.",
    )
    method: str = option("minmax", "How activation ranges are taken from the calibration data.", choices=CALIBRATION_METHODS)
    percentile: float = option(99.999, 'Percentile of |activation| kept by the "percentile" method.')
    per_channel: bool = option(True, "Per-output-channel weight scales (what QLinearConv and TensorRT both support).")
    op_types: tuple[str, ...] = option(QUANT_OP_TYPES, "Operator types to quantize (QUANT_OP_TYPES).")
    keep_float: tuple[str, ...] = option(
        FLOAT_REGIONS, "Regions kept in float (omc.calib.regions defines them); none quantizes them too.", choices=FLOAT_REGIONS
    )
    drift_candidates: int = option(
        100,
        "Drift of INT8 vs float on held-out frames (omc.calib.drift): the float graph's top this many candidates "
        'per frame are compared. The pairing gate and the bounds are the "int8-drift" row of '
        "omc.export.judge.BOUNDS, with every other comparison's.",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        _check_at_least(self, 1, "frames", "fallback_tracklets", "drift_candidates")
        _check_at_least(self, 0, "holdout_frames", "recheck_frames", "tracker_warmup_frames")
        if not 50.0 < self.percentile <= 100.0:
            raise _refuse(self, "percentile", f"must lie in (50, 100], got {self.percentile}")
        if not self.op_types:
            raise _refuse(self, "op_types", "must name at least one operator type")


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

    edition: str = option(
        "auto", "TensorRT edition: full TensorRT when importable, else TensorRT for RTX (auto); or name one.", choices=TRT_EDITIONS
    )
    gpu_targets: tuple[str, ...] = option(
        (),
        "TensorRT for RTX targets; none builds the portable engine, for "
        f"{', '.join(RTX_PORTABLE_TARGETS)} and later RTX GPUs.",
        choices=RTX_GPU_TARGETS,
    )
    opt_batch: int = option(1, "Detector profile's optimum batch: live tracking sends one frame at a time.")
    opt_tracklets: int = option(
        32, "Re-check profile's optimum tracklet count: a typical crowd (clipped to the export's max)."
    )

    def __post_init__(self) -> None:
        check_choices(self)
        _check_at_least(self, 1, "opt_batch", "opt_tracklets")


# TensorRT for RTX's dynamic-shape kernel strategies (IRuntimeConfig): "lazy" runs a generic kernel
# at once and compiles a shape-specialised one in the background, "eager" compiles it before the
# first run of each new shape, "none" only ever runs the generic kernels.
RTX_KERNEL_STRATEGIES = ("lazy", "eager", "none")


@dataclass(frozen=True)
class TensorRTRuntimeConfig:
    """How the TensorRT backend runs the engines (our choices; TensorRT for RTX only, full
    TensorRT compiles every kernel at build time and has none of these settings)."""

    detector_kernels: str = option(
        "lazy",
        "The detector sees a handful of batch sizes (1 to max_batch): specialise each, in the background.",
        choices=RTX_KERNEL_STRATEGIES,
    )
    recheck_kernels: str = option(
        "none",
        "The re-check sees every tracklet count n from 1 to max_tracklets: specialising each would compile up to "
        "max_tracklets kernel sets in the background (CPU load, latency jitter), for the few n-dependent layers of "
        "a network that costs under a tenth of the detector.",
        choices=RTX_KERNEL_STRATEGIES,
    )
    runtime_cache: bool = option(
        True,
        "Keep the kernels TensorRT for RTX compiles on this GPU in `<plan>.runtime-cache` beside the plan (read at "
        "activation, written at deactivation), so the next process does not compile again.",
    )

    def __post_init__(self) -> None:
        check_choices(self)


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

    backends: tuple[str, ...] = option(
        ("torch", "ort", "ort-int8"), "Backends timed side by side on the same frames, in this order.", choices=BENCH_BACKENDS
    )
    frames: int = option(20, "Timed frames per backend (after the warm-up); more frames, steadier medians.")
    warmup: int = option(3, "Untimed frames per backend first (lazy initialisation, caches, JIT kernels).")
    tracklets: tuple[int, ...] = option(
        (0, 10, 50, 200),
        "Tracklet counts n fed to the re-check engine (synthetic rows of the frame's own ID map): the re-check "
        "cost at each n. 0 means no re-check call (the CSTrack baseline).",
    )
    headline_tracklets: int = option(
        50, 'n of the per-stage table, of "OMC vs CSTrack" and of the re-check\'s share of the detector.'
    )
    batch: tuple[int, ...] = option(
        (1, 2, 4), "Detector batch sizes timed on repeated frames (each at most the export's max batch)."
    )
    batch_repeats: int = option(3, "Timed runs per batch size (after one untimed run).")
    threads: int = option(
        0,
        "Threads of ONNX Runtime's intra-op pool and of torch.set_num_threads, the same for all; 0: every core "
        "this process may use.",
    )
    clip_size: tuple[int, int] = option(
        (1920, 1080), "Size (width, height) of the generated clip used when no --source is given (MOT17's frames)."
    )
    seed: int = option(0, "Seed of the generated clip, the synthetic tracklets and the synthetic host workload.")
    host_tracks: int = option(
        50,
        "Host post-processing workload (NMS + fusion + association) on synthetic, deterministic engine outputs: "
        "live tracks.",
    )
    host_detections: int = option(100, "Host post-processing workload: detections above threshold per frame.")
    host_frames: int = option(100, "Host post-processing workload: frames timed (after host_warmup).")
    host_warmup: int = option(10, "Host post-processing workload: untimed frames first.")
    host_target_ms: float = option(2.0, "Target the report compares the host post-processing median (ms) against.")
    ceiling_size: int = option(4096, "Side of the square float32 matrix product timed as the machine's ceiling.")
    ceiling_repeats: int = option(3, "Timed runs of the ceiling's matrix product.")
    gpu_ceiling_size: int = option(
        8192,
        "Side of the square float16 matrix product timed on the GPU when a GPU backend ran (its ceiling: tensor "
        "cores need a large product to reach their rate).",
    )

    def __post_init__(self) -> None:
        if not self.backends:
            raise _refuse(self, "backends", f"must name at least one of {', '.join(BENCH_BACKENDS)}")
        check_choices(self)
        _check_at_least(
            self, 1, "frames", "batch_repeats", "host_tracks", "host_detections", "host_frames", "ceiling_size",
            "ceiling_repeats", "gpu_ceiling_size",
        )  # fmt: skip
        _check_at_least(self, 0, "warmup", "threads", "host_warmup", "headline_tracklets")
        if not self.tracklets or any(n < 0 for n in self.tracklets):
            raise _refuse(self, "tracklets", f"must be counts of 0 or more, got {list(self.tracklets)}")
        if not self.batch or any(b < 1 for b in self.batch):
            raise _refuse(self, "batch", f"must be sizes of 1 or more, got {list(self.batch)}")
        if self.host_detections < self.host_tracks:
            raise _refuse(
                self, "host_detections",
                f"({self.host_detections}) must be at least host_tracks ({self.host_tracks}): every track has a detection",
            )  # fmt: skip
        _check_size(self, "clip_size")

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


@dataclass(frozen=True)
class StreamsBenchConfig:
    """What `omc bench-streams` measures (benchmarks/streams.py; our choices)."""

    streams: tuple[int, ...] = option((1, 2, 4, 8), "Stream counts of the sweep.")
    seconds: float = option(30.0, "Length of each sweep run (s), from the first tracked frame.")
    rounds: int = option(2, "Rounds per stream count, each running every mode once (runtime, runtime with overlap on, naive loop) in a rotating order.")
    live_streams: int = option(4, "Synthetic cameras of the live run.")
    live_seconds: float = option(600.0, "Length of the live run (s).")
    soak_streams: int = option(4, "Streams of the memory soak.")
    soak_frames: int = option(10000, "Frames of the soak, all streams together.")
    threads: int = option(0, "ONNX Runtime threads per engine; 0: its own choice.")
    backend: str = option("ort", "Engines: ONNX Runtime (ort) or TensorRT plans (trt, omc build's).", choices=LOCAL_BACKENDS)
    device: str = option(
        AUTO_DEVICE, "Where the engines run: auto (ort: the CPU; trt: the GPU), cpu, cuda, tensorrt (ONNX Runtime's providers).",
        choices=DEVICES,
    )

    def __post_init__(self) -> None:
        check_choices(self)
        _check_at_least(self, 1, "rounds", "live_streams", "soak_streams", "soak_frames")
        _check_at_least(self, 0, "threads")
        if not self.streams or min(self.streams) < 1:
            raise _refuse(self, "streams", f"must be stream counts of 1 or more, got {list(self.streams)}")
        for name in ("seconds", "live_seconds"):
            if not 0 < getattr(self, name) < float("inf"):
                raise _refuse(self, name, f"must be a positive number, got {getattr(self, name)}")


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

    platform: str = option(
        "onnxruntime_onnx",
        "Backend of the engine models; python runs ONNX Runtime inside Triton's Python backend.",
        choices=TRITON_PLATFORMS,
    )
    model_name: str = option(
        TRITON_MODEL,
        "The model clients call (one frame per request); the engines are <name>_detector and <name>_recheck, so "
        "several exports can share one repository.",
    )
    preferred_batch_sizes: tuple[int, ...] = option(
        (), "Detector batch sizes the dynamic batcher aims for.", default_text="any size up to the export's max batch"
    )
    max_queue_delay_us: int = option(
        2000,
        "Longest wait of the detector's batcher for a fuller batch (microseconds): about a fifth of a detector run "
        "of the L model on a data-centre GPU, so a lone stream loses little.",
    )
    detector_instances: int = option(1, "Detector model instances (instance_group count).")
    recheck_instances: int = option(1, "Re-check model instances (instance_group count).")
    instance_kind: str = option(
        "auto", "Where the engine models run; auto: a GPU when the server has one.", choices=TRITON_INSTANCE_KINDS
    )
    frame_instances: int = option(
        4,
        "Frame model instances: each runs one frame at a time, so this many frames (of different streams, from all "
        "clients) can wait in the detector's batcher together; the default export's max_batch.",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if not self.model_name or not all(c.isalnum() or c in "_-" for c in self.model_name):
            raise _refuse(self, "model_name", f"must be letters, digits, '_' or '-', got '{self.model_name}'")
        _check_at_least(self, 0, "max_queue_delay_us")
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise _refuse(self, "preferred_batch_sizes", f"must be 1 or more, got {list(self.preferred_batch_sizes)}")
        _check_at_least(self, 1, "detector_instances", "recheck_instances", "frame_instances")


@dataclass(frozen=True)
class TritonClientConfig:
    """How the `triton` backend talks to a Triton server (omc.runtime.backends.triton)."""

    url: str = option("127.0.0.1:8001", "gRPC address of the server (host:port; Triton's default gRPC port is 8001).")
    model_name: str = option(TRITON_MODEL, "The model `omc triton-repo` wrote (TritonRepoConfig.model_name).")
    shared_memory: str = option(
        "auto",
        "auto uses system shared memory when the url names this host (127.0.0.1, localhost, ::1) and falls back to "
        "gRPC when the server cannot map it; on: always (refused when it cannot); off: never.",
        choices=TRITON_SHARED_MEMORY,
    )
    timeout_s: float = option(10.0, "A request still unanswered after this long fails the frame as an unavailable server (seconds).")

    def __post_init__(self) -> None:
        check_choices(self)
        if not self.url or "://" in self.url:
            raise _refuse(self, "url", f"must be host:port of the server's gRPC endpoint (no scheme), got '{self.url}'")
        _check_positive(self, "timeout_s")


@dataclass(frozen=True)
class TritonBenchConfig:
    """What `omc bench-triton` measures (benchmarks/triton_bench.py; our choices)."""

    streams: int = option(4, "Concurrent streams, each its own tracker and thread.")
    frames: int = option(16, "Frames per stream and round.")
    rounds: int = option(3, "Rounds per mode, the modes alternating (local, triton, triton, local, ...).")
    clip_size: tuple[int, int] = option(
        (640, 360), "(width, height) of the generated clips (benchmarks/clip.py), letterboxed to the export's size."
    )
    max_queue_delay_us: int = option(
        2000, "Detector batching window of the repository written for a local server (microseconds)."
    )

    def __post_init__(self) -> None:
        _check_at_least(self, 1, "streams", "frames", "rounds")
        _check_size(self, "clip_size")
        _check_at_least(self, 0, "max_queue_delay_us")
