"""omc.files: all-or-nothing writes, refusals of special targets, and a run's declared files.

Special files are made inside the test's own temporary folder (a FIFO, a UNIX socket, and a
character device node with mknod when the user may create one); no real device is touched.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omc.files
from omc.errors import BadInput
from omc.files import PendingFile, RunFiles, partial_path, replacing

# Deterministic, no example database written into the checkout, no per-example deadline (the
# 2-core CI machine is shared), few examples: these are file-system tests.
FILE_SETTINGS = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def test_replaces_on_success_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "new" / "result.json"
    previous = os.umask(0o022)
    try:
        with replacing(target) as temporary:
            assert temporary.parent == target.parent and temporary != target
            temporary.write_text("{}")
            assert not target.exists()  # nothing visible until the block succeeds
    finally:
        os.umask(previous)
    assert target.read_text() == "{}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # 0666 & ~0022, not mkstemp's 0600
    assert os.listdir(target.parent) == ["result.json"]


def test_a_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "calib.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with replacing(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["calib.npz"]


def test_a_failed_rename_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "plan.json"
    target.write_text("old")

    def refuse(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(omc.files.os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        with replacing(target) as temporary:
            temporary.write_text("new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["plan.json"]


def test_ctrl_c_inside_the_block_leaves_no_temporary(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with replacing(tmp_path / "out.txt") as temporary:
            temporary.write_text("half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


# --- special files ----------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temporary folder with a short path (a UNIX socket path is limited to about 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="omc-", dir="/tmp") as folder:
        yield Path(folder)


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


def make_device(path: Path) -> Path:
    """A character device node with /dev/null's numbers (1, 3), inside the test's folder."""
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating device nodes is not permitted here (mknod needs CAP_MKNOD); FIFO and socket cases still ran")
    return path


SPECIAL_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "folder": (lambda p: (p.mkdir(), p)[1], "is a folder"),
    "fifo": (make_fifo, r"is a FIFO \(named pipe\)"),
    "socket": (make_socket, "is a socket"),
    "device": (make_device, "is a character device"),
}


@pytest.mark.parametrize("kind", list(SPECIAL_FILES))
def test_a_special_target_is_refused_and_left_alone(short_dir: Path, kind: str) -> None:
    make, message = SPECIAL_FILES[kind]
    target = make(short_dir / "out")
    mode = os.lstat(target).st_mode
    with pytest.raises(BadInput, match=f"--out {target} {message}, not a regular file"):
        with replacing(target, what="--out") as temporary:
            temporary.write_text("results")
    with pytest.raises(BadInput, match=message):
        PendingFile(target, visible=True, what="--out")
    with pytest.raises(BadInput, match=message):
        RunFiles().write(target, "--out")
    assert os.lstat(target).st_mode == mode  # still the same special file
    assert sorted(os.listdir(short_dir)) == ["out"]


def test_a_link_to_a_special_file_is_refused(short_dir: Path) -> None:
    fifo = make_fifo(short_dir / "pipe")
    (short_dir / "link.txt").symlink_to(fifo)
    with pytest.raises(BadInput, match="is a FIFO"):
        RunFiles().write(short_dir / "link.txt", "--out")


def test_a_special_file_under_the_visible_temporary_name_is_refused(short_dir: Path) -> None:
    target = short_dir / "res.txt"
    make_fifo(partial_path(target))
    with pytest.raises(BadInput, match=r"res\.partial\.txt \(the temporary file of --out .*res\.txt\) exists and is not a regular file"):
        PendingFile(target, visible=True, what="--out")
    assert stat.S_ISFIFO(os.lstat(partial_path(target)).st_mode)


def test_a_folder_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "sub" / "video.mp4"
    with pytest.raises(BadInput, match=r"cannot be written: its folder cannot be created, .*file is a file"):
        RunFiles().write(target, "--save-video")
    with pytest.raises(BadInput, match="its folder cannot be created"):
        PendingFile(target, what="--save-video")
    assert os.listdir(tmp_path) == ["file"]


def test_partial_path_keeps_the_suffix_last() -> None:
    assert partial_path(Path("runs/res.txt")) == Path("runs/res.partial.txt")
    assert partial_path(Path("demo.mp4")) == Path("demo.partial.mp4")
    assert partial_path(Path("results")) == Path("results.partial")


def test_a_visible_temporary_left_by_a_killed_run_is_started_afresh(tmp_path: Path) -> None:
    target = tmp_path / "res.txt"
    partial_path(target).write_text("1,1,0,0,1,1,1,-1,-1,-1\n")
    pending = PendingFile(target, visible=True)
    assert pending.temporary.read_text() == ""
    pending.temporary.write_text("new\n")
    assert pending.commit() == target and target.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["res.txt"]


# --- a run's inputs and outputs -----------------------------------------------------------------


def test_an_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"video")
    files = RunFiles()
    files.read(clip, "SOURCE")
    with pytest.raises(BadInput, match=r"--out .*clip\.mp4 is an input of this run \(SOURCE .*clip\.mp4\)"):
        files.write(clip, "--out")
    (tmp_path / "alias.txt").symlink_to(clip)
    os.link(clip, tmp_path / "hard.txt")
    for alias in ("alias.txt", "hard.txt"):
        with pytest.raises(BadInput, match="is an input of this run"):
            files.write(tmp_path / alias, "--out")
    assert clip.read_bytes() == b"video"


def test_two_outputs_that_are_one_file_are_refused(tmp_path: Path) -> None:
    files = RunFiles()
    files.write(tmp_path / "same.mp4", "--out")
    with pytest.raises(BadInput, match=r"--save-video .*same\.mp4 and --out .*same\.mp4 are the same file"):
        files.write(tmp_path / "sub" / ".." / "same.mp4", "--save-video")


def test_an_output_may_not_be_another_outputs_temporary_file(tmp_path: Path) -> None:
    files = RunFiles()
    files.write(tmp_path / "demo.partial.mp4", "--out", partial=True)
    with pytest.raises(BadInput, match=r"the temporary file of --save-video .*demo\.partial\.mp4 and --out"):
        files.write(tmp_path / "demo.mp4", "--save-video", partial=True)


def test_files_of_an_input_folder_are_inputs(tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "export.json").write_text("{}")
    files = RunFiles()
    files.read(engines, "--engines")
    with pytest.raises(BadInput, match=r"export\.json is an input of this run"):
        files.write(engines / "export.json", "--out")
    assert files.write(engines / "results.txt", "--out") == engines / "results.txt"  # a new file is fine


def _spellings(draw: st.DrawFn, parts: tuple[str, ...]) -> str:
    """A path to `parts` (relative to a folder that has sub/) written with ./ and sub/.. detours."""
    pieces: list[str] = []
    for part in parts:
        pieces += draw(st.lists(st.sampled_from([".", "sub/.."]), max_size=2))
        pieces.append(part)
    return "/".join(pieces)


@FILE_SETTINGS
@given(spelling=st.data(), link=st.booleans())
def test_any_spelling_of_an_input_is_refused(tmp_path: Path, spelling: st.DataObject, link: bool) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    (root / "sub").mkdir()
    (root / "data").mkdir()
    source = root / "data" / "frames.txt"
    source.write_text("x")
    if link:
        (root / "via").symlink_to(root / "data")
    files = RunFiles()
    files.read(source, "SOURCE")
    written = _spellings(spelling.draw, ("via" if link else "data", "frames.txt"))
    with pytest.raises(BadInput, match="is an input of this run"):
        files.write(root / written, "--out")
    assert source.read_text() == "x"


# --- every writer goes through the helper --------------------------------------------------------


def _header() -> Any:
    from omc.contract import EngineMeta
    from omc.runtime.backends.engine_header import EngineHeader

    return EngineHeader(engine="detector", edition="rtx", tensorrt_version="1", gpu_targets=(), portable=True,
                        plan_sha256="0" * 64, plan_bytes=0, profiles={}, export=EngineMeta().to_dict(),
                        onnx_dir="", omc_version="test")  # fmt: skip


def _video(path: Path) -> None:
    from omc.apps.draw import OverlayVideoWriter

    writer = OverlayVideoWriter(path, 10.0, (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.close()


def _results(path: Path) -> None:
    from omc.apps.results import MotResultsWriter

    writer = MotResultsWriter(path)
    writer.write_frame(1, np.array([1]), np.array([[0.0, 0.0, 4.0, 4.0]]), np.array([0.9]))
    writer.close()


def _eval_json(path: Path) -> None:
    from omc.apps.evaluate import EvalReport

    EvalReport({}).write_json(path)


def _plan_header(path: Path) -> None:
    from omc.runtime.backends.engine_header import write_header

    write_header(path.with_suffix(".plan"), _header())


def _trt_bytes(path: Path) -> None:
    from omc.export.trt.builder import _write_atomically

    _write_atomically(path, b"plan")


def _quantize_file(path: Path) -> None:
    from omc.calib.quantize import _write_atomically

    _write_atomically(path, lambda temporary: temporary.write_text("{}"))


def _bench_report(path: Path) -> None:
    from omc.benchmarks.report import write_text_atomically

    write_text_atomically(path, "text")


WRITERS: dict[str, Callable[[Path], None]] = {
    "MotResultsWriter": _results,
    "OverlayVideoWriter": _video,
    "EvalReport.write_json": _eval_json,
    "engine_header.write_header": _plan_header,
    "trt.builder plans": _trt_bytes,
    "quantize graphs": _quantize_file,
    "benchmark reports": _bench_report,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_leaves_nothing_when_its_final_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    target = tmp_path / "out.json" if name != "OverlayVideoWriter" else tmp_path / "out.mp4"

    def refuse(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(omc.files.os, "replace", refuse)  # the helper's rename, and only it
    with pytest.raises(OSError, match="No space"):
        WRITERS[name](target)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_refuses_a_fifo_target(short_dir: Path, name: str) -> None:
    target = make_fifo(short_dir / ("out.mp4" if name == "OverlayVideoWriter" else "out.json"))
    if name == "engine_header.write_header":
        target.rename(short_dir / "out.plan.json")
        target = short_dir / "out.json"
    with pytest.raises(BadInput, match="is a FIFO"):
        WRITERS[name](target)
    assert len(os.listdir(short_dir)) == 1
