"""The `triton` backend end to end against a real Triton server on 127.0.0.1.

The server is the `tritonserver` (Triton 2.51) that nvidia-pytriton bundles, from the
`.venv-triton` environment `make test` builds (`make triton-server`), launched directly on a
repository written by `omc triton-repo --platform python`: the real config.pbtxt files, the
detector's dynamic batcher and the BLS frame model, with the engines run by ONNX Runtime inside
Triton's Python backend (that server has no ONNX Runtime backend). It serves the tests' small
export; start-up takes about 6 s on the 2-core CI machine (budget STARTUP_BUDGET_S).

Streams through Triton give the same tracks as the local ONNX Runtime backend on the same
frames: ids, restored flags and detection counts exactly; boxes within BOX_TOLERANCE_PX. Why a
tolerance at all: the server runs the detector on batches of several streams' frames, the local
backend one frame at a time, and ONNX Runtime's CPU kernels may sum in another order for another
batch size (float32 rounding, about 1e-7 relative), which the Kalman filter carries into boxes of
a few hundred pixels. Measured here: identical to the last bit.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from omc import contract
from omc.benchmarks.clip import generated_clip
from omc.cli import main
from omc.config import TrackerConfig, TritonRepoConfig
from omc.contract import EngineMeta
from omc.errors import BadInput, EngineMismatch, EngineUnavailable
from omc.export.triton.local_server import LocalTritonServer, free_port
from omc.export.triton.repository import write_repository
from omc.runtime.backends import open_engine_pair
from omc.runtime.tracker import Tracker
from paths import REPO_ROOT
from small_export import copy_export, small_export

SERVER_VENV = Path(os.environ.get("OMC_TRITON_VENV", REPO_ROOT / ".venv-triton"))
STARTUP_BUDGET_S = 60.0
STREAMS = 4
FRAMES = 8
CLIP_SIZE = (640, 360)
# The small random network scores the generated clip's candidates around 0.01-0.2 (see
# tests/bench/test_reference_path.py): a low threshold gives it tracks and re-check calls.
CONFIG = TrackerConfig(conf_thres=0.05)
# A long batching window so that frames sent together meet in one detector batch on a busy CPU.
QUEUE_DELAY_US = 50_000
BOX_TOLERANCE_PX = 1e-2

pytestmark = pytest.mark.slow


def server_venv() -> Path:
    if not (SERVER_VENV / "bin" / "python").is_file():
        pytest.fail(f"{SERVER_VENV} is missing: make triton-server builds it (make test does)")
    return SERVER_VENV


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, LocalTritonServer]]:
    """(export, repository, running server) of the small export."""
    export = small_export()
    repository = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(
        export, repository,
        TritonRepoConfig(platform="python", max_queue_delay_us=QUEUE_DELAY_US, frame_instances=STREAMS),
    )  # fmt: skip
    with LocalTritonServer(repository, server_venv()) as server:
        print(f"tritonserver ready in {server.startup_s:.1f} s")
        assert server.startup_s < STARTUP_BUDGET_S
        yield export, repository, server


def snapshot(tracks: list[Any]) -> tuple[list[int], np.ndarray, list[bool]]:
    return [t.track_id for t in tracks], np.array([t.box for t in tracks], np.float32).reshape(-1, 4), [t.restored for t in tracks]


def test_streams_through_triton_track_as_the_local_backend(served: tuple[Path, Path, LocalTritonServer]) -> None:
    export, _, server = served
    clips = [generated_clip(CLIP_SIZE, FRAMES, seed=stream) for stream in range(STREAMS)]
    local: list[list[Any]] = []
    for clip in clips:
        with Tracker.from_engines(export, config=CONFIG) as tracker:
            local.append([(snapshot(tracker.update(frame)), tracker.last_tracklet_count) for frame in clip])

    remote: list[list[Any]] = [[] for _ in clips]
    failures: list[BaseException] = []
    # The streams send each frame together (a rig of cameras), so the server can batch them.
    barrier = threading.Barrier(STREAMS)

    def stream(index: int) -> None:
        try:
            with Tracker.from_engines(export, backend="triton", url=server.url, config=CONFIG) as tracker:
                assert tracker.engines is not None and tracker.engines.uses_shared_memory  # type: ignore[attr-defined]
                for frame in clips[index]:
                    barrier.wait(timeout=60)
                    remote[index].append((snapshot(tracker.update(frame)), tracker.last_tracklet_count))
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(STREAMS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures

    tracked = rechecked = 0
    worst = 0.0
    for ours, theirs in zip(remote, local):
        assert len(ours) == len(theirs) == FRAMES
        for ((ids, boxes, restored), tracklets), ((want_ids, want_boxes, want_restored), want_tracklets) in zip(ours, theirs):
            assert ids == want_ids and restored == want_restored and tracklets == want_tracklets
            np.testing.assert_allclose(boxes, want_boxes, rtol=0, atol=BOX_TOLERANCE_PX)
            worst = max(worst, float(np.abs(boxes - want_boxes).max(initial=0.0)))
            tracked += len(ids)
            rechecked += tracklets
    print(f"{tracked} tracks, {rechecked} tracklets re-checked; largest box difference {worst:g} px")
    # Only worth something if the streams made tracks and the server ran the re-check.
    assert tracked > 0 and rechecked > 0

    # Triton's own statistics: the detector ran batches of several streams' frames.
    client = grpcclient.InferenceServerClient(server.url)
    stats = client.get_inference_statistics("omc_detector", as_json=True)["model_stats"][0]
    client.close()
    sizes = {int(entry["batch_size"]): int(entry["compute_infer"]["count"]) for entry in stats["batch_stats"]}
    print(f"detector batches (size: count): {dict(sorted(sizes.items()))}")
    assert max(sizes) > 1
    assert int(stats["execution_count"]) < int(stats["inference_count"])


def test_the_stream_runtime_through_triton_tracks_as_locally(served: tuple[Path, Path, LocalTritonServer], tmp_path: Path) -> None:
    """The multi-stream runtime with the triton backend: its streams' batches become concurrent
    requests, and every stream gets the tracks the local backend's runtime gives it."""
    from omc.config import StreamConfig
    from omc.runtime.streams import StreamRuntime, StreamSpec

    export, _, server = served
    clips = []
    for seed in range(3):
        path = tmp_path / f"clip{seed}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, CLIP_SIZE)
        for frame in generated_clip(CLIP_SIZE, FRAMES, seed=10 + seed):
            writer.write(frame)
        writer.release()
        clips.append(path)
    specs = [StreamSpec(path.stem, path, tracker=CONFIG) for path in clips]
    config = StreamConfig(batch_wait_ms=200, max_batch=4)
    runs = {}
    for backend, options in (("ort", {}), ("triton", {"url": server.url, "score_floors": (CONFIG.conf_thres, CONFIG.recheck_score_thres)})):
        with StreamRuntime.from_engines(export, specs, backend=backend, config=config, **options) as runtime:
            runs[backend] = {}
            for result in runtime.results():
                runs[backend].setdefault(result.stream, []).append(snapshot(result.tracks))
            assert max(runtime.batch_sizes) > 1
    tracked = 0
    for name in runs["ort"]:
        assert len(runs["triton"][name]) == len(runs["ort"][name]) == FRAMES
        for (ids, boxes, restored), (want_ids, want_boxes, want_restored) in zip(runs["triton"][name], runs["ort"][name]):
            assert ids == want_ids and restored == want_restored
            np.testing.assert_allclose(boxes, want_boxes, rtol=0, atol=BOX_TOLERANCE_PX)
            tracked += len(ids)
    assert tracked > 0


def test_a_batch_of_frames_in_one_call_matches_the_local_pair(served: tuple[Path, Path, LocalTritonServer]) -> None:
    """B frames in one `run` (B concurrent requests), with and without shared memory; rows above
    the floors are the local pair's rows above them, and frames without tracklets get no re-check."""
    export, _, server = served
    rng = np.random.default_rng(0)
    frames = generated_clip((320, 192), 4, seed=7)
    images = np.stack(frames)
    pool = rng.normal(size=(5, 512)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    tracklets = [pool, None, pool[:2], None]
    floors = (0.05, 0.01)
    local, meta = open_engine_pair(export)
    want = local.run(images, tracklets)
    for shared_memory in ("on", "off"):
        remote, served_meta = open_engine_pair(export, "triton", url=server.url, shared_memory=shared_memory, score_floors=floors)
        try:
            assert served_meta == meta and remote.uses_shared_memory == (shared_memory == "on")  # type: ignore[attr-defined]
            got = remote.run(images, tracklets)
        finally:
            remote.close()
        for ours, theirs, pool_in in zip(got, want, tracklets):
            keep = np.asarray(theirs.detector[contract.DET_SCORES])[0] > floors[0]
            assert 0 < keep.sum() < meta.topk
            for name in contract.HOST_DETECTOR_OUTPUTS:
                np.testing.assert_allclose(ours.detector[name], np.asarray(theirs.detector[name])[:, keep], rtol=0, atol=1e-5)
            assert (ours.recheck is None) == (pool_in is None) == (theirs.recheck is None)
            if ours.recheck is not None and theirs.recheck is not None:
                keep = np.asarray(theirs.recheck[contract.TRANS_SCORES])[0] > floors[1]
                for name in contract.HOST_RECHECK_OUTPUTS:
                    np.testing.assert_allclose(ours.recheck[name], np.asarray(theirs.recheck[name])[:, keep], rtol=0, atol=1e-5)
    local.close()


def test_omc_track_with_the_triton_backend(served: tuple[Path, Path, LocalTritonServer], tmp_path: Path) -> None:
    export, _, server = served
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for index, frame in enumerate(generated_clip(CLIP_SIZE, 5, seed=3), start=1):
        assert cv2.imwrite(str(frames_dir / f"{index:06d}.png"), frame)
    flags = ["--conf-thres", str(CONFIG.conf_thres)]
    assert main(["track", str(frames_dir), "--backend", "triton", "--url", server.url, "--out", str(tmp_path / "triton.txt"), *flags]) == 0
    assert main(["track", str(frames_dir), "--engines", str(export), "--out", str(tmp_path / "local.txt"), *flags]) == 0
    remote = np.loadtxt(tmp_path / "triton.txt", delimiter=",").reshape(-1, 10)
    local = np.loadtxt(tmp_path / "local.txt", delimiter=",").reshape(-1, 10)
    assert len(local) > 0
    np.testing.assert_array_equal(remote[:, :2], local[:, :2])  # frames and ids
    np.testing.assert_allclose(remote[:, 2:6], local[:, 2:6], rtol=0, atol=BOX_TOLERANCE_PX)
    # With the engine folder too, the served export is checked against it.
    assert main(["track", str(frames_dir), "--backend", "triton", "--url", server.url, "--engines", str(export),
                 "--out", str(tmp_path / "checked.txt"), *flags]) == 0  # fmt: skip


def test_a_server_that_is_down_missing_model_or_other_export_is_one_clear_error(
    served: tuple[Path, Path, LocalTritonServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # omc.cli.main points omc's log handler at the captured stderr; keep that to this test.
    monkeypatch.setattr(logging.getLogger("omc"), "handlers", [])
    export, _, server = served
    nobody = f"127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailable, match=f"Triton server at {nobody} is unreachable"):
        open_engine_pair(None, "triton", url=nobody, timeout_s=5.0)
    with pytest.raises(BadInput, match="serves no model 'nope' \\(its models: omc, omc_detector, omc_recheck\\)"):
        open_engine_pair(None, "triton", url=server.url, model_name="nope")
    other = copy_export(export, tmp_path / "other")
    meta = EngineMeta.load(other)
    (other / contract.EXPORT_JSON).write_text(EngineMeta(**{**meta.__dict__, "max_tracklets": 32}).to_json())
    with pytest.raises(EngineMismatch, match="serves a different export.*max_tracklets: 64 on the server, 32 in export.json"):
        open_engine_pair(other, "triton", url=server.url)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    assert cv2.imwrite(str(frames_dir / "000001.png"), generated_clip(CLIP_SIZE, 1)[0])
    assert main(["track", str(frames_dir), "--backend", "triton", "--url", nobody, "--out", str(tmp_path / "r.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: Triton server at {nobody} is unreachable") and len(err.splitlines()) == 1
    assert not (tmp_path / "r.txt").exists()
    assert main(["track", str(frames_dir), "--backend", "triton", "--out", str(tmp_path / "r.txt")]) == 2
    assert "--backend triton needs --url" in capsys.readouterr().err


def test_a_server_that_stops_mid_stream_makes_the_frame_retryable(served: tuple[Path, Path, LocalTritonServer]) -> None:
    """While the server is gone a frame raises EngineUnavailable; once one is back on the same
    address the same tracker goes on (its shared memory registered again) with the same ids."""
    export, repository, _ = served
    frames = generated_clip(CLIP_SIZE, 6, seed=0)
    with Tracker.from_engines(export, config=CONFIG) as local:
        want = [snapshot(local.update(frame))[0] for frame in frames]
    with LocalTritonServer(repository, server_venv()) as server:
        tracker = Tracker.from_engines(export, backend="triton", url=server.url, config=CONFIG, timeout_s=10.0)
        got = [snapshot(tracker.update(frame))[0] for frame in frames[:3]]
        server.stop()
        with pytest.raises(EngineUnavailable, match="unreachable"):
            tracker.update(frames[3])
        with LocalTritonServer(repository, server_venv(), port=server.port):
            got += [snapshot(tracker.update(frame))[0] for frame in frames[3:]]
        tracker.close()
        tracker.close()
    assert got == want and any(want[:3]) and any(want[3:])


def test_bench_triton_against_a_running_server(served: tuple[Path, Path, LocalTritonServer], tmp_path: Path) -> None:
    export, _, server = served
    results = tmp_path / "bench.json"
    argv = ["bench-triton", "--onnx", str(export), "--url", server.url, "--streams", "2", "--frames", "2", "--rounds", "1",
            "--conf-thres", str(CONFIG.conf_thres), "--results", str(results)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(results.read_text())
    for mode in ("local", "triton"):
        assert len(result["modes"][mode]["frames_per_second"]) == 1 and result["modes"][mode]["median_fps"] > 0
        assert 0 < result["modes"][mode]["latency_p50_ms"] <= result["modes"][mode]["latency_p99_ms"]
    assert result["ratios"]["fps"] == pytest.approx(result["modes"]["triton"]["median_fps"] / result["modes"]["local"]["median_fps"])
    # 2 streams x 2 frames were timed (after a warm-up round) through the server's detector.
    assert sum(int(size) * count for size, count in result["detector_batches"].items()) == 4
    assert "triton / local" in results.with_suffix(".md").read_text()
