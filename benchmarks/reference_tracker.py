"""Time the reference tracker's own post-processing on the synthetic crowd (run in a subprocess).

`python -m omc.benchmarks.reference_tracker --repo SOTS --out result.json [--tracks 50 ...]`
imports `JDETracker` from a checkout of the reference implementation (JudasDie/SOTS, branch
`MOT`, folder `OMC/`; never part of this project) and times `JDETracker.update` per frame on
`SyntheticCrowd`'s network-level outputs, served by a stand-in network; the stand-in's own time
is subtracted, so what remains is the reference's post-processing: re-check box decode and peak
extraction, threshold + cluster-DIoU NMS, fusion, embedding lookup and association.

It runs in its own process because importing the reference changes process-wide state (NumPy
and torch print options, OpenCV's thread count) and needs shims:
- optional dependencies that are not installed (torchvision, pandas, requests, PIL, thop,
  torchsummary, ...) become inert stub modules: the code paths the tracker runs never use them;
- `cython_bbox.bbox_overlaps` becomes `bbox_overlaps` below (NumPy, the "+1 pixel" IoU) when the
  compiled package is absent;
- `np.float` (removed in NumPy 1.24) is restored as `float`; `torch.Tensor.cuda` returns the
  tensor itself, since the reference moves tensors to a GPU unconditionally;
- `JDETracker.__init__` loads a checkpoint and a network; the tracker is built without it and
  given the attributes `__init__` sets (thresholds are the reference's defaults, from
  TrackerConfig).

Output (JSON): samples_ms (per timed frame), tracks (per timed frame, the output track ids),
warmup, and the reference's git revision when the checkout has one.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omc.config import TrackerConfig
from omc.contract import EngineMeta

# The tracker module inside the reference's OMC/lib folder, and the folder relative to the repo.
TRACKER_MODULE = "tracker.cstrack_w_recheck"
REFERENCE_LOG_MODULE = "mot_online.log"
LIB_DIRS = (Path("OMC") / "lib", Path("lib"), Path("."))
# Third-party modules the reference imports at module level but the tracker never calls; stubbed
# when not installed.
OPTIONAL_MODULES = (
    "torchvision",
    "pandas",
    "pkg_resources",
    "requests",
    "PIL",
    "thop",
    "torchsummary",
    "seaborn",
    "tensorboard",
    "wandb",
    "imgaug",
    "skimage",
    "numba",
    "yaml",
    "matplotlib",
    "scipy",
    "motmetrics",
    "lap",
)
# The levels' strides in the reference network's train_out (the contract's default export).
STRIDES = EngineMeta().strides


def find_lib_dir(repo: Path) -> Path:
    """The reference's OMC/lib folder inside `repo` (a SOTS checkout, its OMC folder, or lib itself)."""
    for relative in LIB_DIRS:
        candidate = repo / relative
        if (candidate / "tracker" / "cstrack_w_recheck.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"{repo} holds no OMC/lib/tracker/cstrack_w_recheck.py; pass a checkout of JudasDie/SOTS (branch MOT)"
    )


# --- shims -------------------------------------------------------------------------------------


def bbox_overlaps(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """cython_bbox's IoU in NumPy: [N, 4] x [K, 4] corners (float64) -> [N, K], pixels counted
    inclusively (w = x2 - x1 + 1); no overlap (inclusive width or height <= 0) gives 0."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    query = np.asarray(query_boxes, np.float64).reshape(-1, 4)
    iw = np.minimum(boxes[:, None, 2], query[None, :, 2]) - np.maximum(boxes[:, None, 0], query[None, :, 0]) + 1
    ih = np.minimum(boxes[:, None, 3], query[None, :, 3]) - np.maximum(boxes[:, None, 1], query[None, :, 1]) + 1
    area_box = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    area_query = (query[:, 2] - query[:, 0] + 1) * (query[:, 3] - query[:, 1] + 1)
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = area_box[:, None] + area_query[None, :] - inter
    return np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)


class _Inert:
    """Stands in for any object of a stubbed module: attributes, calls and items give more of it."""

    def __getattr__(self, name: str) -> "_Inert":
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Inert()

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _Inert()

    def __getitem__(self, key: Any) -> "_Inert":
        return _Inert()

    def __iter__(self) -> Any:
        return iter(())

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        return (object,)  # `class X(stub.Base)` gets a plain base


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Inert()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of the given root names (and their submodules) yield inert stub modules."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = tuple(roots)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install_shims() -> list[str]:
    """Stub the missing optional modules, shim cython_bbox, restore np.float, make .cuda() a no-op.

    Returns the names of the modules that were stubbed.
    """
    missing = [name for name in OPTIONAL_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        sys.meta_path.insert(0, _StubFinder(missing))
    if importlib.util.find_spec("cython_bbox") is None:
        shim = types.ModuleType("cython_bbox")
        shim.bbox_overlaps = bbox_overlaps  # type: ignore[attr-defined]
        sys.modules["cython_bbox"] = shim
        missing.append("cython_bbox (NumPy shim)")
    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    return missing


# --- the stand-in network ----------------------------------------------------------------------


class StandInNetwork:
    """Returns the current crowd frame in the reference network's output layout, and times itself.

    Without tracklets: [id_map, dense, (candidates, train_out)]; with: [that, heatmap, siambox].
    train_out carries what the tracker reads: [1] Detect's k, [4] strides, [5][0] the stride-8 grid
    [1, 1, h, w, 2] (col, row).
    """

    def __init__(self, k: float, map_hw: tuple[int, int]) -> None:
        import torch

        h, w = map_hw
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack((cols, rows), 2).view(1, 1, h, w, 2).float()
        self.train_out = [None, torch.tensor([k]), None, None, torch.tensor(STRIDES, dtype=torch.float32), [grid]]
        self.frame: Any = None
        self.seconds = 0.0

    def __call__(self, images: Any, Tracklets_T: Any = None) -> Any:  # noqa: N803 (the reference's keyword)
        import torch

        start = time.perf_counter()
        frame = self.frame
        output = [
            torch.from_numpy(frame.id_map),
            torch.from_numpy(frame.dense),
            (torch.from_numpy(frame.candidates.copy()), self.train_out),
        ]
        result: Any = output
        if Tracklets_T is not None:
            # The tracker decodes the raw boxes in place: hand it a copy.
            result = [output, torch.from_numpy(frame.heatmap), torch.from_numpy(frame.siambox_raw.copy())]
        self.seconds += time.perf_counter() - start
        return result


def reference_options(config: TrackerConfig, input_hw: tuple[int, int]) -> types.SimpleNamespace:
    """The reference's run options the tracker reads, at TrackerConfig's (reference) values.

    img_size is (H, W) of the crowd's frames, which are the network input: its scale_coords is
    then the identity, as the runtime's letterbox transform is here.
    """
    return types.SimpleNamespace(
        conf_thres=config.conf_thres,
        nms_thres=config.nms_thres,
        conf_thres_siammot=config.recheck_score_thres,
        iousfuse_thres=config.fusion_iou_thres,
        track_buffer=config.track_buffer,
        img_size=input_hw,
    )


def build_tracker(module: Any, network: StandInNetwork, options: types.SimpleNamespace, frame_rate: float) -> Any:
    """A JDETracker without its __init__ (which loads a checkpoint), with the attributes `update` reads
    (__init__ also stores image mean / std, which `update` never uses)."""
    tracker = module.JDETracker.__new__(module.JDETracker)
    tracker.opt = options
    tracker.model = network
    tracker.tracked_stracks, tracker.lost_stracks, tracker.removed_stracks = [], [], []
    tracker.frame_id = 0
    tracker.det_thresh = options.conf_thres
    tracker.buffer_size = int(frame_rate / 30.0 * options.track_buffer)
    tracker.max_time_lost = tracker.buffer_size
    tracker.kalman_filter = module.KalmanFilter()
    return tracker


def run(repo: Path, tracks: int, detections: int, frames: int, warmup: int, seed: int, threads: int) -> dict[str, Any]:
    """Time the reference tracker on the crowd; see the module docstring for the result's keys."""
    from omc.benchmarks.synthetic import DETECT_K, SyntheticCrowd

    lib = find_lib_dir(repo)
    stubbed = install_shims()
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    sys.path.insert(0, str(lib))
    module = importlib.import_module(TRACKER_MODULE)
    # The reference's entry script (tracking/test_omc.py) lowers its logger to INFO: per-frame
    # debug lines are not part of its cost.
    importlib.import_module(REFERENCE_LOG_MODULE).logger.setLevel(logging.INFO)
    crowd = SyntheticCrowd(tracks, detections, seed=seed)
    network = StandInNetwork(DETECT_K, crowd.map_hw)
    tracker = build_tracker(module, network, reference_options(TrackerConfig(), crowd.input_hw), 30.0)
    frame0 = np.zeros((*crowd.input_hw, 3), np.uint8)
    samples, outputs = [], []
    for index, frame in enumerate(crowd.frames(warmup + frames)):
        network.frame, network.seconds = frame, 0.0
        start = time.perf_counter()
        with torch.no_grad():
            online = tracker.update(None, frame0, 0, None)
        elapsed = time.perf_counter() - start - network.seconds
        if index >= warmup:
            samples.append(elapsed * 1e3)
            outputs.append(sorted(int(t.track_id) for t in online))
    return {"samples_ms": samples, "tracks": outputs, "warmup": warmup, "stubbed": stubbed, "lib": str(lib)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repo", type=Path, required=True, help="checkout of JudasDie/SOTS (branch MOT)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--tracks", type=int, default=50)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.repo, args.tracks, args.detections, args.frames, args.warmup, args.seed, args.threads)
    from omc.files import replacing

    with replacing(args.out) as temporary:
        temporary.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
