"""Detection heads on the CCN detection branches: DenseMask (layer 28) and Detect (layer 29).

omc-reference.md section 2. Detect keeps the reference's buffers: `anchors` in stride units
[levels, A, 2] and `anchor_grid` in pixels [levels, 1, A, 1, 1, 2]; decoding uses `anchor_grid`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from omc.export.model.blocks import Conv
from omc.export.model.saan import UPSAMPLE_X2, UPSAMPLE_X4

# Initial value of Detect's learnable regression range k (trained checkpoints store theirs).
INITIAL_K = 10.0
# Centre offset: xy = ((sigmoid - CENTRE_OFFSET) * k + grid) * stride.
CENTRE_OFFSET = 0.5


def cell_grid(map_hw: tuple[int, int]) -> Tensor:
    """[h, w, 2] float32 of (col, row) per cell: the x, y offset of each cell in cells."""
    rows = torch.arange(map_hw[0], dtype=torch.float32)
    cols = torch.arange(map_hw[1], dtype=torch.float32)
    grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((grid_cols, grid_rows), -1)


def _upsample_to_single_channel(channels: int, geometry: tuple[int, int, int]) -> nn.ConvTranspose2d:
    kernel, stride, padding = geometry
    return nn.ConvTranspose2d(channels, 1, kernel, stride, padding, bias=False)


class DenseMask(nn.Module):
    """Crowd-density map at stride 8: sigmoid(Conv(c3, 1, 3)(l0) + ConvT(c4 -> 1, x2)(l1) + ConvT(c5 -> 1, x4)(l2)).

    Detection branches [B, c_i, h_i, w_i] -> [B, 1, h, w] in (0, 1).
    """

    def __init__(self, level_channels: Sequence[int]) -> None:
        super().__init__()
        c3, c4, c5 = level_channels
        self.proj1 = Conv(c3, 1, 3)
        self.proj2 = _upsample_to_single_channel(c4, UPSAMPLE_X2)
        self.proj3 = _upsample_to_single_channel(c5, UPSAMPLE_X4)

    def forward(self, det_levels: Sequence[Tensor]) -> Tensor:
        return torch.sigmoid(self.proj1(det_levels[0]) + self.proj2(det_levels[1]) + self.proj3(det_levels[2]))


class Detect(nn.Module):
    """Anchor candidates with boundary-aware regression (learnable k).

    Per level i: raw = Conv2d(c_i, A * (5 + nc), 1); s = sigmoid(raw);
    xy = ((s_xy - 0.5) * k + grid) * stride_i; wh = (2 s_wh)^2 * anchor_grid_i; obj, cls = s.
    Output [B, N, 5 + nc] (cx, cy, w, h in input pixels, obj, cls), rows P3, P4, P5 and within
    a level (anchor, row, col) row-major: N = A * sum(h_i * w_i).
    """

    anchors: Tensor  # [levels, A, 2] anchor sizes in stride units (persistent buffer)
    anchor_grid: Tensor  # [levels, 1, A, 1, 1, 2] anchor sizes in pixels (persistent buffer)

    def __init__(
        self,
        anchors_px: Sequence[Sequence[float]],
        level_channels: Sequence[int],
        strides: Sequence[int],
        map_sizes: Sequence[tuple[int, int]],
        outputs_per_anchor: int,
    ) -> None:
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.outputs_per_anchor = outputs_per_anchor
        pixels = torch.tensor([list(level) for level in anchors_px], dtype=torch.float32).view(len(anchors_px), -1, 2)
        self.anchors_per_level = pixels.shape[1]
        stride_column = torch.tensor(self.strides, dtype=torch.float32).view(-1, 1, 1)
        self.register_buffer("anchors", pixels / stride_column)
        self.register_buffer("anchor_grid", pixels.clone().view(len(anchors_px), 1, -1, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.anchors_per_level * outputs_per_anchor, 1) for c in level_channels)
        self.k = nn.Parameter(torch.full((1,), INITIAL_K))
        for level, size in enumerate(map_sizes):
            self.register_buffer(f"grid{level}", cell_grid(size), persistent=False)

    def set_map_sizes(self, map_sizes: Sequence[tuple[int, int]]) -> None:
        for level, size in enumerate(map_sizes):
            setattr(self, f"grid{level}", cell_grid(size).to(self.k.device))

    def level_grid(self, level: int, map_hw: tuple[int, int], like: Tensor) -> Tensor:
        """[h, w, 2] (col, row) offsets of a level, in `like`'s dtype and device."""
        grid: Tensor = getattr(self, f"grid{level}")
        if tuple(grid.shape[:2]) != tuple(map_hw):
            grid = cell_grid(map_hw).to(like.device)  # eager call at another input size
        return grid.to(like.dtype)

    def decode_level(self, level: int, det_level: Tensor) -> Tensor:
        """Detection branch [B, c, h, w] -> candidates [B, A * h * w, 5 + nc]."""
        raw = self.m[level](det_level)
        batch, _, h, w = raw.shape
        per_anchor = raw.reshape(batch, self.anchors_per_level, self.outputs_per_anchor, h, w).permute(0, 1, 3, 4, 2)
        s = torch.sigmoid(per_anchor)
        grid = self.level_grid(level, (h, w), s)
        xy = ((s[..., 0:2] - CENTRE_OFFSET) * self.k + grid) * self.strides[level]
        doubled = s[..., 2:4] * 2
        wh = doubled * doubled * self.anchor_grid[level].to(s.dtype)
        return torch.cat((xy, wh, s[..., 4:]), -1).reshape(batch, -1, self.outputs_per_anchor)

    def forward(self, det_levels: Sequence[Tensor]) -> Tensor:
        return torch.cat([self.decode_level(i, x) for i, x in enumerate(det_levels)], 1)
