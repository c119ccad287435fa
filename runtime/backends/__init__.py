"""Inference backends: ONNX Runtime, TensorRT, or any object with infer(feeds) -> outputs.

`open_engines(engine_dir)` reads export.json and opens the detector and (when exported) the
re-check engine with the chosen backend, checked against export.json and activated. The backend
modules are imported only when asked for, so `import omc.runtime.backends` pulls in neither
onnxruntime nor TensorRT.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omc import contract
from omc.contract import EngineMeta
from omc.errors import BadInput, OmcError
from omc.runtime.backends.base import Backend, batch_item

if TYPE_CHECKING:
    from omc.runtime.engines import BackendPair

BACKENDS = ("ort", "trt")
# The device "auto" means: ONNX Runtime on the CPU, TensorRT on the first CUDA GPU.
AUTO_DEVICE = "auto"
DEFAULT_DEVICES = {"ort": "cpu", "trt": "cuda"}


Pair = tuple[Backend, Backend | None]  # (detector, recheck or None)


def _open_onnxruntime(engine_dir: Path, meta: EngineMeta, device: str, options: dict[str, Any]) -> Pair:
    from omc.runtime.backends.onnxrt import OnnxRuntimeBackend

    detector = OnnxRuntimeBackend(engine_dir / contract.DETECTOR_ONNX, meta, "detector", device, **options)
    recheck = None
    if meta.has_recheck:
        recheck_path = engine_dir / contract.RECHECK_ONNX
        if not recheck_path.is_file():
            raise BadInput(
                f"{recheck_path} not found although {engine_dir / contract.EXPORT_JSON} records a re-check engine; "
                "re-export with omc export"
            )
        recheck = OnnxRuntimeBackend(recheck_path, meta, "recheck", device, **options)
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
    if backend not in BACKENDS:
        raise BadInput(f"backend '{backend}' is not one of {', '.join(BACKENDS)}")
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
    engine_dir: str | Path, backend: str = "ort", device: str = AUTO_DEVICE, **options: Any
) -> tuple["BackendPair", EngineMeta]:
    """The engines of one export as an activated `EnginePair` (see `open_engines` for the arguments).

    Returns (pair, meta); `pair.close()` deactivates both engines.
    """
    from omc.runtime.engines import BackendPair

    detector, recheck, meta = open_engines(engine_dir, backend=backend, device=device, **options)
    return BackendPair(detector, recheck), meta


__all__ = ["AUTO_DEVICE", "BACKENDS", "Backend", "DEFAULT_DEVICES", "batch_item", "open_engine_pair", "open_engines"]
