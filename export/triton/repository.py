"""A Triton model repository from an export (ONNX) or a build (TensorRT plans).

Three models per export (names from TritonRepoConfig.model_name, "omc" by default):

- `omc_detector`: the detector, batched (max_batch_size = export.json's max_batch) with
  Triton's dynamic batcher, so frames of different streams, sent as separate requests, run as
  one batch.
- `omc_recheck`: the re-check, unbatched (its tracklet axis n differs per frame; the contract's
  batch axis is 1).
- `omc`: the model a client calls, one frame per request: a Python-backend model (Business Logic
  Scripting, BLS) that runs the detector on the frame and then, only when the request carries
  tracklets, the re-check on that frame's maps. The maps (about 21 MB per frame at 1088x608)
  go from one model to the other inside the server; only `images` [1, H, W, 3] and `tracklets`
  [n, E] come up and only the candidate rows scoring above the client's floors go down.

Why BLS and not an ensemble (checked against Triton's documentation and its ensemble scheduler,
triton-inference-server/core src/ensemble_scheduler): an ensemble is a fixed dataflow graph with
no conditionals; every step runs as soon as its inputs are ready. An ensemble input may be
declared optional, but then the step that consumes it still runs, without that input, and the
re-check engine (ONNX Runtime or TensorRT) requires `tracklets`, so an ensemble cannot skip the
re-check for frames without tracks. Nor can it drop the candidate rows below the tracker's
thresholds before they are sent. BLS requests go through the called model's own scheduler, so
the detector calls of concurrent frame requests (one per frame-model instance) are batched by
the detector's dynamic batcher like requests from outside.

Every model's config.pbtxt carries the export.json it was made from (parameter
`omc_export_json`), so a client checks it talks to the engines it expects; the frame model also
carries its wiring (parameter `omc_wiring`: model and tensor names), so its model.py spells no
name itself.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from omc import contract
from omc.config import TritonRepoConfig
from omc.contract import EngineMeta, TensorSpec
from omc.errors import BadInput, EngineMismatch

log = logging.getLogger(__name__)

# Model files inside a model's version folder (Triton's default file names per platform).
MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan", "python": "model.onnx"}
VERSION = "1"
# Triton's data types for the contract's NumPy dtypes.
TRITON_DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}
INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
# The Python-backend programs copied into the repository as model.py.
_HERE = Path(__file__).resolve().parent
FRAME_MODEL_SOURCE = _HERE / "frame_model.py"
ONNX_MODEL_SOURCE = _HERE / "onnx_model.py"


@dataclass(frozen=True)
class ModelNames:
    """The three model names of one export in a repository."""

    frame: str
    detector: str
    recheck: str

    @classmethod
    def of(cls, model_name: str) -> "ModelNames":
        return cls(model_name, model_name + contract.TRITON_DETECTOR_SUFFIX, model_name + contract.TRITON_RECHECK_SUFFIX)


def _quoted(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dims(shape: Sequence[int | str], batched: bool) -> str:
    """Triton dims of a contract shape: symbolic axes become -1; a batched model drops axis 0 ("B")."""
    axes = shape[1:] if batched else shape
    return "[ " + ", ".join(str(-1 if isinstance(axis, str) else axis) for axis in axes) + " ]"


def _tensors(kind: str, specs: Sequence[TensorSpec], batched: bool, optional: Sequence[str] = ()) -> str:
    entries = []
    for spec in specs:
        entry = f"  {{ name: {_quoted(spec.name)} data_type: {TRITON_DTYPES[spec.dtype]} dims: {_dims(spec.shape, batched)}"
        if spec.name in optional:
            entry += " optional: true"
        entries.append(entry + " }")
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def _parameters(values: dict[str, str]) -> str:
    return "".join(
        f"parameters {{ key: {_quoted(key)} value: {{ string_value: {_quoted(value)} }} }}\n" for key, value in values.items()
    )


def _header(name: str, platform: str, max_batch_size: int) -> str:
    backend = 'backend: "python"' if platform == "python" else f"platform: {_quoted(platform)}"
    return f"name: {_quoted(name)}\n{backend}\nmax_batch_size: {max_batch_size}\n"


def _instances(count: int, kind: str) -> str:
    return f"instance_group [ {{ count: {count} kind: {kind} }} ]\n"


def _export_json(meta: EngineMeta) -> str:
    return json.dumps(meta.to_dict(), sort_keys=True, separators=(",", ":"))


def detector_config(meta: EngineMeta, config: TritonRepoConfig) -> str:
    """config.pbtxt of the detector: batched up to meta.max_batch, dynamic batching."""
    names = ModelNames.of(config.model_name)
    preferred = [size for size in config.preferred_batch_sizes]
    too_big = [size for size in preferred if size > meta.max_batch]
    if too_big:
        raise BadInput(f"--preferred-batch-sizes {too_big} exceed the export's max batch of {meta.max_batch}")
    batching = "dynamic_batching {"
    if preferred:
        batching += " preferred_batch_size: [ " + ", ".join(map(str, preferred)) + " ]"
    batching += f" max_queue_delay_microseconds: {config.max_queue_delay_us} }}\n"
    return (
        _header(names.detector, config.platform, meta.max_batch)
        + _tensors("input", list(meta.detector_inputs().values()), batched=True)
        + _tensors("output", list(meta.detector_outputs().values()), batched=True)
        + batching
        + _instances(config.detector_instances, INSTANCE_KINDS[config.instance_kind])
        + _parameters({contract.TRITON_EXPORT_PARAMETER: _export_json(meta)})
    )


def recheck_config(meta: EngineMeta, config: TritonRepoConfig) -> str:
    """config.pbtxt of the re-check: unbatched (the contract's shapes as they are; n is -1)."""
    names = ModelNames.of(config.model_name)
    return (
        _header(names.recheck, config.platform, 0)
        + _tensors("input", list(meta.recheck_inputs().values()), batched=False)
        + _tensors("output", list(meta.recheck_outputs().values()), batched=False)
        + _instances(config.recheck_instances, INSTANCE_KINDS[config.instance_kind])
        + _parameters({contract.TRITON_EXPORT_PARAMETER: _export_json(meta)})
    )


def frame_wiring(meta: EngineMeta, config: TritonRepoConfig) -> dict[str, Any]:
    """What the frame model's model.py needs to know: model and tensor names (the omc_wiring parameter)."""
    names = ModelNames.of(config.model_name)
    return {
        "detector": names.detector,
        "recheck": names.recheck if meta.has_recheck else "",
        "images": contract.IMAGES,
        "tracklets": contract.TRACKLETS,
        "score_floors": contract.SCORE_FLOORS,
        "detector_outputs": list(contract.HOST_DETECTOR_OUTPUTS),
        "detector_scores": contract.DET_SCORES,
        "maps": list(contract.RECHECK_FEEDS_FROM_DETECTOR),
        "recheck_outputs": list(contract.HOST_RECHECK_OUTPUTS),
        "recheck_scores": contract.TRANS_SCORES,
        # Each re-check output's dims after [1, rows] (for the zero-row answer without tracklets).
        "recheck_row_dims": {
            name: list(meta.recheck_outputs()[name].shape[2:]) for name in contract.HOST_RECHECK_OUTPUTS
        },
    }


def frame_config(meta: EngineMeta, config: TritonRepoConfig) -> str:
    """config.pbtxt of the frame model (Python backend, BLS; unbatched: one request is one frame)."""
    names = ModelNames.of(config.model_name)
    inputs, outputs = contract.frame_model_specs(meta)
    return (
        _header(names.frame, "python", 0)
        + _tensors("input", inputs, batched=False, optional=(contract.TRACKLETS, contract.SCORE_FLOORS))
        + _tensors("output", outputs, batched=False)
        # The frame model only waits on the engines: CPU instances, whatever the engines use.
        + _instances(config.frame_instances, INSTANCE_KINDS["cpu"])
        + _parameters({
            contract.TRITON_EXPORT_PARAMETER: _export_json(meta),
            contract.TRITON_WIRING_PARAMETER: json.dumps(frame_wiring(meta, config), sort_keys=True),
        })  # fmt: skip
    )


def _engine_file(engine_dir: Path, meta: EngineMeta, engine: str, platform: str) -> Path:
    """The detector's or re-check's file for `platform`, checked (plans against their sidecar)."""
    if platform == "tensorrt_plan":
        from omc.runtime.backends.engine_header import EDITION_TENSORRT, check_header, read_header

        path = engine_dir / contract.PLAN_FILES[engine]
        header = read_header(path, EDITION_TENSORRT)
        if header.edition != EDITION_TENSORRT:
            raise EngineMismatch(
                f"{path} was built by TensorRT for RTX; Triton's tensorrt_plan backend runs NVIDIA TensorRT "
                f"plans: rebuild with omc build --onnx {header.onnx_dir or engine_dir} --edition tensorrt"
            )
        # Edition, export content and the plan's SHA-256; the version is the container's concern (README).
        check_header(header, path, path.read_bytes(), meta, EDITION_TENSORRT, header.tensorrt_version, None)
        return path
    path = engine_dir / contract.ONNX_FILES[engine]
    if not path.is_file():
        raise BadInput(f"{path} not found; --engines must be the output folder of omc export (or omc build for tensorrt_plan)")
    return path


def write_repository(engine_dir: str | Path, repository: str | Path, config: TritonRepoConfig, overwrite: bool = False) -> list[Path]:
    """Write the export's models into the Triton model repository `repository` (created if missing).

    engine_dir: an `omc export` folder (ONNX; platforms onnxruntime_onnx and python) or an
    `omc build` folder (NVIDIA TensorRT plans; platform tensorrt_plan). Other models already in
    the repository are left alone; models of the same names are refused unless `overwrite`.
    The models are written beside the repository first and moved in when complete, so a failure
    leaves nothing half-written. Returns the model folders written.
    """
    start = time.perf_counter()
    engine_dir, repository = Path(engine_dir), Path(repository)
    meta = EngineMeta.load(engine_dir)
    names = ModelNames.of(config.model_name)
    platform = config.platform
    engines = contract.ENGINES if meta.has_recheck else (contract.DETECTOR,)
    files = {engine: _engine_file(engine_dir, meta, engine, platform) for engine in engines}
    targets = [repository / names.frame, repository / names.detector] + ([repository / names.recheck] if meta.has_recheck else [])
    existing = [path for path in targets if path.exists()]
    if existing and not overwrite:
        raise BadInput(
            f"{', '.join(str(p) for p in existing)} already exist(s) in the repository; pass --overwrite to replace "
            "them or --model-name to add this export beside them"
        )
    if repository.exists() and not repository.is_dir():
        raise BadInput(f"--out {repository} is a file, not a folder")
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{repository.name}-", dir=repository.parent))
    try:
        _write_model(staging / names.detector, detector_config(meta, config), files[contract.DETECTOR], platform)
        if meta.has_recheck:
            _write_model(staging / names.recheck, recheck_config(meta, config), files[contract.RECHECK], platform)
        frame = staging / names.frame
        (frame / VERSION).mkdir(parents=True)
        (frame / "config.pbtxt").write_text(frame_config(meta, config))
        shutil.copyfile(FRAME_MODEL_SOURCE, frame / VERSION / "model.py")
        # For people and tools; Triton reads only config.pbtxt and the version folders.
        (frame / contract.EXPORT_JSON).write_text(meta.to_json() + "\n")
        for target in targets:
            if target.exists():
                shutil.rmtree(target)
            (staging / target.name).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size_mb = sum(f.stat().st_size for t in targets for f in t.rglob("*") if f.is_file()) / 1e6
    log.info(
        "Triton repository %s: models %s (%s, detector batch up to %d) in %.1f s, %.1f MB",
        repository, ", ".join(t.name for t in targets), platform, meta.max_batch, time.perf_counter() - start, size_mb,
    )
    return targets


def _write_model(folder: Path, config_text: str, engine_file: Path, platform: str) -> None:
    (folder / VERSION).mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config_text)
    shutil.copyfile(engine_file, folder / VERSION / MODEL_FILES[platform])
    if platform == "python":
        shutil.copyfile(ONNX_MODEL_SOURCE, folder / VERSION / "model.py")
