"""YOLOv5 (v5.0) building blocks of the CSTrack backbone and neck (omc-reference.md section 2).

Attribute names (`conv`, `bn`, `act`, `cv1`..`cv3`, `m`) are the reference's, so that state-dict
keys of reference checkpoints load one to one.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

# BatchNorm eps of the base model: the reference resets every BN of `Model` to 1e-3 after
# building it (omc-reference.md section 2). The re-check heads keep PyTorch's 1e-5.
BASE_BN_EPS = 1e-3
RECHECK_BN_EPS = 1e-5
# Hidden-channel fraction of Bottleneck and C3 (YOLOv5 default e=0.5; C3's inner bottlenecks use 1.0).
HIDDEN_FRACTION = 0.5
# SPP max-pool kernel sizes when the config gives none.
SPP_KERNELS = (5, 9, 13)


def same_padding(kernel: int) -> int:
    """Padding that keeps the map size at stride 1 for an odd kernel."""
    return kernel // 2


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU: the reference's `Conv`.

    [B, c_in, H, W] -> [B, c_out, H / stride, W / stride].
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        *,
        bn_eps: float = BASE_BN_EPS,
    ) -> None:
        super().__init__()
        pad = same_padding(kernel) if padding is None else padding
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=bn_eps)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    """Space-to-depth by 2 then a Conv: [B, c, H, W] -> [B, c_out, H / (2 stride), W / (2 stride)].

    The four phases are stacked in the reference's order (even rows/even cols, odd rows/even
    cols, even rows/odd cols, odd rows/odd cols); the first conv's weights depend on it.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int | None = None, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = Conv(4 * c_in, c_out, kernel, stride, padding, groups)

    def forward(self, x: Tensor) -> Tensor:
        phases = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(phases, 1))


class Bottleneck(nn.Module):
    """1x1 Conv then 3x3 Conv, plus the input when `shortcut` and the channel counts match."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, groups: int = 1, expansion: float = HIDDEN_FRACTION):
        super().__init__()
        hidden = int(c_out * expansion)
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(hidden, c_out, 3, 1, groups=groups)
        self.residual = shortcut and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.residual else y


class C3(nn.Module):
    """CSP block with three convs: cv3(cat(m(cv1(x)), cv2(x))), `repeats` bottlenecks in m."""

    def __init__(self, c_in: int, c_out: int, repeats: int = 1, shortcut: bool = True, groups: int = 1,
                 expansion: float = HIDDEN_FRACTION) -> None:
        super().__init__()
        hidden = int(c_out * expansion)
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(c_in, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, groups, expansion=1.0) for _ in range(repeats)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling: cv1 halves the channels, stride-1 max-pools side by side, cv2."""

    def __init__(self, c_in: int, c_out: int, kernels: Sequence[int] = SPP_KERNELS) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(hidden * (len(kernels) + 1), c_out, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=same_padding(k)) for k in kernels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.m], 1))


class Concat(nn.Module):
    """Concatenation of the inputs along `dim` (channels)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(xs), self.dim)
