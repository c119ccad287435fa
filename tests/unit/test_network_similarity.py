"""Similarity maps, shrink windows and aggregation (omc-reference.md sections 2 and 5) against slow loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omc.export.model.similarity import (
    AGGREGATE_EPS,
    aggregate_similarity,
    shrink_window_mask,
    similarity_maps,
    window_centres,
)


def iota(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int64)


def slow_aggregate(id_unit: np.ndarray, tracklets: np.ndarray, radius: int, window: str, global_point: bool) -> np.ndarray:
    """float64 loops: one map per tracklet, window around its first maximum clipped to the map, sum, / max."""
    h, w, _ = id_unit.shape
    units = tracklets / np.linalg.norm(tracklets, axis=1, keepdims=True)
    total = np.zeros((h, w))
    for unit in units:
        single = np.maximum(id_unit @ unit, 0.0)
        if global_point:
            row, col = divmod(int(np.argmax(single)), w)
            if window == "reference":
                rows, cols = range(max(row - radius, 0), min(row + radius, h)), range(max(col - radius, 0), min(col + radius, w))
            else:
                rows = range(max(row - radius, 0), min(row + radius + 1, h))
                cols = range(max(col - radius, 0), min(col + radius + 1, w))
            kept = np.zeros((h, w))
            kept[np.ix_(list(rows), list(cols))] = 1.0
            single = single * kept
        total += single
    peak = total.max()
    return total / peak if peak > 0 else total


def random_inputs(seed: int, n: int, h: int = 12, w: int = 17, e: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    id_unit = F.normalize(torch.randn(1, h, w, e, generator=generator), dim=-1)
    tracklets = torch.randn(n, e, generator=generator)
    return id_unit, tracklets


@pytest.mark.parametrize("window", ["reference", "paper"])
@pytest.mark.parametrize("global_point", [True, False])
@pytest.mark.parametrize(("seed", "n"), [(0, 1), (1, 5), (2, 40)])
def test_aggregate_equals_the_slow_loop(seed: int, n: int, window: str, global_point: bool) -> None:
    id_unit, tracklets = random_inputs(seed, n)
    result = aggregate_similarity(id_unit, tracklets, iota(12), iota(17), radius=3, window=window, global_point=global_point)
    expected = slow_aggregate(id_unit[0].double().numpy(), tracklets.double().numpy(), 3, window, global_point)
    assert result.shape == (1, 1, 12, 17)
    np.testing.assert_allclose(result[0, 0].numpy(), expected, atol=2e-6)


def test_similarity_maps_are_positive_cosines() -> None:
    id_unit, tracklets = random_inputs(3, 4)
    maps = similarity_maps(id_unit, tracklets * 5.0)  # tracklets are normalised again
    expected = (id_unit[0] @ F.normalize(tracklets, dim=1).T).permute(2, 0, 1).clamp_min(0)
    torch.testing.assert_close(maps, expected)
    assert maps.min() >= 0


def test_window_centre_is_the_first_maximum_in_row_major_order() -> None:
    maps = torch.zeros(2, 4, 5)
    maps[0, 2, 1] = maps[0, 1, 3] = 0.9  # tie: (1, 3) comes first in row-major order
    maps[1, 3, 4] = 0.5
    assert window_centres(maps).tolist() == [[1, 3], [3, 4]]


def test_reference_window_is_half_open_and_paper_window_closed() -> None:
    centres = torch.tensor([[5, 6]])
    reference = shrink_window_mask(centres, iota(12), iota(14), 2, "reference")[0]
    paper = shrink_window_mask(centres, iota(12), iota(14), 2, "paper")[0]
    # reference: rows [3, 7), cols [4, 8) -> 4 x 4; paper: rows [3, 7], cols [4, 8] -> 5 x 5.
    assert reference.nonzero().min(0).values.tolist() == [3, 4] and reference.nonzero().max(0).values.tolist() == [6, 7]
    assert int(reference.sum()) == 16 and int(paper.sum()) == 25
    assert paper.nonzero().max(0).values.tolist() == [7, 8]
    with pytest.raises(ValueError):
        shrink_window_mask(centres, iota(12), iota(14), 2, "square")


def test_window_at_the_top_left_border_is_clipped_not_dropped() -> None:
    # Tracklet identical to cell (1, 2): its window would start at row -2, col -1. The reference's
    # slice wraps and drops the whole response there (omc-reference.md section 5); omc keeps the
    # in-map part: rows [0, 4), cols [0, 5).
    id_unit, _ = random_inputs(4, 1)
    tracklets = id_unit[0, 1, 2][None].clone()
    result = aggregate_similarity(id_unit, tracklets, iota(12), iota(17), radius=3, window="reference", global_point=True)[0, 0]
    assert window_centres(similarity_maps(id_unit, tracklets)).tolist() == [[1, 2]]
    assert float(result[1, 2]) == pytest.approx(1.0)
    outside = torch.ones(12, 17, dtype=torch.bool)
    outside[:4, :5] = False
    assert float(result[outside].abs().max()) == 0.0
    expected = slow_aggregate(id_unit[0].double().numpy(), tracklets.double().numpy(), 3, "reference", True)
    np.testing.assert_allclose(result.numpy(), expected, atol=2e-6)
    # Same at the bottom-right corner, which the reference already cuts: centre (11, 16) keeps
    # rows [8, 14) and cols [13, 19) inside the 12 x 17 map: rows 8-11, cols 13-16.
    corner = id_unit[0, 11, 16][None].clone()
    result = aggregate_similarity(id_unit, corner, iota(12), iota(17), radius=3, window="reference", global_point=True)[0, 0]
    assert result.nonzero().min(0).values.tolist() == [8, 13] and result.nonzero().max(0).values.tolist() == [11, 16]


def test_all_zero_aggregate_gives_zeros_not_nan() -> None:
    # Every cell points along +e0; the tracklets along -e0 and e1: all cosines <= 0, so Ms = 0.
    id_unit = torch.zeros(1, 6, 7, 4)
    id_unit[..., 0] = 1.0
    tracklets = torch.tensor([[-1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    for global_point in (True, False):
        result = aggregate_similarity(id_unit, tracklets, iota(6), iota(7), radius=3, window="reference", global_point=global_point)
        assert torch.isfinite(result).all() and float(result.abs().max()) == 0.0


def test_a_maximum_below_eps_is_divided_by_eps() -> None:
    # Every cell along e0, the tracklet along (eps / 2, 1): each cosine is about eps / 2, so
    # Ms / max(max(Ms), eps) is about 0.5 everywhere (documented trade-off of the guard).
    id_unit = torch.zeros(1, 3, 4, 2)
    id_unit[..., 0] = 1.0
    tracklets = torch.tensor([[AGGREGATE_EPS / 2, 1.0]])
    result = aggregate_similarity(id_unit, tracklets, iota(3), iota(4), radius=3, window="reference", global_point=False)
    torch.testing.assert_close(result, torch.full((1, 1, 3, 4), 0.5), rtol=1e-4, atol=0)
