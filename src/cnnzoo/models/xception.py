"""Xception (Chollet 2016, Xception: Deep Learning with Depthwise Separable Convolutions, arXiv:1610.02357).

"Extreme Inception": the Inception hypothesis (cross-channel and spatial correlations can be
mapped separately) taken to the limit of one spatial filter per channel, i.e. depthwise
separable convolutions (`cnnzoo.layers.SeparableConv2d`), in a linear stack of residual blocks.
The paper's Fig. 5 for a 299x299 input:

    entry flow   conv 32@3x3/2, conv 64@3x3 (no padding)                  -> 147x147x64
                 3 blocks: (ReLU, sep 3x3) x 2, max-pool 3x3/2, with a
                 1x1/2 conv shortcut; 128, 256, 728 channels              -> 19x19x728
    middle flow  8 blocks: (ReLU, sep 3x3 728) x 3, identity shortcut     -> 19x19x728
    exit flow    block: ReLU, sep 728, ReLU, sep 1024, max-pool, 1x1/2 shortcut -> 10x10x1024
                 sep 1536, ReLU, sep 2048, ReLU, global average pooling   -> 2048
                 dropout 50% (Sec. 4.3), logistic regression              -> 1000

Every (separable) convolution is followed by BatchNorm. 22,855,952 parameters, the paper's
Table 3. Module names follow timm's `legacy_xception` (the Keras model ported to PyTorch), so its
checkpoints load as they are; the blocks are data (`XCEPTION_BLOCKS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import SeparableConv2d, get_act, resolve_act
from cnnzoo.models.base import ZooModel, he_init
from cnnzoo.registry import register

__all__ = ["XCEPTION_BLOCKS", "Xception", "XceptionBlock", "XceptionBlockSpec"]


@dataclass(frozen=True)
class XceptionBlockSpec:
    out_ch: int
    reps: int  # separable convolutions in the block
    stride: int = 1  # 2: a 3x3/2 max-pool ends the residual branch and the shortcut is a 1x1/2 conv
    start_with_relu: bool = True  # False for the first block, which follows the stem's ReLU
    grow_first: bool = True  # widen at the first separable conv (else at the last: the exit block)


class XceptionBlock(nn.Module):
    """(ReLU -> separable 3x3 -> BN) x reps, then a 3x3/2 max-pool when strided, plus a shortcut.

    The shortcut is the identity where the shape is kept, else a 1x1 conv (stride 2) and BN,
    `skip` and `skipbn` (timm's names, as are `rep`'s indices).
    """

    def __init__(self, in_ch: int, spec: XceptionBlockSpec, *, act: str = "relu") -> None:
        super().__init__()
        out_ch = spec.out_ch
        self.skip: nn.Module | None = None
        if out_ch != in_ch or spec.stride != 1:
            self.skip = nn.Conv2d(in_ch, out_ch, 1, stride=spec.stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_ch)
        rep: list[nn.Module] = []
        for i in range(spec.reps):
            if spec.grow_first:
                c_in, c_out = (in_ch if i == 0 else out_ch), out_ch
            else:
                c_in, c_out = in_ch, (in_ch if i < spec.reps - 1 else out_ch)
            rep += [get_act(act, c_in), SeparableConv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out)]
        if not spec.start_with_relu:
            rep = rep[1:]
        elif hasattr(rep[0], "inplace"):
            rep[0].inplace = False  # the shortcut still reads the block's input
        if spec.stride != 1:
            rep.append(nn.MaxPool2d(3, spec.stride, 1))
        self.rep = nn.Sequential(*rep)
        self.in_channels, self.out_channels = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + shortcut


class Xception(ZooModel):
    """Stem (`conv1`, `conv2`), twelve blocks (`block1`..`block12`), two separable convolutions
    (`conv3`, `conv4`), global average pooling, dropout and `fc`.

    Args:
        num_classes: outputs of `fc`; 0 leaves it out (pre-logits).
        in_chans: input channels.
        act: activation by name (ReLU in the paper).
        dropout: drop probability before `fc` (the paper's 0.5 for ImageNet, Sec. 4.3).
    """

    def __init__(
        self,
        blocks: tuple[XceptionBlockSpec, ...],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        act: str = "relu",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes
        # conv1 (3x3/2) and conv2 (3x3) have no padding: 2 * 2 + 3 = 7 px give conv2 its one
        # 3x3 window; the blocks' padded pools and 1x1/2 shortcuts then take any size.
        self.min_input_size = 7
        self.conv1 = nn.Conv2d(in_chans, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act1 = get_act(act, 32)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = get_act(act, 64)
        self.feature_info = [{"module": "act2", "num_chs": 64, "reduction": 2}]
        c, reduction = 64, 2
        for i, spec in enumerate(blocks, 1):
            block = XceptionBlock(c, spec, act=act)
            self.add_module(f"block{i}", block)
            if spec.stride > 1 and i > 1:
                self.feature_info.append({"module": f"block{i - 1}", "num_chs": c, "reduction": reduction})
            c, reduction = spec.out_ch, reduction * spec.stride
        self.num_blocks = len(blocks)
        self.conv3 = SeparableConv2d(c, 1536, 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(1536)
        self.act3 = get_act(act, 1536)
        self.conv4 = SeparableConv2d(1536, 2048, 3, 1, 1)
        self.bn4 = nn.BatchNorm2d(2048)
        self.act4 = get_act(act, 2048)
        self.feature_info.append({"module": "act4", "num_chs": 2048, "reduction": reduction})
        self.num_features = 2048
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc: nn.Module = nn.Linear(2048, num_classes) if num_classes > 0 else nn.Identity()
        # timm's (and Keras's) init is PyTorch's default for the linear layer.
        he_init(self, linear_std=None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        for i in range(1, self.num_blocks + 1):
            x = self.get_submodule(f"block{i}")(x)
        x = self.act3(self.bn3(self.conv3(x)))
        return self.act4(self.bn4(self.conv4(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)


# Fig. 5: entry flow (3 strided blocks), middle flow (8 blocks), exit flow's strided block.
XCEPTION_BLOCKS: tuple[XceptionBlockSpec, ...] = (
    XceptionBlockSpec(128, 2, stride=2, start_with_relu=False),
    XceptionBlockSpec(256, 2, stride=2),
    XceptionBlockSpec(728, 2, stride=2),
    *(XceptionBlockSpec(728, 3) for _ in range(8)),
    XceptionBlockSpec(1024, 2, stride=2, grow_first=False),
)

_CHOLLET = "Chollet 2016, Xception: Deep Learning with Depthwise Separable Convolutions, arXiv:1610.02357"


@register(family="xception", paper=_CHOLLET, year=2016, input_size=(3, 299, 299), min_input_size=7)
def xception(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Xception:
    """Xception (Chollet 2016, arXiv:1610.02357): depthwise separable convolutions in 12 residual blocks, 22.9M parameters."""
    return Xception(XCEPTION_BLOCKS, num_classes=num_classes, in_chans=in_chans, **kwargs)
