"""The PyTorch OMC network against the reference implementation's own outputs (reference_tiny.md).

reference_tiny.pt is a tiny OMC checkpoint in the reference's stage-2 pickle layout;
reference_tiny_outputs.npz holds one letterboxed frame (576 x 320) and every intermediate output
of the reference run. Tolerances are the fixture's "suggested check" column.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paths import fixture_path  # tests/ is on sys.path through its conftest.py
from omc.export.checkpoint import FORMAT_REFERENCE_STAGE2, LoadedCheckpoint, load_checkpoint
from omc.export.model.similarity import similarity_maps, window_centres

# reference_tiny.md "Tolerances", suggested check column.
BOX_ABS_PX, BOX_REL = 0.01, 1e-4  # cx, cy, w, h: |diff| <= 0.01 px + 1e-4 * |ref|
SCORE_TOL = 1e-4  # obj, cls
DENSE_TOL = 1e-4
ID_RAW_TOL = 1e-4
ID_UNIT_TOL = 2e-5
SIAMBOX_TOL = 1e-4
SIMILARITY_TOL = 2e-5
AGGREGATED_TOL = 2e-5
HEATMAP_TOL = 1e-4
# reference_tiny.md "Checkpoint facts".
PARAMETERS = 3_993_630
BASE_PARAMETERS = 3_926_712
BASE_BATCHNORMS, RECHECK_BATCHNORMS = 67, 6
INPUT_HW = (320, 576)


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    with np.load(fixture_path("reference_tiny_outputs.npz")) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def loaded() -> LoadedCheckpoint:
    return load_checkpoint(fixture_path("reference_tiny.pt"), input_hw=INPUT_HW)


@pytest.fixture(scope="module")
def run(loaded: LoadedCheckpoint, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One detector pass on the stored frame and one re-check with the stored tracklets."""
    network, arch = loaded.network, loaded.architecture
    with torch.no_grad():
        det = network.forward_detector(torch.from_numpy(outputs["image_rgb_f32"]))
        assert det.recheck_features is not None and det.siambox_raw is not None
        id_unit = network.normalize_id_map(det.id_map)
        tracklets = torch.from_numpy(outputs["tracklets"])
        maps = similarity_maps(id_unit, tracklets)
        aggregated = network.aggregate_similarity(id_unit, tracklets, arch.shrink_radius, "reference", arch.global_point)
        heatmap = network.recheck_heatmap(aggregated, det.recheck_features)
    return {
        "candidates": det.candidates[0].numpy(),
        "dense": det.dense[0, 0].numpy(),
        "id_embedding": det.id_map[0].numpy(),
        "id_unit": id_unit[0].numpy(),
        "siambox_raw": det.siambox_raw[0].numpy(),
        "similarity_maps": maps.numpy(),
        "window_centres": window_centres(maps).numpy(),
        "similarity_aggregated": aggregated[0, 0].numpy(),
        "recheck_heatmap": heatmap[0, 0].numpy(),
    }


def max_error(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape
    return float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())


def test_checkpoint_facts(loaded: LoadedCheckpoint) -> None:
    assert loaded.source_format == FORMAT_REFERENCE_STAGE2
    assert loaded.parameter_count == PARAMETERS
    assert sum(p.numel() for p in loaded.network.model.parameters()) == BASE_PARAMETERS
    arch = loaded.architecture
    assert arch.recheck_channels == 32 and arch.embedding_dim == 512
    assert arch.global_point and arch.shrink_radius == 3
    assert len(loaded.network.state_dict()) == 488
    base_eps = [m.eps for m in loaded.network.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    head_eps = [m.eps for m in loaded.network.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.eps != 1e-3]
    assert (len(base_eps), set(base_eps)) == (BASE_BATCHNORMS, {1e-3})
    assert (len(head_eps), set(head_eps)) == (RECHECK_BATCHNORMS, {1e-5})


def test_learned_scalars(loaded: LoadedCheckpoint, outputs: dict[str, np.ndarray]) -> None:
    base = loaded.network.model
    assert float(base.detect.k) == float(outputs["detect_k"][0])  # 8.3359375, exactly
    for i, layer in enumerate((24, 25, 26)):
        assert float(base.model[layer].w1) == float(outputs["ccn_w1"][i])
        assert float(base.model[layer].w2) == float(outputs["ccn_w2"][i])


def test_detection_candidates(run: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    actual, expected = run["candidates"], outputs["det_candidates"]
    assert actual.shape == expected.shape == (11340, 6)  # rows in the reference's order
    box_error = np.abs(actual[:, :4].astype(np.float64) - expected[:, :4])
    allowed = BOX_ABS_PX + BOX_REL * np.abs(expected[:, :4])
    assert (box_error <= allowed).all(), f"box error {box_error.max():.4g} px"
    assert max_error(actual[:, 4], expected[:, 4]) <= SCORE_TOL
    assert max_error(actual[:, 5], expected[:, 5]) <= SCORE_TOL


@pytest.mark.parametrize(
    ("name", "reference_name", "tolerance"),
    [
        ("dense", "dense_mask", DENSE_TOL),
        ("id_embedding", "id_embedding", ID_RAW_TOL),
        ("siambox_raw", "siambox_raw", SIAMBOX_TOL),
        ("similarity_maps", "similarity_maps", SIMILARITY_TOL),
        ("similarity_aggregated", "similarity_aggregated", AGGREGATED_TOL),
        ("recheck_heatmap", "recheck_heatmap", HEATMAP_TOL),
    ],
)
def test_maps(run: dict[str, np.ndarray], outputs: dict[str, np.ndarray], name: str, reference_name: str, tolerance: float) -> None:
    error = max_error(run[name], outputs[reference_name])
    assert error <= tolerance, f"{name}: max abs error {error:.3g} > {tolerance}"


def test_normalised_id_map(run: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    expected = outputs["id_embedding"] / outputs["id_embedding_l2norm"][..., None]
    assert max_error(run["id_unit"], expected) <= ID_UNIT_TOL


def test_window_centres_exact(run: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(run["window_centres"], outputs["window_centres"])
    assert int((run["similarity_aggregated"] != 0).sum()) == 237  # reference_tiny.md: 237 non-zero cells
