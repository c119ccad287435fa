"""The plan sidecar: written by omc build, checked before any deserialisation.

Most tests use a fake plan (any bytes) with a real sidecar, so the check runs without TensorRT;
the `trt` tests check the sidecars omc build wrote next to real TensorRT for RTX plans.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from toy_engines import TOY_META

from omc import contract
from omc.config import RTX_PORTABLE_TARGETS
from omc.contract import EngineMeta
from omc.errors import EngineMismatch
from omc.runtime.backends.engine_header import (
    HEADER_VERSION,
    EngineHeader,
    check_header,
    compute_capability_of,
    load_checked_plan,
    plan_sha256,
    read_header,
    sidecar_path,
    write_header,
)

RTX_VERSION = "1.7.1.116"


def fake_plan(
    folder: Path,
    meta: EngineMeta = TOY_META,
    plan: bytes = b"not really a plan",
    gpu_targets: tuple[str, ...] = RTX_PORTABLE_TARGETS,
) -> Path:
    """A plan file with a sidecar as omc build writes it (edition rtx; portable unless `gpu_targets`
    is given)."""
    (folder / contract.EXPORT_JSON).write_text(meta.to_json())
    path = folder / contract.DETECTOR_PLAN
    path.write_bytes(plan)
    header = EngineHeader(
        engine="detector",
        edition="rtx",
        tensorrt_version=RTX_VERSION,
        gpu_targets=gpu_targets,
        portable=gpu_targets == RTX_PORTABLE_TARGETS,
        plan_sha256=plan_sha256(plan),
        plan_bytes=len(plan),
        profiles={contract.IMAGES: [[1, 192, 320, 3], [1, 192, 320, 3], [4, 192, 320, 3]]},
        export=meta.to_dict(),
        onnx_dir=str(folder),
        omc_version="test",
    )
    write_header(path, header)
    return path


def test_sidecar_sits_beside_the_plan_and_round_trips(tmp_path: Path) -> None:
    path = fake_plan(tmp_path)
    assert sidecar_path(path) == tmp_path / "detector.plan.json"
    header = read_header(path, "rtx")
    assert header.edition == "rtx" and header.header_version == HEADER_VERSION
    assert header.gpu_targets == ("SM80", "SM86", "SM89", "SM120", "SM121")
    assert EngineMeta.from_dict(header.export) == TOY_META
    assert not list(tmp_path.glob("*.tmp"))


def test_matching_plan_is_returned(tmp_path: Path) -> None:
    path = fake_plan(tmp_path)
    header, plan = load_checked_plan(path, TOY_META, "rtx", RTX_VERSION, (8, 9))
    assert plan == b"not really a plan"
    assert header.plan_bytes == len(plan)


@pytest.mark.parametrize(
    ("edition", "version", "capability", "message"),
    [
        ("tensorrt", "10.13.0.35", None, r"built by TensorRT for RTX 1\.7\.1\.116, but this process runs NVIDIA TensorRT"),
        ("rtx", "1.8.0.1", None, r"built by TensorRT for RTX 1\.7\.1\.116, but 1\.8\.0\.1 is installed"),
        ("rtx", RTX_VERSION, (7, 5), r"built for portable build for SM80, SM86, SM89, SM120, SM121, not for this GPU \(SM75\)"),
    ],
)
def test_other_edition_version_or_target_is_refused_with_the_rebuild_command(
    tmp_path: Path, edition: str, version: str, capability: tuple[int, int] | None, message: str
) -> None:
    path = fake_plan(tmp_path)
    with pytest.raises(EngineMismatch, match=message) as caught:
        load_checked_plan(path, TOY_META, edition, version, capability)
    text = str(caught.value)
    assert f"rebuild it: omc build --onnx {tmp_path} --edition {edition}" in text
    if capability == (7, 5):
        assert text.endswith("--gpu-target SM75")
    assert "\n" not in text


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (12, 1), (13, 0)])
def test_portable_plan_runs_on_ampere_to_gb10_and_leaves_newer_gpus_to_tensorrt(tmp_path: Path, capability: tuple[int, int]) -> None:
    # NVIDIA: a default (portable) TensorRT for RTX build runs on 8.0, 8.6, 8.9, 12.0 "and later";
    # past SM121 the sidecar cannot know, and the backend asks Runtime.get_engine_validity.
    path = fake_plan(tmp_path)
    header, _ = load_checked_plan(path, TOY_META, "rtx", RTX_VERSION, capability)
    assert header.portable


def test_portable_plan_on_a_gpu_tensorrt_for_rtx_cannot_target_points_to_full_tensorrt(tmp_path: Path) -> None:
    path = fake_plan(tmp_path)
    with pytest.raises(EngineMismatch) as caught:
        load_checked_plan(path, TOY_META, "rtx", RTX_VERSION, (9, 0))  # H100 / H200
    text = str(caught.value)
    assert "not for this GPU (SM90), and TensorRT for RTX has no SM90 target" in text
    assert text.endswith(f"omc build --onnx {tmp_path} --edition tensorrt")
    assert "--gpu-target" not in text and "\n" not in text


def test_explicit_targets_refuse_every_other_gpu(tmp_path: Path) -> None:
    path = fake_plan(tmp_path, gpu_targets=("SM86",))
    load_checked_plan(path, TOY_META, "rtx", RTX_VERSION, (8, 6))
    for capability, name in (((8, 9), "SM89"), ((13, 0), "SM130")):
        with pytest.raises(EngineMismatch, match=rf"built for SM86, not for this GPU \({name}\)"):
            load_checked_plan(path, TOY_META, "rtx", RTX_VERSION, capability)


def test_compute_capability_of_reads_the_last_digit_as_minor() -> None:
    assert compute_capability_of("SM86") == (8, 6)
    assert compute_capability_of("SM120") == (12, 0)
    assert compute_capability_of("SM121") == (12, 1)


def test_other_export_is_refused_naming_the_keys(tmp_path: Path) -> None:
    path = fake_plan(tmp_path)
    other = replace(TOY_META, topk=64, checkpoint_sha256="abc")
    with pytest.raises(EngineMismatch) as caught:
        load_checked_plan(path, other, "rtx", RTX_VERSION, None)
    text = str(caught.value)
    assert "built from a different export" in text
    assert "topk: 32 in the engine, 64 in export.json" in text
    assert 'checkpoint_sha256: "" in the engine, "abc" in export.json' in text
    assert "omc build --onnx" in text


def test_replaced_plan_is_refused_by_its_sha256(tmp_path: Path) -> None:
    path = fake_plan(tmp_path)
    path.write_bytes(b"not really a plan, either")
    with pytest.raises(EngineMismatch, match="does not match the SHA-256 in detector.plan.json"):
        load_checked_plan(path, TOY_META, "rtx", RTX_VERSION, None)
    # Same length, different bytes.
    path.write_bytes(b"NOT really a plan")
    with pytest.raises(EngineMismatch, match="SHA-256"):
        load_checked_plan(path, TOY_META, "rtx", RTX_VERSION, None)


def test_missing_unreadable_or_future_sidecar_is_refused(tmp_path: Path) -> None:
    path = fake_plan(tmp_path)
    sidecar = sidecar_path(path)
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "header_version": HEADER_VERSION + 1}))
    with pytest.raises(EngineMismatch, match=f"sidecar version {HEADER_VERSION + 1}"):
        read_header(path, "rtx")
    sidecar.write_text("{not json")
    with pytest.raises(EngineMismatch, match="not a readable engine sidecar"):
        read_header(path, "rtx")
    sidecar.unlink()
    with pytest.raises(EngineMismatch, match=r"detector.plan has no detector.plan.json .*rebuild it: omc build --onnx"):
        read_header(path, "auto")
    path.unlink()
    with pytest.raises(EngineMismatch, match="not found; build it: omc build"):
        read_header(path, "auto")


def test_rebuild_command_names_the_onnx_folder_when_plans_live_elsewhere(tmp_path: Path) -> None:
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / contract.EXPORT_JSON).write_text(TOY_META.to_json())
    engines = tmp_path / "engines"
    engines.mkdir()
    path = fake_plan(engines)
    data = json.loads(sidecar_path(path).read_text())
    header = EngineHeader.from_dict({**data, "onnx_dir": str(onnx_dir)})
    with pytest.raises(EngineMismatch) as caught:
        check_header(header, path, path.read_bytes(), TOY_META, "rtx", "2.0", None)
    assert f"omc build --onnx {onnx_dir} --out {engines} --edition rtx" in str(caught.value)


@pytest.mark.trt
def test_built_sidecars_record_export_edition_version_targets_and_hash(rtx_engines: Path, rtx_module: object) -> None:
    meta = EngineMeta.load(rtx_engines)
    for name, engine in ((contract.DETECTOR_PLAN, "detector"), (contract.RECHECK_PLAN, "recheck")):
        header = read_header(rtx_engines / name, "rtx")
        assert header.engine == engine
        assert header.edition == "rtx"
        assert header.tensorrt_version == rtx_module.__version__  # type: ignore[attr-defined]
        assert header.portable and header.gpu_targets == RTX_PORTABLE_TARGETS
        assert header.extra == {"tf32": False}  # fp32 export: TF32 off
        assert EngineMeta.from_dict(header.export) == meta
        assert header.plan_sha256 == plan_sha256((rtx_engines / name).read_bytes())
        _, plan = load_checked_plan(rtx_engines / name, meta, "rtx", header.tensorrt_version, (8, 6))
        assert len(plan) == header.plan_bytes > 100_000
    recheck = read_header(rtx_engines / contract.RECHECK_PLAN, "rtx")
    assert recheck.profiles == {contract.TRACKLETS: [[1, 512], [32, 512], [64, 512]]}
