"""omc build with TensorRT for RTX on the CPU: parse, contract check, profiles, plans, refusals.

TensorRT for RTX builds without a GPU (its kernels are compiled on the user's GPU at first run),
so every step up to the serialized plan runs here. A parse or build failure fails the suite.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from toy_engines import TOY_META
from trt_exports import copy_engines

from omc import contract
from omc.config import TensorRTBuildConfig
from omc.contract import DETECTOR, RECHECK, EngineMeta
from omc.errors import BadInput, OmcError
from omc.export.trt.builder import (
    NetworkTensor,
    allows_tf32,
    build_engines,
    build_plan,
    builder_config,
    check_buildable,
    check_network_contract,
    graph_has_quantization,
    make_profile,
    parse_onnx,
)
from omc.runtime.backends.binding_plan import profile_shapes
from omc.runtime.backends.engine_header import read_header
from omc.runtime.backends.trt import load_tensorrt

# Every test here builds or parses with TensorRT for RTX (skipped, with the reason, where it is absent).
pytestmark = [pytest.mark.trt, pytest.mark.usefixtures("rtx_module")]


def contract_tensors(meta: EngineMeta, engine: str) -> dict[str, NetworkTensor]:
    """What TensorRT's parsed network must show: contract names, dtypes, -1 on B and n."""
    if engine == DETECTOR:
        groups = ((True, meta.detector_inputs()), (False, meta.detector_outputs()))
    else:
        groups = ((True, meta.recheck_inputs()), (False, meta.recheck_outputs()))
    return {
        name: NetworkTensor(name, is_input, spec.dtype, tuple(-1 if isinstance(d, str) else d for d in spec.shape))
        for is_input, specs in groups
        for name, spec in specs.items()
    }


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_both_engines_parse_to_the_contract_and_build_with_dynamic_profiles(
    precision: str, request: pytest.FixtureRequest, rtx_module: object
) -> None:
    export = request.getfixturevalue(f"{precision}_export")
    meta = EngineMeta.load(export)
    assert meta.precision == precision
    edition = load_tensorrt("rtx")
    for engine, onnx_name in ((DETECTOR, contract.DETECTOR_ONNX), (RECHECK, contract.RECHECK_ONNX)):
        parsed = parse_onnx(edition, export / onnx_name)
        # Inputs and outputs as TensorRT parsed them: float32 at the boundary in fp16 graphs too.
        assert parsed.tensors() == contract_tensors(meta, engine)
        check_network_contract(parsed, meta, engine)
        profiles = profile_shapes(meta, engine, opt_batch=1, opt_tracklets=32)
        profile = make_profile(parsed, profiles)
        for name, shape in profiles.items():
            read_back = [tuple(dims) for dims in profile.get_shape(name)]
            assert read_back == [shape.min, shape.opt, shape.max]
        plan = build_plan(parsed, profiles, (), None)
        assert len(plan) > 100_000
    # Profiles as set: detector B 1..4 (opt 1), re-check n 1..64 (opt 32).
    assert profile_shapes(meta, DETECTOR, 1, 32)[contract.IMAGES].max == (4, 192, 320, 3)
    assert profile_shapes(meta, RECHECK, 1, 32)[contract.TRACKLETS].opt == (32, 512)


def test_build_engines_writes_plans_and_sidecars_and_logs_each(
    fp16_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "engines"
    with caplog.at_level(logging.INFO, logger="omc"):
        start = time.perf_counter()
        built = build_engines(fp16_export, out, TensorRTBuildConfig(edition="rtx", gpu_targets=("SM86", "SM89")))
        seconds = time.perf_counter() - start
    assert [b.engine for b in built] == [DETECTOR, RECHECK]
    assert sorted(p.name for p in out.iterdir()) == [
        "detector.plan",
        "detector.plan.json",
        "export.json",
        "recheck.plan",
        "recheck.plan.json",
    ]
    assert EngineMeta.load(out) == EngineMeta.load(fp16_export)
    header = read_header(out / contract.DETECTOR_PLAN, "rtx")
    assert header.gpu_targets == ("SM86", "SM89") and not header.portable
    assert header.extra == {"tf32": True}  # an fp16 graph sets its own precision
    lines = [r.getMessage() for r in caplog.records if r.name == "omc.export.trt.builder"]
    assert len(lines) == 2
    for line, engine in zip(lines, built):
        assert line.startswith(str(engine.plan_path))
        assert f"{engine.seconds:.2f} s, {engine.nbytes / 1e6:.1f} MB (TensorRT for RTX" in line
    # The toy engines build in well under a second each on CI's 2-core machine.
    assert seconds < 20


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("fp16", True), ("int8", True)])
def test_fp32_builds_clear_tensorrts_tf32_flag(fp32_export: Path, precision: str, tf32: bool) -> None:
    # TensorRT allows TF32 (10-bit mantissa products) by default; omc verify holds fp32 engines to
    # float32 tolerances, so an fp32 export is built without it.
    assert allows_tf32(precision) is tf32
    meta = EngineMeta.load(fp32_export)
    edition = load_tensorrt("rtx")
    parsed = parse_onnx(edition, fp32_export / contract.RECHECK_ONNX)
    assert parsed.builder.create_builder_config().get_flag(edition.module.BuilderFlag.TF32)  # TensorRT's default
    config = builder_config(parsed, profile_shapes(meta, RECHECK, 1, 32), (), allows_tf32(precision))
    assert config.get_flag(edition.module.BuilderFlag.TF32) is tf32
    assert config.num_optimization_profiles == 1


def test_turing_builds_from_an_fp16_graph(fp16_export: Path, tmp_path: Path) -> None:
    built = build_engines(fp16_export, tmp_path, TensorRTBuildConfig(edition="rtx", gpu_targets=("SM75",)))
    assert read_header(built[1].plan_path, "rtx").gpu_targets == ("SM75",)


def test_turing_really_refuses_fp32_matrix_multiplies(fp32_export: Path) -> None:
    # Why omc refuses fp32 + SM75 up front: TensorRT for RTX fails the build itself.
    meta = EngineMeta.load(fp32_export)
    parsed = parse_onnx(load_tensorrt("rtx"), fp32_export / contract.RECHECK_ONNX)
    with pytest.raises(OmcError, match="FP32 GEMM is not supported"):
        build_plan(parsed, profile_shapes(meta, RECHECK, 1, 32), ("SM75",), None)


def test_timing_cache_is_not_used_by_tensorrt_for_rtx(
    fp32_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "timing.cache"
    with caplog.at_level(logging.INFO, logger="omc"):
        build_engines(fp32_export, tmp_path / "out", TensorRTBuildConfig(edition="rtx"), timing_cache=cache)
    assert not cache.exists()
    assert any("ignores timing caches" in r.getMessage() for r in caplog.records)


def test_file_that_is_no_onnx_model_is_refused(tmp_path: Path, fp32_export: Path) -> None:
    export = copy_engines(fp32_export, tmp_path / "broken")
    (export / contract.RECHECK_ONNX).write_bytes(b"this is not a protobuf")
    with pytest.raises(BadInput, match=r"recheck.onnx is not an ONNX model"):
        build_engines(export, export, TensorRTBuildConfig(edition="rtx"))
    assert not (export / contract.DETECTOR_PLAN).exists()


def test_parse_failure_fails_with_the_parser_error(tmp_path: Path, fp32_export: Path) -> None:
    export = copy_engines(fp32_export, tmp_path / "unknown_op")
    model = onnx.load(str(export / contract.RECHECK_ONNX))
    next(node for node in model.graph.node if node.op_type == "Sigmoid").op_type = "NotAnOnnxOperator"
    onnx.save(model, str(export / contract.RECHECK_ONNX))
    with pytest.raises(BadInput, match=r"could not parse .*recheck.onnx: .*NotAnOnnxOperator.*\(\d+ error\(s\)\)"):
        build_engines(export, export, TensorRTBuildConfig(edition="rtx"))
    assert not (export / contract.DETECTOR_PLAN).exists()  # nothing is written unless all built


def test_graph_that_breaks_the_contract_is_refused(tmp_path: Path, fp32_export: Path) -> None:
    export = copy_engines(fp32_export, tmp_path / "swapped")
    (export / contract.DETECTOR_ONNX).write_bytes((fp32_export / contract.RECHECK_ONNX).read_bytes())
    with pytest.raises(BadInput, match=r"detector.onnx does not follow the engine contract: tensors missing \['det_boxes'"):
        build_engines(export, export, TensorRTBuildConfig(edition="rtx"))


def test_int8_is_detected_from_the_graph_or_export_json(int8_export: Path, fp32_export: Path) -> None:
    assert graph_has_quantization(int8_export / contract.DETECTOR_ONNX) is True
    assert graph_has_quantization(fp32_export / contract.DETECTOR_ONNX) is False
    assert graph_has_quantization(fp32_export / contract.RECHECK_ONNX) is False


def test_check_buildable_refusals() -> None:
    fp32 = TOY_META
    int8 = replace(TOY_META, precision="int8")
    check_buildable(fp32, False, "rtx", ())
    check_buildable(int8, True, "tensorrt", ())  # full TensorRT builds Q/DQ graphs
    with pytest.raises(BadInput, match="INT8 Q/DQ graph"):
        check_buildable(int8, False, "rtx", ())
    with pytest.raises(BadInput, match="INT8 Q/DQ graph"):
        check_buildable(fp32, True, "rtx", ())  # Q/DQ nodes although export.json says fp32
    with pytest.raises(BadInput, match="applies to TensorRT for RTX only"):
        check_buildable(fp32, False, "tensorrt", ("SM86",))
    with pytest.raises(BadInput, match=r"Turing \(--gpu-target SM75\) engines need an fp16 graph"):
        check_buildable(fp32, False, "rtx", ("SM86", "SM75"))
    check_buildable(replace(TOY_META, precision="fp16"), False, "rtx", ("SM75",))


def test_build_config_refuses_unknown_targets_and_editions() -> None:
    with pytest.raises(BadInput, match="SM90 is not one of SM75, SM80, SM86, SM89, SM120, SM121"):
        TensorRTBuildConfig(gpu_targets=("SM90",))
    with pytest.raises(BadInput, match="TensorRTBuildConfig.edition must be one of auto, tensorrt, rtx"):
        TensorRTBuildConfig(edition="tensorrt-rtx")
    with pytest.raises(BadInput, match="lists SM86 twice"):
        TensorRTBuildConfig(gpu_targets=("SM86", "SM86"))
