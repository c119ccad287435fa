"""Metrics on hand-made ground truth / results pairs whose numbers are worked out in comments."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from omc.config import EvalConfig
from omc.errors import BadInput, MissingDependency
from omc.apps.evaluate import evaluate, find_sequence_pairs, iou_tlwh, motmetrics_distances

# Two people, three frames. GT rows: frame,id,x,y,w,h,mark,class,visibility.
GT = """\
1,1,0,0,10,10,1,1,1
1,2,100,0,10,10,1,1,1
2,1,0,0,10,10,1,1,1
2,2,100,0,10,10,1,1,1
3,1,0,0,10,10,1,1,1
3,2,100,0,10,10,1,1,1
"""
# Frame 1: hyp 1 on person 1, hyp 2 on person 2.
# Frame 2: the same, plus hyp 3 on nothing                          -> 1 FP.
# Frame 3: hyp 5 on person 1 (person 1 was hyp 1)                  -> 1 ID switch;
#          nothing on person 2                                      -> 1 FN.
RESULTS = """\
1,1,0,0,10,10,0.9,-1,-1,-1
1,2,100,0,10,10,0.9,-1,-1,-1
2,1,0,0,10,10,0.9,-1,-1,-1
2,2,100,0,10,10,0.9,-1,-1,-1
2,3,300,300,10,10,0.9,-1,-1,-1
3,5,0,0,10,10,0.9,-1,-1,-1
"""
# By hand: 6 GT boxes, 5 matched (TP), FP 1, FN 1, IDsw 1.
# MOTA = 1 - (FN + FP + IDsw) / GT = 1 - 3/6 = 0.5.
# precision = TP / (TP + FP) = 5/6; recall = TP / GT = 5/6; every match has IoU 1 -> MOTP 1.
# IDF1: best global id pairing is person 1 <-> hyp 1 (frames 1, 2) and person 2 <-> hyp 2
# (frames 1, 2): IDTP 4; IDF1 = 2 IDTP / (GT boxes + result boxes) = 8 / (6 + 6) = 2/3.
# MT: person 1 covered 3/3 frames (>= 80%); person 2 2/3 = 67% (partly tracked); ML 0.


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def score(tmp_path: Path, gt: str, results: str, config: EvalConfig = EvalConfig()) -> dict[str, float | int]:
    pairs = {"seq": (write(tmp_path / "gt.txt", gt), write(tmp_path / "res.txt", results))}
    return evaluate(pairs, config).rows["seq"]


def test_hand_made_sequence(tmp_path: Path) -> None:
    row = score(tmp_path, GT, RESULTS)
    assert (row["FP"], row["FN"], row["IDsw"], row["MT"], row["ML"]) == (1, 1, 1, 1, 0)
    assert (row["GT_ids"], row["frames"]) == (2, 3)
    assert row["MOTA"] == pytest.approx(0.5)
    assert row["IDF1"] == pytest.approx(2 / 3)
    assert row["precision"] == pytest.approx(5 / 6) and row["recall"] == pytest.approx(5 / 6)
    assert row["MOTP"] == pytest.approx(1.0)


def test_iou_threshold_is_inclusive(tmp_path: Path) -> None:
    gt = "1,1,0,0,10,10,1,1,1\n"
    # Result 10 x 20 over GT 10 x 10: IoU = 100 / 200 = 0.5 -> a match.
    at = score(tmp_path, gt, "1,1,0,0,10,20,1\n")
    assert (at["FP"], at["FN"]) == (0, 0)
    assert at["MOTP"] == pytest.approx(0.5)
    # 10 x 21: IoU = 100 / 210 = 0.476 -> no match: 1 FP and 1 FN, MOTA = 1 - 2/1 = -1.
    below = score(tmp_path, gt, "1,1,0,0,10,21,1\n")
    assert (below["FP"], below["FN"], below["MOTA"]) == (1, 1, pytest.approx(-1.0))


def test_ground_truth_conventions(tmp_path: Path) -> None:
    gt = (
        "1,1,0,0,10,10,1,1,1\n"  # pedestrian, scored
        "1,2,100,0,10,10,0,1,1\n"  # pedestrian marked 0 (ignore): no FN when missed
        "1,3,200,0,10,10,1,3,1\n"  # car: not scored, not a distractor
        "1,4,300,0,10,10,0,7,1\n"  # static person: a distractor
    )
    results = (
        "1,1,0,0,10,10,1\n"  # TP
        "1,7,200,0,10,10,1\n"  # on the car: FP (only distractors absorb results)
        "1,8,300,0,10,10,1\n"  # on the static person: removed, neither TP nor FP
    )
    row = score(tmp_path, gt, results)
    assert (row["FP"], row["FN"], row["GT_ids"]) == (1, 0, 1)
    assert row["MOTA"] == pytest.approx(0.0)  # 1 - (0 + 1 + 0) / 1


def test_mot15_ground_truth_without_classes(tmp_path: Path) -> None:
    # MOT15: column 7 is 1, class -1: every row counts and no distractor removal happens.
    gt = "1,1,0,0,10,10,1,-1,-1,-1\n1,2,300,0,10,10,1,-1,-1,-1\n"
    row = score(tmp_path, gt, "1,1,0,0,10,10,1\n1,8,300,0,10,10,1\n1,9,500,0,10,10,1\n")
    assert (row["FP"], row["FN"], row["GT_ids"]) == (1, 0, 2)


def test_empty_results_are_all_misses(tmp_path: Path) -> None:
    row = score(tmp_path, GT, "")
    assert (row["FP"], row["FN"], row["ML"]) == (0, 6, 2)
    assert row["MOTA"] == pytest.approx(0.0)


def test_repeated_id_in_a_frame(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="id 4 appears more than once in frame 2"):
        score(tmp_path, GT, "1,1,0,0,10,10,1\n2,4,0,0,10,10,1\n2,4,50,0,10,10,1\n")


def test_iou_helpers() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 0.0, 10.0, 10.0], [50.0, 50.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    # Overlap 5 x 10 = 50; union 100 + 100 - 50 = 150 -> 1/3. Disjoint -> 0. Empty box -> 0.
    np.testing.assert_allclose(iou_tlwh(a, b), [[1 / 3, 0.0, 0.0]])
    assert iou_tlwh(a, np.zeros((0, 4))).shape == (1, 0)
    d = motmetrics_distances(a, b, 0.3)
    assert d[0, 0] == pytest.approx(2 / 3) and np.isnan(d[0, 1:]).all()


def test_folders_in_mot_layout_with_overall(tmp_path: Path) -> None:
    for seq in ("MOT17-02", "MOT17-04"):
        write(tmp_path / "gt" / seq / "gt" / "gt.txt", GT)
        write(tmp_path / "res" / f"{seq}.txt", RESULTS)
    write(tmp_path / "res" / "extra.txt", RESULTS)  # no ground truth: ignored
    pairs = find_sequence_pairs(tmp_path / "gt", tmp_path / "res")
    assert list(pairs) == ["MOT17-02", "MOT17-04"]
    report = evaluate(pairs)
    assert list(report.rows) == ["MOT17-02", "MOT17-04", "OVERALL"]
    overall = report.rows["OVERALL"]
    assert (overall["FP"], overall["FN"], overall["IDsw"], overall["GT_ids"]) == (2, 2, 2, 4)
    assert overall["MOTA"] == pytest.approx(0.5)  # 1 - 6 / 12
    table = report.table().splitlines()
    assert table[0].split()[:3] == ["sequence", "MOTA", "IDF1"]
    assert table[3].split()[:3] == ["OVERALL", "50.0", "66.7"]
    report.write_json(tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["OVERALL"]["IDsw"] == 2


def test_folders_with_matching_names(tmp_path: Path) -> None:
    write(tmp_path / "gt" / "a.txt", GT)
    write(tmp_path / "res" / "a.txt", RESULTS)
    assert find_sequence_pairs(tmp_path / "gt", tmp_path / "res") == {"a": (tmp_path / "gt" / "a.txt", tmp_path / "res" / "a.txt")}


def test_pairing_errors(tmp_path: Path) -> None:
    write(tmp_path / "gt" / "a.txt", GT)
    write(tmp_path / "gt" / "b.txt", GT)
    write(tmp_path / "res" / "a.txt", RESULTS)
    (tmp_path / "none").mkdir()
    with pytest.raises(BadInput, match=r"no results for 1 sequence\(s\): b\.txt"):
        find_sequence_pairs(tmp_path / "gt", tmp_path / "res")
    with pytest.raises(BadInput, match="both be files or both be folders"):
        find_sequence_pairs(tmp_path / "gt" / "a.txt", tmp_path / "res")
    with pytest.raises(BadInput, match="does not exist"):
        find_sequence_pairs(tmp_path / "missing", tmp_path / "res")
    with pytest.raises(BadInput, match="no ground truth in"):
        find_sequence_pairs(tmp_path / "none", tmp_path / "res")


def test_missing_motmetrics_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "motmetrics", None)  # import motmetrics -> ImportError
    with pytest.raises(MissingDependency, match="'eval' extra"):
        score(tmp_path, GT, RESULTS)
