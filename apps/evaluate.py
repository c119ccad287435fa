"""CLEAR-MOT and identity metrics of MOTChallenge results, computed with py-motmetrics.

Ground-truth conventions follow the MOTChallenge evaluation (TrackEval's MOT loader):
1. Distractors: in each frame, result boxes are matched one-to-one to all ground-truth boxes of
   that frame (any class, any mark; Hungarian on IoU, pairs below `iou_threshold` excluded);
   results matched to a distractor class (`EvalConfig.distractor_classes`) are removed, so
   tracking a static person or a reflection is neither rewarded nor punished. Skipped when the
   ground truth has no class column (MOT15 style, class -1).
2. Scored ground truth: rows whose mark (column 7) is `consider_mark` and whose class (column 8)
   is the pedestrian class or -1 (not given).
3. A result matches a ground-truth box when IoU >= `iou_threshold` (0.5); py-motmetrics does
   the per-frame assignment, the ID switches and the global ID matching of IDF1.
Result rows are never filtered by score.

The distance matrix is computed here (`motmetrics_distances`, with the runtime's plain-width
`box_iou`) rather than by `motmetrics.distances.iou_matrix`, which calls `np.asfarray` (removed in
NumPy 2.0) in py-motmetrics 1.4.0; the convention is the same: corners x + w, y + h, distance
1 - IoU, NaN (no match allowed) where IoU < the threshold.

motmetrics is an optional dependency (the `eval` extra), imported on first use.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import numpy as np
import numpy.typing as npt

from omc.config import EvalConfig
from omc.errors import BadInput, MissingDependency
from omc.files import replacing
from omc.apps.results import MotTable, read_mot_txt
from omc.runtime.boxes import box_iou, tlwh_to_xyxy

log = logging.getLogger(__name__)

# (motmetrics name, our key): the numbers `omc eval` reports.
METRICS: tuple[tuple[str, str], ...] = (
    ("mota", "MOTA"),
    ("idf1", "IDF1"),
    ("motp", "MOTP"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("mostly_tracked", "MT"),
    ("mostly_lost", "ML"),
    ("num_false_positives", "FP"),
    ("num_misses", "FN"),
    ("num_switches", "IDsw"),
    ("num_unique_objects", "GT_ids"),
    ("num_frames", "frames"),
)
RATIO_KEYS = frozenset({"MOTA", "IDF1", "MOTP", "precision", "recall"})
OVERALL = "OVERALL"
# MOTChallenge layout: <GT_DIR>/<seq>/gt/gt.txt scored against <RESULTS_DIR>/<seq>.txt.
MOT_GT_FILE = Path("gt") / "gt.txt"


def _motmetrics() -> ModuleType:
    try:
        import motmetrics
    except ImportError as exc:
        raise MissingDependency("motmetrics", "eval", "needed by omc eval") from exc
    return motmetrics


def iou_tlwh(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """IoU (plain widths) of every box in `a` with every box in `b`: a [N, 4], b [M, 4] x, y, w, h
    (top-left corner, size), pixels, float64. Returns [N, M] float64 (runtime.boxes.box_iou)."""
    return box_iou(tlwh_to_xyxy(a), tlwh_to_xyxy(b)).astype(np.float64, copy=False)


def motmetrics_distances(gt_tlwh: npt.NDArray[np.float64], hyp_tlwh: npt.NDArray[np.float64], iou_threshold: float) -> npt.NDArray[np.float64]:
    """motmetrics' distance matrix of one frame: [N, M] 1 - IoU, NaN where IoU < iou_threshold (no match)."""
    iou = iou_tlwh(gt_tlwh, hyp_tlwh)
    return np.where(iou >= iou_threshold, 1.0 - iou, np.nan)


def _frame_slices(frames: npt.NDArray[np.int64]) -> dict[int, slice]:
    """Row ranges per frame of a table sorted by frame."""
    values, starts = np.unique(frames, return_index=True)
    ends = np.append(starts[1:], len(frames))
    return {int(v): slice(int(s), int(e)) for v, s, e in zip(values, starts, ends)}


def _sorted_by_frame(table: MotTable) -> MotTable:
    order = np.argsort(table.frames, kind="stable")
    return table.select(order)


def _check_unique_ids(table: MotTable, path: Path) -> None:
    """BadInput when one id has two rows in one frame (no tracker or annotation can mean that)."""
    pairs = np.stack([table.frames, table.ids], axis=1)
    _, first_rows, counts = np.unique(pairs, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        row = int(first_rows[counts > 1].min())
        raise BadInput(f"{path}: id {table.ids[row]} appears more than once in frame {table.frames[row]}")


def remove_distractor_matches(results: MotTable, gt: MotTable, config: EvalConfig) -> MotTable:
    """Drop result rows matched to a distractor ground-truth box (module docstring, step 1).

    results, gt: whole sequences (gt unfiltered: every class and mark). Returns a new table.
    """
    lsa = _motmetrics().lap.linear_sum_assignment
    if not len(results) or not len(gt) or (gt.classes == -1).all():
        return results
    results, gt = _sorted_by_frame(results), _sorted_by_frame(gt)
    keep = np.ones(len(results), dtype=bool)
    gt_slices = _frame_slices(gt.frames)
    # One vectorised assignment per frame; the loop runs over frames, not boxes.
    for frame, rows in _frame_slices(results.frames).items():
        gt_rows = gt_slices.get(frame)
        if gt_rows is None:
            continue
        iou = iou_tlwh(gt.boxes_tlwh[gt_rows], results.boxes_tlwh[rows])
        iou = np.where(iou >= config.iou_threshold, iou, 0.0)
        gt_index, res_index = lsa(-iou)
        matched = iou[gt_index, res_index] > 0
        distractor = np.isin(gt.classes[gt_rows][gt_index[matched]], config.distractor_classes)
        keep[rows.start + res_index[matched][distractor]] = False
    if not keep.all():
        log.debug("removed %d result boxes matched to distractors", int((~keep).sum()))
    return results.select(keep)


def scored_ground_truth(gt: MotTable, config: EvalConfig) -> MotTable:
    """Ground-truth rows that count (module docstring, step 2)."""
    considered = gt.scores == config.consider_mark
    pedestrian = (gt.classes == config.pedestrian_class) | (gt.classes == -1)
    return gt.select(considered & pedestrian)


def accumulate(gt: MotTable, results: MotTable, config: EvalConfig = EvalConfig()) -> Any:
    """A `motmetrics.MOTAccumulator` over every frame that has ground truth or results.

    gt: the raw ground truth (all rows); results: the tracker's rows. Conventions: module docstring.
    """
    mm = _motmetrics()
    results = _sorted_by_frame(remove_distractor_matches(results, gt, config))
    gt = _sorted_by_frame(scored_ground_truth(gt, config))
    accumulator = mm.MOTAccumulator(auto_id=False)
    gt_slices, res_slices = _frame_slices(gt.frames), _frame_slices(results.frames)
    empty = slice(0, 0)
    for frame in sorted(gt_slices.keys() | res_slices.keys()):
        g, r = gt_slices.get(frame, empty), res_slices.get(frame, empty)
        distances = motmetrics_distances(gt.boxes_tlwh[g], results.boxes_tlwh[r], config.iou_threshold)
        accumulator.update(gt.ids[g].tolist(), results.ids[r].tolist(), distances, frameid=frame)
    return accumulator


@dataclass(frozen=True)
class EvalReport:
    """Metrics per sequence and over all sequences (key OVERALL when there are several).

    rows: name -> {MOTA, IDF1, MOTP, precision, recall (ratios in [0, 1], NaN when undefined;
    MOTA may be negative), MT, ML, FP, FN, IDsw, GT_ids, frames (counts)}.
    """

    rows: dict[str, dict[str, float | int]]

    def to_json(self) -> str:
        def clean(value: float | int) -> float | int | None:
            return None if isinstance(value, float) and math.isnan(value) else value

        return json.dumps({name: {k: clean(v) for k, v in row.items()} for name, row in self.rows.items()}, indent=2)

    def table(self) -> str:
        """A plain-text table, ratios in percent, one line per sequence."""
        keys = [key for _, key in METRICS]
        name_width = max(len("sequence"), *(len(name) for name in self.rows))
        header = f"{'sequence':<{name_width}}" + "".join(f"{key:>10}" for key in keys)
        lines = [header]
        for name, row in self.rows.items():
            cells = []
            for key in keys:
                value = row[key]
                if key in RATIO_KEYS:
                    cells.append(f"{'-' if math.isnan(value) else format(100 * value, '.1f'):>10}")
                else:
                    cells.append(f"{int(value):>10d}")
            lines.append(f"{name:<{name_width}}" + "".join(cells))
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        """Write `to_json()` to `path` through a temporary name."""
        with replacing(Path(path), what="metrics file") as temporary:
            temporary.write_text(self.to_json() + "\n", encoding="utf-8")


def evaluate(pairs: Mapping[str, tuple[Path, Path]], config: EvalConfig = EvalConfig()) -> EvalReport:
    """Score each sequence's results against its ground truth.

    pairs: sequence name -> (ground-truth file, results file). BadInput on unreadable files or
    an id repeated within a frame. The OVERALL row (several sequences) pools the events of all
    sequences, as the MOTChallenge summary does.
    """
    mm = _motmetrics()
    if not pairs:
        raise BadInput("no sequences to evaluate")
    accumulators, names = [], []
    for name, (gt_path, results_path) in pairs.items():
        gt, results = read_mot_txt(gt_path), read_mot_txt(results_path)
        if not len(scored_ground_truth(gt, config)):
            log.warning("%s: ground truth %s has no scored rows (mark %d, pedestrian class)", name, gt_path, config.consider_mark)
        _check_unique_ids(gt, gt_path)
        _check_unique_ids(results, results_path)
        accumulators.append(accumulate(gt, results, config))
        names.append(name)
    host = mm.metrics.create()
    summary = host.compute_many(
        accumulators, names=names, metrics=[m for m, _ in METRICS], generate_overall=len(names) > 1
    )
    rows: dict[str, dict[str, float | int]] = {}
    for name, values in summary.to_dict(orient="index").items():
        row: dict[str, float | int] = {}
        for mm_name, key in METRICS:
            value = values[mm_name]
            if mm_name == "motp":
                # motmetrics reports the mean matched distance (1 - IoU); MOTChallenge's MOTP is the mean IoU.
                value = 1.0 - float(value)
            row[key] = float(value) if key in RATIO_KEYS else int(value)
        rows[str(name)] = row
    return EvalReport(rows)


def find_sequence_pairs(gt: str | Path, results: str | Path) -> dict[str, tuple[Path, Path]]:
    """Pair ground truth with results.

    Two files: one sequence named after the results file. Two folders: either MOTChallenge
    layout (`<gt>/<seq>/gt/gt.txt` with `<results>/<seq>.txt`) or text files of the same name in
    both folders. BadInput when a path is missing, a file is paired with a folder, no sequence
    is found, or a ground-truth sequence has no results file (extra results files are ignored,
    with a log line).
    """
    gt, results = Path(gt), Path(results)
    for path, what in ((gt, "ground truth"), (results, "results")):
        if not path.exists():
            raise BadInput(f"{what} {path} does not exist")
    if gt.is_file() and results.is_file():
        return {results.stem: (gt, results)}
    if gt.is_file() or results.is_file():
        raise BadInput(f"--gt {gt} and --results {results} must both be files or both be folders")
    mot_layout = {p.parent.parent.name: p for p in sorted(gt.glob(f"*/{MOT_GT_FILE.as_posix()}"))}
    gt_files = mot_layout or {p.stem: p for p in sorted(gt.glob("*.txt"))}
    if not gt_files:
        raise BadInput(f"no ground truth in {gt}: expected <seq>/gt/gt.txt folders or <seq>.txt files")
    result_files = {p.stem: p for p in sorted(results.glob("*.txt"))}
    missing = sorted(set(gt_files) - set(result_files))
    if missing:
        raise BadInput(f"{results} has no results for {len(missing)} sequence(s): {', '.join(m + '.txt' for m in missing)}")
    extra = sorted(set(result_files) - set(gt_files))
    if extra:
        log.info("ignoring results without ground truth: %s", ", ".join(extra))
    return {name: (gt_files[name], result_files[name]) for name in sorted(gt_files)}
