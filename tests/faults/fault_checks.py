"""What every fault-injection test asserts, in one place.

A refused input or output must give: exit status 2, exactly one line on stderr starting with
`error: `, no traceback; every input byte-identical afterwards; no file created, half-written
or left under a temporary name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, settings

from omc.cli import main

# Property-based cases: deterministic (CI runs the same examples every time), no example database
# written into the checkout, no per-example deadline (the 2-core CI machine is shared; time is
# bounded per test instead), few examples.
FAULT_SETTINGS = settings(max_examples=30, deadline=None, database=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


def run_main(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`omc ARGV` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_refused(status: int, err: str, *fragments: str) -> None:
    """Exit 2 and one `error:` line (naming each fragment) on stderr, no traceback."""
    assert status == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` (files or folders, recursively) -> its SHA-256; special files -> their kind.

    Equal snapshots before and after a run mean: no input changed, nothing was added or left behind.
    """
    digests: dict[str, str] = {}
    for root in roots:
        paths: Iterable[Path] = [root] if not root.is_dir() else sorted(root.rglob("*"))
        for path in paths:
            if path.is_symlink() or not path.is_file():
                digests[str(path)] = "dir" if path.is_dir() else f"special {os.lstat(path).st_mode:o}"
            else:
                digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests
