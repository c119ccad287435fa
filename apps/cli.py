"""`omc track` (run the tracker over a video or image folder) and `omc eval` (score results).

Only argparse lives here: flags become a `TrackerConfig` / `EvalConfig` and plain arguments
before anything below is called. Heavy modules (the tracker, OpenCV, motmetrics) are imported
inside the commands, so `omc --help` stays fast.

`omc track` writes MOTChallenge results frame by frame (see omc.apps.results for the crash
safety). On Ctrl-C or an error mid-stream the frames done so far are kept: the results file
(and the video, with --save-video) are finalised before the exit status is set (130 for Ctrl-C,
2 for a user error), and a warning says how many frames were kept and where.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import logging
import re
import sys
import time
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from omc.config import EvalConfig, OverlayConfig, TrackerConfig
from omc.errors import BadInput

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from omc.runtime.sources import FrameSource

log = logging.getLogger(__name__)

BACKENDS = ("ort", "trt", "triton")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
# Prefix of the argparse destinations of TrackerConfig fields (kept apart from the other flags).
_TRACKER_DEST = "tracker_"
_CITATION = re.compile(r"\s*\((?:section\s+)?\d[^)]*\)")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_track(subparsers)
    _register_eval(subparsers)


# --- omc track ---------------------------------------------------------------------------------


def _field_comments(cls: type) -> dict[str, str]:
    """The comment lines written above each field of a config dataclass, joined: --help text.

    Empty where the source is unavailable (e.g. a frozen application); the help then shows the
    default only.
    """
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and pending:
            # Drop the citations of omc-reference.md sections ("(4.2)", "(section 4.2)"): help text
            # is for users; the source keeps them.
            text = _CITATION.sub("", " ".join(pending))
            comments[match.group(1)] = text.replace("%", "%%")
        pending = []
    return comments


def add_tracker_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrackerConfig field (`conf_thres` -> `--conf-thres`; booleans get `--x/--no-x`).

    Flags left out keep the dataclass default; `tracker_config_from_args` builds the config.
    """
    group = parser.add_argument_group("tracker options (TrackerConfig; defaults are the reference's)")
    comments = _field_comments(TrackerConfig)
    for field in fields(TrackerConfig):
        default = field.default if field.default is not MISSING else None
        flag = "--" + field.name.replace("_", "-")
        text = f"{comments.get(field.name, field.name)} (default: {default})"
        dest = _TRACKER_DEST + field.name
        if isinstance(default, bool):
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        else:
            kind = type(default) if default is not None else str
            metavar = {int: "N", float: "X"}.get(kind, "VALUE")
            group.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, metavar=metavar, help=text)


def tracker_config_from_args(args: argparse.Namespace) -> TrackerConfig:
    """TrackerConfig with the dataclass defaults, overridden by the flags given."""
    given = {
        name[len(_TRACKER_DEST):]: value for name, value in vars(args).items() if name.startswith(_TRACKER_DEST)
    }
    return TrackerConfig(**given)


def _register_track(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "track",
        help="track a video or image folder and write MOTChallenge results",
        description=(
            "Run the OMC tracker over SOURCE (a video file, a folder of images in natural order, or a "
            "MOTChallenge sequence folder with img1/ and seqinfo.ini) and write MOTChallenge results "
            "'frame,id,x,y,w,h,score,-1,-1,-1' (top-left corner and size in frame pixels), flushed every "
            "frame. On Ctrl-C or an error the frames done so far are kept in a valid results file."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="video file, image folder or MOTChallenge sequence folder")
    parser.add_argument("--engines", type=Path, default=None, metavar="DIR",
                        help="folder with export.json and the engines (omc export); with --backend triton optional: the served export must match it")
    parser.add_argument("--out", required=True, type=Path, metavar="RESULTS.txt", help="MOTChallenge results file to write")
    parser.add_argument("--backend", choices=BACKENDS, default="ort", help="inference backend (default: ort)")
    parser.add_argument("--url", default=None, metavar="HOST:PORT", help="gRPC address of the Triton server (--backend triton; omc triton-repo writes its repository)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="device / ONNX Runtime execution provider; auto: the CPU for ort, the GPU for trt (default: auto)")
    parser.add_argument("--save-video", type=Path, default=None, metavar="VIDEO.mp4", help="also write the frames with boxes, ids and trails (mp4v); restored boxes are dashed")
    parser.add_argument("--frame-rate", type=float, default=None, metavar="FPS", help="override the source's frame rate (default: the video header or seqinfo.ini; 30 when neither states one)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames (default: all)")
    add_tracker_flags(parser)
    parser.set_defaults(func=run_track)


@dataclass(frozen=True)
class TrackSummary:
    """What a tracking run did: frames processed, distinct output ids, restored boxes, wall time."""

    frames: int
    tracks: int
    restored_boxes: int
    seconds: float
    results: Path | None
    video: Path | None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _track_arrays(tracks: Sequence[Any]) -> tuple["npt.NDArray[np.int64]", "npt.NDArray[np.float32]", "npt.NDArray[np.float32]", "npt.NDArray[np.bool_]"]:
    """[N] ids, [N, 4] xyxy boxes, [N] scores, [N] restored flags of a frame's `Track`s."""
    import numpy as np

    ids = np.array([t.track_id for t in tracks], dtype=np.int64)
    boxes = np.array([t.box for t in tracks], dtype=np.float32).reshape(-1, 4)
    scores = np.array([t.score for t in tracks], dtype=np.float32)
    restored = np.array([t.restored for t in tracks], dtype=bool)
    return ids, boxes, scores, restored


def track_stream(
    source: "FrameSource",
    tracker: Any,
    results_path: Path,
    frame_rate: float,
    video_path: Path | None = None,
    max_frames: int | None = None,
    overlay: OverlayConfig = OverlayConfig(),
    progress: bool = False,
) -> TrackSummary:
    """Feed `source` through `tracker.update` and write results (and the overlay video).

    tracker: anything with `update(frame_bgr) -> list[Track]`. progress: show a tqdm bar on
    stderr (only when stderr is a terminal). The files are finalised in every
    case; when the loop stops early (exception, KeyboardInterrupt) the frames done so far are
    kept, a warning says so, and the exception propagates.
    """
    from tqdm import tqdm

    from omc.apps.draw import OverlayVideoWriter, TrailHistory, draw_tracks
    from omc.apps.results import MotResultsWriter

    try:
        writer = MotResultsWriter(results_path)
    except OSError as exc:
        raise BadInput(f"cannot write results to {results_path}: {exc.strerror or exc}") from None
    video: OverlayVideoWriter | None = None
    trails = TrailHistory(overlay.trail_length_frames)
    seen_ids: set[int] = set()
    restored_boxes = 0
    total = source.frame_count if max_frames is None else min(max_frames, source.frame_count or max_frames)
    bar = tqdm(total=total, unit="frame", file=sys.stderr, disable=not (progress and sys.stderr.isatty()), dynamic_ncols=True)
    start = time.perf_counter()
    completed = False
    try:
        for frame_index, frame in itertools.islice(source, max_frames):
            ids, boxes, scores, restored = _track_arrays(tracker.update(frame))
            writer.write_frame(frame_index, ids, boxes, scores)
            seen_ids.update(ids.tolist())
            restored_boxes += int(restored.sum())
            if video_path is not None:
                if video is None:
                    height, width = frame.shape[:2]
                    video = OverlayVideoWriter(video_path, frame_rate, (width, height))
                trails.update(ids, boxes)
                video.write(draw_tracks(frame, ids, boxes, restored, trails, overlay))
            bar.update(1)
        completed = True
    finally:
        bar.close()
        seconds = time.perf_counter() - start
        results = writer.close(complete=completed)
        video_out = video.close() if video is not None else None
        if not completed:
            kept = f"the results so far are in {results}" if results else "no results were written"
            log.warning("stopped after %d frames; %s", writer.frames_written, kept)
    return TrackSummary(writer.frames_written, len(seen_ids), restored_boxes, seconds, results, video_out)


def run_track(args: argparse.Namespace) -> int:
    from omc import contract
    from omc.runtime.sources import open_source

    config = tracker_config_from_args(args)
    if args.frame_rate is not None and not args.frame_rate > 0:
        raise BadInput(f"--frame-rate must be positive, got {args.frame_rate}")
    if args.max_frames is not None and args.max_frames < 1:
        raise BadInput(f"--max-frames must be at least 1, got {args.max_frames}")
    if args.out.is_dir():
        raise BadInput(f"--out {args.out} is a folder; give the results file name, e.g. {args.out / 'results.txt'}")
    engines: Path | None = args.engines
    options = {"url": args.url} if args.backend == "triton" else {}
    if args.backend == "triton" and args.url is None:
        raise BadInput("--backend triton needs --url HOST:PORT of the Triton server's gRPC endpoint")
    if args.backend != "triton" and args.url is not None:
        raise BadInput(f"--url is for --backend triton, not {args.backend}")
    if engines is None and args.backend != "triton":
        raise BadInput(f"--backend {args.backend} needs --engines DIR (the output folder of omc export)")
    if engines is not None and not (engines / contract.EXPORT_JSON).is_file():
        raise BadInput(f"--engines {engines} has no {contract.EXPORT_JSON}; point it at the output folder of omc export")

    from omc.runtime.tracker import Tracker

    with open_source(args.source) as source:
        frame_rate = args.frame_rate if args.frame_rate is not None else source.frame_rate
        with Tracker.from_engines(engines, backend=args.backend, device=args.device, config=config, frame_rate=frame_rate, **options) as tracker:
            log.info(
                "%s: %s frames at %g fps; engines %s (%s, %s)%s",
                source.name, source.frame_count if source.frame_count is not None else "?", frame_rate,
                engines if engines is not None else args.url, args.backend, args.device, "" if config.recheck else ", re-check off",
            )
            summary = track_stream(
                source, tracker, args.out, frame_rate, video_path=args.save_video,
                max_frames=args.max_frames, progress=True,
            )
    video = f", video {summary.video}" if summary.video else ""
    log.info(
        "%d frames, %d tracks, %d restored boxes, %.1f frames/s -> %s%s",
        summary.frames, summary.tracks, summary.restored_boxes, summary.frames_per_second, summary.results, video,
    )
    return 0


# --- omc eval ----------------------------------------------------------------------------------


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    defaults = EvalConfig()
    parser = subparsers.add_parser(
        "eval",
        help="score MOTChallenge results against ground truth (MOTA, IDF1, ...)",
        description=(
            "Compute MOTA, IDF1, MOTP, precision, recall, MT, ML, FP, FN and ID switches with py-motmetrics, "
            "following MOTChallenge ground-truth rules (rows marked 1, pedestrian class, results on "
            "distractors removed, IoU >= 0.5). GT and RESULTS are two files, or two folders: "
            "<GT>/<seq>/gt/gt.txt with <RESULTS>/<seq>.txt, or .txt files of the same names. "
            "Needs the 'eval' extra (motmetrics)."
        ),
    )
    parser.add_argument("--gt", required=True, type=Path, metavar="GT", help="ground-truth file or folder")
    parser.add_argument("--results", required=True, type=Path, metavar="RESULTS", help="results file or folder")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the numbers as JSON")
    parser.add_argument("--iou-threshold", type=float, default=defaults.iou_threshold, help=f"IoU needed for a match (default: {defaults.iou_threshold})")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from omc.apps.evaluate import evaluate, find_sequence_pairs

    config = EvalConfig(iou_threshold=args.iou_threshold)
    pairs = find_sequence_pairs(args.gt, args.results)
    report = evaluate(pairs, config)
    print(report.table())
    if args.json is not None:
        report.write_json(args.json)
        log.info("metrics written to %s", args.json)
    return 0
