"""The float16 copy of a network that an fp16 export traces (`omc export --precision fp16`).

Route (export-and-tensorrt-notes.md, "Precision"): export a `.half()` model with explicit casts
at the boundaries, so the ONNX graph is consistently typed and TensorRT's strongly typed
networks build it as written. (onnxconverter-common's conversion and `torch.autocast` around the
default exporter both produced invalid graphs there.)

Float32 islands inside the half network, because coordinates must not be rounded to float16
(near 500 px its spacing is 0.25-0.5 px):
- Detect (its three 1x1 convolutions, sigmoid and box decoding, k, anchors and grids): the
  candidates' boxes and obj / cls scores come out in float32;
- the re-check box head's last convolution (raw x, y, w, h), decoded in float32 by the graph.
Both take half inputs through a `CastTo` in front. Neither holds a matrix multiply: TensorRT for
RTX builds no float32 GEMM for Turing (SM75), and an fp16 graph must build there. (CCN's
affinity softmax, whose logits reach about 60 where float16's spacing is 1/32, was tried as a
third island: it made no measurable difference to the drift and broke the Turing build.)
Everything else (backbone, neck, CCN, SAAN, DenseMask, the re-check heads' features and heat
map) computes in float16; DetectorGraph and RecheckGraph cast at the contract's boundary.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from omc.export.model import OMCNetwork

HALF = torch.float16


class CastTo(nn.Module):
    """x -> x.to(dtype): the entrance of a float32 island in a half-precision network."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return x.to(self.dtype)


def _float32_island(module: nn.Module) -> nn.Sequential:
    return nn.Sequential(CastTo(torch.float32), module)


def _to_half_except(network: nn.Module, islands: list[nn.Module]) -> None:
    """Cast every floating parameter and buffer of `network` to float16, except the islands'."""
    keep = {id(t) for island in islands for t in (*island.parameters(), *island.buffers())}
    with torch.no_grad():
        for module in network.modules():
            for name, param in module.named_parameters(recurse=False):
                if param.is_floating_point() and id(param) not in keep:
                    param.data = param.data.to(HALF)
            for name, buffer in module.named_buffers(recurse=False):
                if buffer.is_floating_point() and id(buffer) not in keep:
                    setattr(module, name, buffer.to(HALF))


def half_precision_network(network: OMCNetwork) -> OMCNetwork:
    """A float16 deep copy of `network` with float32 islands for coordinates (module docstring).

    `network` is not modified. The copy is in eval mode without gradients, like the original.
    """
    half = copy.deepcopy(network)
    detect = half.model.detect
    islands: list[nn.Module] = [detect]
    if half.siambox is not None:
        islands.append(half.siambox.conv_box[len(half.siambox.conv_box) - 1])
    _to_half_except(half, islands)
    for level in range(len(detect.m)):
        detect.m[level] = _float32_island(detect.m[level])
    if half.siambox is not None:
        last = len(half.siambox.conv_box) - 1
        half.siambox.conv_box[last] = _float32_island(half.siambox.conv_box[last])
    return half.eval().requires_grad_(False)
