"""load_checkpoint on files written in the reference's layouts, by stand-ins that are gone at load time.

The stand-ins (tests/reference_layout.py) are pickled under `models.mot.cstrack` / `models.mot.common`
in float16 with an argparse Namespace, as real stage-2 (SiamMot) and stage-1 (Model) training
checkpoints are; the loaded network must reproduce the stand-in's float32 forward.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omc.errors import CheckpointError
from omc.export.checkpoint import (
    FORMAT_OMC,
    FORMAT_REFERENCE_STAGE1,
    FORMAT_REFERENCE_STAGE2,
    FORMAT_STATE_DICT,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
import reference_layout as ref  # tests/ is on sys.path through its conftest.py

# Input (H, W): its stride-8/16/32 maps (28x48, 14x24, 7x12) are not multiples of CCN's 6x10 pool.
INPUT_HW = (224, 384)
# Float32 agreement asked of two implementations of the same network: relative to each output's scale.
RELATIVE_TOLERANCE = 1e-5


def _image(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, INPUT_HW[0] // 16, INPUT_HW[1] // 16), generator=generator)
    fine = torch.rand((1, 3) + INPUT_HW, generator=generator)
    return (0.8 * F.interpolate(coarse, size=INPUT_HW, mode="bilinear", align_corners=False) + 0.2 * fine).clamp(0, 1)


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    scale = float(expected.abs().max())
    error = float((actual - expected).abs().max())
    assert error <= RELATIVE_TOLERANCE * max(scale, 1.0), f"{name}: max abs error {error:.3g} at scale {scale:.3g}"


def _no_reference_modules() -> None:
    assert not any(name == "models" or name.startswith("models.") for name in sys.modules)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return _image(3)


@pytest.fixture(scope="module")
def stage2(tmp_path_factory: pytest.TempPathFactory, image: torch.Tensor) -> tuple[Path, dict[str, torch.Tensor], torch.Tensor]:
    """(file, stand-in outputs in float32, tracklets): a SiamMot pickled in float16."""
    calibration_tracklets = F.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(5)), dim=1)
    with ref.registered_reference_modules():
        siam = ref.build_siammot(image, calibration_tracklets)
        exact = ref.rounded_to_half(siam)
        with torch.no_grad():
            id_map = exact(image)["id_map"][0]
            # Tracklets made from cells away from the top/left border (the stand-in clips like omc).
            cells = [(5, 7), (20, 30), (10, 40), (27, 47)]
            tracklets = F.normalize(torch.stack([id_map[r, c] for r, c in cells]), dim=1)
            outputs = exact(image, tracklets)
        path = tmp_path_factory.mktemp("stage2") / "last.pt"
        torch.save(ref.training_checkpoint(siam), path)
    _no_reference_modules()
    return path, outputs, tracklets


@pytest.fixture(scope="module")
def loaded_stage2(stage2: tuple[Path, dict[str, torch.Tensor], torch.Tensor]) -> LoadedCheckpoint:
    _no_reference_modules()
    return load_checkpoint(stage2[0], input_hw=INPUT_HW)


def test_stage2_pickle_loads_without_reference_code(loaded_stage2: LoadedCheckpoint) -> None:
    loaded = loaded_stage2
    assert loaded.source_format == FORMAT_REFERENCE_STAGE2
    assert loaded.has_recheck and loaded.architecture.recheck_channels == 32
    assert loaded.architecture.variant == "custom"
    assert (loaded.architecture.depth_multiple, loaded.architecture.width_multiple) == (0.33, 0.125)
    assert loaded.training_options["Global_Point"] == 1 and loaded.training_options["radius"] == 3
    assert loaded.architecture.global_point is True and loaded.architecture.shrink_radius == 3
    assert loaded.config["width_multiple"] == 0.125 and loaded.epoch == -1
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in loaded.network.parameters())
    assert not loaded.network.training
    _no_reference_modules()


def test_stage2_forward_equals_stand_in(
    stage2: tuple[Path, dict[str, torch.Tensor], torch.Tensor], loaded_stage2: LoadedCheckpoint, image: torch.Tensor
) -> None:
    _, expected, tracklets = stage2
    network = loaded_stage2.network
    with torch.no_grad():
        out = network.forward_detector(image)
        assert out.recheck_features is not None and out.siambox_raw is not None
        assert_close_relative(out.candidates, expected["candidates"], "candidates")
        assert_close_relative(out.dense, expected["dense"], "dense")
        assert_close_relative(out.id_map, expected["id_map"], "id_map")
        assert_close_relative(out.siambox_raw, expected["siambox_raw"], "siambox_raw")
        assert_close_relative(out.recheck_features, expected["features"], "recheck_features")
        arch = loaded_stage2.architecture
        aggregated = network.aggregate_similarity(
            network.normalize_id_map(out.id_map), tracklets, arch.shrink_radius, "reference", arch.global_point
        )
        assert_close_relative(aggregated[0, 0], expected["similarity"], "similarity_aggregated")
        heat = network.recheck_heatmap(aggregated, out.recheck_features)
        assert_close_relative(heat, expected["heatmap"], "recheck_heatmap")
    # Outputs that are not trivially saturated: the comparison above means something.
    assert 0.01 < float(expected["heatmap"].std()) and 0.01 < float(expected["candidates"][..., 4].std())


def test_stage2_k_and_ccn_weights_come_from_the_file(loaded_stage2: LoadedCheckpoint) -> None:
    base = loaded_stage2.network.model
    assert float(base.detect.k) == 8.5
    assert float(base.model[24].w1) == pytest.approx(0.7, abs=1e-3)  # float16 of 0.7
    assert float(base.model[24].w2) == pytest.approx(0.2, abs=1e-3)
    # anchors stay in stride units, anchor_grid in pixels.
    assert base.detect.anchor_grid[2, 0, 2, 0, 0].tolist() == [256.0, 640.0]
    assert base.detect.anchors[2, 2].tolist() == [8.0, 20.0]


def test_stage1_model_loads_and_runs_as_plain_cstrack(tmp_path: Path, image: torch.Tensor) -> None:
    with ref.registered_reference_modules():
        model = ref.build_model(image)
        with torch.no_grad():
            expected_candidates, expected_dense, expected_id, _ = ref.rounded_to_half(model)(image)
        path = tmp_path / "stage1.pt"
        torch.save(ref.training_checkpoint(model), path)
    _no_reference_modules()
    loaded = load_checkpoint(path, input_hw=INPUT_HW)
    assert loaded.source_format == FORMAT_REFERENCE_STAGE1
    assert not loaded.has_recheck and loaded.architecture.recheck_channels == 0
    assert loaded.network.siambox is None and loaded.network.siamheatmap is None
    with torch.no_grad():
        out = loaded.network.forward_detector(image)
    assert out.recheck_features is None and out.siambox_raw is None
    assert_close_relative(out.candidates, expected_candidates, "candidates")
    assert_close_relative(out.dense, expected_dense, "dense")
    assert_close_relative(out.id_map, expected_id, "id_map")
    assert all(k.startswith("model.model.") for k in loaded.network.state_dict())


def test_plain_state_dicts_in_both_layouts_load(
    tmp_path: Path, loaded_stage2: LoadedCheckpoint, image: torch.Tensor
) -> None:
    network_state = loaded_stage2.network.state_dict()
    with torch.no_grad():
        expected = loaded_stage2.network.forward_detector(image).candidates
    stage1_keys = {k[len("model."):]: v.half() for k, v in network_state.items() if k.startswith("model.")}
    layouts = {
        "stage2.pt": {"model": {k: v.half() for k, v in network_state.items()}},
        "stage1.pt": {"model": stage1_keys},
        "bare.pt": dict(network_state),
        "dataparallel.pt": {"state_dict": {"module." + k: v for k, v in network_state.items()}},
    }
    for name, payload in layouts.items():
        torch.save(payload, tmp_path / name)
        loaded = load_checkpoint(tmp_path / name, input_hw=INPUT_HW)
        assert loaded.source_format == FORMAT_STATE_DICT, name
        # No config stored: the multiples come from the weight shapes.
        assert (loaded.architecture.depth_multiple, loaded.architecture.width_multiple) == (0.33, 0.125), name
        assert loaded.has_recheck == (name != "stage1.pt"), name
        with torch.no_grad():
            candidates = loaded.network.forward_detector(image).candidates
        assert_close_relative(candidates, expected, name)


def test_omc_format_round_trip(tmp_path: Path, loaded_stage2: LoadedCheckpoint, image: torch.Tensor) -> None:
    path = save_checkpoint(
        tmp_path / "out" / "omc.pt", loaded_stage2.network,
        training_options=loaded_stage2.training_options, source_sha256=loaded_stage2.source_sha256,
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["omc.pt"]  # no temporary left behind
    raw = torch.load(path, weights_only=True)  # plain data: PyTorch's safe loader reads it
    assert raw["format"] == "omc-checkpoint" and raw["version"] == 1
    assert raw["source_sha256"] == loaded_stage2.source_sha256
    again = load_checkpoint(path, input_hw=INPUT_HW)
    assert again.source_format == FORMAT_OMC
    assert again.architecture == loaded_stage2.architecture
    assert again.training_options["radius"] == 3
    state, original = again.network.state_dict(), loaded_stage2.network.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)


def test_legacy_serialization_loads(tmp_path: Path, loaded_stage2: LoadedCheckpoint) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"model": loaded_stage2.network.state_dict()}, path, _use_new_zipfile_serialization=False)
    assert load_checkpoint(path, input_hw=INPUT_HW).parameter_count == loaded_stage2.parameter_count


def test_missing_and_unreadable_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    no_model = tmp_path / "no_model.pt"
    torch.save({"epoch": 3, "optimizer": None}, no_model)
    with pytest.raises(CheckpointError, match="has no model"):
        load_checkpoint(no_model)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_checkpoint(path)
