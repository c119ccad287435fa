"""The OMC-specific modules against slow, obviously right formulations (omc-reference.md section 2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import reference_layout as ref  # tests/ is on sys.path through its conftest.py
from omc.export.model import Architecture, architecture_from_config, build_network
from omc.export.model.ccn import CCN, adaptive_average_matrix
from omc.export.model.heads import Detect


def tiny_architecture(recheck: bool = True) -> Architecture:
    return architecture_from_config(ref.TINY_CONFIG, recheck_channels=32 if recheck else 0)


@pytest.mark.parametrize(("h", "w"), [(40, 72), (19, 34), (37, 61), (76, 136), (5, 8), (6, 10), (1, 1)])
def test_averaging_matrices_equal_adaptive_average_pooling(h: int, w: int) -> None:
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    pooled = adaptive_average_matrix(h, 6) @ x @ adaptive_average_matrix(w, 10).T
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, (6, 10)), rtol=0, atol=1e-6)


def test_averaging_matrix_bins_are_pytorchs() -> None:
    # 19 rows into 6 bins: starts floor(i*19/6) = 0,3,6,9,12,15; ends ceil((i+1)*19/6) = 4,7,10,13,16,19.
    matrix = adaptive_average_matrix(19, 6)
    assert [int(row.nonzero()[0]) for row in matrix] == [0, 3, 6, 9, 12, 15]
    assert [int(row.nonzero()[-1]) + 1 for row in matrix] == [4, 7, 10, 13, 16, 19]
    assert torch.allclose(matrix.sum(1), torch.ones(6))


def test_ccn_weights_the_self_affinity_with_w() -> None:
    torch.manual_seed(0)
    ccn = CCN(8, (13, 21)).eval()
    with torch.no_grad():
        ccn.w1.fill_(0.8)
        ccn.w2.fill_(0.3)
    x = torch.randn(2, 8, 13, 21)
    pooled = F.adaptive_avg_pool2d(x, (6, 10))
    y1 = ccn.c_attention1(pooled).reshape(2, 8, 60)
    y2 = ccn.c_attention2(pooled).reshape(2, 8, 60)
    flat = x.reshape(2, 8, -1)
    self1, self2 = (torch.softmax(y @ y.transpose(1, 2), -1) for y in (y1, y2))
    cross12, cross21 = torch.softmax(y1 @ y2.transpose(1, 2), -1), torch.softmax(y2 @ y1.transpose(1, 2), -1)
    expected_det = x + ((0.8 * self1 + 0.2 * cross12) @ flat).reshape_as(x)
    expected_id = x + ((0.3 * self2 + 0.7 * cross21) @ flat).reshape_as(x)
    with torch.no_grad():
        det, ident = ccn(x)
    torch.testing.assert_close(det, expected_det, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ident, expected_id, rtol=1e-5, atol=1e-5)


def test_ccn_at_another_size_than_built_for() -> None:
    torch.manual_seed(0)
    built_small, built_large = CCN(4, (7, 12)), CCN(4, (10, 18))
    built_large.load_state_dict(built_small.state_dict())
    x = torch.randn(1, 4, 10, 18)
    with torch.no_grad():
        for a, b in zip(built_small(x), built_large(x)):
            torch.testing.assert_close(a, b)


def test_detect_rows_and_decoding() -> None:
    anchors = [[8, 24, 11, 34, 16, 48], [32, 96, 45, 135, 64, 192], [128, 384, 180, 540, 256, 640]]
    sizes = [(4, 6), (2, 3), (1, 2)]
    detect = Detect(anchors, [4, 8, 16], [8, 16, 32], sizes, 6)
    torch.manual_seed(1)
    levels = [torch.randn(1, c, h, w) for c, (h, w) in zip([4, 8, 16], sizes)]
    with torch.no_grad():
        detect.k.fill_(7.0)
        detect.anchors.fill_(-1.0)  # decoding must use anchor_grid (pixels), not anchors
        out = detect(levels)
        raw = detect.m[1](levels[1])[0]  # [3 * 6, 2, 3]
    assert out.shape == (1, 3 * (24 + 6 + 2), 6)
    # Level P4 (after P3's 3*4*6 = 72 rows), anchor 2, row 1, col 2: row 72 + (2*2 + 1)*3 + 2 = 89.
    s = torch.sigmoid(raw[2 * 6:3 * 6, 1, 2])
    expected = torch.stack([
        ((s[0] - 0.5) * 7 + 2) * 16,  # x: col 2
        ((s[1] - 0.5) * 7 + 1) * 16,  # y: row 1
        (2 * s[2]) ** 2 * 64,         # w: anchor 2 of P4 is 64 x 192 px
        (2 * s[3]) ** 2 * 192,
        s[4], s[5],
    ])
    torch.testing.assert_close(out[0, 89], expected)


def test_recheck_box_decoding() -> None:
    network = build_network(tiny_architecture(), (64, 96))  # stride-8 map 8 x 12
    with torch.no_grad():
        network.model.detect.k.fill_(6.0)
    raw = torch.zeros(1, 8, 12, 4)
    raw[0, 3, 5] = torch.tensor([0.0, 2.0, 4.0, 6.0])
    boxes = network.decode_recheck_boxes(raw)
    # cx = ((0.5 - 0.5) * 6 + 5) * 8 = 40; cy = ((sigmoid(2) - 0.5) * 6 + 3) * 8; w = 32, h = 48.
    cy = ((torch.sigmoid(torch.tensor(2.0)) - 0.5) * 6 + 3) * 8
    torch.testing.assert_close(boxes[0, 3, 5], torch.tensor([40.0 - 16, float(cy) - 24, 40.0 + 16, float(cy) + 24]))
    # A zero raw value sits at its own cell's corner (grid offset): cell (0, 0) -> centre (0, 0), size 0.
    assert boxes[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_network_runs_at_any_multiple_of_32_and_set_input_hw() -> None:
    torch.manual_seed(0)
    small = build_network(tiny_architecture(), (192, 320))
    large = build_network(tiny_architecture(), (224, 384))
    large.load_state_dict(small.state_dict())
    image = torch.rand(1, 3, 224, 384)
    with torch.no_grad():
        eager = small.forward_detector(image)  # constants computed on the fly
        built = large.forward_detector(image)
        small.set_input_hw((224, 384))  # constants rebuilt
        rebuilt = small.forward_detector(image)
    assert built.candidates.shape == (1, 3 * (28 * 48 + 14 * 24 + 7 * 12), 6)
    for a, b, c in zip(eager, built, rebuilt):
        assert a is not None and b is not None and c is not None
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(c, b)
    assert small.map_hw == (28, 48) and small.map_rows.tolist() == list(range(28))


def test_constant_buffers_are_not_in_the_state_dict() -> None:
    network = build_network(tiny_architecture(), (192, 320))
    keys = network.state_dict().keys()
    constants = ("pool_rows", "pool_cols", "grid0", "grid1", "grid2", "map_rows", "map_cols")
    assert not [k for k in keys if k.split(".")[-1] in constants]
    assert "model.model.29.anchor_grid" in keys and "model.model.29.anchors" in keys


def test_stage1_network_runs_as_plain_cstrack() -> None:
    network = build_network(tiny_architecture(recheck=False), (192, 320))
    assert network.siambox is None and network.siamheatmap is None
    assert not any(k.startswith(("siambox", "siamheatmap")) for k in network.state_dict())
    with torch.no_grad():
        out = network.forward_detector(torch.rand(2, 3, 192, 320))
    assert out.recheck_features is None and out.siambox_raw is None
    assert out.candidates.shape == (2, 3 * (24 * 40 + 12 * 20 + 6 * 10), 6) and out.id_map.shape == (2, 24, 40, 512)
