"""Depthwise separable convolutions: MobileNet's block and MobileNetV2's inverted residual.

Lecture cost at C channels in and out, H x W output (Howard et al. 2017, arXiv:1704.04861, Sec. 3.1):
a standard 3x3 conv costs 9C^2HW multiply-adds; factorised into a 3x3 depthwise conv (one filter
per channel, 9CHW) and a 1x1 pointwise conv (C^2HW) it costs (9C + C^2)HW, a speed-up of
9C^2 / (9C + C^2) = 9C / (9 + C), which tends to 9 as C grows.

MobileNetV2's block (Sandler et al. 2018, Fig. 3) turns the bottleneck inside out: a 1x1 conv
expands C to tC channels, the depthwise 3x3 filters them, and a 1x1 conv projects back to C with
no activation after it (the "linear bottleneck": a ReLU on a narrow layer destroys information).
Cost: tHWC^2 + 9tHWC + tHWC^2 = 2tHWC^2 + 9tHWC.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.layers.conv_bn_act import ConvBnAct
from cnnzoo.layers.drop_path import DropPath

__all__ = ["DepthwiseSeparable", "InvertedResidual", "SeparableConv2d", "make_divisible"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a scaled channel count to the nearest multiple of `divisor`, losing at most 10%.

    The rule of TensorFlow's MobileNet code (and torchvision's `_make_divisible`), so that
    `width_mult` gives the same widths, and hence the same checkpoints, as theirs.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class DepthwiseSeparable(nn.Module):
    """MobileNet's block (Howard et al. 2017, Fig. 3): 3x3 depthwise conv-BN-act, then 1x1 conv-BN-act.

    The stride, if any, is on the depthwise conv, as in the paper's Table 1.
    """

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, *, kernel_size: int = 3, act: str = "relu"
    ) -> None:
        super().__init__()
        self.conv_dw = ConvBnAct(in_ch, in_ch, kernel_size, stride, groups=in_ch, act=act)
        self.conv_pw = ConvBnAct(in_ch, out_ch, 1, act=act)
        self.in_channels, self.out_channels, self.stride = in_ch, out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand (x t) -> 3x3 depthwise -> 1x1 linear projection.

    The residual is added where the block keeps the shape (stride 1, in = out channels). Module
    names follow torchvision (`conv.0` expand, `conv.1` depthwise, `conv.2`/`conv.3` projection
    and its BatchNorm; without the expand conv when t = 1), so its checkpoints load unchanged.

    Args:
        expand_ratio: t, the expansion of the hidden layer (6 in the paper, 1 in the first block).
        act: activation of the expand and depthwise convs (ReLU6 in the paper); the projection
            has none.
        drop_path: stochastic-depth rate of the residual branch (ignored without a residual).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        expand_ratio: float,
        *,
        act: str = "relu6",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"an inverted residual has stride 1 or 2, got {stride}")
        hidden = round(in_ch * expand_ratio)  # rounded, not truncated, as torchvision
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBnAct(in_ch, hidden, 1, act=act))
        layers += [
            ConvBnAct(hidden, hidden, 3, stride, groups=hidden, act=act),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.drop_path = DropPath(drop_path) if self.use_res_connect and drop_path > 0 else nn.Identity()
        self.in_channels, self.out_channels, self.stride = in_ch, out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.drop_path(self.conv(x))
        return self.conv(x)


class SeparableConv2d(nn.Module):
    """Xception's separable convolution (Chollet 2016, arXiv:1610.02357): depthwise k x k, then 1x1.

    Unlike MobileNet's block there is no BatchNorm or activation between the two: Chollet found
    the intermediate nonlinearity hurts (Sec. 4.7, Fig. 10). Both convolutions are bias-free, as
    a BatchNorm follows the pair. Names (`conv1` depthwise, `pointwise`) follow timm's
    `legacy_xception`.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, padding: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, kernel_size, stride, padding, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.in_channels, self.out_channels = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))
