"""Q/DQ INT8 graphs of a real (tiny) export: structure per target, float regions, one calibration,
metadata, ONNX Runtime runs them within the drift bounds on any x86 CPU, TensorRT for RTX parses
and refuses."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calib_exports import TINY_CALIB, tiny_calibration, tiny_drift, tiny_export, tiny_int8
from paths import rtx_or_skip
from omc import contract
from omc.calib.dataset import CalibrationSet
from omc.calib.drift import DriftReport
from omc.calib.quantize import RANGES_DIR, prepare_graph, quantize_engines
from omc.contract import EngineMeta
from omc.errors import BadInput

pytestmark = pytest.mark.slow

# INT8 vs float on the 4 held-out frames, judged like with like. The quantization's own drift
# (the Q/DQ graphs run as written, every operator in float: `integer_kernels=False`) does not
# depend on the CPU; ONNX Runtime's integer kernels do (AVX2's 16-bit pair sums vs AVX-512 VNNI /
# AMX). So the kernels' median box error is held to KERNEL_FACTOR x the float-kernel figure of
# the same graphs on the same machine, and both runs to the "int8-drift" bounds of the one table
# (omc.export.judge.BOUNDS). Median box error, kernels / as written (px), on the tests' frames,
# from `pytest tests/calib/test_calib_quantize.py -k drift_bounds` (figures via drift_on_holdout):
#   Intel Xeon with AVX-512 VNNI + AMX (measured 2026-12-07): cpu 1.50 / 1.49 (1.01x), tensorrt
#   2.15 / 1.96 (1.10x);
#   AMD EPYC, AVX2 only (issue 13): cpu 5.06 (the old absolute bound 5.0 failed) / 1.49 as
#   written (float kernels: the same on both CPUs), 3.40x; tensorrt passed the old 8.0 px, so at
#   most 4.08x.
# KERNEL_FACTOR 5 leaves 1.47x over the AVX2 figure (1.23x over the tensorrt target's worst
# possible AVX2 figure). The other figures are held to the table's bounds, which both CPU kinds
# meet: AVX2 passed the old, tighter test bounds (score 0.002, cosine 0.99, heat 0.02) on them.
KERNEL_FACTOR = 5.0


def _model(target: str, engine: str) -> onnx.ModelProto:
    return onnx.load(str(tiny_int8()[target] / f"{engine}.onnx"))


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _dequantized(model: onnx.ModelProto) -> set[str]:
    return {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}


@pytest.fixture(scope="module")
def regions() -> dict[str, Any]:
    """Regions of each prepared float graph (the node names quantize_static keeps)."""
    found = {}
    for engine in ("detector", "recheck"):
        prepared = tiny_export() / f".prepared-{engine}.onnx"
        found[engine] = prepare_graph(tiny_export() / f"{engine}.onnx", prepared)
        prepared.unlink()
    return found


@pytest.mark.parametrize("engine", ["detector", "recheck"])
def test_cpu_target_is_uint8_activations_and_int8_per_channel_weights(engine: str) -> None:
    model = _model("cpu", engine)
    init = _initializers(model)
    activation_points = [init[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_points and all(point.dtype == np.uint8 for point in activation_points)
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and init.get(n.input[0]) is not None
               and init[n.input[0]].dtype == np.int8]
    assert weights
    per_channel = [n for n in weights if init[n.input[1]].size > 1]
    for node in per_channel:
        values, scales, points = (init[name] for name in node.input)
        axis = next(a.i for a in node.attribute if a.name == "axis")
        assert scales.shape == (values.shape[axis],)
        assert np.all(points == 0)  # symmetric weights
    conv_weights = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in _dequantized(model)]
    assert conv_weights and len(per_channel) >= len(conv_weights) // 2
    # Biases are int32 for QLinearConv.
    assert any(init[n.input[0]].dtype == np.int32 for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in init)


@pytest.mark.parametrize("engine", ["detector", "recheck"])
def test_tensorrt_target_is_int8_everywhere_with_zero_points_zero(engine: str) -> None:
    model = _model("tensorrt", engine)
    init = _initializers(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        point = init[node.input[2]]
        assert point.dtype == np.int8 and np.all(point == 0), node.name
        if node.op_type == "DequantizeLinear" and node.input[0] in init:
            assert init[node.input[0]].dtype == np.int8  # no int32 bias: TensorRT keeps biases float


def test_one_calibration_gives_both_targets_their_scales() -> None:
    from onnxruntime.quantization import load_tensors_data

    ranges = load_tensors_data(tiny_export() / RANGES_DIR / "detector.json").data
    params = {}
    for target in ("cpu", "tensorrt"):
        model = _model(target, "detector")
        init = _initializers(model)
        params[target] = {
            n.input[0]: (float(init[n.input[1]]), int(init[n.input[2]])) for n in model.graph.node if n.op_type == "QuantizeLinear"
        }
    shared = [name for name in params["cpu"] if name in params["tensorrt"]]
    assert len(shared) > 50
    own_range = 0
    for name in shared:
        (scale, point), (symmetric_scale, _) = params["cpu"][name], params["tensorrt"][name]
        # The real range the cpu target's uint8 grid spans, [-point * scale, (255 - point) * scale],
        # must be the one the tensorrt target spans symmetrically, max |x| = 127 * its scale
        # (within one uint8 step: the zero point is rounded).
        low, high = -point * scale, (255 - point) * scale
        assert 127 * symmetric_scale == pytest.approx(max(abs(low), abs(high)), abs=scale), name
        if name in ranges:
            lo, hi = (float(np.asarray(v).item()) for v in ranges[name].range_value)
            own_range += scale == pytest.approx((max(hi, 0) - min(lo, 0)) / 255, rel=1e-3)
    # Most tensors are quantized with their own calibrated range; the rest share a neighbour's
    # (ONNX Runtime gives a Concat/MaxPool/Resize output its input's parameters).
    assert own_range > 0.8 * len(shared)


def test_a_later_quantize_reuses_the_cached_ranges(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tiny_export() / RANGES_DIR / "detector.json"
    before = cache.stat().st_mtime_ns
    tiny_int8()
    with caplog.at_level(logging.INFO, logger="omc.calib.quantize"):
        out = quantize_engines(tiny_export(), tiny_calibration(), "cpu", tmp_path / "again", TINY_CALIB)
    assert cache.stat().st_mtime_ns == before
    assert sum("reusing the activation ranges" in r.getMessage() for r in caplog.records) == 2  # both graphs
    for engine in ("detector.onnx", "recheck.onnx"):
        assert (out / engine).read_bytes() == (tiny_int8()["cpu"] / engine).read_bytes()


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_float_regions_stay_float(target: str, regions: dict[str, Any]) -> None:
    for engine in ("detector", "recheck"):
        model = _model(target, engine)
        dequantized = _dequantized(model)
        nodes = {node.name: node for node in model.graph.node}
        kept = regions[engine].kept_float(TINY_CALIB.keep_float)
        assert kept
        for name in kept:
            assert name in nodes, name
            assert not any(value in dequantized for value in nodes[name].input), f"{engine}: {name} reads 8-bit values"
        body_convs = [n for n in regions[engine].body if nodes[n].op_type == "Conv"]
        assert all(nodes[n].input[1] in dequantized for n in body_convs)  # the body is quantized
    detector = _model(target, "detector")
    topk = [n for n in detector.graph.node if n.op_type == "TopK"]
    assert len(topk) == 1 and topk[0].input[0] not in _dequantized(detector)


def test_quantizing_the_heads_is_an_option(tmp_path: Path, regions: dict[str, Any]) -> None:
    config = replace(TINY_CALIB, keep_float=("tail", "similarity"))
    out = quantize_engines(tiny_export(), tiny_calibration(), "cpu", tmp_path / "heads", config)
    model = onnx.load(str(out / "detector.onnx"))
    nodes = {node.name: node for node in model.graph.node}
    assert all(nodes[name].input[1] in _dequantized(model) for name in regions["detector"].head)
    record = EngineMeta.load(out).extra["int8"]
    assert record["kept_float"]["regions"] == ["tail", "similarity"]


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_export_json_and_metadata_say_int8(target: str) -> None:
    folder = tiny_int8()[target]
    meta = EngineMeta.load(folder)
    float_meta = EngineMeta.load(tiny_export())
    assert meta.precision == "int8"
    assert replace(meta, precision="fp32", extra=float_meta.extra) == float_meta  # nothing else changed
    record = meta.extra["int8"]
    assert record["target"] == target
    assert record["calibration"]["frames"] == TINY_CALIB.frames
    assert record["calibration"]["method"] == "minmax"
    assert set(record["kept_float"]["regions"]) == {"head", "tail", "similarity"}
    assert record["kept_float"]["nodes"]["detector"]["head"] == 11  # 3 Detect, 3 DenseMask, 1 SAAN, 1 siambox, 3 heat-map fusion
    assert record["quantized_nodes"]["detector"]["Conv"] > 50
    expected = json.loads(json.dumps(meta.to_dict()))
    for engine in ("detector", "recheck"):
        props = {p.key: json.loads(p.value) for p in _model(target, engine).metadata_props if p.key in expected}
        assert props == expected


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_int8_graphs_run_in_onnx_runtime_within_the_drift_bounds(target: str) -> None:
    from omc.runtime.backends import open_engines

    calibration = CalibrationSet.load(tiny_calibration())
    detector, recheck, meta = open_engines(tiny_int8()[target])  # checks I/O and metadata
    try:
        outputs = detector.infer({contract.IMAGES: calibration.holdout_images[:1]})
        for name, spec in meta.detector_outputs().items():
            value = np.asarray(outputs[name])
            assert value.dtype == np.float32 and np.isfinite(value).all(), name
        assert recheck is not None
    finally:
        detector.deactivate()
        if recheck is not None:
            recheck.deactivate()
    kernels: DriftReport = tiny_drift(target)
    written: DriftReport = tiny_drift(target, integer_kernels=False)
    for report in (kernels, written):
        assert report.frames == 4 and report.recheck_samples == 4
        assert report.violations() == [], report.table()  # the "int8-drift" bounds of the one table
    # The graphs as written really quantize: their drift is the quantization's, not zero.
    assert written.box_error_px_median > 0 and written.id_map_cosine_mean < 1
    assert kernels.box_error_px_median <= KERNEL_FACTOR * written.box_error_px_median, (kernels.table(), written.table())


def test_tensorrt_target_parses_with_tensorrt_for_rtx_and_its_build_is_refused(tmp_path: Path) -> None:
    rtx_or_skip()
    from omc.config import TensorRTBuildConfig
    from omc.export.trt.builder import build_engines, check_network_contract, parse_onnx
    from omc.runtime.backends.trt import load_tensorrt

    edition = load_tensorrt("rtx")
    folder = tiny_int8()["tensorrt"]
    meta = EngineMeta.load(folder)
    for engine in ("detector", "recheck"):
        parsed = parse_onnx(edition, folder / f"{engine}.onnx")
        check_network_contract(parsed, meta, engine)
        layers = [parsed.network.get_layer(i).type for i in range(parsed.network.num_layers)]
        assert edition.module.LayerType.QUANTIZE in layers and edition.module.LayerType.DEQUANTIZE in layers
    with pytest.raises(BadInput, match="only full NVIDIA TensorRT builds"):
        build_engines(folder, tmp_path / "plans", TensorRTBuildConfig(edition="rtx"))
    assert not (tmp_path / "plans").exists()


def test_bad_inputs_are_one_bad_input_each(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        quantize_engines(tmp_path / "none", tiny_calibration(), "cpu")
    with pytest.raises(BadInput, match="not found; make one with: omc calib"):
        quantize_engines(tiny_export(), tmp_path / "none.npz", "cpu")
    with pytest.raises(BadInput, match="is not one of cpu, tensorrt"):
        quantize_engines(tiny_export(), tiny_calibration(), "gpu")
    with pytest.raises(BadInput, match="int8 export"):
        quantize_engines(tiny_int8()["cpu"], tiny_calibration(), "cpu", tmp_path / "x")
    small = CalibrationSet.load(tiny_calibration())
    resized = replace(small, images=small.images[:, :96], holdout_images=small.holdout_images[:, :96])
    with pytest.raises(BadInput, match="holds 320x96 frames"):
        quantize_engines(tiny_export(), resized.save(tmp_path / "small.npz"), "cpu", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
