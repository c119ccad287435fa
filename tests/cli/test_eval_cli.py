"""`omc eval` on files and folders: table on stdout, JSON file, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omc.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]

# One person over two frames; the results miss it in frame 2 and add one false box in frame 1.
# By hand: GT 2, TP 1, FN 1, FP 1, IDsw 0 -> MOTA = 1 - 2/2 = 0; precision 1/2, recall 1/2;
# IDF1 = 2 * 1 / (2 + 2) = 0.5.
GT = "1,1,10,10,20,40,1,1,1\n2,1,12,10,20,40,1,1,1\n"
RESULTS = "1,3,10,10,20,40,0.9,-1,-1,-1\n1,4,200,10,20,40,0.8,-1,-1,-1\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_eval_files_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, res = write(tmp_path / "gt.txt", GT), write(tmp_path / "seq.txt", RESULTS)
    metrics = tmp_path / "out" / "metrics.json"
    assert main(["eval", "--gt", str(gt), "--results", str(res), "--json", str(metrics)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["sequence", "MOTA", "IDF1", "MOTP", "precision", "recall", "MT", "ML", "FP", "FN", "IDsw", "GT_ids", "frames"]
    assert lines[1].split() == ["seq", "0.0", "50.0", "100.0", "50.0", "50.0", "0", "0", "1", "1", "0", "1", "2"]
    data = json.loads(metrics.read_text())
    assert data["seq"]["IDF1"] == pytest.approx(0.5) and data["seq"]["FP"] == 1
    assert not (tmp_path / "out" / "metrics.json.partial").exists()


def test_eval_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seq in ("MOT17-02", "MOT17-05"):
        write(tmp_path / "gt" / seq / "gt" / "gt.txt", GT)
        write(tmp_path / "res" / f"{seq}.txt", RESULTS)
    assert main(["eval", "--gt", str(tmp_path / "gt"), "--results", str(tmp_path / "res")]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["MOT17-02", "MOT17-05", "OVERALL"]
    assert rows[2][8:10] == ["2", "2"]  # FP and FN summed over both sequences


def test_eval_iou_threshold_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Result shifted by 10 px in x over a 20 x 40 box: overlap 10 x 40 = 400, union 1200 -> IoU 1/3.
    gt = write(tmp_path / "gt.txt", "1,1,10,10,20,40,1,1,1\n")
    res = write(tmp_path / "r.txt", "1,1,20,10,20,40,1\n")
    assert main(["eval", "--gt", str(gt), "--results", str(res), "--iou-threshold", "0.3"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == "100.0"  # matched: MOTA 100
    assert main(["eval", "--gt", str(gt), "--results", str(res)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == "-100.0"  # 1 FP + 1 FN over 1 GT


def run_omc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omc", *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


@pytest.mark.parametrize(
    ("results_text", "fragment"),
    [
        ("1,1,10,10\n", "has 4 columns"),
        ("1,1,10,10,20,40,1\n1,1,a,b,c,d,1\n", "not a MOTChallenge text file"),
    ],
)
def test_eval_bad_files_one_line(tmp_path: Path, results_text: str, fragment: str) -> None:
    gt, res = write(tmp_path / "gt.txt", GT), write(tmp_path / "r.txt", results_text)
    metrics = tmp_path / "m.json"
    result = run_omc("eval", "--gt", str(gt), "--results", str(res), "--json", str(metrics))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert result.stdout == "" and not metrics.exists()


def test_eval_missing_results_sequence(tmp_path: Path) -> None:
    write(tmp_path / "gt" / "a" / "gt" / "gt.txt", GT)
    (tmp_path / "res").mkdir()
    result = run_omc("eval", "--gt", str(tmp_path / "gt"), "--results", str(tmp_path / "res"))
    assert result.returncode == 2 and result.stderr.strip() == f"error: {tmp_path / 'res'} has no results for 1 sequence(s): a.txt"
