"""Inference backends: ONNX Runtime, TensorRT, a Triton server, or any object with infer(feeds) -> outputs.

`open_engines(engine_dir)` reads export.json and opens the detector and (when exported) the
re-check engine with the chosen backend, checked against export.json and activated. The backend
modules are imported only when asked for, so `import omc.runtime.backends` pulls in neither
onnxruntime nor TensorRT.
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omc import contract
from omc.config import AUTO_DEVICE, LOCAL_BACKENDS, SERVED_BACKENDS
from omc.contract import EngineMeta
from omc.errors import BadInput, OmcError
from omc.runtime.backends.base import Backend, batch_item

if TYPE_CHECKING:
    from omc.runtime.engines import EnginePair

# What the device "auto" means for each backend of open_engines (omc.config.LOCAL_BACKENDS).
DEFAULT_DEVICES = {"ort": "cpu", "trt": "cuda"}


Pair = tuple[Backend, Backend | None]  # (detector, recheck or None)


def _open_onnxruntime(engine_dir: Path, meta: EngineMeta, device: str, options: dict[str, Any]) -> Pair:
    from omc.runtime.backends.onnxrt import OnnxRuntimeBackend

    detector = OnnxRuntimeBackend(engine_dir / contract.DETECTOR_ONNX, meta, contract.DETECTOR, device, **options)
    recheck = None
    if meta.has_recheck:
        recheck_path = engine_dir / contract.RECHECK_ONNX
        if not recheck_path.is_file():
            raise BadInput(
                f"{recheck_path} not found although {engine_dir / contract.EXPORT_JSON} records a re-check engine; "
                "re-export with omc export"
            )
        recheck = OnnxRuntimeBackend(recheck_path, meta, contract.RECHECK, device, **options)
    return detector, recheck


def _open_tensorrt(engine_dir: Path, meta: EngineMeta, device: str, options: dict[str, Any]) -> Pair:
    if device == "cpu":
        raise BadInput(
            "the TensorRT backend runs on a GPU: pass device 'cuda' or 'cuda:N' (device 'cpu' is for backend 'ort')"
        )
    try:
        trt_backend = importlib.import_module("omc.runtime.backends.trt")
    except ModuleNotFoundError as exc:
        if exc.name != "omc.runtime.backends.trt":
            raise
        raise OmcError(
            "this omc installation has no TensorRT backend (omc.runtime.backends.trt); use backend 'ort'"
        ) from None
    return trt_backend.TensorRTBackend.open_pair(engine_dir, meta, device=device, **options)


def open_engines(
    engine_dir: str | Path, backend: str = "ort", device: str = AUTO_DEVICE, **options: Any
) -> tuple[Backend, Backend | None, EngineMeta]:
    """Open the engines of one export, activated and checked against its export.json.

    engine_dir: the folder `omc export` wrote (export.json with detector.onnx / recheck.onnx, or
    the TensorRT plans built from them). backend: "ort" (ONNX Runtime) or "trt" (TensorRT).
    device: "auto" (the CPU for "ort", the first CUDA GPU for "trt"); for "ort" one of "cpu",
    "cuda", "tensorrt" (execution providers); for "trt" the GPU ("cuda", "cuda:N"). options: backend keywords (ort: intra_op_threads, device_id).
    Returns (detector, recheck or None for an export without the re-check network, meta).
    Deactivate both when done (or use each as a context manager).
    """
    if backend in SERVED_BACKENDS:
        raise BadInput(f"backend '{backend}' runs both engines in one request: open it with open_engine_pair")
    if backend not in LOCAL_BACKENDS:
        raise BadInput(f"backend '{backend}' is not one of {', '.join(LOCAL_BACKENDS)}")
    if device == AUTO_DEVICE:
        device = DEFAULT_DEVICES[backend]
    engine_dir = Path(engine_dir)
    meta = EngineMeta.load(engine_dir)
    opener = _open_onnxruntime if backend == "ort" else _open_tensorrt
    detector, recheck = opener(engine_dir, meta, device, dict(options))
    opened: list[Backend] = []
    try:
        for engine in (detector, recheck):
            if engine is not None and not engine.is_active:
                engine.activate()
                opened.append(engine)
    except BaseException:
        for engine in opened:
            engine.deactivate()
        raise
    return detector, recheck, meta


def open_engine_pair(
    engine_dir: str | Path | None, backend: str = "ort", device: str = AUTO_DEVICE, **options: Any
) -> tuple["EnginePair", EngineMeta]:
    """The engines of one export as an open `EnginePair`: (pair, meta); `pair.close()` releases them.

    backend "ort" / "trt": see `open_engines` (engine_dir required). backend "triton": the
    engines served by a Triton server from a repository of `omc triton-repo`; meta comes from the
    server, and when engine_dir is given the served export must equal its export.json
    (EngineMismatch otherwise). Options: url (host:port, gRPC), model_name, shared_memory
    ("auto", "on", "off"), timeout_s (see TritonClientConfig), score_floors ((detector,
    re-check) scores at or below which rows are not sent back; normally the tracker's
    (conf_thres, recheck_score_thres); default: every row). device must stay "auto" (the server
    places its engines). An unreachable or not-ready server raises EngineUnavailable (retryable).
    """
    if backend == "triton":
        return _open_triton(engine_dir, device, dict(options))
    from omc.runtime.engines import BackendPair

    if engine_dir is None:
        raise BadInput(f"backend '{backend}' needs the engine folder (omc export or omc build output)")
    detector, recheck, meta = open_engines(engine_dir, backend=backend, device=device, **options)
    return BackendPair(detector, recheck), meta


def _open_triton(engine_dir: str | Path | None, device: str, options: dict[str, Any]) -> tuple["EnginePair", EngineMeta]:
    from omc.config import TritonClientConfig
    from omc.runtime.backends.triton import TritonEnginePair

    if device != AUTO_DEVICE:
        raise BadInput(f"backend 'triton' runs the engines where the server placed them; leave the device at auto, not '{device}'")
    score_floors = options.pop("score_floors", None)
    try:
        config = TritonClientConfig(**options)
    except TypeError:
        known = ", ".join(f.name for f in fields(TritonClientConfig))
        raise BadInput(f"backend 'triton' takes the options {known}, score_floors; got {', '.join(sorted(options))}") from None
    expected = EngineMeta.load(engine_dir) if engine_dir is not None else None
    return TritonEnginePair.open_pair(config, expected, score_floors)


__all__ = ["Backend", "DEFAULT_DEVICES", "batch_item", "open_engine_pair", "open_engines"]
