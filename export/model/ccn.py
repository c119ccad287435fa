"""CCN, the cross-correlation network that splits a neck level into a detection and an ID branch.

omc-reference.md section 2 (layers 24-26). The adaptive average pool to (6, 10) is written as
two constant averaging matrices (rows, cols) for the map size fixed at construction, so that
an exported graph holds two MatMuls instead of data-dependent pooling. The bins are PyTorch's:
output i averages inputs [floor(i * n / out), ceil((i + 1) * n / out)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Size of the pooled descriptor (rows, cols) the affinities are computed from.
POOLED_HW = (6, 10)
# Initial value of the learnable branch weights w1, w2.
INITIAL_BRANCH_WEIGHT = 0.5
# Negative slope of the branches' LeakyReLU.
LEAKY_SLOPE = 0.3
# Kernel of the branch convolutions.
BRANCH_KERNEL = 3


def adaptive_average_matrix(in_size: int, out_size: int) -> Tensor:
    """[out_size, in_size] float32 matrix A with A @ v == adaptive_avg_pool1d(v, out_size).

    Row i holds 1 / count over PyTorch's bin [floor(i * in / out), ceil((i + 1) * in / out)).
    Works for out_size > in_size too (bins then overlap).
    """
    index = torch.arange(out_size, dtype=torch.int64)
    starts = torch.div(index * in_size, out_size, rounding_mode="floor")
    ends = torch.div((index + 1) * in_size + out_size - 1, out_size, rounding_mode="floor")
    positions = torch.arange(in_size, dtype=torch.int64)
    inside = (positions[None, :] >= starts[:, None]) & (positions[None, :] < ends[:, None])
    counts = (ends - starts).to(torch.float32)
    return inside.to(torch.float32) / counts[:, None]


def _branch(channels: int) -> nn.Sequential:
    # Conv2d(bias) + InstanceNorm2d (no affine, no running statistics) + LeakyReLU(0.3).
    return nn.Sequential(
        nn.Conv2d(channels, channels, BRANCH_KERNEL, 1, BRANCH_KERNEL // 2, bias=True),
        nn.InstanceNorm2d(channels),
        nn.LeakyReLU(LEAKY_SLOPE),
    )


class CCN(nn.Module):
    """[B, c, h, w] -> (detection branch, ID branch), each [B, c, h, w].

    c is the channel count of the layer CCN reads (the config's args are not used).
    With y1, y2 the two branch descriptors flattened to [B, c, 60]:
    self affinities softmax(y1 y1^T), softmax(y2 y2^T); cross affinities softmax(y1 y2^T),
    softmax(y2 y1^T) (softmax over the last axis, [B, c, c]); then
      detection = x + (w1 Self1 + (1 - w1) Cross12) x,   ID = x + (w2 Self2 + (1 - w2) Cross21) x
    with x flattened to [B, c, h*w]: w weights the SELF affinity of its own branch.
    """

    pool_rows: Tensor  # [6, h] constant averaging matrix (non-persistent buffer)
    pool_cols: Tensor  # [10, w]

    def __init__(self, channels: int, map_hw: tuple[int, int]) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.full((1,), INITIAL_BRANCH_WEIGHT))
        self.w2 = nn.Parameter(torch.full((1,), INITIAL_BRANCH_WEIGHT))
        self.c_attention1 = _branch(channels)
        self.c_attention2 = _branch(channels)
        self.register_buffer("pool_rows", adaptive_average_matrix(map_hw[0], POOLED_HW[0]), persistent=False)
        self.register_buffer("pool_cols", adaptive_average_matrix(map_hw[1], POOLED_HW[1]), persistent=False)

    def set_map_size(self, map_hw: tuple[int, int]) -> None:
        """Rebuild the constant pooling matrices for another (h, w) of the level it reads."""
        device = self.pool_rows.device
        self.pool_rows = adaptive_average_matrix(map_hw[0], POOLED_HW[0]).to(device)
        self.pool_cols = adaptive_average_matrix(map_hw[1], POOLED_HW[1]).to(device)

    def pooled(self, x: Tensor) -> Tensor:
        """adaptive_avg_pool2d(x, (6, 10)) as rows @ x @ cols^T: [B, c, h, w] -> [B, c, 6, 10]."""
        h, w = x.shape[-2:]
        rows, cols = self.pool_rows, self.pool_cols
        if rows.shape[1] != h or cols.shape[1] != w:
            # Eager call at another size than the one fixed at construction.
            rows = adaptive_average_matrix(int(h), POOLED_HW[0]).to(x.device)
            cols = adaptive_average_matrix(int(w), POOLED_HW[1]).to(x.device)
        return torch.matmul(torch.matmul(rows.to(x.dtype), x), cols.to(x.dtype).transpose(0, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pooled = self.pooled(x)
        det = self.c_attention1(pooled).flatten(2)
        ident = self.c_attention2(pooled).flatten(2)
        self_det = F.softmax(torch.matmul(det, det.transpose(1, 2)), dim=-1)
        self_id = F.softmax(torch.matmul(ident, ident.transpose(1, 2)), dim=-1)
        cross_det = F.softmax(torch.matmul(det, ident.transpose(1, 2)), dim=-1)
        cross_id = F.softmax(torch.matmul(ident, det.transpose(1, 2)), dim=-1)
        flat = x.flatten(2)
        det_mix = self.w1 * self_det + (1 - self.w1) * cross_det
        id_mix = self.w2 * self_id + (1 - self.w2) * cross_id
        det_out = torch.matmul(det_mix, flat).view_as(x) + x
        id_out = torch.matmul(id_mix, flat).view_as(x) + x
        return det_out, id_out
