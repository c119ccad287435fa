"""`omc track` (the tracker over one or many streams) and `omc eval` (score results).

Only argparse lives here: flags become a `TrackerConfig` / `StreamConfig` / `EvalConfig`, stream
specs and output paths before anything below is called (omc.apps.track does the work). Heavy
modules (the runtime, OpenCV, motmetrics) are imported inside the commands, so `omc --help`
stays fast.

`omc track` writes MOTChallenge results frame by frame (see omc.apps.results for the crash
safety). On Ctrl-C or an error mid-stream the frames done so far are kept: the results files
(and videos) are finalised before the exit status is set (130 for Ctrl-C, 2 for a user error
or when every stream failed), and a warning says how many frames were kept.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from omc.config import BACKENDS, DEVICES, ID_LABELS, STREAM_MODES, EvalConfig, OverlayConfig, StreamConfig, TrackerConfig
from omc.errors import BadInput
from omc.files import RunFiles
from omc.flags import ConfigFlags

if TYPE_CHECKING:

    from omc.apps.streams_file import StreamEntry
    from omc.apps.track import StreamOutputs

log = logging.getLogger(__name__)

# The JSON Lines file's name in --out-dir.
RECORDS_FILE = "tracks.jsonl"


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_track(subparsers)
    _register_eval(subparsers)


# --- omc track ---------------------------------------------------------------------------------


# Every TrackerConfig field as a flag (`conf_thres` -> `--conf-thres`; booleans get `--x/--no-x`),
# shared by the commands that run trackers.
TRACKER_FLAGS = ConfigFlags(TrackerConfig, title="tracker options (TrackerConfig; defaults are the reference's)")
# The StreamConfig fields omc track takes as flags (a streams file sets them all in [runtime]).
STREAM_FLAGS = ConfigFlags(StreamConfig, only=("batch_wait_ms", "max_batch", "overlap"))
EVAL_FLAGS = ConfigFlags(EvalConfig, only=("iou_threshold",))


def _register_track(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "track",
        help="track videos, image folders, sequences or live streams and write MOTChallenge results",
        description=(
            "Run the OMC tracker over one or more SOURCEs (a video file, a folder of images in natural "
            "order, a MOTChallenge sequence folder, a live URL rtsp:// rtmp:// http(s):// or a camera index), "
            "or over the streams of a streams file (--streams). All streams share the engines: frames "
            "ready at the same time go through the detector together, each stream has its own tracker and "
            "ids. Per stream it writes MOTChallenge results 'frame,id,x,y,w,h,score,-1,-1,-1' (top-left "
            "corner and size in frame pixels), flushed every frame; --jsonl adds one JSON record per "
            "tracked frame of every stream. Live streams reconnect when they fail and run until Ctrl-C. "
            "On Ctrl-C or an error the frames done so far are kept in valid files. Exit status 2 when "
            "every stream failed."
        ),
    )
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help="video file, image folder, MOTChallenge sequence folder, live URL or camera index")
    parser.add_argument("--streams", type=Path, default=None, metavar="FILE.toml", help="streams file: names, URLs and options per stream (see omc.apps.streams_file)")
    parser.add_argument("--engines", type=Path, default=None, metavar="DIR",
                        help="folder with export.json and the engines (omc export); with --backend triton optional: the served export must match it")
    parser.add_argument("--out", type=Path, default=None, metavar="RESULTS.txt", help="MOTChallenge results file (one SOURCE)")
    parser.add_argument("--out-dir", type=Path, default=None, metavar="DIR", help="folder for <stream>.txt per stream (several streams)")
    parser.add_argument("--jsonl", type=Path, default=None, metavar="FILE.jsonl", help="also write one JSON record per tracked frame of every stream (default with --out-dir: DIR/tracks.jsonl)")
    parser.add_argument("--id-labels", choices=ID_LABELS, default="int", help="ids in the JSON records: int (per stream, as in the results files) or stream ('door:3', unique across streams) (default: int)")
    parser.add_argument("--backend", choices=BACKENDS, default="ort", help="inference backend (default: ort)")
    parser.add_argument("--url", default=None, metavar="HOST:PORT", help="gRPC address of the Triton server (--backend triton; omc triton-repo writes its repository)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="device / ONNX Runtime execution provider; auto: the CPU for ort, the GPU for trt (default: auto)")
    parser.add_argument("--save-video", type=Path, default=None, metavar="VIDEO.mp4", help="also write the frames with boxes, ids and trails (mp4v; one SOURCE); restored boxes are dashed")
    parser.add_argument("--videos", action="store_true", help="with --out-dir: also write DIR/<stream>.mp4 for every stream")
    parser.add_argument("--frame-rate", type=float, default=None, metavar="FPS", help="override the sources' frame rate (default: the video header or seqinfo.ini; 30 when neither states one)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop each stream after N frames (default: all)")
    parser.add_argument("--mode", choices=STREAM_MODES, default="auto", help="auto: live sources keep only their latest frame, files every frame (default: auto)")
    STREAM_FLAGS.add_to(parser)
    TRACKER_FLAGS.add_to(parser)
    parser.set_defaults(func=run_track)


def run_track(args: argparse.Namespace) -> int:
    from omc import contract
    from omc.apps.streams_file import load_streams_file
    from omc.apps.track import require_some_success, summary_lines, track_streams
    from omc.runtime.streams import StreamRuntime

    tracker_config = TRACKER_FLAGS.config(args)
    if args.frame_rate is not None and not (math.isfinite(args.frame_rate) and args.frame_rate > 0):
        raise BadInput(f"--frame-rate must be a positive number of frames per second, got {args.frame_rate}")
    if args.max_frames is not None and args.max_frames < 1:
        raise BadInput(f"--max-frames must be at least 1, got {args.max_frames}")
    engines: Path | None = args.engines
    if args.backend == "triton" and args.url is None:
        raise BadInput("--backend triton needs --url HOST:PORT of the Triton server's gRPC endpoint")
    if args.backend != "triton" and args.url is not None:
        raise BadInput(f"--url is for --backend triton, not {args.backend}")
    if engines is None and args.backend != "triton":
        raise BadInput(f"--backend {args.backend} needs --engines DIR (the output folder of omc export)")
    if engines is not None and not (engines / contract.EXPORT_JSON).is_file():
        raise BadInput(f"--engines {engines} has no {contract.EXPORT_JSON}; point it at the output folder of omc export")
    if bool(args.sources) == (args.streams is not None):
        raise BadInput("give SOURCEs or --streams FILE (one of the two)")
    if args.streams is not None:
        streams_file = load_streams_file(args.streams)
        # The file's [runtime] table, with the batching flags given on top of it.
        entries, stream_config = streams_file.streams, STREAM_FLAGS.config(args, streams_file.config)
    else:
        entries = _entries_from_sources(args.sources, tracker_config, args.mode, args.frame_rate, args.max_frames)
        stream_config = STREAM_FLAGS.config(args)
    # Before any work: no output may replace an input (a source, the engines) or another output.
    _declare_run_files(args, engines, entries)
    outputs = _outputs(args, entries)
    specs = [replace(e.spec, keep_frames=e.spec.name in outputs.videos) for e in entries]
    options: dict[str, object] = {}
    if args.backend == "triton":
        # The server sends back only rows some stream's tracker could use.
        floors = (min(s.tracker.conf_thres for s in specs), min(s.tracker.recheck_score_thres for s in specs))
        options = {"url": args.url, "score_floors": floors}
    with StreamRuntime.from_engines(engines, specs, backend=args.backend, device=args.device, config=stream_config, **options) as runtime:
        log.info(
            "%d stream(s); engines %s (%s, %s)%s", len(specs), engines if engines is not None else args.url,
            args.backend, args.device, "" if tracker_config.recheck else ", re-check off",
        )  # fmt: skip
        summary = track_streams(runtime, outputs, progress=True)
    for line in summary_lines(summary):
        log.info("%s", line)
    batches = ", ".join(f"{size}: {count}" for size, count in sorted(summary.batch_sizes.items()))
    log.info("%d frames in %.1f s, %.1f frames/s; detector batches by size: %s", summary.frames, summary.seconds, summary.frames_per_second, batches or "none")
    require_some_success(summary)
    return 0


def _entries_from_sources(
    sources: Sequence[str], tracker: TrackerConfig, mode: str, frame_rate: float | None, max_frames: int | None
) -> list["StreamEntry"]:
    """One stream per SOURCE, named after it (file stem, folder or live address; repeats get _2, _3)."""
    from omc.apps.streams_file import StreamEntry
    from omc.runtime.sources import is_live_location, live_source_name
    from omc.runtime.streams import StreamSpec

    entries: list[StreamEntry] = []
    names: set[str] = set()
    for text in sources:
        live = is_live_location(text)
        base = live_source_name(int(text) if text.isdigit() else text) if live else Path(text).stem or Path(text).name
        name, suffix = base, 2
        while name in names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        names.add(name)
        source: str | Path = text if live else Path(text)
        if isinstance(source, Path) and not source.exists():
            raise BadInput(f"source {source} does not exist")
        entries.append(StreamEntry(StreamSpec(name, source, mode, frame_rate, tracker, max_frames)))
    return entries


def _declare_run_files(args: argparse.Namespace, engines: Path | None, entries: Sequence["StreamEntry"]) -> None:
    """Refuse (BadInput) any output that is an input of this run or another output, or not a regular file."""
    from omc import contract
    from omc.runtime.sources import open_source

    files = RunFiles()
    if engines is not None:
        files.read_all((engines / name for name in contract.ENGINE_FOLDER_FILES), "--engines")
    if args.streams is not None:
        files.read(args.streams, "--streams")
    for entry in entries:
        what = "SOURCE" if args.streams is None else f"stream {entry.spec.name}"
        if isinstance(entry.spec.source, Path):
            # Opened once before the start: a file that cannot be read is refused in one line
            # (failures after the start stay in their stream), and its files are known.
            with open_source(entry.spec.source) as source:
                files.read(entry.spec.source, what)
                files.read_all(source.files, what)
    for path, what, partial in _output_paths(args, entries):
        files.write(path, what, partial=partial)


def _output_paths(args: argparse.Namespace, entries: Sequence["StreamEntry"]) -> list[tuple[Path, str, bool]]:
    """(path, flag, written under a partial name) of every file the run may write."""
    paths: list[tuple[Path, str, bool]] = []
    if args.out is not None:
        paths.append((args.out, "--out", True))
        video = args.save_video or (entries[0].save_video if len(entries) == 1 else None)
        if video is not None:
            paths.append((video, "--save-video", True))
        if args.jsonl is not None:
            paths.append((args.jsonl, "--jsonl", False))
    elif args.out_dir is not None:
        for entry in entries:
            paths.append((args.out_dir / f"{entry.spec.name}.txt", "--out-dir", True))
            if args.videos or entry.save_video is not None:
                paths.append((args.out_dir / (entry.save_video or Path(f"{entry.spec.name}.mp4")), "--out-dir", True))
        paths.append((args.jsonl if args.jsonl is not None else args.out_dir / RECORDS_FILE, "--jsonl", False))
    return paths


def _outputs(args: argparse.Namespace, entries: Sequence["StreamEntry"]) -> "StreamOutputs":
    """The run's files from --out / --out-dir / --jsonl / --save-video / --videos."""
    from omc.apps.track import StreamOutputs

    if (args.out is None) == (args.out_dir is None):
        raise BadInput("give --out RESULTS.txt (one stream) or --out-dir DIR (any number of streams)")
    if args.out is not None:
        if len(entries) != 1:
            raise BadInput(f"--out names one results file but there are {len(entries)} streams; use --out-dir DIR")
        if args.out.is_dir():
            raise BadInput(f"--out {args.out} is a folder; give the results file name, e.g. {args.out / 'results.txt'}")
        if args.videos:
            raise BadInput("--videos goes with --out-dir; with --out use --save-video VIDEO.mp4")
        name = entries[0].spec.name
        video = args.save_video or (entries[0].save_video if entries[0].save_video else None)
        return StreamOutputs(
            {name: args.out}, {name: video} if video is not None else {}, args.jsonl, args.id_labels, OverlayConfig()
        )
    if args.save_video is not None:
        raise BadInput("--save-video names one video; with --out-dir use --videos (DIR/<stream>.mp4) or save_video in the streams file")
    folder: Path = args.out_dir
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--out-dir {folder} exists and is not a folder")
    results = {e.spec.name: folder / f"{e.spec.name}.txt" for e in entries}
    videos = {
        e.spec.name: folder / (e.save_video if e.save_video is not None else Path(f"{e.spec.name}.mp4"))
        for e in entries
        if args.videos or e.save_video is not None
    }
    records = args.jsonl if args.jsonl is not None else folder / RECORDS_FILE
    return StreamOutputs(results, videos, records, args.id_labels, OverlayConfig())


# --- omc eval ----------------------------------------------------------------------------------


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
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
    EVAL_FLAGS.add_to(parser)
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from omc.apps.evaluate import evaluate, find_sequence_pairs

    config = EVAL_FLAGS.config(args)
    pairs = find_sequence_pairs(args.gt, args.results)
    if args.json is not None:
        files = RunFiles()
        files.read_all((path for pair in pairs.values() for path in pair), "--gt/--results")
        files.write(args.json, "--json")
    report = evaluate(pairs, config)
    print(report.table())
    if args.json is not None:
        report.write_json(args.json)
        log.info("metrics written to %s", args.json)
    return 0
