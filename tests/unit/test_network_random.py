"""random_checkpoint: seeded, loud about being meaningless, numerically sane."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import reference_layout as ref  # tests/ is on sys.path through its conftest.py
from omc.export.checkpoint import FORMAT_RANDOM, random_checkpoint
from omc.export.model import architecture_from_config

INPUT_HW = (192, 320)


def tiny_architecture():  # type: ignore[no-untyped-def]
    return architecture_from_config(ref.TINY_CONFIG, recheck_channels=32)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights_and_global_rng_untouched(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="omc.export.checkpoint"):
        first = random_checkpoint(tiny_architecture(), seed=5, input_hw=INPUT_HW)
    assert torch.equal(torch.random.get_rng_state(), before)
    second = random_checkpoint(tiny_architecture(), seed=5, input_hw=INPUT_HW)
    other = random_checkpoint(tiny_architecture(), seed=6, input_hw=INPUT_HW)
    assert _states_equal(first.network, second.network)
    assert not _states_equal(first.network, other.network)
    assert any("RANDOM WEIGHTS" in r.getMessage() and "meaningless" in r.getMessage() for r in caplog.records)
    assert first.source_format == FORMAT_RANDOM and first.random_weights and first.source_sha256 == ""


def test_without_recheck() -> None:
    loaded = random_checkpoint(tiny_architecture(), seed=0, with_recheck=False, input_hw=INPUT_HW)
    assert not loaded.has_recheck and loaded.network.siambox is None


def _smooth_image(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, 12, 20), generator=generator)
    return F.interpolate(coarse, size=INPUT_HW, mode="bilinear", align_corners=False)


def test_standard_variant_outputs_are_finite_and_not_pinned() -> None:
    loaded = random_checkpoint("s", seed=0, input_hw=INPUT_HW)
    assert loaded.architecture.variant == "s" and loaded.architecture.recheck_channels == 128
    network = loaded.network
    images = {
        "smooth": _smooth_image(1),
        "grey": torch.full((1, 3) + INPUT_HW, 0.4),
        "noise": torch.rand((1, 3) + INPUT_HW, generator=torch.Generator().manual_seed(2)),
    }
    for name, image in images.items():
        with torch.no_grad():
            out = network.forward_detector(image)
            assert out.recheck_features is not None
            id_unit = network.normalize_id_map(out.id_map)
            tracklets = id_unit[0, 5:7, 9].reshape(2, -1)
            aggregated = network.aggregate_similarity(id_unit, tracklets, 3, "reference", True)
            heat = network.recheck_heatmap(aggregated, out.recheck_features)
        for tensor in (*[t for t in out if t is not None], heat):
            assert torch.isfinite(tensor).all(), name
        if name == "noise":
            continue  # uniform noise excites a random network strongly; only finiteness is promised
        # Natural-looking inputs keep every sigmoid in its responsive range.
        for values in (out.candidates[..., 4], out.candidates[..., 5], out.dense, heat):
            assert 1e-6 < float(values.min()) and float(values.max()) < 1 - 1e-6, name
