"""`random_checkpoint`: a seeded random OMC network for pipeline tests and benchmarks."""

from __future__ import annotations

import logging

import torch

from omc.export.checkpoint.formats import FORMAT_RANDOM, plain_value
from omc.export.checkpoint.loading import LoadedCheckpoint, finish_network
from omc.export.model import DEFAULT_INPUT_HW, Architecture, architecture_for_variant, build_network
from omc.export.model.random_init import randomize_network

log = logging.getLogger(__name__)


def random_checkpoint(
    variant: str | Architecture = "l",
    seed: int = 0,
    with_recheck: bool = True,
    input_hw: tuple[int, int] = DEFAULT_INPUT_HW,
) -> LoadedCheckpoint:
    """A seeded random OMC network (for pipeline tests and benchmarks): its detections mean nothing.

    variant: 's', 'm', 'l', 'x' or an Architecture. Weights: PyTorch's default init, the
    reference's objectness/class bias prior, BatchNorm statistics from one pass over seeded
    synthetic images (omc.export.model.random_init). Same seed, same weights; the global RNG
    is left untouched.
    """
    arch = variant if isinstance(variant, Architecture) else architecture_for_variant(variant, with_recheck=with_recheck)
    if not with_recheck:
        arch = arch.without_recheck()
    log.warning(
        "RANDOM WEIGHTS (variant %s, seed %d): this network has not been trained; its detections and tracks "
        "are meaningless. Use it only to test the pipeline or measure speed.", arch.variant, seed
    )
    with torch.random.fork_rng(devices=[]):  # building draws from the global RNG; keep it untouched
        network = build_network(arch, input_hw)
    network = finish_network(randomize_network(network, seed))
    return LoadedCheckpoint(
        network=network,
        architecture=arch,
        config=plain_value(arch.config),
        training_options={},
        source_path=None,
        source_sha256="",
        source_format=FORMAT_RANDOM,
        parameter_count=sum(p.numel() for p in network.parameters()),
    )
