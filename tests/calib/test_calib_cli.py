"""`omc calib`, `omc quantize`, `omc int8-report`: exit codes, one-line errors, what they print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from calib_exports import numbered_frames, tiny_calibration, tiny_drift, tiny_export, tiny_int8
from omc.calib.dataset import CalibrationSet
from omc.cli import main
from omc.contract import EngineMeta


def _omc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omc", *args], capture_output=True, text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_calib_without_frames_or_engines_is_one_line(tmp_path: Path) -> None:
    from toy_engines import write_toy_engines  # tests/ is on sys.path through its conftest.py

    engines = tmp_path / "engines"
    write_toy_engines(engines)
    (tmp_path / "empty").mkdir()
    line = _one_line_error(_omc("calib", str(tmp_path / "empty"), "--engines", str(engines), "--out", str(tmp_path / "c.npz")))
    assert "contains no images" in line
    frames = numbered_frames(tmp_path / "frames", 3)
    line = _one_line_error(_omc("calib", str(frames), "--engines", str(tmp_path / "none"), "--out", str(tmp_path / "c.npz")))
    assert "export the float engines first" in line
    line = _one_line_error(_omc("calib", str(frames), "--frames", "0", "--engines", str(engines), "--out", str(tmp_path / "c.npz")))
    assert "--frames must be at least 1" in line
    assert not (tmp_path / "c.npz").exists()


def test_calib_writes_the_set_and_prints_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from toy_engines import write_toy_engines

    engines = tmp_path / "engines"
    write_toy_engines(engines)
    frames = numbered_frames(tmp_path / "frames", 20)
    out = tmp_path / "calib.npz"
    assert main(["calib", str(frames), "--frames", "6", "--holdout", "2", "--recheck-frames", "2",
                 "--engines", str(engines), "--out", str(out)]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == str(out)
    calibration = CalibrationSet.load(out)
    assert (len(calibration.images), len(calibration.holdout_images), len(calibration.recheck)) == (6, 2, 2)


def test_quantize_errors_are_one_line(tmp_path: Path) -> None:
    line = _one_line_error(_omc("quantize", "--onnx", str(tmp_path / "none"), "--calib", str(tmp_path / "c.npz"), "--target", "cpu"))
    assert "not found" in line
    line = _one_line_error(_omc("quantize", "--onnx", str(tiny_export()), "--calib", str(tiny_calibration()),
                                "--target", "cpu", "tensorrt", "--out", str(tmp_path / "x")))  # fmt: skip
    assert "--out names one folder" in line
    line = _one_line_error(_omc("quantize", "--onnx", str(tiny_export()), "--calib", str(tiny_calibration()),
                                "--target", "cpu", "--keep-float", "heads", "--out", str(tmp_path / "x")))  # fmt: skip
    assert "--keep-float heads is not one of head, tail, similarity" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_quantize_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "int8"
    assert main(["quantize", "--onnx", str(tiny_export()), "--calib", str(tiny_calibration()),
                 "--target", "cpu", "--out", str(out)]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == str(out)
    assert EngineMeta.load(out).precision == "int8"
    assert (out / "detector.onnx").read_bytes() == (tiny_int8()["cpu"] / "detector.onnx").read_bytes()

    report_json = tmp_path / "report.json"
    status = main(["int8-report", "--onnx", str(tiny_export()), "--calib", str(tiny_calibration()), "--int8", str(out),
                   "--repeats", "2", "--threads", "1", "--json", str(report_json)])  # fmt: skip
    printed = capsys.readouterr().out
    expected = tiny_drift("cpu")  # `out` holds the very graphs of tiny_int8()["cpu"] (checked above)
    assert expected.violations() == [] and status == 0  # within the drift bounds, so the report passes
    for line in ("cpu flags         avx2=", "detector fp32", "detector int8", "speed-up", "ID map cosine",
                 "drift below: the INT8 graphs in this CPU's integer kernels (cpu flags above)",
                 "quantization alone (the graphs as written, float kernels: the same on every CPU): median box error"):
        assert line in printed
    figures = json.loads(report_json.read_text())
    assert len(figures["speed"]["float_ms"]) == len(figures["speed"]["int8_ms"]) == 2
    assert figures["speed"]["speedup"] == pytest.approx(figures["speed"]["float_median_ms"] / figures["speed"]["int8_median_ms"])
    assert figures["drift"]["frames"] == expected.frames
    assert figures["drift"]["id_map_cosine_mean"] == pytest.approx(expected.id_map_cosine_mean)
    assert 0 < figures["drift_as_written"]["box_error_px_median"] < 6  # quantized, within the bounds
    assert figures["int8"]["target"] == "cpu"


def test_report_refuses_a_float_folder(tmp_path: Path) -> None:
    line = _one_line_error(_omc("int8-report", "--onnx", str(tiny_export()), "--calib", str(tiny_calibration()),
                                "--int8", str(tiny_export())))  # fmt: skip
    assert "not INT8 graphs; run omc quantize first" in line


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_verify_judges_int8_exports_on_the_held_out_frames(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["verify", "--onnx", str(tiny_int8()[target]), "--max-frames", "2", "--tracklets", "1,16"])
    captured = capsys.readouterr()  # omc.cli sends the log to stderr
    assert "judging on 2 held-out frame(s) of the calibration set" in captured.err
    assert "(int8, drift): 2 frame(s)" in captured.out
    assert status == 0 and captured.out.rstrip().endswith("PASSED")
    # Drift against the float export it came from (recorded in export.json), NMS decisions included.
    assert captured.out.startswith("INT8 vs its float export\n")
    assert "detections after NMS, float / INT8 / changed" in captured.out


def test_held_out_frames_are_not_used_when_the_set_is_gone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import shutil
    from dataclasses import replace

    from omc.calib.dataset import holdout_frames

    meta = EngineMeta.load(tiny_int8()["cpu"])
    assert len(holdout_frames(meta, 3)) == 3
    moved = shutil.copy(tiny_calibration(), tmp_path / "calib.npz")
    record = json.loads(json.dumps(meta.extra))
    record["int8"]["calibration"]["path"] = str(tmp_path / "gone.npz")
    assert holdout_frames(replace(meta, extra=record), 3) == []
    record["int8"]["calibration"]["path"] = str(moved)
    record["int8"]["calibration"]["sha256"] = "0" * 64
    assert holdout_frames(replace(meta, extra=record), 3) == []
    assert "is not available" in caplog.text and "changed since" in caplog.text
