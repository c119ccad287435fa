"""omc.files.replacing: all or nothing, and the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from omc.files import replacing


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
