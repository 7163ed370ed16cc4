"""Channel shuffle and the ShuffleNet units (Zhang et al. 2017; Ma et al. 2018).

A grouped 1x1 conv with g groups costs 1/g of a dense one, but each output group then sees only
its own input group; stacked, the groups never exchange information. ShuffleNet's fix is to
reshape the channels to (g, C/g), transpose and flatten, so the next grouped conv's every group
receives channels from every group of the previous one (Zhang et al. Fig. 1).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.layers.activations import get_act
from cnnzoo.layers.conv_bn_act import ConvBnAct

__all__ = ["ChannelShuffle", "ShuffleUnitV1", "ShuffleUnitV2", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` groups: (g, C/g) -> transpose -> flatten."""
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"cannot shuffle {c} channels in {groups} groups")
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleUnitV1(nn.Module):
    """ShuffleNet unit (Zhang et al. 2017, Fig. 2b/c): a ResNet bottleneck with grouped 1x1 convs.

    1x1 group conv-BN-act -> channel shuffle -> 3x3 depthwise conv-BN (no activation, §3.2) ->
    1x1 group conv-BN, then the shortcut is added (stride 1) or, at stride 2, a 3x3/2 average
    pool of the input is concatenated, so the unit widens the net at almost no extra cost; the
    activation follows the add or the concatenation.

    Args:
        mid_ch: bottleneck width (a quarter of the output width in the paper).
        groups: g of the two 1x1 convs.
        group_first: group the first 1x1 conv; the paper does not for the stage-2 entry unit,
            whose input (24 channels) is too narrow to split.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        *,
        mid_ch: int,
        groups: int,
        group_first: bool = True,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"a ShuffleNet unit has stride 1 or 2, got {stride}")
        if stride == 1 and in_ch != out_ch:
            raise ValueError(
                f"a stride-1 ShuffleNet unit adds its input: in ({in_ch}) must equal out ({out_ch})"
            )
        branch_ch = out_ch - in_ch if stride == 2 else out_ch  # the concatenation brings in_ch back
        g1 = groups if group_first else 1
        for what, ch, g in (
            ("input", in_ch, g1),
            ("bottleneck", mid_ch, groups),
            ("branch", branch_ch, groups),
        ):
            if ch <= 0 or ch % g:
                raise ValueError(
                    f"ShuffleNet unit: {what} width {ch} must be a positive multiple of {g} groups"
                )
        self.conv1 = ConvBnAct(in_ch, mid_ch, 1, groups=g1, act=act)
        # After an ungrouped conv the shuffle would only relabel the depthwise filters.
        self.shuffle = ChannelShuffle(groups) if g1 > 1 else nn.Identity()
        self.conv2 = ConvBnAct(mid_ch, mid_ch, 3, stride, groups=mid_ch, act=None)
        self.conv3 = ConvBnAct(mid_ch, branch_ch, 1, groups=groups, act=None)
        # count_include_pad as PyTorch's default and the authors' released code.
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.act = get_act(act, out_ch)
        self.stride = stride
        self.in_channels, self.out_channels = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.shuffle(self.conv1(x))))
        if self.stride == 1:
            return self.act(out + x)
        return self.act(torch.cat((self.shortcut(x), out), dim=1))


class ShuffleUnitV2(nn.Module):
    """ShuffleNet V2 unit (Ma et al. 2018, Fig. 3c/d): channel split instead of group convs.

    Stride 1: half the channels pass untouched, the other half go through 1x1 conv-BN-act ->
    3x3 depthwise conv-BN -> 1x1 conv-BN-act; the halves are concatenated and shuffled (g = 2).
    Stride 2: no split; both branches see the whole input (branch 1: depthwise 3x3/2 -> 1x1), so
    the output has twice the channels at half the resolution.

    The four guidelines of the paper show in it: equal widths in and out of each 1x1 (G1), no
    group convs (G2), two branches only (G3), and the element-wise add and extra activations of
    the v1 unit gone (G4). Module names and order are torchvision's (`branch1`, `branch2`), so
    its checkpoints load unchanged.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, act: str = "relu") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"a ShuffleNet V2 unit has stride 1 or 2, got {stride}")
        if out_ch % 2:
            raise ValueError(f"a ShuffleNet V2 unit concatenates two halves: out ({out_ch}) must be even")
        branch_ch = out_ch // 2
        if stride == 1 and in_ch != out_ch:
            raise ValueError(
                f"a stride-1 ShuffleNet V2 unit keeps its width: in ({in_ch}) must equal out ({out_ch})"
            )
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
                nn.BatchNorm2d(in_ch),
                nn.Conv2d(in_ch, branch_ch, 1, bias=False),
                nn.BatchNorm2d(branch_ch),
                get_act(act, branch_ch),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_ch if stride > 1 else branch_ch, branch_ch, 1, bias=False),
            nn.BatchNorm2d(branch_ch),
            get_act(act, branch_ch),
            nn.Conv2d(branch_ch, branch_ch, 3, stride, 1, groups=branch_ch, bias=False),
            nn.BatchNorm2d(branch_ch),
            nn.Conv2d(branch_ch, branch_ch, 1, bias=False),
            nn.BatchNorm2d(branch_ch),
            get_act(act, branch_ch),
        )
        self.in_channels, self.out_channels = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)
