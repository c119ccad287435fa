"""`omc triton-repo`: every config.pbtxt parses with Triton's own model-configuration schema (the
protobuf messages tritonclient ships) and states the engine contract: names, dtypes, dims,
batching, instances, the export's metadata. No server here (tests/serving/test_triton_e2e.py runs one).

The engine folders are stand-ins: an export.json and placeholder engine files (the writer copies
engines, it does not read them), or plan files with the sidecar `omc build` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from omc import contract
from omc.cli import main
from omc.config import TritonRepoConfig
from omc.contract import EngineMeta
from omc.errors import BadInput, EngineMismatch
from omc.export.triton.repository import write_repository
from omc.runtime.backends.engine_header import EDITION_RTX, EDITION_TENSORRT, EngineHeader, plan_sha256, write_header

META = EngineMeta(
    input_hw=(192, 320), topk=1000, peaks=100, recheck_channels=32, has_recheck=True, max_batch=4, max_tracklets=64
)
TYPE = {"uint8": mc.TYPE_UINT8, "float32": mc.TYPE_FP32}


def fake_export(folder: Path, meta: EngineMeta = META) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / contract.EXPORT_JSON).write_text(meta.to_json())
    (folder / contract.DETECTOR_ONNX).write_bytes(b"detector onnx")
    if meta.has_recheck:
        (folder / contract.RECHECK_ONNX).write_bytes(b"recheck onnx")
    return folder


def fake_build(folder: Path, edition: str = EDITION_TENSORRT, meta: EngineMeta = META) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / contract.EXPORT_JSON).write_text(meta.to_json())
    for engine, name in (("detector", contract.DETECTOR_PLAN), ("recheck", contract.RECHECK_PLAN)):
        plan = f"{engine} plan".encode()
        (folder / name).write_bytes(plan)
        header = EngineHeader(
            engine=engine, edition=edition, tensorrt_version="10.13.0", gpu_targets=("SM90",), portable=False,
            plan_sha256=plan_sha256(plan), plan_bytes=len(plan), profiles={}, export=meta.to_dict(),
            onnx_dir=str(folder), omc_version="test",
        )  # fmt: skip
        write_header(folder / name, header)
    return folder


def parse(path: Path) -> mc.ModelConfig:
    """config.pbtxt through Triton's ModelConfig schema (unknown fields or bad values raise)."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def tensors(entries: object) -> dict[str, tuple[int, list[int], bool]]:
    return {t.name: (t.data_type, list(t.dims), getattr(t, "optional", False)) for t in entries}  # type: ignore[attr-defined]


def contract_dims(spec: contract.TensorSpec, batched: bool) -> list[int]:
    shape = spec.shape[1:] if batched else spec.shape
    return [-1 if isinstance(axis, str) else axis for axis in shape]


def exported_meta(config: mc.ModelConfig) -> EngineMeta:
    return EngineMeta.from_dict(json.loads(config.parameters[contract.TRITON_EXPORT_PARAMETER].string_value))


@pytest.mark.parametrize("platform", ["onnxruntime_onnx", "python", "tensorrt_plan"])
def test_every_config_parses_and_states_the_contract(tmp_path: Path, platform: str) -> None:
    engines = fake_build(tmp_path / "build") if platform == "tensorrt_plan" else fake_export(tmp_path / "export")
    config = TritonRepoConfig(
        platform=platform, preferred_batch_sizes=(2, 4), max_queue_delay_us=1500, detector_instances=2,
        recheck_instances=3, instance_kind="gpu", frame_instances=5,
    )  # fmt: skip
    written = write_repository(engines, tmp_path / "repo", config)
    assert [p.name for p in written] == ["omc", "omc_detector", "omc_recheck"]
    model_file = {"tensorrt_plan": "model.plan"}.get(platform, "model.onnx")

    detector = parse(tmp_path / "repo/omc_detector/config.pbtxt")
    assert detector.name == "omc_detector"
    if platform == "python":
        assert (detector.backend, detector.platform) == ("python", "")
        assert (tmp_path / "repo/omc_detector/1/model.py").is_file()
    else:
        assert (detector.platform, detector.backend) == (platform, "")
    assert (tmp_path / "repo/omc_detector/1" / model_file).read_bytes() == (
        b"detector plan" if platform == "tensorrt_plan" else b"detector onnx"
    )
    # Batched over B up to the export's max; dims are the contract's without B.
    assert detector.max_batch_size == META.max_batch == 4
    assert tensors(detector.input) == {
        s.name: (TYPE[s.dtype], contract_dims(s, True), False) for s in META.detector_inputs().values()
    }
    assert tensors(detector.input)["images"] == (mc.TYPE_UINT8, [192, 320, 3], False)
    assert tensors(detector.output) == {
        s.name: (TYPE[s.dtype], contract_dims(s, True), False) for s in META.detector_outputs().values()
    }
    assert tensors(detector.output)["id_embeddings"] == (mc.TYPE_FP32, [24, 40, 512], False)
    assert detector.HasField("dynamic_batching")
    assert list(detector.dynamic_batching.preferred_batch_size) == [2, 4]
    assert detector.dynamic_batching.max_queue_delay_microseconds == 1500
    assert [(g.count, g.kind) for g in detector.instance_group] == [(2, mc.ModelInstanceGroup.KIND_GPU)]
    assert exported_meta(detector) == META

    recheck = parse(tmp_path / "repo/omc_recheck/config.pbtxt")
    assert recheck.max_batch_size == 0 and not recheck.HasField("dynamic_batching")
    assert tensors(recheck.input) == {
        s.name: (TYPE[s.dtype], contract_dims(s, False), False) for s in META.recheck_inputs().values()
    }
    assert tensors(recheck.input)["tracklets"] == (mc.TYPE_FP32, [-1, 512], False)
    assert tensors(recheck.output)["trans_boxes"] == (mc.TYPE_FP32, [1, 100, 4], False)
    assert [(g.count, g.kind) for g in recheck.instance_group] == [(3, mc.ModelInstanceGroup.KIND_GPU)]
    assert exported_meta(recheck) == META

    frame = parse(tmp_path / "repo/omc/config.pbtxt")
    assert (frame.backend, frame.max_batch_size) == ("python", 0)
    assert tensors(frame.input) == {
        "images": (mc.TYPE_UINT8, [1, 192, 320, 3], False),
        "tracklets": (mc.TYPE_FP32, [-1, 512], True),
        "score_floors": (mc.TYPE_FP32, [2], True),
    }
    assert tensors(frame.output) == {
        "det_boxes": (mc.TYPE_FP32, [1, -1, 4], False),
        "det_scores": (mc.TYPE_FP32, [1, -1], False),
        "det_density": (mc.TYPE_FP32, [1, -1], False),
        "det_embeddings": (mc.TYPE_FP32, [1, -1, 512], False),
        "trans_boxes": (mc.TYPE_FP32, [1, -1, 4], False),
        "trans_scores": (mc.TYPE_FP32, [1, -1], False),
        "trans_embeddings": (mc.TYPE_FP32, [1, -1, 512], False),
    }
    # The frame model only waits on the engines: CPU instances whatever the engines use.
    assert [(g.count, g.kind) for g in frame.instance_group] == [(5, mc.ModelInstanceGroup.KIND_CPU)]
    assert exported_meta(frame) == META
    wiring = json.loads(frame.parameters[contract.TRITON_WIRING_PARAMETER].string_value)
    assert (wiring["detector"], wiring["recheck"]) == ("omc_detector", "omc_recheck")
    assert wiring["maps"] == ["id_embeddings", "recheck_features", "recheck_boxes"]
    assert wiring["recheck_row_dims"] == {"trans_boxes": [4], "trans_scores": [], "trans_embeddings": [512]}
    assert (tmp_path / "repo/omc/1/model.py").is_file()
    assert EngineMeta.load(tmp_path / "repo/omc") == META


def test_defaults_and_a_cstrack_only_export(tmp_path: Path) -> None:
    """No re-check: no re-check model, no tracklets input, no re-check outputs; default batching."""
    meta = EngineMeta(input_hw=(608, 1088), has_recheck=False, max_batch=8)
    write_repository(fake_export(tmp_path / "export", meta), tmp_path / "repo", TritonRepoConfig(model_name="cstrack"))
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["cstrack", "cstrack_detector"]
    detector = parse(tmp_path / "repo/cstrack_detector/config.pbtxt")
    assert detector.platform == "onnxruntime_onnx" and detector.max_batch_size == 8
    assert list(detector.dynamic_batching.preferred_batch_size) == []
    assert detector.dynamic_batching.max_queue_delay_microseconds == TritonRepoConfig().max_queue_delay_us
    assert [(g.count, g.kind) for g in detector.instance_group] == [(1, mc.ModelInstanceGroup.KIND_AUTO)]
    assert set(tensors(detector.output)) == set(contract.DETECTOR_CORE_OUTPUTS)
    frame = parse(tmp_path / "repo/cstrack/config.pbtxt")
    assert set(tensors(frame.input)) == {"images", "score_floors"}
    assert set(tensors(frame.output)) == set(contract.HOST_DETECTOR_OUTPUTS)
    assert json.loads(frame.parameters[contract.TRITON_WIRING_PARAMETER].string_value)["recheck"] == ""


def test_refusals_leave_the_repository_as_it_was(tmp_path: Path) -> None:
    export = fake_export(tmp_path / "export")
    repo = tmp_path / "repo"
    write_repository(export, repo, TritonRepoConfig())
    before = (repo / "omc_detector/config.pbtxt").read_text()
    with pytest.raises(BadInput, match="already exist.*--overwrite"):
        write_repository(export, repo, TritonRepoConfig(max_queue_delay_us=7))
    with pytest.raises(BadInput, match=r"--preferred-batch-sizes \[8\] exceed the export's max batch of 4"):
        write_repository(export, repo, TritonRepoConfig(preferred_batch_sizes=(8,)), overwrite=True)
    assert (repo / "omc_detector/config.pbtxt").read_text() == before
    # Nothing of the failed attempts is left beside the repository.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "repo"]
    write_repository(export, repo, TritonRepoConfig(max_queue_delay_us=7), overwrite=True)
    assert parse(repo / "omc_detector/config.pbtxt").dynamic_batching.max_queue_delay_microseconds == 7
    # A second export sits beside the first under another name.
    write_repository(export, repo, TritonRepoConfig(model_name="omc_b"))
    assert sorted(p.name for p in repo.iterdir()) == ["omc", "omc_b", "omc_b_detector", "omc_b_recheck", "omc_detector", "omc_recheck"]


def test_plans_must_be_nvidia_tensorrt_and_untouched(tmp_path: Path) -> None:
    rtx = fake_build(tmp_path / "rtx", edition=EDITION_RTX)
    with pytest.raises(EngineMismatch, match="TensorRT for RTX.*--edition tensorrt"):
        write_repository(rtx, tmp_path / "repo", TritonRepoConfig(platform="tensorrt_plan"))
    build = fake_build(tmp_path / "build")
    (build / contract.RECHECK_PLAN).write_bytes(b"another plan")
    with pytest.raises(EngineMismatch, match="SHA-256"):
        write_repository(build, tmp_path / "repo", TritonRepoConfig(platform="tensorrt_plan"))
    with pytest.raises(BadInput, match="detector.onnx not found"):
        write_repository(build, tmp_path / "repo", TritonRepoConfig(platform="onnxruntime_onnx"))
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = fake_export(tmp_path / "export")
    argv = ["triton-repo", "--engines", str(export), "--out", str(tmp_path / "repo"), "--platform", "python",
            "--preferred-batch-sizes", "2,4", "--max-queue-delay-us", "500", "--frame-instances", "2"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "repo" / name) for name in ("omc", "omc_detector", "omc_recheck")]
    detector = parse(tmp_path / "repo/omc_detector/config.pbtxt")
    assert list(detector.dynamic_batching.preferred_batch_size) == [2, 4] and detector.backend == "python"
    assert main(argv) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["triton-repo", "--engines", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --engines") and "export.json" in err and len(err.strip().splitlines()) == 1
