"""`omc verify`: exit 0 within tolerance, 1 outside (FAILED line, table on stdout), 2 on bad input;
the weights found from export.json or given; exporting on the fly; the TensorRT route's clean
refusals without plans or a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from paths import fixture_path, rtx_or_skip  # tests/ is on sys.path through its conftest.py
from small_export import copy_export, fixture_export

from omc import contract
from omc.cli import main

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_fixture_export_verifies_and_prints_every_output(capsys: pytest.CaptureFixture[str]) -> None:
    # One frame and two counts: tests/parity verifies this export's numbers on 2 frames at n = 1, 8, 512.
    assert main(["verify", "--onnx", str(fixture_export()), "--tracklets", "1,max", "--max-frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "fp32, parity" in out and ": 1 frame(s), tracklet counts 1, 512" in out
    for name in (*contract.DETECTOR_OUTPUTS, *contract.RECHECK_OUTPUTS, "det top-K (kept)", "trans top-P (kept)"):
        (line,) = [row for row in out.splitlines() if row.startswith(name + " ")]
        assert line.endswith("ok"), line
    assert out.splitlines()[-1] == "PASSED"


def test_a_tampered_graph_fails_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy_export(fixture_export(), tmp_path / "tampered")
    model = onnx.load(str(folder / contract.DETECTOR_ONNX))
    first_conv = next(node for node in model.graph.node if node.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == first_conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.01), weight.name))
    onnx.save(model, str(folder / contract.DETECTOR_ONNX))
    assert main(["verify", "--onnx", str(folder), "--tracklets", "1", "--max-frames", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "FAILED"
    assert any(row.startswith("det_scores ") and row.split()[-1] == "FAIL" for row in captured.out.splitlines())
    (failed,) = [line for line in captured.err.splitlines() if line.startswith("FAILED: ")]
    assert "det_scores" in failed and "outside the fp32 tolerance (parity)" in failed


def test_bad_verify_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(fixture_export())
    assert main(["verify", "--onnx", folder, "--tracklets", "0"]) == 2
    assert last_error(capsys) == "error: tracklet count 0 is outside this export's 1 to 512"
    assert main(["verify", "--onnx", folder, "--tracklets", "one"]) == 2
    assert "must be comma-separated counts" in last_error(capsys)
    assert main(["verify", "--onnx", folder, "--img-size", "320x192"]) == 2
    assert last_error(capsys) == f"error: --img-size shape a new export and do not apply to --onnx {folder}"
    assert main(["verify", "--onnx", str(tmp_path / "none")]) == 2
    assert "not found; export the engines first" in last_error(capsys)
    assert main(["verify"]) == 2
    assert last_error(capsys) == "error: give a checkpoint file, or --random-weights for a seeded random network"
    assert main(["verify", "--onnx", folder, "--frames", str(tmp_path / "no_video.mp4")]) == 2
    assert last_error(capsys) == f"error: source {tmp_path / 'no_video.mp4'} does not exist"


def test_weights_come_from_export_json_or_are_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy_export(fixture_export(), tmp_path / "moved")
    data = json.loads((folder / contract.EXPORT_JSON).read_text())
    data["extra"]["source"]["path"] = str(tmp_path / "gone.pt")
    (folder / contract.EXPORT_JSON).write_text(json.dumps(data))
    assert main(["verify", "--onnx", str(folder), "--tracklets", "1", "--max-frames", "1"]) == 2
    assert last_error(capsys) == (
        f"error: export.json names the checkpoint {tmp_path / 'gone.pt'}, which is not there; pass it with --weights"
    )
    checkpoint = str(fixture_path("reference_tiny.pt"))
    assert main(["verify", "--onnx", str(folder), "--weights", checkpoint, "--tracklets", "1", "--max-frames", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "PASSED"
    # Other weights than the export's are refused.
    assert main(["verify", "--onnx", str(folder), "--random-weights", "--variant", "s", "--tracklets", "1"]) == 2
    assert "are not the weights this export was made from" in last_error(capsys)


def test_weights_alone_are_exported_then_verified(capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = str(fixture_path("reference_tiny.pt"))
    status = main(["verify", "--weights", checkpoint, "--img-size", "320x192", "--max-tracklets", "16",
                   "--tracklets", "1,max", "--max-frames", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "tracklet counts 1, 16" in out and out.splitlines()[-1] == "PASSED"


def test_frames_from_an_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        image = cv2.resize(rng.uniform(0, 255, (9, 16, 3)).astype(np.uint8), (640, 360), interpolation=cv2.INTER_CUBIC)
        assert cv2.imwrite(str(frames / f"{index:04d}.png"), image)
    assert main(["verify", "--onnx", str(fixture_export()), "--frames", str(frames), "--max-frames", "2",
                 "--tracklets", "4"]) == 0  # fmt: skip
    assert ": 2 frame(s), tracklet counts 4," in capsys.readouterr().out


def test_tensorrt_route_refuses_cleanly_without_plans_or_gpu(tmp_path: Path) -> None:
    folder = copy_export(fixture_export(), tmp_path / "plans")
    result = subprocess.run(
        [sys.executable, "-m", "omc", "verify", "--onnx", str(folder), "--backend", "trt", "--tracklets", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {folder / 'detector.plan'} not found; build the engines: omc build --onnx {folder} --edition auto"
    )
    rtx_or_skip()
    from omc.runtime.backends.cuda_memory import cuda_unavailable_reason

    assert main(["build", "--onnx", str(folder), "--edition", "rtx"]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "omc", "verify", "--onnx", str(folder), "--backend", "trt", "--tracklets", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )  # fmt: skip
    if cuda_unavailable_reason(0) is None:  # an RTX-class GPU: TensorRT against ONNX Runtime
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().splitlines()[-1] == "PASSED"
    else:
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "TensorRT engines need an NVIDIA GPU" in result.stderr.strip().splitlines()[-1]
