"""`omc export`: the files, log lines and summary of a real export; one-line refusals with exit 2
and nothing left behind; staged writes cleaned up when the export fails half way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from small_export import SMALL_SEED, small_checkpoint  # tests/ is on sys.path through its conftest.py

from omc import contract
from omc.cli import main
from omc.config import ExportConfig
from omc.contract import EngineMeta
from omc.errors import BadInput
from omc.export import onnx_export
from omc.export.checkpoint import save_checkpoint
from omc.files import file_sha256

REPO_ROOT = Path(__file__).resolve().parents[2]


def omc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omc", *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1] == errors[0]
    return errors[0]


def test_missing_checkpoint_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "engines"
    line = one_error_line(omc("export", "--weights", str(tmp_path / "nope.pt"), "--img-size", "320x192", "--out", str(out)))
    assert line == f"error: checkpoint {tmp_path / 'nope.pt'} not found"
    assert not out.exists()


def test_unreadable_checkpoint_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is no checkpoint at all")
    out = tmp_path / "engines"
    line = one_error_line(omc("export", "--weights", str(garbage), "--img-size", "320x192", "--out", str(out)))
    assert str(garbage) in line
    assert not out.exists()


def test_size_not_a_multiple_of_32_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "engines"
    line = one_error_line(omc("export", "--random-weights", "--img-size", "600x600", "--out", str(out)))
    assert line == "error: --img-size must be positive multiples of 32 (e.g. 1088x608), got 600x600"
    assert not out.exists()


def test_unwritable_output_folder_is_refused_before_loading(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "engines"
    line = one_error_line(omc("export", "--random-weights", "--img-size", "320x192", "--out", str(out)))
    assert line == f"error: output folder {out} cannot be written: it lies under the file {blocker}; choose another --out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert "RANDOM WEIGHTS" not in line  # refused before the (slow) network was built


def test_contradictory_sources_and_oversized_k_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--weights", "x.pt", "--random-weights", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.strip() == "error: give either a checkpoint or --random-weights, not both"
    checkpoint = save_checkpoint(tmp_path / "small.pt", small_checkpoint().network)
    # 64 x 64: 3 anchors x (8*8 + 4*4 + 2*2) = 252 candidates, fewer than K = 1000.
    assert main(["export", "--weights", str(checkpoint), "--img-size", "64x64", "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --topk 1000 exceeds the 252 anchor candidates of a 64x64 input"
    )
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_export_writes_the_contract_files_logs_each_and_names_the_next_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = save_checkpoint(tmp_path / "small.pt", small_checkpoint().network)
    out = tmp_path / "engines"
    status = main(["export", "--weights", str(checkpoint), "--img-size", "320x192", "--max-tracklets", "64",
                   "--topk", "500", "--peaks", "50", "--shrink-window", "paper", "--out", str(out)])  # fmt: skip
    assert status == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(out / n) for n in (contract.DETECTOR_ONNX, contract.RECHECK_ONNX, "export.json")]
    assert sorted(p.name for p in out.iterdir()) == ["detector.onnx", "export.json", "recheck.onnx"]
    messages = captured.err.splitlines()  # omc's log lines (the CLI logs to stderr)
    for name in (contract.DETECTOR_ONNX, contract.RECHECK_ONNX):
        (line,) = [m for m in messages if m.startswith(f"{out / name}: ")]
        assert line.endswith(" MB") and " s, " in line
    (summary,) = [m for m in messages if m.startswith("export finished")]
    assert f"omc verify --onnx {out}" in summary and f"omc build --onnx {out}" in summary
    assert f"omc track VIDEO --engines {out}" in summary
    meta = EngineMeta.load(out)
    assert (meta.topk, meta.peaks, meta.shrink_window, meta.max_tracklets) == (500, 50, "paper", 64)
    assert meta.checkpoint_sha256 == file_sha256(checkpoint)
    assert meta.extra["source"] == {"kind": "checkpoint", "path": str(checkpoint.resolve()), "format": "omc"}
    assert meta.exporter_version.startswith("omc ")
    model = onnx.load(str(out / contract.RECHECK_ONNX))
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 50, 4]
    assert {p.key: json.loads(p.value) for p in model.metadata_props} == json.loads((out / "export.json").read_text())


def test_a_failure_half_way_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_detector(network: object, meta: EngineMeta) -> onnx.ModelProto:
        graph = onnx.helper.make_graph([], "empty", [], [])
        return onnx.helper.make_model(graph)

    def broken_recheck(network: object, meta: EngineMeta) -> onnx.ModelProto:
        raise BadInput("the re-check graph failed")

    monkeypatch.setattr(onnx_export, "detector_onnx", fake_detector)
    monkeypatch.setattr(onnx_export, "recheck_onnx", broken_recheck)
    config = ExportConfig(img_size=(320, 192))
    fresh = tmp_path / "new" / "engines"
    with pytest.raises(BadInput, match="the re-check graph failed"):
        onnx_export.export_engines(small_checkpoint(), config, fresh, seed=SMALL_SEED)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the folders it created are gone too
    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "export.json").write_text("{}")
    with pytest.raises(BadInput):
        onnx_export.export_engines(small_checkpoint(), config, existing, seed=SMALL_SEED)
    assert sorted(p.name for p in existing.iterdir()) == ["export.json"]
    assert (existing / "export.json").read_text() == "{}"
