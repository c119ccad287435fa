"""`omc inspect` through `python -m omc` in a subprocess: facts on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import reference_layout as ref  # tests/ is on sys.path through its conftest.py
from test_checkpoint_unsafe import call_pickle, torch_zip_with  # tests/unit is on sys.path under pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_omc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omc", *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def stage2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = torch.rand(1, 3, 192, 320, generator=torch.Generator().manual_seed(0))
    tracklets = F.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)), dim=1)
    with ref.registered_reference_modules():
        siam = ref.build_siammot(image, tracklets)
        path = tmp_path_factory.mktemp("inspect") / "omc_tiny.pt"
        torch.save(ref.training_checkpoint(siam), path)
    return path


def test_inspect_prints_the_facts(stage2_file: Path) -> None:
    result = run_omc("inspect", str(stage2_file))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "reference stage-2 training checkpoint" in out
    assert "variant       custom (depth_multiple 0.33, width_multiple 0.125)" in out
    # Same config and C as the tiny reference fixture: 3,993,630 parameters (66,918 in the re-check heads).
    assert "parameters    3,993,630 (base 3,926,712, re-check 66,918)" in out
    assert "re-check      yes, channel base C = 32, Global_Point on, shrink radius 3" in out
    assert "- [17, 1, CCN, [9, 32]]  # 24" in out and "- [[24, 25, 26], 1, Detect, [nc, anchors, 0]]  # 29" in out
    assert "\n  radius: 3\n" in out and "\n  Global_Point: 1\n" in out
    assert "Traceback" not in result.stderr


def test_inspect_json(stage2_file: Path) -> None:
    result = run_omc("inspect", str(stage2_file), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["parameters"] == 3_993_630 and facts["has_recheck"] and facts["recheck_channels"] == 32
    assert facts["format"] == "reference-stage2" and facts["training_options"]["radius"] == 3
    assert facts["level_channels"] == [32, 64, 128] and len(facts["sha256"]) == 64


def test_inspect_random_weights() -> None:
    result = run_omc("inspect", "--random-weights", "--variant", "s", "--seed", "1", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["format"] == "random" and facts["variant"] == "s" and facts["recheck_channels"] == 128
    assert "RANDOM WEIGHTS" in result.stderr


def test_inspect_missing_file_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_omc("inspect", str(tmp_path / "nope.pt")), "not found", "nope.pt")


def test_inspect_malicious_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = torch_zip_with(call_pickle("os", "system", f"touch {marker}"), tmp_path / "evil.pt")
    assert_one_line_error(run_omc("inspect", str(path)), "'os.system'", "nothing was run")
    assert not marker.exists()


def test_inspect_needs_exactly_one_source(stage2_file: Path) -> None:
    assert_one_line_error(run_omc("inspect"), "--random-weights")
    assert_one_line_error(run_omc("inspect", str(stage2_file), "--random-weights"), "not both")
