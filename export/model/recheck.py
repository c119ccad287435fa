"""The re-check network's two heads (the reference's `SiamMot.siambox` and `.siamheatmap`).

omc-reference.md section 2, "Re-check network". Both read the CCN DETECTION branches of the three
levels. Channel base C (128/192/256/320 for s/m/l/x) equals the stride-8 level's channels. Their
BatchNorms keep PyTorch's eps 1e-5: the reference builds them after resetting the base model's.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from omc.export.model.blocks import RECHECK_BN_EPS, Conv
from omc.export.model.saan import UPSAMPLE_X2, UPSAMPLE_X4, depthwise_upsample

# Output channels of the box branch: raw x, y, w, h.
BOX_CHANNELS = 4


def _head_conv(c_in: int, c_out: int) -> Conv:
    return Conv(c_in, c_out, 3, bn_eps=RECHECK_BN_EPS)


def _plain_conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, 1, 1, bias=True)


class _LevelFusion(nn.Module):
    """proj1 = Conv(C, C, 3) on l0 + proj2 = ConvT(2C -> C, x2, groups C) on l1 + proj3 = ConvT(4C -> C, x4, groups C) on l2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj1 = _head_conv(channels, channels)
        self.proj2 = depthwise_upsample(2 * channels, channels, UPSAMPLE_X2)
        self.proj3 = depthwise_upsample(4 * channels, channels, UPSAMPLE_X4)

    def fuse_levels(self, det_levels: Sequence[Tensor]) -> Tensor:
        """Detection branches -> [B, C, h, w] at stride 8."""
        return self.proj1(det_levels[0]) + self.proj2(det_levels[1]) + self.proj3(det_levels[2])


class RecheckBoxHead(_LevelFusion):
    """`siambox`: fused levels -> conv_box = (Conv(C, C, 3), Conv2d(C, 4, 3)) -> raw boxes [B, h, w, 4] (NHWC)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.conv_box = nn.Sequential(_head_conv(channels, channels), _plain_conv(channels, BOX_CHANNELS))

    def forward(self, det_levels: Sequence[Tensor]) -> Tensor:
        return self.conv_box(self.fuse_levels(det_levels)).permute(0, 2, 3, 1)


class RecheckHeatmapHead(_LevelFusion):
    """`siamheatmap`: M_p = sigmoid(conv2(conv1(Ms) * F_t)).

    F_t = fused levels [B, C, h, w] (the visual feature); Ms the aggregated similarity [B, 1, h, w];
    conv1 = (Conv(1, C, 3), Conv2d(C, 1, 3)); conv2 = (Conv(C, C, 3), Conv(C, C, 3), Conv2d(C, 1, 3)).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.conv1 = nn.Sequential(_head_conv(1, channels), _plain_conv(channels, 1))
        self.conv2 = nn.Sequential(
            _head_conv(channels, channels), _head_conv(channels, channels), _plain_conv(channels, 1)
        )

    def forward(self, aggregated: Tensor, features: Tensor) -> Tensor:
        """aggregated [B, 1, h, w], features F_t [B, C, h, w] -> M_p [B, 1, h, w] in (0, 1)."""
        return torch.sigmoid(self.conv2(self.conv1(aggregated) * features))
