"""`omc bench` end to end: export if needed, time every backend, measure the ceiling and the host.

`run_benchmark(config, setup, command)` returns one result dict (omc.benchmarks.report's
schema). Order of work: the export (made when absent), FLOPs of its graphs, every backend opened
(torch, ort, ort-int8, trt as asked; one that cannot run here is skipped with one line and a
recorded reason), then all of them timed together over the same frames, interleaved frame by
frame (omc.benchmarks.runner) with the machine's load average recorded before and after, the
sgemm ceiling, then the host post-processing workload.

Threads: ONNX Runtime's intra-op pool and torch.set_num_threads get the same count. NumPy's BLAS
is limited to one thread for the whole run (threadpoolctl, when installed): the host code's
small matrix products gain nothing from more, and BLAS threads spinning next to an engine's
thread pool slowed them tenfold in a measurement here. The ceiling's sgemm alone gets all the
run's threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from omc import contract
from omc.config import LOCAL_BACKENDS, BenchConfig, ExportConfig, TrackerConfig
from omc.contract import FLOAT_PRECISIONS, EngineMeta
from omc.errors import BadInput, MissingDependency, OmcError
from omc.files import file_sha256
from omc.export.weights_source import DEFAULT_RANDOM_SEED, DEFAULT_RANDOM_VARIANT
from omc.machine import load_average

from omc.benchmarks import flops as flop_count
from omc.benchmarks.ceiling import CeilingResult, blas_threads, measure_ceiling, measure_gpu_ceiling
from omc.benchmarks.clip import cycle_frames, generated_clip, source_frames
from omc.benchmarks.environment import collect_environment
from omc.benchmarks.hostpost import measure_host
from omc.benchmarks.pipelines import EnginePipeline, FramePipeline, TorchPipeline
from omc.benchmarks.report import GPU_BACKENDS, RESULT_SCHEMA, REFERENCE_BACKEND, speedup
from omc.benchmarks.pipelines import FrameBGR
from omc.benchmarks.runner import run_backends

if TYPE_CHECKING:
    from omc.export.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

# Sub-folders of an export: the fp16 graphs (the Makefile's `engines` target writes them there)
# and calib's INT8 graphs for ONNX Runtime on x86.
FP16_DIR = "fp16"
INT8_CPU_TARGET = "cpu"
INT8_CPU_DIR = "int8-cpu"
# Calibration frames used when ort-int8 has to make its INT8 graphs, and generated-clip frames
# written for it (calib holds some of them out to measure drift).
CALIBRATION_FRAMES = 16
CALIBRATION_CLIP_FRAMES = 32
# Where the generated clip's frames are written for calibration (calib reads files), and the
# calibration set ort-int8 makes, kept in the export folder.
CALIBRATION_IMAGE = "{index:06d}.png"
CALIBRATION_SET = "calib-bench.npz"


@dataclass(frozen=True)
class BenchSetup:
    """Files and choices of a run that are not BenchConfig's measurement knobs.

    onnx_dir: the fp32 export (made there when absent). weights: checkpoint for the export and
    the torch backend (None: random weights, or what export.json records). img_size: (W, H) of
    an export made here. precision: "fp32" or "fp16" engines for ort / trt. source: frames file
    or folder (None: the generated clip). reference_repo: a SOTS checkout for the reference
    tracker's host timing.
    """

    onnx_dir: Path
    weights: Path | None = None
    img_size: tuple[int, int] = ExportConfig.img_size
    precision: str = "fp32"
    source: Path | None = None
    reference_repo: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in FLOAT_PRECISIONS:
            raise BadInput(f"--precision must be fp32 or fp16 (INT8 is the ort-int8 backend), got '{self.precision}'")
        if self.source is not None and not self.source.exists():
            raise BadInput(f"source {self.source} does not exist")
        if self.weights is not None and not self.weights.is_file():
            raise BadInput(f"checkpoint {self.weights} not found")


def resolve_threads(threads: int) -> int:
    """The run's thread count: `threads`, or every core this process may use when 0."""
    if threads > 0:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class BackendUnavailable(OmcError):
    """A backend cannot run here (no GPU, a missing optional library, no model to rebuild): it is
    skipped with one line and its reason recorded, and the other backends still run."""


# --- the export ----------------------------------------------------------------------------------


def _checkpoint(weights: Path | None, input_hw: tuple[int, int]) -> LoadedCheckpoint:
    try:
        from omc.export.checkpoint import load_checkpoint, random_checkpoint
    except ImportError:
        raise MissingDependency("torch", "export", "needed to export the model or run the torch backend") from None
    if weights is not None:
        return load_checkpoint(weights, input_hw)
    return random_checkpoint(DEFAULT_RANDOM_VARIANT, seed=DEFAULT_RANDOM_SEED, input_hw=input_hw)


def ensure_export(onnx_dir: Path, weights: Path | None, img_size: tuple[int, int]) -> tuple[EngineMeta, Any]:
    """export.json of `onnx_dir`, exporting (weights or seeded random L) first when it is absent.

    An existing export made from other weights than `weights` (when given) is refused, so that the
    engines and the torch backend never time two different models under one name.
    Returns (meta, the LoadedCheckpoint when one was loaded here, else None).
    """
    if (onnx_dir / contract.EXPORT_JSON).is_file():
        meta = EngineMeta.load(onnx_dir)
        if weights is not None and meta.checkpoint_sha256 != file_sha256(weights):
            raise BadInput(
                f"{onnx_dir} holds an export of {_export_weights_text(meta)}, not of {weights}; "
                "pass another --onnx folder (or remove this one to export there)"
            )
        width, height = img_size
        if meta.input_hw != (height, width) and img_size != ExportConfig.img_size:
            raise BadInput(
                f"{onnx_dir} holds a {meta.input_hw[1]}x{meta.input_hw[0]} export but --img-size is {width}x{height}; "
                "pass another --onnx folder or drop --img-size"
            )
        return meta, None
    try:
        from omc.export.onnx_export import export_engines
    except ImportError:
        raise MissingDependency("torch", "export", f"{onnx_dir} has no export and making one needs the exporter") from None
    width, height = img_size
    loaded = _checkpoint(weights, (height, width))
    log.info("no export in %s: exporting %s at %dx%d first", onnx_dir,
             weights or f"random weights (variant {DEFAULT_RANDOM_VARIANT}, seed {DEFAULT_RANDOM_SEED})", width, height)
    seed = DEFAULT_RANDOM_SEED if weights is None else None
    result = export_engines(loaded, ExportConfig(img_size=img_size), onnx_dir, seed=seed)
    return result.meta, loaded


def rebuild_checkpoint(meta: EngineMeta, weights: Path | None) -> Any:
    """The PyTorch model of an export: from `weights` when given, else from what export.json
    records (omc.export.weights_source). BackendUnavailable when neither says how, or the
    recorded checkpoint is gone or changed."""
    try:
        from omc.export.weights_source import WeightsSource, weights_of_export

        return weights_of_export(meta, WeightsSource(checkpoint=weights))
    except ImportError:
        raise MissingDependency("torch", "export", "needed to rebuild the PyTorch model") from None
    except BadInput as exc:
        raise BackendUnavailable(str(exc)) from None


def ensure_fp16(onnx_dir: Path, meta: EngineMeta, weights: Path | None, loaded: Any) -> Path:
    """`<onnx dir>/fp16` (the Makefile's `engines` layout), exported from the same model when absent."""
    out = onnx_dir / FP16_DIR
    if (out / contract.EXPORT_JSON).is_file():
        return out
    from omc.export.onnx_export import export_engines

    loaded = loaded if loaded is not None else rebuild_checkpoint(meta, weights)
    height, width = meta.input_hw
    log.info("no fp16 export in %s: exporting one from the same model first", out)
    seed = meta.extra.get("source", {}).get("seed") if loaded.random_weights else None
    export_engines(loaded, ExportConfig(img_size=(width, height), precision="fp16"), out, seed=seed)
    return out


def _weights_text(loaded: Any) -> str:
    if loaded.random_weights:
        return f"random weights, variant {loaded.architecture.variant}"
    return f"checkpoint {Path(loaded.source_path).name} (sha256 {loaded.source_sha256[:12]})"


# --- backends ------------------------------------------------------------------------------------


def _engine_pipeline(name: str, engine_dir: Path, backend: str, device: str, threads: int, config: TrackerConfig) -> EnginePipeline:
    from omc.runtime.backends import open_engines

    options: dict[str, Any] = {"intra_op_threads": threads} if backend == "ort" else {}
    detector, recheck, meta = open_engines(engine_dir, backend=backend, device=device, **options)
    description = {"engine_dir": str(engine_dir), "precision": meta.precision, "device": device,
                   "threads": threads if backend == "ort" else None}  # fmt: skip
    providers = getattr(detector, "providers", None)
    if providers:
        description["providers"] = providers
        description["graph_optimization"] = "ORT_ENABLE_ALL"
    return EnginePipeline(name, detector, recheck, meta, config, description)


# The PyTorch reference path's forms: (device, precision, channels_last, cuda_graph).
TORCH_BACKENDS = {
    "torch": ("cpu", "fp32", False, False),
    "torch-cuda": ("cuda", "fp16", False, False),
    "torch-cuda-graph": ("cuda", "fp16", True, True),
}


def _torch_pipeline(
    name: str, setup: BenchSetup, meta: EngineMeta, threads: int, tracker_config: TrackerConfig, loaded: Any
) -> TorchPipeline:
    device, precision, channels_last, cuda_graph = TORCH_BACKENDS[name]
    try:
        import torch

        from omc.benchmarks.torch_baseline import TorchReferencePath
    except ImportError:
        raise BackendUnavailable("torch is not installed (pip install '.[export]')") from None
    description: dict[str, Any] = {"precision": precision, "layout": "NHWC (channels_last)" if channels_last else "NCHW",
                                   "device": device, "cuda_graph": cuda_graph}  # fmt: skip
    if device == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"{name} needs a CUDA GPU that torch can use (torch {torch.__version__} sees none)")
        description["gpu"] = torch.cuda.get_device_name(0)
        description["torch_cuda"] = torch.version.cuda
    else:
        description["threads"] = threads
    model = loaded if loaded is not None else rebuild_checkpoint(meta, setup.weights)
    description["weights"] = _weights_text(model)
    path = TorchReferencePath(model.network, tracker_config, peaks=meta.peaks, window=meta.shrink_window,
                              device=device, precision=precision, channels_last=channels_last, cuda_graph=cuda_graph)  # fmt: skip
    return TorchPipeline(path, meta, tracker_config, description, name=name)


def ensure_int8(onnx_dir: Path, source: Path | None, clip_size: tuple[int, int], seed: int) -> Path:
    """`<onnx dir>/int8-cpu`, made with calib's API when absent: calibrated on the benchmark's
    source, or on CALIBRATION_FRAMES frames of the generated clip."""
    out = onnx_dir / INT8_CPU_DIR
    if (out / contract.EXPORT_JSON).is_file():
        return out
    try:
        from omc.calib.dataset import build_calibration_set
        from omc.calib.quantize import quantize_engines
    except ImportError as exc:
        raise BackendUnavailable(f"no {out} and omc.calib cannot make it here ({exc})") from None
    log.info("ort-int8: no %s; calibrating on %s and quantizing for the CPU", out,
             source or f"{CALIBRATION_CLIP_FRAMES} frames of the generated clip")
    with tempfile.TemporaryDirectory(prefix="omc-bench-calib-") as folder:
        frames_source = source
        if frames_source is None:
            frames_source = Path(folder) / "frames"
            frames_source.mkdir()
            for index, frame in enumerate(generated_clip(clip_size, CALIBRATION_CLIP_FRAMES, seed)):
                cv2.imwrite(str(frames_source / CALIBRATION_IMAGE.format(index=index + 1)), frame)
        # The set stays beside the export: omc verify and omc int8-report judge the INT8 graphs on
        # its held-out frames later.
        calib_file = build_calibration_set([frames_source], CALIBRATION_FRAMES, onnx_dir, onnx_dir / CALIBRATION_SET)
        return Path(quantize_engines(onnx_dir, calib_file, INT8_CPU_TARGET, out))


def open_pipeline(
    name: str, setup: BenchSetup, meta: EngineMeta, threads: int, tracker_config: TrackerConfig,
    loaded: Any, clip_size: tuple[int, int], seed: int,
) -> FramePipeline:
    """The pipeline of one backend; BackendUnavailable when it cannot run on this machine."""
    if name in TORCH_BACKENDS:
        return _torch_pipeline(name, setup, meta, threads, tracker_config, loaded)
    engine_dir = setup.onnx_dir
    if setup.precision == "fp16" and name in LOCAL_BACKENDS:  # the bench backends named like the runtime's
        engine_dir = ensure_fp16(setup.onnx_dir, meta, setup.weights, loaded) if name == "ort" else setup.onnx_dir / FP16_DIR
    if name == "ort":
        return _engine_pipeline(name, engine_dir, "ort", "cpu", threads, tracker_config)
    if name == "ort-int8":
        int8_dir = ensure_int8(setup.onnx_dir, setup.source, clip_size, seed)
        return _engine_pipeline(name, int8_dir, "ort", "cpu", threads, tracker_config)
    if name == "trt":
        from omc.runtime.backends.cuda_memory import cuda_unavailable_reason

        reason = cuda_unavailable_reason(0)
        if reason is not None:
            raise BackendUnavailable(f"TensorRT needs an NVIDIA GPU: {reason}")
        if not (engine_dir / contract.DETECTOR_PLAN).is_file():
            raise BackendUnavailable(f"no TensorRT plans in {engine_dir}; build them with: omc build --onnx {engine_dir}")
        return _engine_pipeline(name, engine_dir, "trt", "cuda", threads, tracker_config)
    raise BadInput(f"unknown backend '{name}'")


# --- FLOPs ---------------------------------------------------------------------------------------


def model_flops(onnx_dir: Path, meta: EngineMeta, counts: tuple[int, ...], headline: int) -> dict[str, Any]:
    """Operations of the fp32 graphs: detector at B = 1, re-check at each n, the re-check's heads."""
    height, width = meta.input_hw
    detector_path = onnx_dir / contract.DETECTOR_ONNX
    shape = {contract.IMAGES: [1, height, width, 3]}
    detector = flop_count.count_flops(detector_path, shape)
    result: dict[str, Any] = {"detector_gflop": detector.gflop, "detector": detector.to_dict(), "recheck_gflop": {},
                              "recheck_heads_gflop": 0.0, "recheck_vs_detector": 0.0, "omc_vs_cstrack": 1.0}  # fmt: skip
    if not meta.has_recheck:
        return result
    heads = flop_count.exclusive_flops(detector_path, shape, [contract.RECHECK_FEATURES, contract.RECHECK_BOXES])
    for n in counts:
        gflop = flop_count.count_flops(onnx_dir / contract.RECHECK_ONNX, {contract.TRACKLETS: [n, meta.embedding_dim]}).gflop if n > 0 else 0.0
        result["recheck_gflop"][str(n)] = gflop
    recheck = result["recheck_gflop"].get(str(headline), 0.0)
    cstrack = detector.gflop - heads / 1e9
    result["recheck_heads_gflop"] = heads / 1e9
    result["recheck_vs_detector"] = recheck / detector.gflop if detector.gflop else 0.0
    result["omc_vs_cstrack"] = (detector.gflop + recheck) / cstrack if cstrack > 0 else 1.0
    result["method"] = "Conv/ConvTranspose/MatMul/Gemm multiply-adds x 2 from ONNX shape inference"
    return result


def _rates(backend: dict[str, Any], flops: dict[str, Any], ceiling: CeilingResult, headline: int) -> dict[str, Any]:
    detector_s = backend["stages"]["detector"]["median_ms"] / 1e3
    recheck_s = backend["stages"]["recheck"]["median_ms"] / 1e3
    detector = flops["detector_gflop"] / detector_s if detector_s > 0 else 0.0
    recheck_gflop = flops["recheck_gflop"].get(str(headline), 0.0)
    recheck = recheck_gflop / recheck_s if recheck_s > 0 else 0.0
    rate = ceiling.gflops
    return {
        "detector": detector,
        "detector_of_ceiling": detector / rate if rate else 0.0,
        "recheck": recheck,
        "recheck_of_ceiling": recheck / rate if rate else 0.0,
        "ceiling": ceiling.device,
    }


def _gpu_ceiling(backends: dict[str, Any], config: BenchConfig) -> CeilingResult | None:
    """The GPU's float16 GEMM rate when a GPU backend ran and torch can use CUDA; else None."""
    if not any(backends[name].get("status") == "ok" for name in GPU_BACKENDS if name in backends):
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    log.info("GPU ceiling: float16 %d^3 matrix product", config.gpu_ceiling_size)
    return measure_gpu_ceiling(config.gpu_ceiling_size, config.ceiling_repeats, config.seed)


# --- the run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr (only on a terminal); yields a callback taking the frames done."""
    if not sys.stderr.isatty():
        yield lambda done: None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="frame", file=sys.stderr, leave=False)
    state = {"done": 0}

    def update(done: int) -> None:
        bar.update(done - state["done"])
        state["done"] = done

    try:
        yield update
    finally:
        bar.close()


def run_benchmark(
    config: BenchConfig,
    setup: BenchSetup,
    command: str,
    name: str,
    tracker_config: TrackerConfig = TrackerConfig(),
    note: str = "",
) -> dict[str, Any]:
    """Run the whole benchmark and return its result (see omc.benchmarks.report).

    command: the command line recorded with the result. name: the result's name. note: a remark
    recorded with it (e.g. that the machine was shared)."""
    threads = resolve_threads(config.threads)
    meta, loaded = ensure_export(setup.onnx_dir, setup.weights, setup.img_size)
    counts = config.tracklet_counts
    with blas_threads(1) as blas_limited:
        torch_threads = _set_torch_threads(threads)
        flops = model_flops(setup.onnx_dir, meta, counts, config.headline_tracklets)
        clip = None if setup.source is not None else generated_clip(config.clip_size, seed=config.seed)
        backends, load = _run_backends(setup, meta, threads, tracker_config, loaded, clip, config)
        log.info("ceiling: float32 %d^3 matrix product, %d threads", config.ceiling_size, threads)
        ceiling = measure_ceiling(config.ceiling_size, threads, config.ceiling_repeats, config.seed)
        gpu_ceiling = _gpu_ceiling(backends, config)
        log.info("host post-processing: %d tracks, %d detections, %d frames", config.host_tracks, config.host_detections, config.host_frames)
        host = measure_host(
            config.host_tracks, config.host_detections, config.host_frames, config.host_warmup, config.seed,
            threads, setup.reference_repo, with_torch=torch_threads is not None,
        )  # fmt: skip
    host["target_ms"] = config.host_target_ms
    environment = collect_environment(command, {
        "threads": threads,
        "torch_threads": torch_threads,
        "blas_threads": 1 if blas_limited else "library default (threadpoolctl not installed)",
        "opencv_threads": cv2.getNumThreads(),
        "onnx_dir": str(setup.onnx_dir),
        "engine_precision": setup.precision,
        "input_size": f"{meta.input_hw[1]}x{meta.input_hw[0]}",
        # 1, 5 and 15 minute load averages around the timed (interleaved) frames.
        "load_average": load,
    })  # fmt: skip
    for backend_name, backend in backends.items():
        if backend.get("status") != "ok":
            continue
        backend["environment"] = {**environment, "backend": backend.pop("description")}
        own_ceiling = gpu_ceiling if gpu_ceiling is not None and backend_name in GPU_BACKENDS else ceiling
        backend["gflops"] = _rates(backend, flops, own_ceiling, config.headline_tracklets)
        # Each backend against the reference path on its own kind of device, when that ran.
        found = speedup(backends, backend_name)
        if found is not None:
            backend["speedup"] = {"reference": found[0], "value": found[1]}
            if found[0] == REFERENCE_BACKEND:
                backend["speedup_vs_torch"] = found[1]
    frames_text = f"source {setup.source}" if setup.source is not None else (
        f"generated clip {config.clip_size[0]}x{config.clip_size[1]}")
    weights_text = next((b["environment"]["backend"]["weights"] for b in backends.values() if b.get("status") == "ok"
                         and "weights" in b["environment"]["backend"]), _export_weights_text(meta))  # fmt: skip
    return {
        "schema": RESULT_SCHEMA,
        "name": name,
        "note": note,
        "environment": environment,
        "config": config.to_dict(),
        "model": {
            "variant": meta.variant,
            "input_hw": list(meta.input_hw),
            "weights": weights_text,
            "precision": setup.precision,
            "frames": frames_text,
            "flops": flops,
        },
        "ceiling": ceiling.to_dict(),
        **({"ceiling_gpu": gpu_ceiling.to_dict()} if gpu_ceiling is not None else {}),
        "backends": backends,
        "host_postprocess": host,
    }


def _export_weights_text(meta: EngineMeta) -> str:
    source = meta.extra.get("source", {})
    if source.get("kind") == "random":
        return f"random weights, variant {meta.variant}"
    if source.get("path"):
        return f"checkpoint {Path(source['path']).name}"
    return "weights not recorded"


def _set_torch_threads(threads: int) -> int | None:
    """torch.set_num_threads(threads) when torch is installed; returns the count (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def _run_backends(
    setup: BenchSetup, meta: EngineMeta, threads: int, tracker_config: TrackerConfig, loaded: Any,
    clip: list[np.ndarray] | None, config: BenchConfig,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Open every backend (skipping those that cannot run here), time them together, close them.

    Returns (name -> summary or {"status": "skipped", "reason"}, in config.backends order;
    {"before": [1, 5, 15 min], "after": [...]} load averages around the timed frames).
    """
    pipelines: dict[str, FramePipeline] = {}
    skipped: dict[str, dict[str, Any]] = {}
    # Graphs a backend needs are made before any backend holds its engines (every backend stays
    # open for the interleaved timing): an INT8 calibration takes minutes and gigabytes. What
    # fails here fails again, with its reason recorded, when the backend opens.
    if "ort-int8" in config.backends:
        with contextlib.suppress(BackendUnavailable, MissingDependency):
            ensure_int8(setup.onnx_dir, setup.source, config.clip_size, config.seed)
    if "ort" in config.backends and setup.precision == "fp16":
        with contextlib.suppress(BackendUnavailable, MissingDependency):
            ensure_fp16(setup.onnx_dir, meta, setup.weights, loaded)
    try:
        for backend in config.backends:
            try:
                pipelines[backend] = open_pipeline(backend, setup, meta, threads, tracker_config, loaded,
                                                   config.clip_size, config.seed)  # fmt: skip
            except (BackendUnavailable, MissingDependency) as exc:
                log.warning("%s: skipped: %s", backend, exc)
                skipped[backend] = {"status": "skipped", "reason": str(exc)}
        source = setup.source
        frames: Callable[[], Iterator[FrameBGR]] = (
            (lambda: cycle_frames(clip)) if clip is not None else (lambda: source_frames(source))  # type: ignore[arg-type]
        )
        log.info("%s: %d warm-up + %d timed frames each, interleaved; tracklets %s, batches %s", ", ".join(pipelines),
                 config.warmup, config.frames, list(config.tracklet_counts), list(config.batch))  # fmt: skip
        before = load_average()
        with _progress(2 * len(pipelines) * (config.warmup + config.frames), "bench") as progress:
            runs = run_backends(pipelines, frames, config, progress)
        after = load_average()
    finally:
        for pipeline in pipelines.values():
            pipeline.close()
    backends: dict[str, Any] = {}
    for backend in config.backends:
        if backend in skipped:
            backends[backend] = skipped[backend]
            continue
        pipeline = pipelines[backend]
        summary = runs[backend].summary(config.headline_tracklets if pipeline.has_recheck else 0)
        summary["description"] = pipeline.description
        total = summary["stages"]["total"]
        log.info("%s: %.1f ms per frame (median; p90 %.1f), %.2f FPS", backend, total["median_ms"], total["p90_ms"],
                 summary["fps"])  # fmt: skip
        backends[backend] = summary
    return backends, {"before": list(before), "after": list(after)}
