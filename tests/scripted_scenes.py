"""Scripted scenes and stand-in engines for tracker tests.

A scene is a few objects with a box per frame (network pixels; frames are the network size, so
the letterbox is the identity), a detector score per frame (below conf_thres means the detector
misses it) and an identity code (its embedding). `SceneDetector` returns contract-shaped outputs
for frame `frame`; `SceneRecheck` answers like the re-check network: a peak on every visible
object whose code matches one of the tracklets it is given, with the object's heat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omc import contract
from omc.contract import EngineMeta

NET_HW = (384, 640)
EMBEDDING_DIM = 64
K_ROWS = 24
P_ROWS = 12
# An object less visible than this gets neither a candidate nor a peak (as in tracker_sample.md).
MIN_VISIBLE = 0.3
# Cosine similarity above which the stand-in re-check "recognises" a tracklet in an object.
RECOGNISE = 0.8


def scene_meta(max_tracklets: int = 64) -> EngineMeta:
    return EngineMeta(
        input_hw=NET_HW, topk=K_ROWS, peaks=P_ROWS, embedding_dim=EMBEDDING_DIM,
        recheck_channels=8, has_recheck=True, max_tracklets=max_tracklets,
    )  # fmt: skip


@dataclass
class ScriptedObject:
    """boxes [F, 4] corners; scores [F] detector score (0 = absent); heat [F] re-check heat."""

    boxes: np.ndarray
    scores: np.ndarray
    heat: np.ndarray
    code: np.ndarray = field(default_factory=lambda: np.zeros(EMBEDDING_DIM, np.float32))

    def visible(self, f: int) -> float:
        x1, y1, x2, y2 = self.boxes[f]
        area = (x2 - x1) * (y2 - y1)
        ix = max(0.0, min(x2, NET_HW[1]) - max(x1, 0.0))
        iy = max(0.0, min(y2, NET_HW[0]) - max(y1, 0.0))
        return ix * iy / area if area > 0 else 0.0


def walk(frames: int, start: tuple[float, float], velocity: tuple[float, float], size: tuple[float, float]) -> np.ndarray:
    """[F, 4] boxes of a box of `size` (w, h) whose top-left moves from `start` by `velocity` per frame."""
    t = np.arange(frames, dtype=np.float64)[:, None]
    top_left = np.asarray(start) + t * np.asarray(velocity)
    return np.concatenate([top_left, top_left + np.asarray(size)], axis=1).astype(np.float32)


@dataclass
class Scene:
    objects: list[ScriptedObject]
    frames: int
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        for obj in self.objects:
            code = rng.standard_normal(EMBEDDING_DIM).astype(np.float32)
            obj.code = code / np.linalg.norm(code)
        self._rng = rng

    def truth(self, f: int) -> tuple[list[int], np.ndarray]:
        """Object indices visible enough at frame f, and their boxes [n, 4]."""
        ids = [i for i, o in enumerate(self.objects) if o.visible(f) >= MIN_VISIBLE]
        return ids, np.array([self.objects[i].boxes[f] for i in ids], np.float32).reshape(-1, 4)

    def noisy_code(self, obj: ScriptedObject, f: int, salt: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, f, salt))
        e = obj.code + rng.normal(0, 0.05, EMBEDDING_DIM).astype(np.float32)
        return e / np.linalg.norm(e)


class SceneDetector:
    """Stand-in detector: a candidate per visible object with its scripted score (any score > 0)."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.frame = 0
        self.corrupt: dict[str, tuple[int, float]] = {}  # output name -> (row, value) to plant

    def infer(self, feeds):
        f, scene = self.frame, self.scene
        boxes = np.zeros((K_ROWS, 4), np.float32)
        scores = np.zeros(K_ROWS, np.float32)
        embeddings = np.zeros((K_ROWS, EMBEDDING_DIM), np.float32)
        rows = []
        for i, obj in enumerate(scene.objects):
            if obj.scores[f] > 0 and obj.visible(f) >= MIN_VISIBLE:
                rows.append((obj.scores[f], i))
        rows.sort(key=lambda r: -r[0])
        for k, (score, i) in enumerate(rows[:K_ROWS]):
            obj = scene.objects[i]
            jitter = np.random.default_rng((scene.seed, f, i)).normal(0, 0.5, 4).astype(np.float32)
            boxes[k] = obj.boxes[f] + jitter
            scores[k] = score
            embeddings[k] = scene.noisy_code(obj, f, 1)
        density = np.where(scores > 0, 0.1, 0.0).astype(np.float32)
        outputs = {
            contract.DET_BOXES: boxes[None],
            contract.DET_SCORES: scores[None],
            contract.DET_DENSITY: density[None],
            contract.DET_EMBEDDINGS: embeddings[None],
        }
        for name, (row, value) in self.corrupt.items():
            outputs[name][0, row] = value
        return outputs


class SceneRecheck:
    """Stand-in re-check: a peak on each visible object a tracklet recognises, heat = its scripted heat."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.frame = 0
        self.calls = 0
        self.tracklet_counts: list[int] = []
        self.extra_peaks: list[tuple[np.ndarray, float]] = []  # (box, heat) planted every frame

    def infer(self, feeds):
        f, scene = self.frame, self.scene
        tracklets = np.asarray(feeds[contract.TRACKLETS])
        self.calls += 1
        self.tracklet_counts.append(len(tracklets))
        peaks = []
        for i, obj in enumerate(scene.objects):
            if obj.heat[f] <= 0 or obj.visible(f) < MIN_VISIBLE:
                continue
            if (tracklets @ obj.code).max() > RECOGNISE:
                peaks.append((float(obj.heat[f]), obj.boxes[f], scene.noisy_code(obj, f, 2)))
        for box, heat in self.extra_peaks:
            peaks.append((heat, np.asarray(box, np.float32), scene.noisy_code(scene.objects[0], f, 3)))
        peaks.sort(key=lambda p: -p[0])
        boxes = np.zeros((P_ROWS, 4), np.float32)
        scores = np.zeros(P_ROWS, np.float32)
        embeddings = np.zeros((P_ROWS, EMBEDDING_DIM), np.float32)
        for k, (heat, box, emb) in enumerate(peaks[:P_ROWS]):
            boxes[k], scores[k], embeddings[k] = box, heat, emb
        return {
            contract.TRANS_BOXES: boxes[None],
            contract.TRANS_SCORES: scores[None],
            contract.TRANS_EMBEDDINGS: embeddings[None],
        }


def street_scene(frames: int = 60) -> Scene:
    """Four people: A and B cross, C's detector score drops below threshold for frames 20-29 while
    the re-check still sees it, D walks out on the right at frame 16 and comes back at frame 35."""
    f = frames
    ones = np.ones(f, np.float32)
    a = ScriptedObject(walk(f, (40, 100), (8, 0), (60, 160)), 0.9 * ones, 0.6 * ones)
    b = ScriptedObject(walk(f, (520, 130), (-8, 0), (60, 150)), 0.85 * ones, 0.6 * ones)
    c_scores = 0.8 * ones
    c_scores[20:30] = 0.3
    c = ScriptedObject(walk(f, (250, 200), (1, -0.5), (50, 140)), c_scores, 0.62 * ones)
    # D: out through the right edge and back (x of the top-left 560 -> 660 at frame 25 -> 560); it is
    # less than 30% visible (x > 622) on frames 16 to 34.
    d_x = 660 - np.abs(np.arange(f) - 25) * 4.0
    d_boxes = np.stack([d_x, np.full(f, 20.0), d_x + 60, np.full(f, 180.0)], axis=1).astype(np.float32)
    d = ScriptedObject(d_boxes, 0.88 * ones, 0.6 * ones)
    return Scene([a, b, c, d], frames)


def run_scene(scene: Scene, tracker, detector: SceneDetector, recheck: SceneRecheck | None, frames=None):
    """Feed every frame (blank, network-sized) and return the outputs per frame."""
    blank = np.zeros((*NET_HW, 3), np.uint8)
    results = []
    for f in range(scene.frames) if frames is None else frames:
        detector.frame = f
        if recheck is not None:
            recheck.frame = f
        results.append(tracker.update(blank))
    return results
