"""Malformed export.json files and engines: one line, exit 2, inputs untouched; NaN weights in an
export yield NaN rows the runtime drops instead of a crash inside ONNX Runtime.

Generated cases (Hypothesis): any JSON value in place of any export.json key. Hand-made cases:
the values the issue lists, ONNX files stripped of omc's metadata beside an edited export.json,
damaged and swapped ONNX files, through `omc track`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from fault_checks import FAULT_SETTINGS, assert_refused, run_main, snapshot
from hypothesis import given
from hypothesis import strategies as st
from onnx import numpy_helper

from omc import contract
from omc.contract import EngineMeta
from omc.errors import BadInput, EngineMismatch

W, H = 96, 64


@pytest.fixture
def engines(tmp_path: Path, toy_engines: Path) -> Path:
    """A copy of the toy engines that the test may edit."""
    return Path(shutil.copytree(toy_engines, tmp_path / "engines"))


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(1, 3):
        cv2.imwrite(str(folder / f"{i:06d}.png"), np.full((H, W, 3), 50 * i, np.uint8))
    return folder


def edit_export_json(engines: Path, **values: Any) -> None:
    data = json.loads((engines / contract.EXPORT_JSON).read_text())
    data.update(values)
    (engines / contract.EXPORT_JSON).write_text(json.dumps(data))


def track(capsys: pytest.CaptureFixture[str], frames: Path, engines: Path, out: Path) -> tuple[int, str]:
    status, _, err = run_main(["track", str(frames), "--engines", str(engines), "--out", str(out)], capsys)
    return status, err


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("input_hw", "96x160", "'input_hw' must be a list of two integers, got \"96x160\""),
        ("input_hw", None, "'input_hw' must be a list of two integers, got null"),
        ("input_hw", [96, 160, 3], "'input_hw' must be a list of two integers, got [96, 160, 3]"),
        ("topk", "x", "'topk' must be an integer, got \"x\""),
        ("global_point", "False", "'global_point' must be true or false"),
        ("strides", [], "'strides' must be a list of integers"),
        ("extra", "none", "'extra' must be an object"),
    ],
)
def test_a_mistyped_export_json_is_refused(tmp_path: Path, engines: Path, frames: Path, capsys: pytest.CaptureFixture[str], key: str, value: Any, fragment: str) -> None:
    edit_export_json(engines, **{key: value})
    before = snapshot(tmp_path)
    status, err = track(capsys, frames, engines, tmp_path / "r.txt")
    assert_refused(status, err, f"{engines / contract.EXPORT_JSON}: {fragment}")
    assert snapshot(tmp_path) == before


def test_an_export_json_nested_thousands_deep_is_refused(tmp_path: Path, engines: Path, frames: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (engines / contract.EXPORT_JSON).write_text("[" * 100_000 + "]" * 100_000)
    status, err = track(capsys, frames, engines, tmp_path / "r.txt")
    assert_refused(status, err, "is not a readable export.json")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@FAULT_SETTINGS
@given(key=st.sampled_from(sorted(EngineMeta().to_dict())), value=_JSON)
def test_any_json_value_for_any_key_is_accepted_or_refused_with_one_line(key: str, value: Any) -> None:
    data = EngineMeta().to_dict()
    data[key] = value
    try:
        meta = EngineMeta.from_dict(data)
    except (BadInput, EngineMismatch) as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        return
    meta.validate()  # what was accepted is a valid description
    assert isinstance(meta.input_hw, tuple) and all(isinstance(v, int) for v in meta.input_hw)


def test_onnx_stripped_of_metadata_with_an_edited_export_json_is_refused(tmp_path: Path, engines: Path, frames: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in (contract.DETECTOR_ONNX, contract.RECHECK_ONNX):
        model = onnx.load(str(engines / name))
        del model.metadata_props[:]
        onnx.save(model, str(engines / name))
    edit_export_json(engines, checkpoint_sha256="f" * 64)  # same shapes: only metadata could tell
    before = snapshot(tmp_path)
    status, err = track(capsys, frames, engines, tmp_path / "r.txt")
    assert_refused(status, err, f"{engines / contract.DETECTOR_ONNX} carries no omc export metadata", "re-export with omc export")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "swapped"])
def test_a_damaged_or_swapped_onnx_file_is_refused(tmp_path: Path, engines: Path, frames: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    detector = engines / contract.DETECTOR_ONNX
    data = detector.read_bytes()
    if damage == "truncated":
        detector.write_bytes(data[: len(data) // 2])
    elif damage == "random bytes":
        detector.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif damage == "empty":
        detector.write_bytes(b"")
    else:
        detector.write_bytes((engines / contract.RECHECK_ONNX).read_bytes())
    before = snapshot(tmp_path)
    status, err = track(capsys, frames, engines, tmp_path / "r.txt")
    assert_refused(status, err, str(detector), "re-export with omc export")
    assert snapshot(tmp_path) == before


# --- NaN weights in a real export ---------------------------------------------------------------


def test_nan_centres_get_cell_zero_in_the_graph() -> None:
    """The graph's centre cells on a 4 x 5 map at stride 8 (what the gathers index)."""
    import torch

    from omc.export.graphs import centre_cells

    nan, inf = float("nan"), float("inf")
    corners = torch.tensor([[[nan, nan, nan, nan], [8.0, 8.0, 24.0, 24.0], [inf, 0.0, inf, 0.0], [nan, 8.0, nan, 24.0]]])
    # (8 + 24) / 16 = 2 -> row 2, col 2 -> 2 * 5 + 2 = 12; x = inf -> col 4 (clamped), y = 0 -> row 0 -> 4;
    # a NaN column with row 2 -> 10.
    assert centre_cells(corners, 8, (4, 5)).tolist() == [[0, 12, 4, 10]]


def _with_nan_weights(source: Path, target: Path) -> Path:
    """A copy of an export whose convolution and matrix weights are all NaN (what a checkpoint
    with NaN tensors exported before load refused it); shape constants such as Resize scales stay."""
    shutil.copytree(source, target)
    for name in (contract.DETECTOR_ONNX, contract.RECHECK_ONNX):
        model = onnx.load(str(target / name))
        weights = {i for node in model.graph.node if node.op_type in ("Conv", "ConvTranspose", "MatMul") for i in node.input}
        for initializer in model.graph.initializer:
            array = numpy_helper.to_array(initializer)
            if initializer.name in weights and array.dtype.kind == "f":
                initializer.CopyFrom(numpy_helper.from_array(np.full_like(array, np.nan), initializer.name))
        onnx.save(model, str(target / name))
    return target


@pytest.mark.slow
def test_nan_weights_give_nan_rows_that_are_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ONNX Runtime on an export with NaN forced into its weights: every detector row is NaN, the
    gathers stay in range (before, GatherElements failed on the NaN centre cells), and `omc
    track` drops the rows and goes on: exit 0, a valid empty results file."""
    from small_export import SMALL_SIZE, small_export

    from omc.runtime.backends import open_engines

    engines = _with_nan_weights(small_export(), tmp_path / "nan")
    detector, recheck, meta = open_engines(engines)
    assert recheck is not None
    try:
        width, height = SMALL_SIZE
        images = np.random.default_rng(0).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        outputs = {name: np.asarray(value) for name, value in detector.infer({contract.IMAGES: images}).items()}
        assert np.isnan(outputs[contract.DET_SCORES]).all() and np.isnan(outputs[contract.DET_EMBEDDINGS]).all()
        feeds = {name: outputs[name][:1] for name in contract.RECHECK_FEEDS_FROM_DETECTOR}
        feeds[contract.TRACKLETS] = np.ones((3, meta.embedding_dim), np.float32)
        rechecked = {name: np.asarray(value) for name, value in recheck.infer(feeds).items()}
        # NaN heat never equals its pooled maximum: the peak suppression turns it to 0.
        assert rechecked[contract.TRANS_SCORES].shape == (1, meta.peaks) and (rechecked[contract.TRANS_SCORES] == 0).all()
        assert rechecked[contract.TRANS_BOXES].shape == (1, meta.peaks, 4)
    finally:
        detector.deactivate()
        recheck.deactivate()

    clip = tmp_path / "frames"
    clip.mkdir()
    for i in range(1, 4):
        cv2.imwrite(str(clip / f"{i:06d}.png"), np.full((height, width, 3), 40 * i, np.uint8))
    out = tmp_path / "r.txt"
    status, _, err = run_main(["track", str(clip), "--engines", str(engines), "--out", str(out)], capsys)
    assert status == 0, err
    assert "Traceback" not in err and "with a NaN or inf score" in err  # the drop is logged
    assert out.read_text() == ""
