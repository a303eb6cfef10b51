"""Convolutional building blocks of the C-Abstractor and LDP projectors, named like the layouts they load.

`LayerNorm2d` normalises a (b c h w) map over its channels (timm's `LayerNorm2d` / `LayerNormAct2d`).
`ConvNormAct` and `SqueezeExcite` carry timm's names (`conv`, `bn`; `fc1`, `fc2`), which Honeybee's
C-Abstractor checkpoints use through `timm.models.regnet.RegStage`; LDP's blocks follow torchvision's
MobileNetV3 `InvertedResidual` (`block.<i>.0` conv, `block.<i>.1` norm, SE `fc1`/`fc2`), which MobileVLM's
`mm_projector` checkpoints use. Neither library is needed at run time.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of b c h w."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNormAct(nn.Module):
    """timm's ConvNormAct: bias-free conv (padding k // 2), LayerNorm2d (`bn`), optional activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.SiLU, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = LayerNorm2d(out_ch, eps=eps)
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Channel gate x * gate(fc2(act(fc1(mean_hw x)))) (timm SEModule; torchvision SqueezeExcitation)."""

    def __init__(self, channels: int, reduced: int, act: type[nn.Module] = nn.SiLU,
                 gate: type[nn.Module] = nn.Sigmoid):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible` (MobileNet channel rounding)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class RegBottleneck(nn.Module):
    """timm's RegNet `Bottleneck` as Honeybee's RegStage builds it: bottle_ratio 1, group size 1 (the 3x3 conv
    is depthwise), SE ratio 0.25 of the block input, 1x1-conv shortcut when the width changes, act after the sum."""

    def __init__(self, in_ch: int, out_ch: int, act: type[nn.Module] = nn.SiLU, se_ratio: float = 0.25):
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, 1, act=act)
        self.conv2 = ConvNormAct(out_ch, out_ch, 3, groups=out_ch, act=act)
        self.se = SqueezeExcite(out_ch, int(round(in_ch * se_ratio)), act=act) if se_ratio else nn.Identity()
        self.conv3 = ConvNormAct(out_ch, out_ch, 1, act=None)
        self.downsample = ConvNormAct(in_ch, out_ch, 1, act=None) if in_ch != out_ch else nn.Identity()
        self.act3 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act3(self.conv3(self.se(self.conv2(self.conv1(x)))) + self.downsample(x))


class RegStage(nn.Sequential):
    """`depth` RegBottlenecks named b1, b2, ... (timm's RegStage, stride 1)."""

    def __init__(self, depth: int, in_ch: int, out_ch: int, act: type[nn.Module] = nn.SiLU):
        super().__init__()
        for i in range(depth):
            self.add_module(f"b{i + 1}", RegBottleneck(in_ch if i == 0 else out_ch, out_ch, act=act))


class InvertedResidual(nn.Module):
    """torchvision MobileNetV3 block as MobileVLM's LDP builds it: no expansion (expanded = input width), a
    depthwise 3x3 conv (LayerNorm2d, Hardswish), SE (ReLU, Hardsigmoid), a 1x1 conv (LayerNorm2d);
    residual when stride is 1."""

    def __init__(self, channels: int, stride: int = 1, eps: float = 1e-5):
        super().__init__()
        self.block = nn.Sequential(
            nn.Sequential(nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False),
                          LayerNorm2d(channels, eps=eps), nn.Hardswish()),
            SqueezeExcite(channels, make_divisible(channels // 4, 8), act=nn.ReLU, gate=nn.Hardsigmoid),
            nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), LayerNorm2d(channels, eps=eps)),
        )
        self.use_res_connect = stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out
