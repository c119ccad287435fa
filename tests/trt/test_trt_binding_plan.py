"""plan_bindings / profile_shapes: which buffer each engine tensor gets, sized from export.json.

Sizes use the toy export (tests/toy_engines.py TOY_META): input 192 x 320 (maps 24 x 40), K 32,
P 16, C 8, E 512, max batch 4, max tracklets 64.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from toy_engines import TOY_META

from omc import contract
from omc.contract import DETECTOR, RECHECK, EngineMeta
from omc.errors import BadInput
from omc.runtime.backends.binding_plan import (
    COMPACT_OUTPUTS,
    ProfileShape,
    Transfer,
    plan_bindings,
    profile_shapes,
)


def by_name(meta: EngineMeta, engine: str) -> dict:
    return {binding.name: binding for binding in plan_bindings(meta, engine)}


def test_detector_buffer_sizes_are_bytes_of_the_largest_batch() -> None:
    plan = by_name(TOY_META, DETECTOR)
    expected = {
        contract.IMAGES: 4 * 192 * 320 * 3,  # uint8: 737 280
        contract.DET_BOXES: 4 * 32 * 4 * 4,  # 2 048
        contract.DET_SCORES: 4 * 32 * 4,  # 512
        contract.DET_DENSITY: 4 * 32 * 4,
        contract.DET_EMBEDDINGS: 4 * 32 * 512 * 4,  # 262 144
        contract.ID_EMBEDDINGS: 4 * 24 * 40 * 512 * 4,  # 7 864 320
        contract.RECHECK_FEATURES: 4 * 8 * 24 * 40 * 4,  # 122 880
        contract.RECHECK_BOXES: 4 * 24 * 40 * 4 * 4,  # 61 440
    }
    assert {name: b.nbytes for name, b in plan.items()} == expected
    assert plan[contract.IMAGES].max_shape == (4, 192, 320, 3)
    assert plan[contract.IMAGES].dtype == "uint8"
    assert [b.name for b in plan.values() if b.is_input] == [contract.IMAGES]


def test_recheck_buffer_sizes_use_batch_one_and_max_tracklets() -> None:
    plan = by_name(TOY_META, RECHECK)
    expected = {
        contract.ID_EMBEDDINGS: 24 * 40 * 512 * 4,  # 1 966 080
        contract.RECHECK_FEATURES: 8 * 24 * 40 * 4,  # 30 720
        contract.RECHECK_BOXES: 24 * 40 * 4 * 4,  # 15 360
        contract.TRACKLETS: 64 * 512 * 4,  # 131 072
        contract.TRANS_BOXES: 16 * 4 * 4,  # 256
        contract.TRANS_SCORES: 16 * 4,  # 64
        contract.TRANS_EMBEDDINGS: 16 * 512 * 4,  # 32 768
        contract.RECHECK_HEATMAP: 24 * 40 * 4,  # 3 840
    }
    assert {name: b.nbytes for name, b in plan.items()} == expected
    assert plan[contract.TRACKLETS].max_shape == (64, 512)


def test_default_export_id_map_is_the_big_buffer() -> None:
    # 608 x 1088 input -> 76 x 136 maps; 4 x 76 x 136 x 512 floats = 84 672 512 bytes.
    plan = by_name(EngineMeta(has_recheck=True, recheck_channels=64), DETECTOR)
    assert plan[contract.ID_EMBEDDINGS].nbytes == 84_672_512
    assert plan[contract.ID_EMBEDDINGS].transfer is Transfer.STAYS_ON_DEVICE


def test_pinned_host_buffers_only_for_compact_outputs() -> None:
    for engine in (DETECTOR, RECHECK):
        for binding in plan_bindings(TOY_META, engine):
            if binding.name in COMPACT_OUTPUTS:
                assert binding.transfer is Transfer.DEVICE_TO_PINNED
                assert binding.pinned_nbytes == binding.nbytes > 0
            else:
                assert binding.pinned_nbytes == 0, binding.name
    pinned = {b.name for e in (DETECTOR, RECHECK) for b in plan_bindings(TOY_META, e) if b.pinned_nbytes}
    assert pinned == {
        contract.DET_BOXES,
        contract.DET_SCORES,
        contract.DET_DENSITY,
        contract.DET_EMBEDDINGS,
        contract.TRANS_BOXES,
        contract.TRANS_SCORES,
        contract.TRANS_EMBEDDINGS,
    }


def test_maps_stay_on_the_device_and_feed_the_recheck_directly() -> None:
    detector = by_name(TOY_META, DETECTOR)
    recheck = by_name(TOY_META, RECHECK)
    for name in contract.RECHECK_FEEDS_FROM_DETECTOR:
        assert detector[name].transfer is Transfer.STAYS_ON_DEVICE
        assert recheck[name].transfer is Transfer.DEVICE_HANDLE_OR_HOST
        # Bound to the detector's pointer: no buffer of its own unless a host array arrives.
        assert not recheck[name].device_buffer_at_activation
        # The detector's buffer at batch 1 is exactly what the re-check input needs.
        assert detector[name].nbytes == TOY_META.max_batch * recheck[name].nbytes
    assert recheck[contract.RECHECK_HEATMAP].transfer is Transfer.STAYS_ON_DEVICE
    # tracklets is the only re-check input copied from the host.
    host_inputs = [b.name for b in recheck.values() if b.transfer is Transfer.HOST_TO_DEVICE]
    assert host_inputs == [contract.TRACKLETS]
    assert all(b.device_buffer_at_activation for b in detector.values())


def test_export_without_recheck_plans_five_detector_outputs_and_no_recheck() -> None:
    meta = replace(TOY_META, has_recheck=False, recheck_channels=0)
    names = [b.name for b in plan_bindings(meta, DETECTOR)]
    assert names == [contract.IMAGES, *contract.DETECTOR_CORE_OUTPUTS]
    with pytest.raises(BadInput, match="no re-check network"):
        plan_bindings(meta, RECHECK)
    with pytest.raises(BadInput, match="not one of"):
        plan_bindings(TOY_META, "tracker")


def test_profiles_span_one_to_the_export_maxima() -> None:
    detector = profile_shapes(TOY_META, DETECTOR, opt_batch=1, opt_tracklets=32)
    assert detector == {
        contract.IMAGES: ProfileShape(min=(1, 192, 320, 3), opt=(1, 192, 320, 3), max=(4, 192, 320, 3))
    }
    recheck = profile_shapes(TOY_META, RECHECK, opt_batch=1, opt_tracklets=32)
    # Only tracklets is dynamic; the three maps have fixed shapes and need no profile.
    assert recheck == {contract.TRACKLETS: ProfileShape(min=(1, 512), opt=(32, 512), max=(64, 512))}


def test_profile_optimum_is_clipped_to_the_maximum() -> None:
    meta = replace(TOY_META, max_tracklets=16, max_batch=2)
    assert profile_shapes(meta, RECHECK, 1, 32)[contract.TRACKLETS].opt == (16, 512)
    assert profile_shapes(meta, DETECTOR, 8, 32)[contract.IMAGES].opt == (2, 192, 320, 3)


def test_plan_max_shapes_equal_the_profile_maxima() -> None:
    for engine in (DETECTOR, RECHECK):
        plan = by_name(TOY_META, engine)
        for name, shape in profile_shapes(TOY_META, engine, 1, 32).items():
            assert plan[name].max_shape == shape.max
