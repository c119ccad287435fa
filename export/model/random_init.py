"""Seeded random weights that run sanely (for pipeline tests and speed measurements only).

A deep random network with identity BatchNorms either vanishes or explodes; one whose BatchNorm
statistics are measured on a single kind of image explodes on any other kind. What works across
inputs (measured on s/m/l with natural frames, smooth noise, constant and uniform-noise images):
- PyTorch's default init, except that ConvTranspose2d weights use their true fan-in
  (in_channels / groups x (kernel / stride)^2 inputs per output; PyTorch's default counts
  out_channels / groups x kernel^2, which makes DenseMask's transposed convs ~6x too strong);
- the reference's Detect bias prior (objectness log(8 / (640 / s)^2), class log(0.6 / (nc - 0.99)));
- BatchNorm running statistics measured in one training-mode pass over a batch of varied
  synthetic images (uniform noise, smooth multi-scale noise, constant grey levels, a ramp),
  so every Conv output is about unit-scaled for natural and synthetic inputs alike.
Result: no NaN or inf; on natural frames objectness stays near its prior (~0.001-0.02, so
practically no detections), density and heat maps in their responsive range; uniform noise
excites it strongly but finitely. The detections mean nothing either way.
"""

from __future__ import annotations

import math
from typing import Callable, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omc.export.model.network import OMCNetwork

# Objectness prior of the reference's bias initialisation: 8 objects per 640 x 640 image.
OBJECTS_PER_IMAGE = 8
PRIOR_IMAGE_SIZE = 640
# Class prior of the same initialisation: log(0.6 / (nc - 0.99)).
CLASS_PRIOR = 0.6
# Input (H, W) of the calibration pass.
CALIBRATION_HW = (256, 320)
# Cell sizes (pixels) of the smooth-noise octaves and grey levels of the constant images.
NOISE_CELLS = (4, 16, 64)
GREY_LEVELS = (0.1, 0.5, 0.9)
SMOOTH_IMAGES = 2
# Tracklets sampled from the ID map for the heat-map head's calibration pass.
CALIBRATION_TRACKLETS = 4


def calibration_images(hw: tuple[int, int], generator: torch.Generator) -> Tensor:
    """[7, 3, H, W] float32 in [0, 1]: uniform noise, 2 smooth noises, 3 grey levels, a ramp."""
    h, w = hw
    images = [torch.rand((1, 3, h, w), generator=generator)]
    for _ in range(SMOOTH_IMAGES):
        smooth = torch.zeros((1, 3, h, w))
        for cells in NOISE_CELLS:
            coarse = torch.rand((1, 3, max(h // cells, 1), max(w // cells, 1)), generator=generator)
            smooth += F.interpolate(coarse, size=hw, mode="bilinear", align_corners=False)
        images.append(smooth / len(NOISE_CELLS))
    images += [torch.full((1, 3, h, w), level) for level in GREY_LEVELS]
    images.append(torch.linspace(0.0, 1.0, w).view(1, 1, 1, w).expand(1, 3, h, w).clone())
    return torch.cat(images)


def _transposed_conv_fan_in(module: nn.ConvTranspose2d) -> int:
    kernel_h, kernel_w = module.kernel_size
    stride_h, stride_w = module.stride
    per_output = max(kernel_h // stride_h, 1) * max(kernel_w // stride_w, 1)
    return module.in_channels // module.groups * per_output


def _reinit_transposed_convs(network: nn.Module) -> None:
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.ConvTranspose2d):
                bound = 1.0 / math.sqrt(_transposed_conv_fan_in(module))
                module.weight.uniform_(-bound, bound)


def _apply_detection_prior(network: OMCNetwork) -> None:
    detect = network.model.detect
    nc = network.architecture.nc
    with torch.no_grad():
        for conv, stride in zip(detect.m, detect.strides):
            if not isinstance(conv, nn.Conv2d) or conv.bias is None:
                continue
            per_anchor = conv.bias.view(detect.anchors_per_level, -1)
            per_anchor[:, 4] += math.log(OBJECTS_PER_IMAGE / (PRIOR_IMAGE_SIZE / stride) ** 2)
            per_anchor[:, 5:] += math.log(CLASS_PRIOR / (nc - 0.99))


def _calibrate_batchnorm(network: OMCNetwork, generator: torch.Generator) -> None:
    # Training-mode BN with momentum None keeps the cumulative average: after one pass the
    # running statistics are exactly that pass's.
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    network.train()
    with torch.no_grad():
        outputs = network.forward_detector(calibration_images(CALIBRATION_HW, generator))
        if outputs.recheck_features is not None:
            arch = network.architecture
            id_unit = network.normalize_id_map(outputs.id_map[:1])
            cells = torch.randint(0, id_unit.shape[1] * id_unit.shape[2], (CALIBRATION_TRACKLETS,), generator=generator)
            tracklets = id_unit.reshape(-1, id_unit.shape[-1])[cells]
            aggregated = network.aggregate_similarity(id_unit, tracklets, arch.shrink_radius, global_point=arch.global_point)
            network.recheck_heatmap(aggregated, outputs.recheck_features[:1])
    network.eval()
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def randomize_network(network: OMCNetwork, seed: int) -> OMCNetwork:
    """Re-draw every weight of `network` from `seed` (see module docstring); returns it in eval mode.

    Deterministic for a given seed; the global RNG state is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in network.modules():
            reset = cast("Callable[[], None] | None", getattr(module, "reset_parameters", None))
            if callable(reset) and module is not network:
                reset()
        _reinit_transposed_convs(network)
        _apply_detection_prior(network)
        _calibrate_batchnorm(network, torch.Generator().manual_seed(seed))
    return network.eval()
