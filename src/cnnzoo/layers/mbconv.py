"""MBConv: the mobile inverted bottleneck with squeeze-and-excitation (EfficientNet's block).

Sandler et al. 2018 (MobileNetV2, arXiv:1801.04381) invert the ResNet bottleneck: a 1x1 conv
*expands* the channels (ratio 6), a kxk depthwise conv filters each channel on its own, and a
linear 1x1 conv projects back down, with the shortcut between the thin ends. Tan et al. 2019
(MnasNet, arXiv:1807.11626) add a squeeze-and-excitation gate after the depthwise conv, and
EfficientNet (Tan & Le 2019, arXiv:1905.11946) uses that block with swish throughout:

    1x1 expand conv-BN-act (absent when the ratio is 1: "MBConv1")
    -> kxk depthwise conv-BN-act (carries the stride)
    -> SE: squeeze to max(1, in_ch / 4) channels, computed on the block's *input* width
    -> 1x1 projection conv-BN, no activation (a ReLU there would destroy information in the
       low-dimensional output, MobileNetV2 §3.2)
    -> stochastic depth and the identity shortcut, only when the stride is 1 and in == out.

Cost at H x W output, C_in -> C_out, expansion t, kernel k (multiply-adds, stride 1):
HW (t C_in^2 + k^2 t C_in + t C_in C_out), against HW k^2 C_in C_out for one ordinary kxk conv.

Module names are torchvision's (`block` = Sequential of Conv2dNormActivation-like ConvBnActs
and a SqueezeExcitation with fc1/fc2; `stochastic_depth`), so its checkpoints load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.layers.conv_bn_act import ConvBnAct
from cnnzoo.layers.drop_path import DropPath
from cnnzoo.layers.se import SqueezeExcite

__all__ = ["MBConv"]


class MBConv(nn.Module):
    """Mobile inverted bottleneck with SE (MBConv1 / MBConv6 of EfficientNet's Table 1).

    Args:
        in_ch, out_ch: channels at the thin ends.
        kernel_size: the depthwise kernel (3 or 5 in EfficientNet).
        stride: 1 or 2, applied by the depthwise conv.
        expand_ratio: hidden width = in_ch * expand_ratio; 1 drops the expansion conv.
        se_ratio: SE bottleneck = max(1, int(in_ch * se_ratio)); None or 0 leaves SE out.
        act: activation by name for the expansion, depthwise and SE layers (swish in the paper).
        drop_path: stochastic-depth probability of the residual branch (residual blocks only).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        expand_ratio: float = 6.0,
        se_ratio: float | None = 0.25,
        act: str = "swish",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MBConv stride must be 1 or 2, got {stride}")
        if kernel_size % 2 == 0:
            raise ValueError(f"MBConv needs an odd kernel for 'same' padding, got {kernel_size}")
        if expand_ratio < 1:
            raise ValueError(f"expand_ratio must be >= 1 (an inverted bottleneck widens), got {expand_ratio}")
        # torchvision rounds the hidden width to a multiple of 8 as well; every EfficientNet-B
        # input width already is one, so in_ch * ratio is the same number there.
        hidden = round(in_ch * expand_ratio)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBnAct(in_ch, hidden, 1, act=act))
        layers.append(ConvBnAct(hidden, hidden, kernel_size, stride, groups=hidden, act=act))
        if se_ratio:
            # Squeeze from the block's input width, as the TF reference and torchvision do: the
            # gate's cost stays that of an SE on the thin tensor although it gates the wide one.
            layers.append(SqueezeExcite(hidden, act=act, hidden=max(1, int(in_ch * se_ratio))))
        layers.append(ConvBnAct(hidden, out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)
        # Kept even on non-residual blocks (where it is never applied) so that the module tree
        # is torchvision's; it holds no tensors, so state dicts are unaffected either way.
        self.stochastic_depth = DropPath(drop_path)
        self.use_residual = stride == 1 and in_ch == out_ch
        self.in_channels, self.out_channels = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = self.stochastic_depth(out) + x
        return out
