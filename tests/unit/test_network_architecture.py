"""Config parsing, variants, channel bookkeeping and parameter counts of the OMC network."""

from __future__ import annotations

import copy

import pytest
import torch

import reference_layout as ref  # tests/ is on sys.path through its conftest.py
from omc.errors import BadInput
from omc.export.model import (
    Architecture,
    architecture_for_variant,
    architecture_from_config,
    build_network,
    default_config,
    level_channels,
    level_strides,
    plan_layers,
)
from omc.export.model.architecture import make_divisible, parse_layers, variant_of

# Reference parameter counts of CSTrack-L and OMC-L at any input size (the brief's numbers).
CSTRACK_L_PARAMETERS = 78_177_128
OMC_L_PARAMETERS = 81_292_910


def tiny_architecture(recheck: bool = True) -> Architecture:
    return architecture_from_config(ref.TINY_CONFIG, recheck_channels=32 if recheck else 0)


def test_variants_have_the_standard_multiples_and_recheck_channel_base() -> None:
    # C = make_divisible(256 * width, 8): 128, 192, 256, 320 for s, m, l, x.
    expected = {"s": (0.33, 0.5, 128), "m": (0.67, 0.75, 192), "l": (1.0, 1.0, 256), "x": (1.33, 1.25, 320)}
    for variant, (depth, width, channels) in expected.items():
        arch = architecture_for_variant(variant)
        assert (arch.variant, arch.depth_multiple, arch.width_multiple) == (variant, depth, width)
        assert arch.recheck_channels == channels
        assert level_channels(arch) == (channels, 2 * channels, 4 * channels)
        assert level_strides(arch) == (8, 16, 32)
        assert not architecture_for_variant(variant, with_recheck=False).has_recheck


def test_l_layers_match_the_reference_layout() -> None:
    plans = plan_layers(architecture_for_variant("l"))
    assert len(plans) == 30
    assert [p.spec.module for p in plans[:10]] == ["Focus", "Conv", "C3", "Conv", "C3", "Conv", "C3", "Conv", "SPP", "C3"]
    # Neck outputs 17, 20, 23: stride 8/16/32 with 256/512/1024 channels; CCN keeps them.
    assert [(plans[i].stride, plans[i].out_channels) for i in (17, 20, 23)] == [(8, 256), (16, 512), (32, 1024)]
    assert [(plans[i].spec.sources, plans[i].out_channels) for i in (24, 25, 26)] == [((17,), 256), ((20,), 512), ((23,), 1024)]
    assert [plans[i].spec.repeats for i in (2, 4, 6, 9, 13, 17, 20, 23)] == [3, 9, 9, 3, 3, 3, 3, 3]
    assert plans[12].spec.sources == (11, 6) and plans[12].out_channels == 1024
    assert [p.spec.sources for p in plans[27:]] == [(24, 25, 26)] * 3


def test_packaged_config_parses_like_the_reference_rows() -> None:
    # Same rows as the reference's CSTrack_l.yaml (TINY_CONFIG differs only in multiples and the
    # unused CCN channel args).
    ours = parse_layers(dict(default_config(), depth_multiple=0.33))
    theirs = parse_layers(ref.TINY_CONFIG)
    for mine, reference in zip(ours, theirs, strict=True):
        assert (mine.sources, mine.repeats, mine.module) == (reference.sources, reference.repeats, reference.module)
        if mine.module != "CCN":
            assert mine.args == reference.args


def test_names_in_args_are_resolved_without_evaluation() -> None:
    specs = parse_layers(ref.TINY_CONFIG)
    assert specs[11].args == (None, 2, "nearest")
    assert specs[29].args[0] == 1 and specs[29].args[1] == ref.TINY_CONFIG["anchors"]
    config = copy.deepcopy(ref.TINY_CONFIG)
    config["head"][1][3] = ["__import__('os').system('true')", 2, "nearest"]
    # An arbitrary expression stays a string (and then fails as an Upsample size), it is never run.
    assert parse_layers(config)[11].args[0] == "__import__('os').system('true')"


def test_tiny_config_channels_and_depth() -> None:
    plans = plan_layers(tiny_architecture())
    assert plans[0].out_channels == 8  # make_divisible(64 * 0.125) = 8
    assert [plans[i].spec.repeats for i in (2, 4, 6, 9)] == [1, 3, 3, 1]  # round(3 * 0.33) = 1, round(9 * 0.33) = 3
    assert level_channels(tiny_architecture()) == (32, 64, 128)
    assert make_divisible(256 * 0.33) == 88 and variant_of(0.33, 0.125) == "custom"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(nc=2), "one class"),
        (lambda c: c.pop("anchors"), "lacks anchors"),
        (lambda c: c.update(anchors=[[8, 24, 11]]), "even number"),
        (lambda c: c["head"].__setitem__(0, [-1, 1, "GhostConv", [512]]), "GhostConv"),
        (lambda c: c["head"].__setitem__(14, [17, 1, "Conv", [256, 1, 1]]), "must read CCN layers"),
        (lambda c: c["head"].__setitem__(2, [[-1, 4], 1, "Concat", [1]]), "different strides"),
        (lambda c: c["head"].__setitem__(0, [40, 1, "Conv", [512, 1, 1]]), "do not precede"),
    ],
)
def test_invalid_configs_are_refused(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    config = copy.deepcopy(ref.TINY_CONFIG)
    edit(config)
    with pytest.raises(BadInput, match=message):
        architecture_from_config(config, recheck_channels=0)


def test_recheck_channel_base_must_fit_the_levels() -> None:
    with pytest.raises(BadInput, match="does not fit"):
        architecture_from_config(ref.TINY_CONFIG, recheck_channels=64)


def test_architecture_round_trips_through_a_dict() -> None:
    arch = architecture_from_config(ref.TINY_CONFIG, recheck_channels=32, global_point=False, shrink_radius=2)
    again = Architecture.from_dict(arch.to_dict())
    assert again == arch and again.config == arch.config
    with pytest.raises(BadInput, match="incomplete"):
        Architecture.from_dict({"config": ref.TINY_CONFIG})


def test_input_size_must_be_a_multiple_of_32() -> None:
    with pytest.raises(BadInput, match="multiples of 32"):
        build_network(tiny_architecture(), (200, 320))


def test_l_parameter_counts_equal_the_reference() -> None:
    with_recheck = build_network(architecture_for_variant("l"), (608, 1088))
    base = sum(p.numel() for p in with_recheck.model.parameters())
    assert base == CSTRACK_L_PARAMETERS
    assert sum(p.numel() for p in with_recheck.parameters()) == OMC_L_PARAMETERS
    stage1 = build_network(architecture_for_variant("l", with_recheck=False), (608, 1088))
    assert sum(p.numel() for p in stage1.parameters()) == CSTRACK_L_PARAMETERS


def test_batchnorm_eps_is_1e3_in_the_base_and_1e5_in_the_recheck_heads() -> None:
    network = build_network(tiny_architecture(), (192, 320))
    base = [m.eps for m in network.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    heads = [m.eps for name in ("siambox", "siamheatmap") for m in getattr(network, name).modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    # Counts of the tiny reference checkpoint (reference_tiny.md): 67 base BNs, 6 in the heads.
    assert (len(base), set(base)) == (67, {1e-3})
    assert (len(heads), set(heads)) == (6, {1e-5})


@pytest.mark.slow
def test_default_l_network_runs_at_1088x608() -> None:
    network = build_network(architecture_for_variant("l"), (608, 1088))
    with torch.no_grad():
        out = network.forward_detector(torch.rand(1, 3, 608, 1088, generator=torch.Generator().manual_seed(0)))
    # 3 anchors x (76*136 + 38*68 + 19*34) = 40698 candidates; maps at 76 x 136.
    assert out.candidates.shape == (1, 40698, 6)
    assert out.dense.shape == (1, 1, 76, 136) and out.id_map.shape == (1, 76, 136, 512)
    assert out.recheck_features is not None and out.recheck_features.shape == (1, 256, 76, 136)
    assert out.siambox_raw is not None and out.siambox_raw.shape == (1, 76, 136, 4)
    assert all(torch.isfinite(t).all() for t in out if t is not None)
