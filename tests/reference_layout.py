"""Stand-ins for the reference implementation's classes, to write checkpoints in its pickle layout.

The classes below carry the reference's class names and, while `registered_reference_modules()`
is active, live in the modules `models.mot.cstrack` and `models.mot.common` of `sys.modules`, so
`torch.save` pickles them under exactly the names a real OMC / CSTrack training checkpoint uses
(omc-reference.md section 6). Their attribute names give the reference's state-dict keys.

They are an independent, plainly written second implementation of the network (nn.AdaptiveAvgPool2d
in CCN, per-tracklet Python loops in the re-check), so the loaded omc network's outputs can be
compared with theirs. Tests remove the modules again before loading, proving that no reference
code is needed (and none runs) when reading the file.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import types
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CSTRACK_MODULE = "models.mot.cstrack"
COMMON_MODULE = "models.mot.common"

# A tiny CSTrack config in the reference's schema: depth 0.33, width 0.125 (P3/P4/P5 channels
# 32/64/128), CCN args carrying the true channels as the fixture's config does.
TINY_CONFIG: dict[str, Any] = {
    "nc": 1,
    "id_embedding": 512,
    "depth_multiple": 0.33,
    "width_multiple": 0.125,
    "anchors": [[8, 24, 11, 34, 16, 48], [32, 96, 45, 135, 64, 192], [128, 384, 180, 540, 256, 640]],
    "backbone": [
        [-1, 1, "Focus", [64, 3]],
        [-1, 1, "Conv", [128, 3, 2]],
        [-1, 3, "C3", [128]],
        [-1, 1, "Conv", [256, 3, 2]],
        [-1, 9, "C3", [256]],
        [-1, 1, "Conv", [512, 3, 2]],
        [-1, 9, "C3", [512]],
        [-1, 1, "Conv", [1024, 3, 2]],
        [-1, 1, "SPP", [1024, [5, 9, 13]]],
        [-1, 3, "C3", [1024, False]],
    ],
    "head": [
        [-1, 1, "Conv", [512, 1, 1]],
        [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 3, "C3", [512, False]],
        [-1, 1, "Conv", [256, 1, 1]],
        [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 3, "C3", [256, False]],
        [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 14], 1, "Concat", [1]],
        [-1, 3, "C3", [512, False]],
        [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 10], 1, "Concat", [1]],
        [-1, 3, "C3", [1024, False]],
        [17, 1, "CCN", [9, 32]],
        [20, 1, "CCN", [9, 64]],
        [23, 1, "CCN", [9, 128]],
        [[24, 25, 26], 1, "SAAN", [512]],
        [[24, 25, 26], 1, "DenseMask", [1]],
        [[24, 25, 26], 1, "Detect", ["nc", "anchors", 0]],
    ],
}


# --- models.mot.common -------------------------------------------------------------------------


class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = Conv(4 * c1, c2, k, s)

    def forward(self, x: Tensor) -> Tensor:
        # Pixel (2i + a, 2j + b) goes to phase a + 2b.
        return self.conv(torch.cat([x[..., a::2, b::2] for b in (0, 1) for a in (0, 1)], 1))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 1)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        out = self.cv2(self.cv1(x))
        return out + x if self.add else out


class C3(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        half = c2 // 2
        self.cv1 = Conv(c1, half)
        self.cv2 = Conv(c1, half)
        self.cv3 = Conv(2 * half, c2)
        self.m = nn.Sequential(*[Bottleneck(half, half, shortcut) for _ in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class SPP(nn.Module):
    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c1 // 2)
        self.cv2 = Conv(c1 // 2 * (len(k) + 1), c2)
        self.m = nn.ModuleList([nn.MaxPool2d(size, 1, size // 2) for size in k])

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *[pool(x) for pool in self.m]], 1))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, self.d)


# --- models.mot.cstrack ------------------------------------------------------------------------


class CCN(nn.Module):
    def __init__(self, k_size: int, ch: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.ones(1) * 0.5)
        self.w2 = nn.Parameter(torch.ones(1) * 0.5)
        self.avg_pool = nn.AdaptiveAvgPool2d((6, 10))
        self.c_attention1 = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.InstanceNorm2d(ch), nn.LeakyReLU(0.3))
        self.c_attention2 = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.InstanceNorm2d(ch), nn.LeakyReLU(0.3))

    def forward(self, x: Tensor) -> list[Tensor]:
        b, c, h, w = x.shape
        pooled = self.avg_pool(x)
        a1 = self.c_attention1(pooled).reshape(b, c, -1)
        a2 = self.c_attention2(pooled).reshape(b, c, -1)
        s11 = torch.softmax(a1 @ a1.transpose(1, 2), -1)
        s22 = torch.softmax(a2 @ a2.transpose(1, 2), -1)
        s12 = torch.softmax(a1 @ a2.transpose(1, 2), -1)
        s21 = torch.softmax(a2 @ a1.transpose(1, 2), -1)
        flat = x.reshape(b, c, h * w)
        first = ((self.w1 * s11 + (1 - self.w1) * s12) @ flat).reshape(b, c, h, w)
        second = ((self.w2 * s22 + (1 - self.w2) * s21) @ flat).reshape(b, c, h, w)
        return [first + x, second + x]


class SAAN_Attention(nn.Module):
    def __init__(self, k_size: int = 3, ch: int = 256, s_state: bool = False, c_state: bool = False) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.sigmoid = nn.Sigmoid()
        self.s_state, self.c_state = s_state, c_state
        if c_state:
            self.c_attention = nn.Sequential(
                nn.Conv1d(1, 1, k_size, padding=k_size // 2, bias=False),
                nn.LayerNorm([1, ch]),
                nn.LeakyReLU(0.3),
                nn.Linear(ch, ch, bias=False),
            )
        if s_state:
            self.conv_s = nn.Sequential(Conv(ch, ch // 4, 1))
            self.s_attention = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        weight = torch.ones_like(x[:, :1, :1, :1])
        if self.c_state:
            def along_channels(pooled: Tensor) -> Tensor:  # [b, c, 1, 1] -> [b, c, 1, 1]
                return self.c_attention(pooled.flatten(1)[:, None, :])[:, 0, :, None, None]

            weight = weight * self.sigmoid(along_channels(self.avg_pool(x)) + along_channels(self.max_pool(x)))
        if self.s_state:
            reduced = self.conv_s(x)
            stats = torch.cat([reduced.mean(1, keepdim=True), reduced.max(1, keepdim=True)[0]], 1)
            weight = weight * self.sigmoid(self.s_attention(stats))
        return x * weight + x


class SAAN(nn.Module):
    def __init__(self, ch: list[int]) -> None:
        super().__init__()
        self.proj1 = nn.Sequential(Conv(ch[0], 256, 3), SAAN_Attention(3, 256, s_state=True))
        self.proj2 = nn.Sequential(
            Conv(ch[1], 256, 3), nn.ConvTranspose2d(256, 256, 4, 2, 1, groups=256, bias=False),
            SAAN_Attention(3, 256, s_state=True),
        )
        self.proj3 = nn.Sequential(
            Conv(ch[2], 256, 3), nn.ConvTranspose2d(256, 256, 8, 4, 2, groups=256, bias=False),
            SAAN_Attention(3, 256, s_state=True),
        )
        self.node = nn.Sequential(SAAN_Attention(3, 768, c_state=True), Conv(768, 256, 3), nn.Conv2d(256, 512, 1))

    def forward(self, levels: list[list[Tensor]]) -> Tensor:
        parts = [self.proj1(levels[0][1]), self.proj2(levels[1][1]), self.proj3(levels[2][1])]
        return self.node(torch.cat(parts, 1)).permute(0, 2, 3, 1)


class DenseMask(nn.Module):
    def __init__(self, ch: list[int]) -> None:
        super().__init__()
        self.proj1 = Conv(ch[0], 1, 3)
        self.proj2 = nn.ConvTranspose2d(ch[1], 1, 4, 2, 1, bias=False)
        self.proj3 = nn.ConvTranspose2d(ch[2], 1, 8, 4, 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, levels: list[list[Tensor]]) -> Tensor:
        return self.sigmoid(self.proj1(levels[0][0]) + self.proj2(levels[1][0]) + self.proj3(levels[2][0]))


class Detect(nn.Module):
    def __init__(self, anchors: list[list[int]], ch: list[int], strides: list[int]) -> None:
        super().__init__()
        self.nl, self.na, self.no = len(anchors), len(anchors[0]) // 2, 6
        self.stride = torch.tensor(strides, dtype=torch.float32)
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2)
        self.register_buffer("anchors", pixels / self.stride.view(-1, 1, 1))
        self.register_buffer("anchor_grid", pixels.clone().view(self.nl, 1, -1, 1, 1, 2))
        self.m = nn.ModuleList([nn.Conv2d(c, self.na * self.no, 1) for c in ch])
        self.k = nn.Parameter(torch.ones(1) * 10)
        self.grid: list[Tensor] = [torch.zeros(1)] * self.nl  # plain attribute, pickled as in the reference

    def forward(self, levels: list[list[Tensor]]) -> Tensor:
        rows = []
        for i in range(self.nl):
            raw = self.m[i](levels[i][0])
            b, _, h, w = raw.shape
            y = raw.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).sigmoid()
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            self.grid[i] = torch.stack((xs, ys), 2).view(1, 1, h, w, 2).float()
            xy = ((y[..., :2] - 0.5) * self.k + self.grid[i]) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
            rows.append(torch.cat([xy, wh, y[..., 4:]], -1).view(b, -1, self.no))
        return torch.cat(rows, 1)


class Model(nn.Module):
    """Builds the layers of a reference-schema config; forward -> (candidates, dense, id_map, levels)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.yaml = copy.deepcopy(cfg)
        gd, gw = cfg["depth_multiple"], cfg["width_multiple"]
        layers, self.froms = [], []
        channels, strides = [3], [1]  # channels[i + 1], strides[i + 1]: output of layer i
        for i, (source, n, name, args) in enumerate(cfg["backbone"] + cfg["head"]):
            n = max(round(n * gd), 1) if n > 1 else n
            sources = source if isinstance(source, list) else [source]
            c_in = [channels[s + 1] if s >= 0 else channels[i + 1 + s] for s in sources]
            s_in = [strides[s + 1] if s >= 0 else strides[i + 1 + s] for s in sources]
            c_out, s_out = c_in[0], s_in[0]
            if name in ("Focus", "Conv", "C3", "SPP"):
                c_out = math.ceil(args[0] * gw / 8) * 8
            if name == "Focus":
                module: nn.Module = Focus(c_in[0], c_out, *args[1:])
                s_out *= 2
            elif name == "Conv":
                module = Conv(c_in[0], c_out, *args[1:])
                s_out *= args[2] if len(args) > 2 else 1
            elif name == "C3":
                module = C3(c_in[0], c_out, n, *args[1:])
            elif name == "SPP":
                module = SPP(c_in[0], c_out, tuple(args[1]))
            elif name == "nn.Upsample":
                module = nn.Upsample(None, args[1], args[2])
                s_out //= args[1]
            elif name == "Concat":
                module, c_out = Concat(args[0]), sum(c_in)
            elif name == "CCN":
                module = CCN(args[0], args[1])
            elif name == "SAAN":
                module = SAAN(c_in)
            elif name == "DenseMask":
                module = DenseMask(c_in)
            else:
                module = Detect(cfg["anchors"], c_in, s_in)
                self.level_sources = sources
            layers.append(module)
            self.froms.append(sources)
            channels.append(c_out)
            strides.append(s_out)
        self.model = nn.Sequential(*layers)
        self.stride = self.model[-1].stride
        for m in self.modules():  # the reference resets the base model's BatchNorms
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, list[list[Tensor]]]:
        outputs: list[Any] = []
        for i, (module, sources) in enumerate(zip(self.model, self.froms)):
            if i > 0 or sources != [-1]:
                picked = [outputs[s] if s >= 0 else outputs[i + s] for s in sources]
                x = picked[0] if len(picked) == 1 else picked
            x = module(x)
            outputs.append(x)
        levels = [outputs[s] for s in self.level_sources]
        return outputs[-1], outputs[-2], outputs[-3], levels


class recheck_Box(nn.Module):  # noqa: N801 - the reference's class name
    def __init__(self, channal_base: int = 256) -> None:
        super().__init__()
        c = channal_base
        self.proj1 = Conv(c, c, 3)
        self.proj2 = nn.ConvTranspose2d(2 * c, c, 4, 2, 1, groups=c, bias=False)
        self.proj3 = nn.ConvTranspose2d(4 * c, c, 8, 4, 2, groups=c, bias=False)
        self.conv_box = nn.Sequential(Conv(c, c, 3), nn.Conv2d(c, 4, 3, 1, 1))

    def forward(self, levels: list[list[Tensor]]) -> Tensor:
        fused = self.proj1(levels[0][0]) + self.proj2(levels[1][0]) + self.proj3(levels[2][0])
        return self.conv_box(fused).permute(0, 2, 3, 1)


class recheck_heatmap(nn.Module):  # noqa: N801 - the reference's class name
    def __init__(self, channal_base: int = 256) -> None:
        super().__init__()
        c = channal_base
        self.proj1 = Conv(c, c, 3)
        self.proj2 = nn.ConvTranspose2d(2 * c, c, 4, 2, 1, groups=c, bias=False)
        self.proj3 = nn.ConvTranspose2d(4 * c, c, 8, 4, 2, groups=c, bias=False)
        self.conv1 = nn.Sequential(Conv(1, c, 3), nn.Conv2d(c, 1, 3, 1, 1))
        self.conv2 = nn.Sequential(Conv(c, c, 3), Conv(c, c, 3), nn.Conv2d(c, 1, 3, 1, 1))
        self.sigmoid = nn.Sigmoid()

    def features(self, levels: list[list[Tensor]]) -> Tensor:
        return self.proj1(levels[0][0]) + self.proj2(levels[1][0]) + self.proj3(levels[2][0])

    def forward(self, similarity: Tensor, levels: list[list[Tensor]]) -> Tensor:
        return self.sigmoid(self.conv2(self.conv1(similarity) * self.features(levels)))


class SiamMot(nn.Module):
    """Base model + re-check heads; forward(img, tracklets) adds the heat map with a loop per tracklet."""

    def __init__(self, opt: argparse.Namespace, model: Model, channal_base: int) -> None:
        super().__init__()
        self.opt = opt
        self.model = model
        self.stride = model.stride
        self.siambox = recheck_Box(channal_base)
        self.siamheatmap = recheck_heatmap(channal_base)
        self.r = opt.radius

    def forward(self, img: Tensor, tracklets: Tensor | None = None) -> dict[str, Tensor]:
        candidates, dense, id_map, levels = self.model(img)
        out = {"candidates": candidates, "dense": dense, "id_map": id_map,
               "siambox_raw": self.siambox(levels), "features": self.siamheatmap.features(levels)}
        if tracklets is not None:
            similarity = windowed_similarity(id_map[0], tracklets, self.r, bool(self.opt.Global_Point))
            out["similarity"] = similarity
            out["heatmap"] = self.siamheatmap(similarity[None, None], levels)
        return out


def windowed_similarity(id_map: Tensor, tracklets: Tensor, radius: int, global_point: bool) -> Tensor:
    """[h, w, E] raw map, [n, E] -> Ms [h, w]: a plain loop over tracklets, half-open windows clipped at 0."""
    h, w, e = id_map.shape
    cosine = F.normalize(id_map.reshape(h * w, e), dim=1) @ F.normalize(tracklets, dim=1).t()
    maps = cosine.t().reshape(-1, h, w).clamp_min(0)
    total = torch.zeros(h, w)
    for single in maps:
        if global_point:
            flat = int(torch.argmax(single))
            row, col = divmod(flat, w)
            mask = torch.zeros(h, w)
            mask[max(row - radius, 0):row + radius, max(col - radius, 0):col + radius] = 1
            single = single * mask
        total += single
    return total / total.max() if float(total.max()) > 0 else total


# --- registration, building, saving ------------------------------------------------------------

_CSTRACK_CLASSES = (CCN, SAAN_Attention, SAAN, DenseMask, Detect, Model, recheck_Box, recheck_heatmap, SiamMot)
_COMMON_CLASSES = (Conv, Focus, Bottleneck, C3, SPP, Concat)


@contextlib.contextmanager
def registered_reference_modules() -> Iterator[None]:
    """Put the stand-ins into sys.modules under the reference's module names; remove them after."""
    names = ("models", "models.mot", CSTRACK_MODULE, COMMON_MODULE)
    saved = {name: sys.modules.get(name) for name in names}
    originals = {cls: cls.__module__ for cls in _CSTRACK_CLASSES + _COMMON_CLASSES}
    modules = {name: types.ModuleType(name) for name in names}
    for module_name, classes in ((CSTRACK_MODULE, _CSTRACK_CLASSES), (COMMON_MODULE, _COMMON_CLASSES)):
        for cls in classes:
            cls.__module__ = module_name
            setattr(modules[module_name], cls.__name__, cls)
    sys.modules.update(modules)
    try:
        yield
    finally:
        for cls, module_name in originals.items():
            cls.__module__ = module_name
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def reference_options(radius: int = 3, global_point: int = 1) -> argparse.Namespace:
    """A Namespace like the reference training script's `opt` (the fields the network reads and a few more)."""
    return argparse.Namespace(
        cfg="../experiments/model_set/CSTrack_tiny.yaml", weights="", epochs=30, batch_size=8,
        img_size=[1088, 608], hyp={"lr0": 0.005, "momentum": 0.95}, recheck=True,
        Global_Point=global_point, radius=radius, conf_thres=0.05, emb_dim=512,
    )


def calibrated(model: nn.Module, images: Tensor, call: Any) -> None:
    """Give every BatchNorm the statistics of `call(model, images)` and varied affine values, then eval."""
    generator = torch.Generator().manual_seed(7)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.weight.copy_(0.4 + 0.4 * torch.rand(norm.weight.shape, generator=generator))
            norm.bias.copy_(0.05 * torch.randn(norm.bias.shape, generator=generator))
        model.train()
        call(model, images)
    model.eval()


def build_siammot(images: Tensor, tracklets: Tensor, config: dict[str, Any] = TINY_CONFIG) -> SiamMot:
    """A stage-2 stand-in with non-trivial weights (BN statistics of `images`, w1/w2 and k moved)."""
    torch.manual_seed(11)
    model = Model(config)
    siam = SiamMot(reference_options(), model, channal_base=int(model.model[24].c_attention1[0].weight.shape[0]))
    with torch.no_grad():
        for index, (w1, w2) in zip((24, 25, 26), ((0.7, 0.2), (0.35, 0.6), (0.55, 0.8))):
            model.model[index].w1.fill_(w1)
            model.model[index].w2.fill_(w2)
        model.model[29].k.fill_(8.5)
    calibrated(siam, images, lambda m, x: m(x, tracklets))
    return siam


def build_model(images: Tensor, config: dict[str, Any] = TINY_CONFIG) -> Model:
    """A stage-1 stand-in (bare Model) with non-trivial weights."""
    torch.manual_seed(12)
    model = Model(config)
    calibrated(model, images, lambda m, x: m(x))
    return model


def rounded_to_half(module: nn.Module) -> nn.Module:
    """The float32 module whose weights are exactly those of `module.half()` (what the file stores)."""
    return copy.deepcopy(module).half().float()


def training_checkpoint(module: nn.Module) -> dict[str, Any]:
    """The dict the reference's strip_optimizer leaves: the model pickled whole, in float16."""
    return {"epoch": -1, "best_fitness": 0.0, "training_results": None, "model": copy.deepcopy(module).half(),
            "ema": None, "updates": None, "optimizer": None, "wandb_id": None}
