"""The engine contract: tensor names, dtypes and shapes of `detector` and `recheck`, and export.json.

This module is the single place where the names of `engine-contract.md` are spelled. Export,
runtime, TensorRT build, calibration, benchmarks and tests all import them from here, so a
rename is one edit. It imports nothing beyond the standard library and NumPy.

Shapes use ints for fixed sizes and the strings "B" (detector batch) and "n" (tracklet count)
for the only two dynamic axes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from omc.errors import BadInput, EngineMismatch

# The two engines, by name (backends, build, calibration, Triton repository).
DETECTOR = "detector"
RECHECK = "recheck"
ENGINES: tuple[str, ...] = (DETECTOR, RECHECK)

# detector
IMAGES = "images"
DET_BOXES = "det_boxes"
DET_SCORES = "det_scores"
DET_DENSITY = "det_density"
DET_EMBEDDINGS = "det_embeddings"
ID_EMBEDDINGS = "id_embeddings"
RECHECK_FEATURES = "recheck_features"
RECHECK_BOXES = "recheck_boxes"
# recheck
TRACKLETS = "tracklets"
TRANS_BOXES = "trans_boxes"
TRANS_SCORES = "trans_scores"
TRANS_EMBEDDINGS = "trans_embeddings"
RECHECK_HEATMAP = "recheck_heatmap"

DETECTOR_INPUTS: tuple[str, ...] = (IMAGES,)
DETECTOR_CORE_OUTPUTS: tuple[str, ...] = (DET_BOXES, DET_SCORES, DET_DENSITY, DET_EMBEDDINGS, ID_EMBEDDINGS)
# The detector's outputs that feed the re-check engine (kept on the device where the backend can).
RECHECK_FEEDS_FROM_DETECTOR: tuple[str, ...] = (ID_EMBEDDINGS, RECHECK_FEATURES, RECHECK_BOXES)
DETECTOR_OUTPUTS: tuple[str, ...] = DETECTOR_CORE_OUTPUTS + (RECHECK_FEATURES, RECHECK_BOXES)
RECHECK_INPUTS: tuple[str, ...] = RECHECK_FEEDS_FROM_DETECTOR + (TRACKLETS,)
RECHECK_OUTPUTS: tuple[str, ...] = (TRANS_BOXES, TRANS_SCORES, TRANS_EMBEDDINGS, RECHECK_HEATMAP)

# What the host post-processing reads of each engine (frame_detections): all a remote server
# needs to send back; the maps and the heat map stay with the engines.
HOST_DETECTOR_OUTPUTS: tuple[str, ...] = (DET_BOXES, DET_SCORES, DET_DENSITY, DET_EMBEDDINGS)
HOST_RECHECK_OUTPUTS: tuple[str, ...] = (TRANS_BOXES, TRANS_SCORES, TRANS_EMBEDDINGS)

# A Triton model repository (`omc triton-repo`, read by omc.runtime.backends.triton). The model a
# client calls runs one frame: `images` [1, H, W, 3], optional `tracklets` [n, E] and optional
# SCORE_FLOORS float32 [2] (detector, re-check): candidate and peak rows scoring at or below
# their floor are not sent back (the tracker drops them anyway: conf_thres, recheck_score_thres).
TRITON_MODEL = "omc"
TRITON_DETECTOR_SUFFIX = "_detector"
TRITON_RECHECK_SUFFIX = "_recheck"
SCORE_FLOORS = "score_floors"
# config.pbtxt parameters: the export.json the engines came from (in every model of the export),
# and the frame model's wiring (JSON: model and tensor names).
TRITON_EXPORT_PARAMETER = "omc_export_json"
TRITON_WIRING_PARAMETER = "omc_wiring"

BATCH_AXIS = "B"
TRACKLET_AXIS = "n"

EXPORT_JSON = "export.json"
DETECTOR_ONNX = "detector.onnx"
RECHECK_ONNX = "recheck.onnx"
DETECTOR_PLAN = "detector.plan"
RECHECK_PLAN = "recheck.plan"
ONNX_FILES: Mapping[str, str] = {DETECTOR: DETECTOR_ONNX, RECHECK: RECHECK_ONNX}
PLAN_FILES: Mapping[str, str] = {DETECTOR: DETECTOR_PLAN, RECHECK: RECHECK_PLAN}
# Each plan's header, `<plan>.json` (omc.runtime.backends.engine_header).
PLAN_HEADER_SUFFIX = ".json"
# Every file of an engine folder the runtime may read (a run must not write over one of them).
ENGINE_FOLDER_FILES: tuple[str, ...] = (
    EXPORT_JSON, DETECTOR_ONNX, RECHECK_ONNX, DETECTOR_PLAN, RECHECK_PLAN,
    DETECTOR_PLAN + PLAN_HEADER_SUFFIX, RECHECK_PLAN + PLAN_HEADER_SUFFIX,
)  # fmt: skip

# Bumped when the meaning of a tensor or an export.json key changes; runtimes refuse other versions.
CONTRACT_VERSION = 1
# Shrink-window modes: "reference" rows/cols [c - r, c + r) as the released weights were trained,
# "paper" |x - c| <= r as the paper writes.
WINDOW_MODES = ("reference", "paper")
# Precisions of the graphs `omc export` writes (float), and of every export (omc quantize adds int8).
FLOAT_PRECISIONS = ("fp32", "fp16")
PRECISIONS = FLOAT_PRECISIONS + ("int8",)
# ONNX operators of an INT8 graph's explicit quantization (Q/DQ pairs).
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Input pixels per cell of the maps (id_embeddings, the re-check's maps): h = H / 8, w = W / 8.
MAP_STRIDE = 8

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract: name, NumPy dtype name and shape (ints, or "B" / "n")."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def check(self, array: np.ndarray, limits: Mapping[str, tuple[int, int]]) -> None:
        """Raise BadInput unless `array` has this spec's dtype and shape.

        limits: inclusive (min, max) for each symbolic axis, e.g. {"B": (1, 4), "n": (1, 512)}.
        """
        if array.dtype != np.dtype(self.dtype):
            raise BadInput(f"tensor '{self.name}' must be {self.dtype}, got {array.dtype}")
        if array.ndim != len(self.shape):
            raise BadInput(f"tensor '{self.name}' must have shape {list(self.shape)}, got {list(array.shape)}")
        for axis, (want, got) in enumerate(zip(self.shape, array.shape)):
            if isinstance(want, str):
                low, high = limits.get(want, (1, 1 << 31))
                if not low <= got <= high:
                    raise BadInput(
                        f"tensor '{self.name}' axis {axis} ({want}) is {got}; this export accepts {low} to {high}"
                    )
            elif want != got:
                raise BadInput(f"tensor '{self.name}' must have shape {list(self.shape)}, got {list(array.shape)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# export.json value checks by EngineMeta field type (as annotated): (test, what is expected).
_JSON_TYPES: Mapping[str, tuple[Any, str]] = {
    "int": (_is_int, "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple[int, int]": (lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_int, v)), "a list of two integers"),
    "tuple[int, ...]": (lambda v: isinstance(v, list) and len(v) > 0 and all(map(_is_int, v)), "a list of integers"),
    "dict[str, Any]": (lambda v: isinstance(v, dict), "an object"),
}


def _check_json_type(key: str, annotation: str, value: Any) -> None:
    """BadInput naming `key` when an export.json value does not have its field's type."""
    test, expected = _JSON_TYPES[annotation]
    if not test(value):
        raise BadInput(f"'{key}' must be {expected}, got {json.dumps(value)[:80]}")


@dataclass(frozen=True)
class EngineMeta:
    """Everything a runtime needs to use the engines without the checkpoint (export.json).

    input_hw: network input (H, W), multiples of 32.  topk: K detector candidates.  peaks: P
    re-check peaks.  recheck_channels: C of `recheck_features` (0 when there is no re-check).
    """

    input_hw: tuple[int, int] = (608, 1088)
    topk: int = 1000
    peaks: int = 100
    embedding_dim: int = 512
    recheck_channels: int = 0
    strides: tuple[int, ...] = (MAP_STRIDE, 2 * MAP_STRIDE, 4 * MAP_STRIDE)
    has_recheck: bool = False
    shrink_radius: int = 3
    shrink_window: str = "reference"
    global_point: bool = True
    max_batch: int = 4
    max_tracklets: int = 512
    opset: int = 18
    precision: str = "fp32"
    variant: str = "l"
    checkpoint_sha256: str = ""
    exporter_version: str = ""
    contract_version: int = CONTRACT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def map_hw(self) -> tuple[int, int]:
        """(h, w) of the maps (MAP_STRIDE)."""
        return self.input_hw[0] // MAP_STRIDE, self.input_hw[1] // MAP_STRIDE

    def detector_inputs(self) -> dict[str, TensorSpec]:
        height, width = self.input_hw
        return {IMAGES: TensorSpec(IMAGES, "uint8", (BATCH_AXIS, height, width, 3))}

    def detector_outputs(self) -> dict[str, TensorSpec]:
        h, w = self.map_hw
        b, k, e = BATCH_AXIS, self.topk, self.embedding_dim
        specs = [
            TensorSpec(DET_BOXES, "float32", (b, k, 4)),
            TensorSpec(DET_SCORES, "float32", (b, k)),
            TensorSpec(DET_DENSITY, "float32", (b, k)),
            TensorSpec(DET_EMBEDDINGS, "float32", (b, k, e)),
            TensorSpec(ID_EMBEDDINGS, "float32", (b, h, w, e)),
        ]
        if self.has_recheck:
            specs += [
                TensorSpec(RECHECK_FEATURES, "float32", (b, self.recheck_channels, h, w)),
                TensorSpec(RECHECK_BOXES, "float32", (b, h, w, 4)),
            ]
        return {s.name: s for s in specs}

    def recheck_inputs(self) -> dict[str, TensorSpec]:
        h, w = self.map_hw
        e = self.embedding_dim
        specs = [
            TensorSpec(ID_EMBEDDINGS, "float32", (1, h, w, e)),
            TensorSpec(RECHECK_FEATURES, "float32", (1, self.recheck_channels, h, w)),
            TensorSpec(RECHECK_BOXES, "float32", (1, h, w, 4)),
            TensorSpec(TRACKLETS, "float32", (TRACKLET_AXIS, e)),
        ]
        return {s.name: s for s in specs}

    def recheck_outputs(self) -> dict[str, TensorSpec]:
        h, w = self.map_hw
        p, e = self.peaks, self.embedding_dim
        specs = [
            TensorSpec(TRANS_BOXES, "float32", (1, p, 4)),
            TensorSpec(TRANS_SCORES, "float32", (1, p)),
            TensorSpec(TRANS_EMBEDDINGS, "float32", (1, p, e)),
            TensorSpec(RECHECK_HEATMAP, "float32", (1, 1, h, w)),
        ]
        return {s.name: s for s in specs}

    def engine_specs(self, engine: str) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
        """(inputs, outputs) of `engine` (DETECTOR or RECHECK); BadInput for another name."""
        if engine == DETECTOR:
            return self.detector_inputs(), self.detector_outputs()
        if engine == RECHECK:
            return self.recheck_inputs(), self.recheck_outputs()
        raise BadInput(f"engine '{engine}' is not one of {', '.join(ENGINES)}")

    def axis_limits(self) -> dict[str, tuple[int, int]]:
        return {BATCH_AXIS: (1, self.max_batch), TRACKLET_AXIS: (1, self.max_tracklets)}

    def validate(self) -> None:
        """Raise BadInput when a value cannot describe a valid export."""
        height, width = self.input_hw
        if height % 32 or width % 32 or height <= 0 or width <= 0:
            raise BadInput(f"input size {width}x{height} must be positive multiples of 32")
        if self.shrink_window not in WINDOW_MODES:
            raise BadInput(f"shrink window '{self.shrink_window}' is not one of {', '.join(WINDOW_MODES)}")
        if self.precision not in PRECISIONS:
            raise BadInput(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        for name in ("topk", "peaks", "max_batch", "max_tracklets", "embedding_dim"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.has_recheck and self.recheck_channels < 1:
            raise BadInput("an export with the re-check network must record its channel count")

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_hw"] = list(self.input_hw)
        data["strides"] = list(self.strides)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineMeta":
        known = {f.name for f in fields(cls)}
        version = data.get("contract_version")
        if version != CONTRACT_VERSION:
            raise EngineMismatch(
                f"export.json has contract version {version}, this omc reads version {CONTRACT_VERSION}; "
                "re-export the engines with this omc (omc export)"
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        for f in fields(cls):
            if f.name in kwargs:
                _check_json_type(f.name, str(f.type), kwargs[f.name])
        kwargs["input_hw"] = tuple(kwargs.get("input_hw", cls.input_hw))
        kwargs["strides"] = tuple(kwargs.get("strides", cls.strides))
        meta = cls(**kwargs)
        meta.validate()
        return meta

    @classmethod
    def load(cls, path: str | Path) -> "EngineMeta":
        """Read export.json from a file or from the engine folder that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / EXPORT_JSON
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise BadInput(f"{path} not found; export the engines first (omc export)") from None
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
            raise BadInput(f"{path} is not a readable export.json ({str(exc)[:200]})") from None
        if not isinstance(data, dict):
            raise BadInput(f"{path} is not a readable export.json (not an object)")
        try:
            return cls.from_dict(data)
        except BadInput as exc:
            raise BadInput(f"{path}: {exc}") from None


def frame_model_specs(meta: EngineMeta) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a Triton repository's frame model (one frame per request).

    Inputs: images uint8 [1, H, W, 3]; with a re-check, tracklets float32 [n, E] (optional);
    SCORE_FLOORS float32 [2] (optional). Outputs: HOST_DETECTOR_OUTPUTS as [1, k, ...] and, with
    a re-check, HOST_RECHECK_OUTPUTS as [1, p, ...]: the rows above the floors (k <= K, p <= P;
    p = 0 when no tracklets were sent).
    """
    height, width = meta.input_hw
    inputs = [TensorSpec(IMAGES, "uint8", (1, height, width, 3))]
    if meta.has_recheck:
        inputs.append(TensorSpec(TRACKLETS, "float32", (TRACKLET_AXIS, meta.embedding_dim)))
    inputs.append(TensorSpec(SCORE_FLOORS, "float32", (2,)))
    detector = meta.detector_outputs()
    outputs = [_rows_of_one_frame(detector[name], "k") for name in HOST_DETECTOR_OUTPUTS]
    if meta.has_recheck:
        recheck = meta.recheck_outputs()
        outputs += [_rows_of_one_frame(recheck[name], "p") for name in HOST_RECHECK_OUTPUTS]
    return inputs, outputs


def _rows_of_one_frame(spec: TensorSpec, rows: str) -> TensorSpec:
    """`spec` ([B or 1, K or P, ...]) for one frame with a variable row count: [1, rows, ...]."""
    return TensorSpec(spec.name, spec.dtype, (1, rows) + tuple(spec.shape[2:]))
