"""Residual blocks of the lectures: basic, bottleneck, and their pre-activation versions.

Attribute names (conv1, bn1, ..., downsample) follow torchvision's `resnet.py`, so a torchvision
checkpoint's keys land on the same tensors without renaming.

Lecture cost of one block at C channels, H x W (He et al. 2015, Sec. 4.1; "More layers, less computational
cost"): basic = two 3x3 convs = 18HWC^2 multiply-adds; bottleneck at 4C in/out = 1x1 (4HWC^2)
+ 3x3 (9HWC^2) + 1x1 (4HWC^2) = 17HWC^2, with four times the channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.layers.activations import get_act
from cnnzoo.layers.conv_bn_act import conv1x1, conv3x3
from cnnzoo.layers.drop_path import DropPath
from cnnzoo.layers.se import SqueezeExcite

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PadShortcut",
    "PlainBlock",
    "PreActBasicBlock",
    "PreActBottleneck",
    "make_shortcut",
]


class PadShortcut(nn.Module):
    """He et al.'s option A: identity with stride-2 subsampling and zero-padded new channels.

    Parameter-free, which is why the CIFAR ResNets of §4.2 have exactly as many parameters
    as their plain twins.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError("option-A shortcuts can only add channels")
        self.stride, self.extra = stride, out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # Split the new zero channels evenly on both sides, as the reference implementations do.
        lo = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, lo, self.extra - lo)) if self.extra else x


def make_shortcut(
    in_ch: int, out_ch: int, stride: int, kind: str = "B", *, bn: bool = True
) -> nn.Module | None:
    """Shortcut for a block whose input and output differ in shape; None when they match.

    kind "A": zero-padding identity (no parameters); "B": 1x1 projection (+ BN unless `bn=False`,
    as in the pre-activation nets whose projection sees already-normalised input).
    """
    if stride == 1 and in_ch == out_ch:
        return None
    if kind == "A":
        return PadShortcut(in_ch, out_ch, stride)
    if kind != "B":
        raise ValueError(f"unknown shortcut kind {kind!r}; use 'A' (zero-pad) or 'B' (projection)")
    if not bn:
        return conv1x1(in_ch, out_ch, stride)
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class _Residual(nn.Module):
    """Shared tail of the post-activation blocks: SE, drop-path, add, activation."""

    se: nn.Module | None
    downsample: nn.Module | None

    def _finish(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        # In place, as torchvision: `out` is a fresh tensor no backward needs, and on large maps
        # (a 768x1024 crowd image) allocating the sum costs ~6% of a ResNet-50 trunk's inference.
        out += identity
        return self.act_out(out)


class BasicBlock(_Residual):
    """Two 3x3 conv-BN layers and an identity (He et al. 2015, Fig. 2 left)."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        act: str = "relu",
        shortcut: str = "B",
        se_reduction: int | None = None,
        drop_path: float = 0.0,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        # Dilation (replace_stride_with_dilation): the conv that would have carried the stage's
        # stride keeps the previous stage's rate (`first_dilation`); the conv after it runs at the
        # new rate, as in timm's dilated BasicBlock (torchvision refuses dilated basic blocks).
        self.conv1 = conv3x3(in_ch, out_ch, stride, dilation=first_dilation or dilation)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = get_act(act, out_ch)
        self.conv2 = conv3x3(out_ch, out_ch, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.se = SqueezeExcite(out_ch, se_reduction, act=act) if se_reduction else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.downsample = make_shortcut(in_ch, out_ch, stride, shortcut)
        self.act_out = get_act(act, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self._finish(out, identity)


class PlainBlock(nn.Module):
    """BasicBlock without the shortcut: the 'plain' nets of He et al. §4.2 that degrade with depth."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, act: str = "relu", **_: object) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = get_act(act, out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act_out = get_act(act, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act_out(self.bn2(self.conv2(out)))


def _split_stride(stride: int, stride_on: str) -> tuple[int, int]:
    """(stride of the first 1x1, stride of the 3x3) for a bottleneck."""
    if stride_on not in ("1x1", "3x3"):
        raise ValueError(f"stride_on must be '1x1' (v1) or '3x3' (v1.5), got {stride_on!r}")
    return (stride, 1) if stride_on == "1x1" else (1, stride)


class Bottleneck(_Residual):
    """1x1 reduce -> 3x3 -> 1x1 expand (He et al. 2015, Fig. 5 right).

    `stride_on="3x3"` is ResNet v1.5 (torchvision, NVIDIA: +0.5% top-1, ~+7% MACs);
    `stride_on="1x1"` is the paper's v1, whose first 1x1 discards 3/4 of the positions.
    `groups` > 1 makes the 3x3 a grouped convolution: ResNeXt's aggregated transforms.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        mid_ch: int | None = None,
        groups: int = 1,
        stride_on: str = "3x3",
        act: str = "relu",
        shortcut: str = "B",
        se_reduction: int | None = None,
        drop_path: float = 0.0,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        mid = mid_ch or out_ch // self.expansion
        s1, s3 = _split_stride(stride, stride_on)
        # With dilation the 3x3 of v1.5 is where the stride was, so it keeps the previous rate
        # (`first_dilation`), as torchvision does; in v1 the stride sat on the 1x1 before it.
        d3 = (first_dilation or dilation) if stride_on == "3x3" else dilation
        self.conv1 = conv1x1(in_ch, mid, s1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = get_act(act, mid)
        self.conv2 = conv3x3(mid, mid, s3, groups=groups, dilation=d3)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = get_act(act, mid)
        self.conv3 = conv1x1(mid, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.se = SqueezeExcite(out_ch, se_reduction, act=act) if se_reduction else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.downsample = make_shortcut(in_ch, out_ch, stride, shortcut)
        self.act_out = get_act(act, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._finish(out, identity)


class _PreAct(nn.Module):
    """Pre-activation ordering (He et al. 2016, arXiv:1603.05027): BN -> act -> conv.

    Nothing follows the addition, so the shortcut path is a pure identity from block to block:
    the lecture's "can learn the true identity by setting conv weights to zero". When the
    shortcut must project, it reads the pre-activated input, as in the paper's code.
    """

    se: nn.Module | None
    downsample: nn.Module | None
    drop_path: nn.Module | None

    def _finish(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + identity


class PreActBasicBlock(_PreAct):
    expansion = 1

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        act: str = "relu",
        shortcut: str = "B",
        se_reduction: int | None = None,
        drop_path: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = get_act(act, in_ch)
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = get_act(act, out_ch)
        # Dropout between the convolutions is Zagoruyko & Komodakis' WRN regulariser.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.conv2 = conv3x3(out_ch, out_ch)
        self.se = SqueezeExcite(out_ch, se_reduction, act=act) if se_reduction else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.downsample = make_shortcut(in_ch, out_ch, stride, shortcut, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.act2(self.bn2(out))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.conv2(out)
        return self._finish(out, identity)


class PreActBottleneck(_PreAct):
    expansion = 4

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        mid_ch: int | None = None,
        groups: int = 1,
        stride_on: str = "3x3",
        act: str = "relu",
        shortcut: str = "B",
        se_reduction: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        mid = mid_ch or out_ch // self.expansion
        s1, s3 = _split_stride(stride, stride_on)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = get_act(act, in_ch)
        self.conv1 = conv1x1(in_ch, mid, s1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = get_act(act, mid)
        self.conv2 = conv3x3(mid, mid, s3, groups=groups)
        self.bn3 = nn.BatchNorm2d(mid)
        self.act3 = get_act(act, mid)
        self.conv3 = conv1x1(mid, out_ch)
        self.se = SqueezeExcite(out_ch, se_reduction, act=act) if se_reduction else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.downsample = make_shortcut(in_ch, out_ch, stride, shortcut, bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        out = self.conv3(self.act3(self.bn3(out)))
        return self._finish(out, identity)
