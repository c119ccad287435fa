"""SAAN, the scale-aware attention network that makes the ID embeddings (omc-reference.md section 2, layer 27).

Attribute names follow the reference's state-dict keys: `proj1..3`, `node.{0,1,2}`, and in each
attention block `conv_s.0`, `s_attention`, `c_attention.{0,1,3}`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from omc.export.model.blocks import Conv

# Channels each level is projected to before the three are concatenated.
LEVEL_CHANNELS = 256
# Spatial attention: channel reduction of its 1x1 Conv, and its 7x7 conv over (mean, max).
SPATIAL_REDUCTION = 4
SPATIAL_KERNEL = 7
# Channel attention: 1-D conv kernel over the pooled channel vector, and LeakyReLU slope.
CHANNEL_KERNEL = 3
LEAKY_SLOPE = 0.3
# Transposed convs bringing stride 16 and 32 to stride 8: (kernel, stride, padding).
UPSAMPLE_X2 = (4, 2, 1)
UPSAMPLE_X4 = (8, 4, 2)


def depthwise_upsample(channels: int, out_channels: int, geometry: tuple[int, int, int]) -> nn.ConvTranspose2d:
    """Grouped ConvTranspose2d (groups = out_channels, no bias) scaling h, w by its stride."""
    kernel, stride, padding = geometry
    return nn.ConvTranspose2d(channels, out_channels, kernel, stride, padding, groups=out_channels, bias=False)


class SAANAttention(nn.Module):
    """Spatial and/or channel attention, y = x * s * c + x (the factor absent is 1).

    spatial: s = sigmoid(conv7x7([mean_c, max_c] of Conv1x1(x))), [B, 1, h, w].
    channel: c = sigmoid(f(avg_hw x) + f(max_hw x)), [B, c, 1, 1], with f = Conv1d(1, 1, 3) over
    the channel vector, LayerNorm([1, c]), LeakyReLU(0.3), Linear(c, c), shared by both pools.
    """

    def __init__(self, channels: int, *, spatial: bool, channel: bool) -> None:
        super().__init__()
        self.spatial = spatial
        self.channel = channel
        if channel:
            self.c_attention = nn.Sequential(
                nn.Conv1d(1, 1, CHANNEL_KERNEL, padding=CHANNEL_KERNEL // 2, bias=False),
                nn.LayerNorm([1, channels]),
                nn.LeakyReLU(LEAKY_SLOPE),
                nn.Linear(channels, channels, bias=False),
            )
        if spatial:
            self.conv_s = nn.Sequential(Conv(channels, channels // SPATIAL_REDUCTION, 1))
            self.s_attention = nn.Conv2d(2, 1, SPATIAL_KERNEL, padding=SPATIAL_KERNEL // 2, bias=False)

    def channel_weights(self, x: Tensor) -> Tensor:
        """[B, c, h, w] -> [B, c, 1, 1] in (0, 1)."""
        average = x.mean(dim=(2, 3)).unsqueeze(1)  # [B, 1, c]
        maximum = x.amax(dim=(2, 3)).unsqueeze(1)
        logits = self.c_attention(average) + self.c_attention(maximum)
        return torch.sigmoid(logits).transpose(1, 2).unsqueeze(-1)

    def spatial_weights(self, x: Tensor) -> Tensor:
        """[B, c, h, w] -> [B, 1, h, w] in (0, 1)."""
        reduced = self.conv_s(x)
        summary = torch.cat((reduced.mean(dim=1, keepdim=True), reduced.amax(dim=1, keepdim=True)), 1)
        return torch.sigmoid(self.s_attention(summary))

    def forward(self, x: Tensor) -> Tensor:
        if self.channel and self.spatial:
            return x * self.spatial_weights(x) * self.channel_weights(x) + x
        if self.channel:
            return x * self.channel_weights(x) + x
        if self.spatial:
            return x * self.spatial_weights(x) + x
        return x


class SAAN(nn.Module):
    """ID branches of the three levels -> raw ID embeddings [B, h, w, E] (NHWC, not normalised).

    Per level: Conv(c_i, 256, 3), a depthwise ConvTranspose2d to stride 8 for the stride-16/32
    levels, spatial attention. Then concatenate (768 ch), channel attention, Conv(768, 256, 3),
    Conv2d(256, E, 1, bias).
    """

    def __init__(self, level_channels: Sequence[int], embedding_dim: int) -> None:
        super().__init__()
        c3, c4, c5 = level_channels
        width = LEVEL_CHANNELS
        self.proj1 = nn.Sequential(Conv(c3, width, 3), SAANAttention(width, spatial=True, channel=False))
        self.proj2 = nn.Sequential(
            Conv(c4, width, 3),
            depthwise_upsample(width, width, UPSAMPLE_X2),
            SAANAttention(width, spatial=True, channel=False),
        )
        self.proj3 = nn.Sequential(
            Conv(c5, width, 3),
            depthwise_upsample(width, width, UPSAMPLE_X4),
            SAANAttention(width, spatial=True, channel=False),
        )
        self.node = nn.Sequential(
            SAANAttention(3 * width, spatial=False, channel=True),
            Conv(3 * width, width, 3),
            nn.Conv2d(width, embedding_dim, 1, 1, 0, bias=True),
        )

    def forward(self, id_levels: Sequence[Tensor]) -> Tensor:
        fused = torch.cat((self.proj1(id_levels[0]), self.proj2(id_levels[1]), self.proj3(id_levels[2])), 1)
        return self.node(fused).permute(0, 2, 3, 1)
