"""Weights that do not fit the architecture a checkpoint describes: one CheckpointError listing the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import reference_layout as ref  # tests/ is on sys.path through its conftest.py
from omc.errors import CheckpointError
from omc.export.checkpoint import MAX_LISTED_KEYS, load_checkpoint
from omc.export.model import architecture_from_config, build_network

INPUT_HW = (192, 320)


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    network = build_network(architecture_from_config(ref.TINY_CONFIG, recheck_channels=32), INPUT_HW)
    return {k: v.half() if v.is_floating_point() else v for k, v in network.state_dict().items()}


def _load_error(tmp_path: Path, payload: dict) -> str:  # type: ignore[type-arg]
    path = tmp_path / "misfit.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, input_hw=INPUT_HW)
    return str(caught.value)


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    broken = dict(state)
    del broken["model.model.29.k"]
    broken["model.model.30.weight"] = torch.zeros(3)
    broken["model.model.27.node.2.bias"] = torch.zeros(7)
    message = _load_error(tmp_path, {"model": broken, "yaml": ref.TINY_CONFIG})
    assert str(tmp_path / "misfit.pt") in message
    assert "1 missing: model.model.29.k" in message
    assert "1 unexpected: model.model.30.weight" in message
    assert "1 mis-shaped: model.model.27.node.2.bias (file [7], model [512])" in message
    assert "\n" not in message


def test_long_listings_are_cut(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    broken = {k: v for k, v in state.items() if not k.startswith("siamheatmap.")}
    message = _load_error(tmp_path, {"model": broken})
    missing = [k for k in state if k.startswith("siamheatmap.") and not k.endswith("num_batches_tracked")]
    assert f"{len(missing)} missing" in message
    assert f"(+{len(missing) - MAX_LISTED_KEYS} more)" in message


def test_weights_of_another_width_than_the_recorded_config(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    config = dict(ref.TINY_CONFIG, width_multiple=0.25)  # the weights are width 0.125
    message = _load_error(tmp_path, {"model": state, "yaml": config})
    assert "mis-shaped" in message and "model.model.0.conv.conv.weight (file [8, 12, 3, 3], model [16, 12, 3, 3])" in message


def test_recheck_heads_of_the_wrong_channel_base(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    broken = dict(state)
    broken["siambox.proj1.conv.weight"] = torch.zeros(16, 16, 3, 3)
    message = _load_error(tmp_path, {"model": broken})
    assert "siambox.proj1.conv.weight (file [16, 16, 3, 3], model [32, 32, 3, 3])" in message


def test_bad_recorded_options_and_config(tmp_path: Path, state: dict[str, torch.Tensor]) -> None:
    message = _load_error(tmp_path, {"model": state, "opt": {"radius": 0}})
    assert "shrink radius 0" in message
    message = _load_error(tmp_path, {"model": state, "yaml": dict(ref.TINY_CONFIG, nc=3)})
    assert "not a buildable OMC network" in message and "nc=3" in message
