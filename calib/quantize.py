"""Q/DQ INT8 graphs from a float export and a calibration set (`omc quantize`).

One calibration, two targets. The activation ranges of each graph are computed once from the
calibration set (onnxruntime.quantization's calibrator over contract feed dicts: the stored frames
for the detector, float-detector maps plus recorded tracklets for the re-check) and written as
ONNX Runtime's JSON calibration cache (`<onnx dir>/int8-ranges/<engine>.json`, with a key file
naming the float graph, calibration set and settings it was computed from). Both targets are then
written by `quantize_static` from that cache, so they share the very same ranges and the
calibration data is run through once however many targets are made:

| target | activations | weights | bias | why |
| --- | --- | --- | --- | --- |
| cpu | uint8, asymmetric, per tensor | int8, symmetric, per channel | int32 | ONNX Runtime on x86 fuses this form into QLinearConv (u8s8 kernels, VNNI) |
| tensorrt | int8, symmetric (zero point 0) | int8, symmetric, per channel | float | TensorRT's explicit quantization (Q/DQ) wants signed symmetric 8-bit; it folds float biases itself |

(export-and-tensorrt-notes.md, "CPU speed": the symmetric signed form is not fused on x86 and runs
slower than fp32 there, hence two files.)

What is quantized: operators of `CalibConfig.op_types` in the graph's body; the regions of
`CalibConfig.keep_float` stay float (omc.calib.regions says what each is), and their nodes read
the float tensors, not the 8-bit-rounded copies the quantizer hands every consumer
(`restore_float_inputs`). Measured on the random-weight l network at 1088 x 608, cpu target, 2
threads of an AVX-512 VNNI CPU (drift and speed as `omc int8-report` prints them):
- tail quantized too: every one of the float graph's top-100 candidates lost its INT8 partner
  (top-K ranked 8-bit scores; decode and gathers rounded), for no speed beyond the heads';
- heads quantized too: median candidate box error 2.13 -> 3.51 px on one calibration, 2.46 ->
  2.60 px on another, for 1.06x more speed (all heads but the heat-map fusion's 3x3 are tiny);
- similarity quantized too (with MatMul): the re-check's own heat-map error 0.0035 -> 0.037;
- MatMul (CCN, SAAN) quantized: no speed gain (2.16x vs 2.19x), same drift; ConvTranspose left
  float: no gain either (2.17x). Softmax, InstanceNorm and LayerNorm stay float (ONNX Runtime's
  quantizer cannot quantize LayerNorm's [1, C] parameters per channel).

Outputs: `<out>/detector.onnx`, `<out>/recheck.onnx` and `<out>/export.json` with precision "int8"
and an `extra["int8"]` record (target, types, calibration, what was kept float and why); every
export.json key is also written into each graph's metadata_props, as `omc export` does.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from omc import __version__, contract
from omc.calib.dataset import CalibrationSet, file_sha256
from omc.calib.regions import GraphRegions, classify_nodes, name_nodes
from omc.config import QUANT_TARGETS, CalibConfig
from omc.contract import DETECTOR, ONNX_FILES, QDQ_OPS, RECHECK, EngineMeta
from omc.errors import BadInput, MissingDependency
from omc.files import replacing

log = logging.getLogger(__name__)

# Where the shared activation ranges live, inside the float export's folder.
RANGES_DIR = "int8-ranges"
# Default output folder of a target, inside the float export's folder.
TARGET_DIR = "int8-{target}"
# What each float region is kept for (recorded in export.json).
FLOAT_REGION_REASONS = {
    "head": "last convolution of each output path: its output is the score, box offset or embedding itself",
    "tail": "decode, top-K, gathers, normalisations and peaks: cheap, and top-K must rank float scores",
    "similarity": "tracklet similarity, shrink window and aggregation: 8-bit cosines move window centres",
}


@dataclass(frozen=True)
class QuantTarget:
    """One row of the target table (module docstring)."""

    name: str
    activation_type: str  # onnxruntime.quantization.QuantType member name
    weight_type: str
    symmetric_activations: bool
    quantize_bias: bool
    description: str


TARGETS: dict[str, QuantTarget] = {
    "cpu": QuantTarget(
        "cpu", "QUInt8", "QInt8", False, True,
        "ONNX Runtime on the CPU: uint8 activations, int8 per-channel weights (QLinearConv)",
    ),
    "tensorrt": QuantTarget(
        "tensorrt", "QInt8", "QInt8", True, False,
        "NVIDIA TensorRT explicit quantization: symmetric int8 activations and weights, zero points 0",
    ),
}
assert tuple(TARGETS) == QUANT_TARGETS  # the config's list and this table must name the same targets


def _quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise MissingDependency("onnxruntime.quantization", "export", str(exc)) from None
    return quantization


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependency("onnx", "export", str(exc)) from None
    return onnx


# --- preparation ---------------------------------------------------------------------------------


def prepare_graph(source: Path, destination: Path) -> GraphRegions:
    """ONNX Runtime's quantization pre-processing (ONNX shape inference, basic graph optimisations),
    then unique node names; returns the regions of the prepared graph.

    Symbolic shape inference is skipped: it is meant for transformer graphs and stops at the
    contract graphs' data-dependent gathers; ONNX shape inference covers every tensor here.
    """
    quantization, onnx = _quantization(), _onnx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quant_pre_process(str(source), str(destination), skip_symbolic_shape=True)
    model = onnx.load(str(destination))
    name_nodes(model)
    onnx.save(model, str(destination))
    return classify_nodes(model)


# --- calibration ---------------------------------------------------------------------------------


def _method(config: CalibConfig) -> Any:
    method = _quantization().CalibrationMethod
    return {"minmax": method.MinMax, "entropy": method.Entropy, "percentile": method.Percentile}[config.method]


def _calibrator_options(config: CalibConfig) -> dict[str, Any]:
    # True ranges for every method; the tensorrt target symmetrises them when it quantizes.
    options: dict[str, Any] = {"symmetric": False}
    if config.method == "percentile":
        options["percentile"] = config.percentile
    return options


def ranges_key(float_onnx: Path, calib_file: Path, config: CalibConfig) -> dict[str, Any]:
    """What a cached range file was computed from; a different key means it must be recomputed."""
    quantization_version = __import__("onnxruntime").__version__
    return {
        "float_onnx_sha256": file_sha256(float_onnx),
        "calib_sha256": file_sha256(calib_file),
        "method": config.method,
        "percentile": config.percentile if config.method == "percentile" else None,
        "op_types": sorted(config.op_types),
        "onnxruntime": quantization_version,
    }


def compute_ranges(
    prepared: Path,
    feeds: Iterable[Mapping[str, np.ndarray]],
    input_names: Sequence[str],
    cache: Path,
    config: CalibConfig,
    workdir: Path,
) -> int:
    """Run the calibration feeds through the prepared float graph once and write the ranges to
    `cache` (ONNX Runtime's calibration-cache JSON). Returns the number of feeds used.

    Feeds go to the calibrator one at a time: the histogram methods keep every calibrated tensor
    of a call in memory (gigabytes per frame for the large variants at 1088 x 608).
    """
    from omc.calib.feeds import FeedReader

    quantization = _quantization()
    calibrator = quantization.create_calibrator(
        prepared,
        list(config.op_types),
        augmented_model_path=str(workdir / f"{prepared.stem}.augmented.onnx"),
        calibrate_method=_method(config),
        extra_options=_calibrator_options(config),
    )
    count = 0
    for feed in feeds:
        reader = FeedReader([feed], input_names)
        # The histogram calibrators print a line per call to stdout, which carries our results.
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator.collect_data(reader)
        count += reader.count
    if count == 0:
        raise BadInput(
            "the calibration set gave no feeds for this graph (no frames, or no re-check samples "
            "because it was made from engines without the re-check network); make it again with omc calib"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        tensors = calibrator.compute_data()
    _write_atomically(cache, lambda path: quantization.save_tensors_data(tensors, path))
    del calibrator
    return count


def _cached_ranges(cache: Path, key: Mapping[str, Any]) -> bool:
    key_file = cache.with_suffix(".key.json")
    if not (cache.is_file() and key_file.is_file()):
        return False
    try:
        return bool(json.loads(key_file.read_text()) == json.loads(json.dumps(key)))
    except ValueError:
        return False


# --- quantization --------------------------------------------------------------------------------


def quantize_graph(
    prepared: Path,
    out_path: Path,
    cache: Path,
    target: QuantTarget,
    exclude: Sequence[str],
    config: CalibConfig,
) -> None:
    """Write the Q/DQ graph of `prepared` for `target` from the cached ranges."""
    quantization = _quantization()
    extra = {
        "ActivationSymmetric": target.symmetric_activations,
        "WeightSymmetric": True,
        "QuantizeBias": target.quantize_bias,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(
            str(prepared),
            str(out_path),
            None,
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(config.op_types),
            per_channel=config.per_channel,
            activation_type=getattr(quantization.QuantType, target.activation_type),
            weight_type=getattr(quantization.QuantType, target.weight_type),
            nodes_to_exclude=list(exclude),
            calibrate_method=_method(config),
            calibration_cache_path=str(cache),
            extra_options=extra,
        )


def quantized_nodes(model: Any) -> list[Any]:
    """Nodes (other than Q/DQ) that read at least one DequantizeLinear output: they compute on
    8-bit values (and ONNX Runtime / TensorRT fuse them into integer kernels where they can)."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [
        node for node in model.graph.node
        if node.op_type not in QDQ_OPS and any(name in dequantized for name in node.input)
    ]  # fmt: skip


def restore_float_inputs(model: Any, kept: Sequence[str]) -> int:
    """Feed the kept-float nodes their float inputs again, in place; returns the inputs rewired.

    ONNX Runtime's quantizer hands every consumer of a quantized tensor the DequantizeLinear
    output, excluded consumers included, so a "float" head would still read 8-bit-rounded values.
    A kept node reading DQ(Q(x)) of an activation x reads x instead; weights are untouched.
    """
    produced_by = {out: node for node in model.graph.node for out in node.output}
    float_of: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        quantize = produced_by.get(node.input[0])
        if quantize is not None and quantize.op_type == "QuantizeLinear":
            float_of[node.output[0]] = quantize.input[0]
    names = set(kept)
    rewired = 0
    for node in model.graph.node:
        if node.name in names:
            for index, value in enumerate(node.input):
                if value in float_of:
                    node.input[index] = float_of[value]
                    rewired += 1
    return rewired


def write_metadata(model: Any, meta: EngineMeta) -> None:
    """Replace the graph's export.json keys in metadata_props by `meta`'s (each value JSON-encoded)."""
    values = {key: json.dumps(value) for key, value in meta.to_dict().items()}
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in kept + sorted(values.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _save_model(model: Any, path: Path) -> None:
    _onnx().save(model, str(path))


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    with replacing(path) as temporary:
        write(temporary)


# --- the command ---------------------------------------------------------------------------------


@dataclass
class _Graph:
    engine: str
    prepared: Path
    regions: GraphRegions
    cache: Path


def default_out_dir(onnx_dir: str | Path, target: str) -> Path:
    """`<onnx dir>/int8-<target>`: where `omc quantize` writes a target when --out is not given."""
    return Path(onnx_dir) / TARGET_DIR.format(target=target)


def _load_inputs(onnx_dir: Path, calib_file: Path) -> tuple[EngineMeta, CalibrationSet, list[str]]:
    if not onnx_dir.is_dir():
        raise BadInput(f"ONNX folder {onnx_dir} not found; export the float model first (omc export --out {onnx_dir})")
    meta = EngineMeta.load(onnx_dir)
    if meta.precision != "fp32":
        raise BadInput(f"{onnx_dir} holds a {meta.precision} export; quantize the fp32 export (omc export --precision fp32)")
    engines = [DETECTOR, RECHECK] if meta.has_recheck else [DETECTOR]
    for engine in engines:
        if not (onnx_dir / ONNX_FILES[engine]).is_file():
            raise BadInput(f"{onnx_dir / ONNX_FILES[engine]} not found; export the model first (omc export --out {onnx_dir})")
    calibration = CalibrationSet.load(calib_file)
    if calibration.input_hw != meta.input_hw:
        raise BadInput(
            f"{calib_file} holds {calibration.input_hw[1]}x{calibration.input_hw[0]} frames but {onnx_dir} takes "
            f"{meta.input_hw[1]}x{meta.input_hw[0]}; make the set with --engines {onnx_dir}"
        )
    if meta.has_recheck and len(calibration.recheck) == 0:
        raise BadInput(
            f"{calib_file} has no re-check samples but {onnx_dir} has a re-check graph; make the set with "
            f"--engines {onnx_dir}"
        )
    made_from = calibration.provenance.get("export_json_sha256")
    if made_from and made_from != file_sha256(onnx_dir / contract.EXPORT_JSON):
        log.warning(
            "%s was made with other engines than %s (export.json differs): its frames fit, but its "
            "tracklets come from another model", calib_file, onnx_dir,
        )  # fmt: skip
    return meta, calibration, engines


def _calibrate(
    onnx_dir: Path, calib_file: Path, meta: EngineMeta, calibration: CalibrationSet, engines: list[str],
    config: CalibConfig, workdir: Path,
) -> list[_Graph]:
    """Prepare each graph and make sure its ranges are cached (computed at most once)."""
    from omc.calib.feeds import float_detector, recheck_feeds

    ranges_dir = onnx_dir / RANGES_DIR
    ranges_dir.mkdir(exist_ok=True)
    graphs = []
    for engine in engines:
        source = onnx_dir / ONNX_FILES[engine]
        prepared = workdir / f"{engine}.prepared.onnx"
        regions = prepare_graph(source, prepared)
        cache = ranges_dir / f"{engine}.json"
        key = ranges_key(source, calib_file, config)
        used = 0
        if _cached_ranges(cache, key):
            log.info("%s: reusing the activation ranges in %s", engine, cache)
        else:
            start = time.perf_counter()
            if engine == DETECTOR:
                used = compute_ranges(prepared, calibration.detector_feeds(), list(contract.DETECTOR_INPUTS), cache, config, workdir)
            else:
                detector = float_detector(onnx_dir, meta)
                try:
                    feeds = recheck_feeds(calibration, detector)
                    used = compute_ranges(prepared, feeds, list(contract.RECHECK_INPUTS), cache, config, workdir)
                finally:
                    detector.deactivate()
            _write_atomically(cache.with_suffix(".key.json"),
                              lambda path: path.write_text(json.dumps(key, indent=2, sort_keys=True)))
            log.info("%s: %s ranges from %d calibration feeds in %.1f s -> %s", engine, config.method, used,
                     time.perf_counter() - start, cache)
        graphs.append(_Graph(engine, prepared, regions, cache))
    return graphs


def _int8_record(
    target: QuantTarget, config: CalibConfig, calib_file: Path, calibration: CalibrationSet,
    graphs: list[_Graph], quantized: Mapping[str, Counter[str]], onnx_dir: Path,
) -> dict[str, Any]:
    import onnxruntime

    return {
        "target": target.name,
        "description": target.description,
        "activations": f"{target.activation_type} {'symmetric' if target.symmetric_activations else 'asymmetric'} per tensor",
        "weights": f"{target.weight_type} symmetric {'per channel' if config.per_channel else 'per tensor'}",
        "bias": "int32" if target.quantize_bias else "float",
        "calibration": {
            "file": calib_file.name,
            "path": str(calib_file.resolve()),
            "sha256": file_sha256(calib_file),
            "method": config.method,
            "frames": int(len(calibration.images)),
            "recheck_samples": int(len(calibration.recheck)),
            "recheck_fallback_samples": int(calibration.recheck.fallback.sum()),
        },
        "quantized_op_types": sorted(config.op_types),
        "quantized_nodes": {engine: dict(sorted(counts.items())) for engine, counts in quantized.items()},
        "kept_float": {
            "regions": list(config.keep_float),
            "reasons": {region: FLOAT_REGION_REASONS[region] for region in config.keep_float},
            "nodes": {g.engine: {r: n for r, n in g.regions.counts().items() if r in config.keep_float} for g in graphs},
            "not_quantized_op_types": "MatMul, Softmax, InstanceNormalization, LayerNormalization, Gemm (see omc.calib.quantize)",
        },
        "float_export": str(onnx_dir.resolve()),
        "float_export_sha256": file_sha256(onnx_dir / contract.EXPORT_JSON),
        "onnxruntime": onnxruntime.__version__,
        "omc": __version__,
    }


def quantize_targets(
    onnx_dir: str | Path,
    calib_file: str | Path,
    targets: Sequence[str],
    out_dirs: Mapping[str, str | Path] | None = None,
    config: CalibConfig = CalibConfig(),
) -> dict[str, Path]:
    """Write the INT8 graphs of each target from one calibration; returns {target: folder}.

    onnx_dir: the fp32 export. calib_file: a set from `omc calib` made with that export.
    out_dirs: folder per target (missing ones: `<onnx dir>/int8-<target>`).
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise BadInput(f"--target {', '.join(unknown) or '(none)'} is not one of {', '.join(TARGETS)}")
    onnx_dir, calib_file = Path(onnx_dir), Path(calib_file)
    meta, calibration, engines = _load_inputs(onnx_dir, calib_file)
    out_dirs = dict(out_dirs or {})
    written: dict[str, Path] = {}
    onnx = _onnx()
    with tempfile.TemporaryDirectory(prefix="omc-quantize-") as work:
        workdir = Path(work)
        graphs = _calibrate(onnx_dir, calib_file, meta, calibration, engines, config, workdir)
        for name in dict.fromkeys(targets):
            target = TARGETS[name]
            start = time.perf_counter()
            out_dir = Path(out_dirs.get(name, default_out_dir(onnx_dir, name)))
            if out_dir.resolve() == onnx_dir.resolve():
                raise BadInput(f"--out {out_dir} is the float export's own folder; choose another folder")
            models: dict[str, Any] = {}
            quantized: dict[str, Counter[str]] = {}
            for graph in graphs:
                staged = workdir / f"{graph.engine}.{name}.onnx"
                kept = graph.regions.kept_float(config.keep_float)
                quantize_graph(graph.prepared, staged, graph.cache, target, kept, config)
                models[graph.engine] = onnx.load(str(staged))
                restore_float_inputs(models[graph.engine], kept)
                quantized[graph.engine] = Counter(node.op_type for node in quantized_nodes(models[graph.engine]))
            record = _int8_record(target, config, calib_file, calibration, graphs, quantized, onnx_dir)
            int8_meta = replace(meta, precision="int8", extra={**meta.extra, "int8": record})
            out_dir.mkdir(parents=True, exist_ok=True)
            for engine, model in models.items():
                write_metadata(model, int8_meta)
                _write_atomically(out_dir / ONNX_FILES[engine], functools.partial(_save_model, model))
            _write_atomically(out_dir / contract.EXPORT_JSON, lambda path: path.write_text(int8_meta.to_json() + "\n"))
            sizes = sum((out_dir / ONNX_FILES[e]).stat().st_size for e in models)
            log.info(
                "%s: INT8 %s graphs (%s) in %.1f s, %.1f MB; quantized nodes %s; kept float: %s",
                out_dir, name, target.description, time.perf_counter() - start, sizes / 1e6,
                ", ".join(f"{e} {sum(c.values())}" for e, c in quantized.items()), ", ".join(config.keep_float) or "nothing",
            )  # fmt: skip
            written[name] = out_dir
    return written


def quantize_engines(
    onnx_dir: str | Path,
    calib_file: str | Path,
    target: str,
    out_dir: str | Path | None = None,
    config: CalibConfig = CalibConfig(),
) -> Path:
    """Write the INT8 graphs of one target (see `quantize_targets`); returns the folder.

    out_dir: None writes `<onnx dir>/int8-<target>`. The activation ranges are cached in
    `<onnx dir>/int8-ranges/`, so quantizing the other target later reuses the same calibration.
    """
    out_dirs = {target: out_dir} if out_dir is not None else {}
    return quantize_targets(onnx_dir, calib_file, [target], out_dirs, config)[target]
