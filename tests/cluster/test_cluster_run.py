"""omc cluster on a local Ray (127.0.0.1, 2 CPUs, started once for this module and stopped after it):
two stream workers against the single-process runtime, a worker killed mid-run, a pin no machine
meets, and `omc cluster status` from another process.

Results are compared through the MOTChallenge files both ways write: frames and ids exactly,
boxes within 0.011 px (the files round to 0.01 px; both ways run the same engines with one
ONNX Runtime thread per operator, so they agree to the last digit in practice).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from cluster_sources import RATE_FILE, TeeLiveSource, write_video
from paths import REPO_ROOT
from rtsp import RtspServer, rtsp_available
from small_export import copy_export, small_export

from omc.apps.results import read_track_records
from omc.apps.streams_file import StreamEntry
from omc.config import ClusterConfig, StreamConfig, TrackerConfig
from omc.errors import BadInput
from omc.runtime.streams import StreamSpec

# A low threshold gives the small random network tracks to compare.
TRACKER = TrackerConfig(conf_thres=0.05)
# Frames of the file streams (different lengths: streams end at different times) and the RTSP one.
FILE_FRAMES = (36, 40, 44, 48)
RTSP_FRAMES = 30
BOX_TOLERANCE_PX = 0.011
LOCAL_CPUS = 2
# Seconds the local Ray may take to start on a busy 2-core machine.
RAY_START_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module: 2 CPUs on 127.0.0.1, shut down after the last test."""
    from omc.apps.cluster import ray_session

    address = ray_session.start_local(LOCAL_CPUS, 0, RAY_START_TIMEOUT_S)
    assert ray_session.is_loopback(address)
    assert all(node.ip == "127.0.0.1" for node in ray_session.live_nodes())
    yield address
    ray_session.shutdown()


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return copy_export(small_export(), tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return [write_video(folder / f"v{i}.mp4", frames, shift=i) for i, frames in enumerate(FILE_FRAMES)]


def file_entries(videos: list[Path]) -> list[StreamEntry]:
    return [StreamEntry(StreamSpec(f"cam{i}", video, mode="every", tracker=TRACKER)) for i, video in enumerate(videos)]


def single_process(engines: Path, specs: list[StreamSpec], out: Path) -> dict[str, MotRows]:
    """Each stream's MOTChallenge table from the single-process runtime (one thread per operator,
    as a worker with cpus_per_worker = 1 runs)."""
    from omc.apps.track import StreamOutputs, track_streams
    from omc.runtime.streams import StreamRuntime

    outputs = StreamOutputs({s.name: out / f"{s.name}.txt" for s in specs}, {}, out / "tracks.jsonl")
    with StreamRuntime.from_engines(engines, specs, intra_op_threads=1) as runtime:
        track_streams(runtime, outputs)
    return {s.name: read_rows(out / f"{s.name}.txt") for s in specs}


@pytest.fixture(scope="module")
def file_reference(engines, videos, tmp_path_factory):
    specs = [entry.spec for entry in file_entries(videos)]
    return single_process(engines, specs, tmp_path_factory.mktemp("reference"))


def make_run(entries, engines, out, name, address, config=ClusterConfig(workers=2), on_write=None):
    from omc.apps.cluster.controller import ClusterRun
    from omc.apps.cluster.placement import plan_cluster
    from omc.apps.cluster.ray_session import live_nodes

    plan = plan_cluster(entries, config, live_nodes(), name)
    run = ClusterRun(entries, plan, engines, out, config, StreamConfig(), run_name=name, address=address, on_write=on_write)
    return plan, run


@dataclass(frozen=True)
class MotRows:
    """A MOTChallenge results file's rows, read without omc's checks (the random network's Kalman
    boxes may have a negative width, which read_mot_txt refuses). frames, ids: [N]; boxes: [N, 4]."""

    frames: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)

    def select(self, mask: np.ndarray) -> "MotRows":
        return MotRows(self.frames[mask], self.ids[mask], self.boxes[mask])


def read_rows(path: Path) -> MotRows:
    rows = np.loadtxt(path, delimiter=",", ndmin=2).reshape(-1, 10)
    return MotRows(rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 2:6])


def assert_same_table(got: MotRows, want: MotRows, what: str) -> None:
    assert len(got) == len(want) > 0, f"{what}: {len(got)} rows, expected {len(want)}"
    assert np.array_equal(got.frames, want.frames), what
    assert np.array_equal(got.ids, want.ids), what
    assert np.abs(got.boxes - want.boxes).max() <= BOX_TOLERANCE_PX, what


def records_by_stream(path: Path) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in read_track_records(path):
        grouped.setdefault(record["stream"], []).append(record)
    return grouped


def test_two_workers_match_the_single_process_runtime(ray_address, engines, videos, file_reference, tmp_path):
    reason = rtsp_available()
    assert reason is None, reason  # make test installs it (make live-deps): never skipped
    out, tee = tmp_path / "out", tmp_path / "rtsp_frames"
    with RtspServer() as server:
        live = StreamEntry(StreamSpec("live", TeeLiveSource(server.url, tee), mode="every", tracker=TRACKER, max_frames=RTSP_FRAMES))
        entries = [*file_entries(videos), live]
        status_call: list[subprocess.Popen[str]] = []

        def ask_status(result) -> None:  # another process reads the table while the run goes on
            if not status_call and result.frame_index >= 5:
                status_call.append(subprocess.Popen(
                    [sys.executable, "-m", "omc", "cluster", "status", "--out-dir", str(out)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                ))  # fmt: skip

        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[TeeLiveSource.__module__])
        plan, run = make_run(entries, engines, out, "equal", ray_address, on_write=ask_status)
        run.start()
        run_file = json.loads((out / "cluster.json").read_text())
        summary = run.run()
    assert run_file["address"] == ray_address and run_file["run"] == "equal"
    assert not (out / "cluster.json").exists()  # removed when the run ends

    # Round-robin in file order over the 2 workers; each ran exactly the streams it was given.
    assert plan.assignment == {
        "cam0": "equal-w1", "cam1": "equal-w2", "cam2": "equal-w1", "cam3": "equal-w2", "live": "equal-w1",
    }  # fmt: skip
    rows = {row.stream: row for row in summary.status.rows}
    assert {name: row.worker for name, row in rows.items()} == plan.assignment
    assert all(row.machine == "127.0.0.1" and row.epoch == 0 and row.state == "finished" for row in rows.values()), rows
    assert summary.worker_failures == 0
    assert [rows[f"cam{i}"].frames for i in range(4)] == list(FILE_FRAMES) and rows["live"].frames == RTSP_FRAMES

    # Every file stream equals the single-process runtime on the same file.
    for name, want in file_reference.items():
        assert_same_table(read_rows(out / f"{name}.txt"), want, name)
    # The live stream equals the single-process runtime on the frames the worker read (kept by
    # the tee source); a reconnect would have changed the input, so there must be none.
    assert rows["live"].reconnects == 0 and rows["live"].dropped == 0
    assert len(list(tee.glob("*.png"))) == RTSP_FRAMES
    rate = float((tee / RATE_FILE).read_text())
    live_reference = single_process(engines, [StreamSpec("live", tee, "every", rate, TRACKER)], tmp_path / "live_reference")
    assert_same_table(read_rows(out / "live.txt"), live_reference["live"], "live")

    records = records_by_stream(out / "tracks.jsonl")
    for name, row in rows.items():
        assert [r["frame"] for r in records[name]] == list(range(1, row.frames + 1)), name
        assert {r["epoch"] for r in records[name]} == {0}

    # `omc cluster status` from another process printed every stream's row mid-run.
    assert status_call, "the run wrote no frame 5"
    text, err = status_call[0].communicate(timeout=120)
    assert status_call[0].returncode == 0, err
    lines = text.strip().splitlines()
    assert lines[0].startswith("run equal on 127.0.0.1:") and lines[1].split()[:4] == ["STREAM", "STATE", "WORKER", "MACHINE"]
    table = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(table) == set(plan.assignment)
    for name, cells in table.items():
        assert cells[2] == plan.assignment[name] and cells[3] == "127.0.0.1", cells


def test_a_killed_worker_s_streams_continue_on_the_other(ray_address, engines, videos, file_reference, tmp_path):
    import ray

    out = tmp_path / "out"
    written_before_kill: dict[str, int] = {}
    killed: list[str] = []

    def kill_worker_1(result) -> None:
        # Once cam0 and the live stream (on worker 1) have frames written, kill worker 1 outright.
        if not killed and run.frames_written("cam0") >= 8 and run.frames_written("live") >= 3:
            killed.append("kill-w1")
            ray.kill(run.worker_handle("kill-w1"))
            written_before_kill.update({name: run.frames_written(name) for name in ("cam0", "cam2", "live")})

    with RtspServer() as server:
        # A live stream on worker 1 too; every-frame mode so that its 40 frames are all written.
        live = StreamEntry(StreamSpec("live", server.url, mode="every", tracker=TRACKER, max_frames=40))
        plan, run = make_run([*file_entries(videos), live], engines, out, "kill", ray_address, on_write=kill_worker_1)
        assert plan.streams_of("kill-w1") == ["cam0", "cam2", "live"] and plan.streams_of("kill-w2") == ["cam1", "cam3"]
        run.start()
        summary = run.run()
    assert killed, "the run ended before worker 1 could be killed"
    assert summary.worker_failures == 1
    rows = {row.stream: row for row in summary.status.rows}
    records = records_by_stream(out / "tracks.jsonl")

    # The restart shows in the table: the moved streams run on worker 2 in epoch 1.
    for name in ("cam0", "cam2", "live"):
        assert (rows[name].worker, rows[name].epoch, rows[name].state) == ("kill-w2", 1, "finished"), rows[name]
    # The other worker's streams were not disturbed: epoch 0 and equal to the single process.
    for name in ("cam1", "cam3"):
        assert (rows[name].worker, rows[name].epoch) == ("kill-w2", 0)
        assert_same_table(read_rows(out / f"{name}.txt"), file_reference[name], name)
        assert {r["epoch"] for r in records[name]} == {0}

    for index, name in ((0, "cam0"), (2, "cam2")):
        frames = FILE_FRAMES[index]
        mine = records[name]
        # Every frame once: resumed after the last written one, nothing written twice or lost.
        assert [r["frame"] for r in mine] == list(range(1, frames + 1)), name
        epochs = [r["epoch"] for r in mine]
        first_new = epochs.index(1)
        assert epochs == [0] * first_new + [1] * (frames - first_new), name
        assert first_new >= written_before_kill[name], name  # what was written before the kill stays
        # Frames written before the kill are those of the single-process run, unchanged.
        table, want = read_rows(out / f"{name}.txt"), file_reference[name]
        before = table.select(table.frames <= first_new)
        assert_same_table(before, want.select(want.frames <= first_new), f"{name} before the kill")
        # After it: a new tracker whose ids lie above every earlier id (an offset), unambiguous.
        after = table.select(table.frames > first_new)
        if len(before) and len(after):
            assert after.ids.min() > before.ids.max(), name
        new_ids = [t["id"] for r in mine[first_new:] for t in r["tracks"]]
        old_ids = [t["id"] for r in mine[:first_new] for t in r["tracks"]]
        assert not set(new_ids) & set(old_ids)
        assert mine[first_new]["skipped"] == 0  # a file loses no frame across the move

    # The live stream resumed at its live position: frame indices go on increasing past the gap,
    # the first frame after it counts the frames sent meanwhile as skipped, ids are offset.
    mine = records["live"]
    frames, epochs = [r["frame"] for r in mine], [r["epoch"] for r in mine]
    assert frames == sorted(set(frames)) and len(mine) == 40
    first_new = epochs.index(1)
    assert epochs == [0] * first_new + [1] * (40 - first_new) and first_new >= written_before_kill["live"]
    gap = mine[first_new]
    assert gap["frame"] - mine[first_new - 1]["frame"] == gap["skipped"] + 1 and gap["skipped"] > 0
    old_ids = {t["id"] for r in mine[:first_new] for t in r["tracks"]}
    new_ids = {t["id"] for r in mine[first_new:] for t in r["tracks"]}
    assert not old_ids or not new_ids or min(new_ids) > max(old_ids)


def test_a_pin_no_machine_meets_is_refused_in_one_line(ray_address, engines, videos):
    from omc.apps.cluster.placement import plan_cluster
    from omc.apps.cluster.ray_session import live_nodes

    pinned = StreamEntry(StreamSpec("door", videos[0], tracker=TRACKER), placement={"resources": {"site_b": 1}})
    with pytest.raises(BadInput) as caught:
        plan_cluster([*file_entries(videos[1:]), pinned], ClusterConfig(workers=1), live_nodes(), "pin")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("stream door needs a worker with site_b=1, CPU=1 but no machine of the Ray cluster has them")
    assert "ray start --resources='{site_b=1}'" in message

    on_node = replace(pinned, placement={"node": "site=b"})
    with pytest.raises(BadInput, match="stream door is pinned to node 'site=b' but no machine of the Ray cluster matches it"):
        plan_cluster([on_node], ClusterConfig(), live_nodes(), "pin")


def test_cli_refuses_a_pin_at_start_with_one_line(engines, videos, tmp_path):
    streams = tmp_path / "streams.toml"
    streams.write_text(
        f'[[streams]]\nname = "door"\nurl = "{videos[0]}"\nresources = {{ site_b = 1 }}\n'
        f'[[streams]]\nname = "hall"\nurl = "{videos[1]}"\n[cluster]\nworkers = 1\n'
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "omc", "cluster", "run", str(streams), "--engines", str(engines), "--out-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stream door needs a worker with site_b=1"), result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything started or was written
    assert time.monotonic() - started < 60



def test_cli_runs_a_streams_file_end_to_end_on_its_own_local_ray(engines, videos, tmp_path):
    streams = tmp_path / "site.toml"
    streams.write_text(
        "[defaults]\nmax_frames = 12\n[defaults.tracker]\nconf_thres = 0.05\n"
        + "".join(f'[[streams]]\nname = "cam{i}"\nurl = "{video}"\n' for i, video in enumerate(videos[:2]))
        + "[cluster]\nworkers = 1\ncpus_per_worker = 1\n"
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "omc", "cluster", "run", str(streams), "--engines", str(engines), "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "local Ray started at 127.0.0.1:" in result.stderr
    assert "24 frames in " in result.stderr and "0 worker(s) lost" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["cam0.txt", "cam1.txt", "tracks.jsonl"]  # no .partial, no cluster.json
    records = records_by_stream(out / "tracks.jsonl")
    assert {name: [r["frame"] for r in rows] for name, rows in records.items()} == {
        "cam0": list(range(1, 13)), "cam1": list(range(1, 13)),
    }  # fmt: skip
    table = [line.split() for line in result.stderr.splitlines() if line.startswith("cam")]
    assert [(cells[0], cells[1], cells[2], cells[3]) for cells in table[-2:]] == [
        ("cam0", "finished", "site-w1", "127.0.0.1"), ("cam1", "finished", "site-w1", "127.0.0.1"),
    ]  # fmt: skip
