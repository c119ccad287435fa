"""Malformed checkpoints: one line and exit 2 (or, for merely odd training options, a bounded
success), never a traceback, a hang or code run from the file.

Generated cases (Hypothesis): arbitrary pickled structures under the keys a checkpoint uses,
byte-level damage to valid files, and globals outside the allow-list. Hand-made cases: the
config, options and weights the issue lists, through `omc inspect` / `omc export`. Every pickle
case runs under a time limit.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import io
import math
import signal
import sys
import time
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from fault_checks import FAULT_SETTINGS, assert_refused, run_main, snapshot
from hypothesis import given
from hypothesis import strategies as st
from reference_layout import TINY_CONFIG

from omc.errors import CheckpointError, UnsafeCheckpoint
from omc.export.checkpoint import load_checkpoint, resolve_global
from omc.export.checkpoint.architecture_inference import option_flag
from omc.export.model import OMCNetwork, architecture_from_config

# Seconds any one checkpoint may take to be read or refused here (a tiny network; the 2-core CI
# machine is shared). A hang (2^30 leaves) fails the test instead of stalling the suite.
PICKLE_TIME_LIMIT_S = 20.0
SMALL_HW = (192, 320)
RECHECK_CHANNELS = 32


class TookTooLong(BaseException):
    """Raised by the alarm; a BaseException, so no `except Exception` in omc can turn it into a refusal."""


@contextlib.contextmanager
def time_limit(seconds: float = PICKLE_TIME_LIMIT_S) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TookTooLong(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@lru_cache(maxsize=1)
def tiny_state() -> dict[str, torch.Tensor]:
    """A state dict that fits TINY_CONFIG with the re-check network (default init: values do not matter)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = OMCNetwork(architecture_from_config(TINY_CONFIG, recheck_channels=RECHECK_CHANNELS), SMALL_HW)
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def save(path: Path, obj: Any, **kwargs: Any) -> Path:
    """torch.save with room for deeply nested values (the pickler recurses)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        torch.save(obj, path, **kwargs)
    finally:
        sys.setrecursionlimit(limit)
    return path


def checkpoint(path: Path, *, config: Any = None, options: Any = None, state: dict[str, Any] | None = None) -> Path:
    """A plain state-dict checkpoint of the tiny network with a stored config and options."""
    return save(path, {"model": tiny_state() if state is None else state,
                       "yaml": copy.deepcopy(TINY_CONFIG) if config is None else config,
                       "opt": {} if options is None else options})  # fmt: skip


def inspect(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    started = time.perf_counter()
    with time_limit():
        result = run_main(["inspect", str(path), *extra], capsys)
    assert time.perf_counter() - started < PICKLE_TIME_LIMIT_S
    return result


# --- config, options and weights the issue lists -------------------------------------------------


@pytest.mark.parametrize(
    ("where", "value", "fragment"),
    [
        (("depth_multiple",), "x", "'depth_multiple' must be a positive number, got 'x'"),
        (("width_multiple",), float("nan"), "'width_multiple' must be a positive number"),
        (("nc",), "1", "'nc' must be a positive int"),
        (("id_embedding",), "wide", "its model config does not build an OMC network (ValueError"),
        (("backbone", 1, 3, 0), "x", "layer 1: output channels must be a positive int, got 'x'"),
        (("backbone", 1, 3, 1), "x", "model config layer 1 (Conv, args [128, 'x', 2]) is invalid"),
        (("anchors", 0, 0), "wide", "its model config does not build an OMC network"),
    ],
)
def test_a_malformed_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: tuple[Any, ...], value: Any, fragment: str) -> None:
    config = copy.deepcopy(TINY_CONFIG)
    parent: Any = config
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    path = checkpoint(tmp_path / "ckpt.pt", config=config)
    before = snapshot(tmp_path)
    status, out, err = inspect(path, capsys)
    assert_refused(status, err, f"checkpoint {path}", fragment)
    assert out == "" and snapshot(tmp_path) == before


def test_a_config_nested_thousands_deep_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep: list[Any] = []
    for _ in range(3000):
        deep = [deep]
    config = copy.deepcopy(TINY_CONFIG)
    config["backbone"][0][3] = [deep]
    status, _, err = inspect(checkpoint(tmp_path / "ckpt.pt", config=config), capsys)
    assert_refused(status, err, "nested deeper than 16 levels")


@pytest.mark.parametrize("shape", ["deep", "self-referencing", "cycle"])
def test_odd_training_options_are_shown_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str) -> None:
    """Options are informational: a checkpoint with absurd ones still inspects, bounded in time and size."""
    value: Any = []
    if shape == "deep":  # 3,000 lists deep: a RecursionError before
        for _ in range(3000):
            value = [value]
    elif shape == "self-referencing":  # x = [x, x] thirty times: 2^30 leaves, a hang before
        for _ in range(30):
            value = [value, value]
    else:
        value.append(value)
    path = checkpoint(tmp_path / "ckpt.pt", options={"radius": 3, "x": value})
    status, out, err = inspect(path, capsys, "--json")
    assert status == 0, err
    assert "Traceback" not in err and "shown truncated" in err
    assert len(out) < 200_000  # 2,000 values at most, 16 levels deep
    assert "<truncated>" in out


@pytest.mark.parametrize(
    ("value", "expected"),
    [("False", False), ("false", False), (" OFF ", False), ("no", False), ("0", False), (0, False), (False, False),
     ("True", True), ("yes", True), ("on", True), ("1", True), (1, True), (True, True)],
)  # fmt: skip
def test_global_point_text_forms(value: Any, expected: bool) -> None:
    assert option_flag(value, "Global_Point", Path("ckpt.pt")) is expected


def test_global_point_false_as_text_is_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = inspect(checkpoint(tmp_path / "ckpt.pt", options={"Global_Point": "False"}), capsys)
    assert status == 0, err
    assert "Global_Point off, shrink radius 3" in out


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, None, [1]])
def test_an_unreadable_global_point_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: Any) -> None:
    status, _, err = inspect(checkpoint(tmp_path / "ckpt.pt", options={"Global_Point": value}), capsys)
    assert_refused(status, err, f"records Global_Point {value!r}; expected true or false")


def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = dict(tiny_state())
    state["model.model.0.conv.conv.weight"] = torch.full_like(state["model.model.0.conv.conv.weight"], math.nan)
    state["siambox.proj1.bn.running_var"] = state["siambox.proj1.bn.running_var"].clone()
    state["siambox.proj1.bn.running_var"][0] = math.inf
    status, _, err = inspect(checkpoint(tmp_path / "ckpt.pt", state=state), capsys)
    assert_refused(status, err, "non-finite weights (NaN or inf) in 2 tensor(s)", "model.model.0.conv.conv.weight",
                   "siambox.proj1.bn.running_var")  # fmt: skip


def test_an_absurd_shrink_radius_is_refused_at_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = checkpoint(tmp_path / "ckpt.pt", options={"radius": 10**9})  # loads: only the export is refused
    before = snapshot(tmp_path)
    # -q: the checkpoint loads (logged at info level) before the export is refused.
    status, _, err = run_main(["-q", "export", "--weights", str(path), "--img-size", "320x192", "--out", str(tmp_path / "out")], capsys)
    assert_refused(status, err, "the checkpoint's shrink radius 1000000000 exceeds the 40x24 re-check map",
                   "pass --shrink-radius 1 to 40")  # fmt: skip
    assert snapshot(tmp_path) == before  # no output folder left


def test_a_module_tree_nested_thousands_deep_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pickled `Model` (the reference's class name) whose modules nest 2,000 deep."""
    module = types.ModuleType("models.mot.cstrack")

    class Model(torch.nn.Module):
        pass

    Model.__module__, Model.__qualname__ = module.__name__, "Model"
    module.Model = Model  # type: ignore[attr-defined]
    root = Model()
    inner: torch.nn.Module = root
    for _ in range(2000):
        child = torch.nn.Sequential()
        inner.add_module("m", child)
        inner = child
    saved = {name: sys.modules.get(name) for name in ("models", "models.mot", module.__name__)}
    sys.modules.update({"models": types.ModuleType("models"), "models.mot": types.ModuleType("models.mot"), module.__name__: module})
    try:
        path = save(tmp_path / "ckpt.pt", {"model": root})
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    status, _, err = inspect(path, capsys)
    assert_refused(status, err, "nests modules deeper than 64 levels")


# --- generated structures -------------------------------------------------------------------------

_LEAVES = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | st.binary(max_size=20)
    | st.builds(lambda shape: torch.zeros(shape), st.lists(st.integers(0, 3), max_size=3))
)  # fmt: skip
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8) | st.integers(0, 9), inner, max_size=4)
    | st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=8), inner, max_size=3))
    | st.builds(lambda d: argparse.Namespace(**d), st.dictionaries(st.sampled_from(["Global_Point", "radius", "cfg"]), inner, max_size=3)),
    max_leaves=25,
)
# The keys the checkpoint formats look at (omc.export.checkpoint.formats).
_KEYS = ("model", "ema", "state_dict", "yaml", "opt", "format", "version", "architecture", "training_options", "epoch")
_CHECKPOINT_LIKE = st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=5) | _VALUES


@FAULT_SETTINGS
@given(obj=_CHECKPOINT_LIKE, omc_format=st.booleans())
def test_any_pickled_structure_is_refused_as_a_checkpoint(tmp_path: Path, obj: Any, omc_format: bool) -> None:
    if omc_format and isinstance(obj, dict):
        obj = {**obj, "format": "omc-checkpoint", "version": 1}
    path = save(tmp_path / "generated.pt", obj)
    before = path.read_bytes()
    with time_limit(), pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert path.read_bytes() == before


def _small_valid(legacy: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.arange(6.0)}, "opt": {"radius": 3}}, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@FAULT_SETTINGS
@given(data=st.data(), legacy=st.booleans())
def test_damaged_checkpoint_bytes_are_refused(tmp_path: Path, data: st.DataObject, legacy: bool) -> None:
    valid = _small_valid(legacy)
    cut = data.draw(st.integers(0, len(valid) - 1), label="cut")
    damaged = bytearray(valid[:cut])
    if not legacy and damaged:
        # Overwrite a few bytes too (legacy files are only cut: their header states storage sizes,
        # and a damaged size could ask for an allocation as large as the machine's memory).
        for _ in range(data.draw(st.integers(0, 4), label="flips")):
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(damaged))
    with time_limit(), pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert path.read_bytes() == bytes(damaged)


_MODULE_NAMES = st.sampled_from(["os", "posix", "subprocess", "builtins", "sys", "shutil", "importlib", "torch",
                                 "numpy", "pickle", "runpy", "webbrowser", "socket", "ctypes", "code", "pty"])  # fmt: skip
_GLOBAL_NAMES = st.sampled_from(["system", "eval", "exec", "Popen", "rmtree", "import_module", "load", "loads",
                                 "__import__", "getattr", "setattr", "open", "run_path", "spawn", "CDLL", "interact"])  # fmt: skip


def _text(value: str) -> bytes:
    encoded = value.encode()
    return b"X" + len(encoded).to_bytes(4, "little") + encoded  # BINUNICODE


def payload_pickle(module: str, name: str, opcode: str) -> bytes:
    """{'model': module.name('touch marker')} as a pickle calling the global through `opcode`."""
    target = f"{module}\n{name}\n".encode()
    if opcode == "GLOBAL-0":  # protocol 0 text: MARK DICT, key, GLOBAL, MARK arg TUPLE, REDUCE, SETITEM
        return b"(dp0\nVmodel\np1\nc" + target + b"(Vtouch marker\ntRp2\ns."
    if opcode == "INST":  # protocol 0: MARK arg INST module name
        return b"(dp0\nVmodel\np1\n(Vtouch marker\ni" + target + b"s."
    if opcode == "GLOBAL-2":
        return b"\x80\x02}" + _text("model") + b"c" + target + b"(" + _text("touch marker") + b"tRs."
    # protocol 4: module and name pushed as strings, STACK_GLOBAL
    return b"\x80\x04}" + _text("model") + _text(module) + _text(name) + b"\x93(" + _text("touch marker") + b"tRs."


@FAULT_SETTINGS
@given(module=_MODULE_NAMES, name=_GLOBAL_NAMES, opcode=st.sampled_from(["GLOBAL-0", "INST", "GLOBAL-2", "STACK_GLOBAL"]))
def test_a_global_outside_the_allow_list_is_refused_before_lookup(tmp_path: Path, module: str, name: str, opcode: str) -> None:
    path = tmp_path / "payload.pt"
    path.write_bytes(payload_pickle(module, name, opcode))
    with time_limit(), pytest.raises(UnsafeCheckpoint, match=f"'{module}.{name}'"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpoint):
        resolve_global(module, name)
    assert not (tmp_path / "marker").exists()
