"""`omc build` from the command line: plans on stdout, one-line refusals with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from trt_exports import copy_engines

from omc import contract
from omc.cli import main


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr must be exactly one 'error: ...' line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def plans_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".plan" in p.name)


@pytest.mark.trt
@pytest.mark.usefixtures("rtx_module")
def test_build_prints_the_plans_and_logs_seconds_and_size(
    fp32_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "engines"
    assert main(["build", "--onnx", str(fp32_export), "--out", str(out), "--edition", "rtx"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(out / contract.DETECTOR_PLAN), str(out / contract.RECHECK_PLAN)]
    logged = [line for line in captured.err.splitlines() if ".plan:" in line]
    assert len(logged) == 2
    assert all(" s, " in line and " MB (TensorRT for RTX " in line and "portable SM80/SM86/SM89/SM120/SM121" in line for line in logged)
    assert plans_in(out) == ["detector.plan", "detector.plan.json", "recheck.plan", "recheck.plan.json"]


@pytest.mark.trt
@pytest.mark.usefixtures("rtx_module")
def test_auto_edition_falls_back_to_rtx_and_targets_accept_commas(
    fp16_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "engines"
    assert main(["build", "--onnx", str(fp16_export), "--out", str(out), "--gpu-target", "SM86,SM120", "--gpu-target", "SM75"]) == 0
    assert "(TensorRT for RTX 1." in capsys.readouterr().err
    assert '"SM75"' in (out / "recheck.plan.json").read_text()


@pytest.mark.trt
@pytest.mark.usefixtures("rtx_module")
def test_rtx_refuses_int8_in_one_line(int8_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = copy_engines(int8_export, tmp_path / "int8")
    assert main(["build", "--onnx", str(export), "--edition", "rtx"]) == 2
    line = error_line(capsys)
    assert "INT8 Q/DQ graph, which only full NVIDIA TensorRT builds" in line
    assert plans_in(export) == []


@pytest.mark.trt
@pytest.mark.usefixtures("rtx_module")
def test_turing_refuses_fp32_in_one_line(fp32_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = copy_engines(fp32_export, tmp_path / "fp32")
    assert main(["build", "--onnx", str(export), "--gpu-target", "SM75"]) == 2
    assert "Turing (--gpu-target SM75) engines need an fp16 graph" in error_line(capsys)
    assert plans_in(export) == []


def test_missing_tensorrt_names_the_extra(
    fp32_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes `import` raise ImportError: TensorRT is "not installed".
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    export = copy_engines(fp32_export, tmp_path / "no_trt")
    assert main(["build", "--onnx", str(export)]) == 2
    line = error_line(capsys)
    assert line == (
        "error: TensorRT (module tensorrt or tensorrt_rtx) is not installed; "
        "it comes with omc's 'rtx' extra: pip install '.[rtx]'"
    )
    assert main(["build", "--onnx", str(export), "--edition", "rtx"]) == 2
    assert "TensorRT for RTX (module tensorrt_rtx) is not installed" in error_line(capsys)
    assert plans_in(export) == []


def test_unknown_target_is_refused_with_the_valid_ones(fp32_export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--onnx", str(fp32_export), "--gpu-target", "sm86"]) == 2
    assert error_line(capsys) == "error: --gpu-target sm86 is not one of SM75, SM80, SM86, SM89, SM120, SM121"


def test_missing_onnx_folder_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [sys.executable, "-m", "omc", "build", "--onnx", str(missing)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: ONNX folder {missing} not found; export the model first (omc export --out {missing})"
    ]
    assert not missing.exists()


def test_folder_without_onnx_files_is_one_line(tmp_path: Path, fp32_export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "only_json"
    export.mkdir()
    (export / contract.EXPORT_JSON).write_text((fp32_export / contract.EXPORT_JSON).read_text())
    assert main(["build", "--onnx", str(export)]) == 2
    assert error_line(capsys) == f"error: {export / contract.DETECTOR_ONNX} not found; export the model first (omc export --out {export})"
