"""ResNet and its ImageNet family: v1/v1.5, ResNeXt, Wide ResNet, SE-ResNet, pre-activation.

The lecture's table (He et al. 2015, arXiv:1512.03385, Table 1): a 7x7/2 stem and a 3x3/2 max-pool,
then four stages at 56, 28, 14, 7 pixels with 64, 128, 256, 512 base channels; the first block
of each later stage halves the resolution and doubles the channels. Depth only changes the
block type (basic for 18/34, bottleneck for 50+) and how many blocks each stage holds.

Module names are torchvision's (conv1, bn1, layer1..4, fc, downsample), so its checkpoints load
as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import (
    BasicBlock,
    Bottleneck,
    PlainBlock,
    PreActBasicBlock,
    PreActBottleneck,
    conv3x3,
    drop_path_rates,
    get_act,
    resolve_act,
)
from cnnzoo.models.base import ZooModel, he_init
from cnnzoo.registry import register

__all__ = ["RESNET_SPECS", "ResNet", "StageSpec"]

_BLOCKS: dict[str, type[nn.Module]] = {
    "plain": PlainBlock,
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneck,
}


@dataclass(frozen=True)
class StageSpec:
    depth: int  # blocks in the stage
    width: int  # base channels; the block outputs width * expansion
    stride: int = 2  # stride of the stage's first block


def imagenet_stages(depths: Sequence[int]) -> tuple[StageSpec, ...]:
    """The four ImageNet stages: 64/128/256/512 base channels, the first one after the max-pool."""
    widths, strides = (64, 128, 256, 512), (1, 2, 2, 2)
    return tuple(StageSpec(d, w, s) for d, w, s in zip(depths, widths, strides, strict=True))


class ResNet(ZooModel):
    """A stem, residual (or plain) stages, global average pooling and one linear layer.

    One class serves the ImageNet nets here and the CIFAR nets of `cifar_resnet.py`: they differ
    only in data (stem, stage specs, block kind, shortcut kind), as in pycls.

    Args:
        block: "basic", "bottleneck", "preact_basic", "preact_bottleneck" or "plain" (no shortcut).
        stages: one StageSpec per stage.
        stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool: 224 -> 56) or "cifar" (one 3x3 conv, no
            downsampling: a 32-px image has no resolution to spare).
        stem_width: output channels of the stem conv.
        groups, width_per_group: ResNeXt's cardinality and per-group bottleneck width of a
            64-wide stage (1 and 64 give a plain ResNet; width_per_group=128 gives WRN-50-2).
        variant: "v1.5" (a bottleneck's stride on its 3x3, torchvision's default) or "v1"
            (stride on the first 1x1, as in the paper and its FLOP counts).
        shortcut: where a block changes shape, "B" projects (1x1 conv) and "A" zero-pads
            (He et al.'s parameter-free option).
        act: activation by name (see `cnnzoo.layers.ACTIVATIONS`).
        se: squeeze-and-excitation in every block: True for the paper's reduction 16, or an int.
        dropout: dropout between the two convs of a pre-activation basic block (WRN's regulariser).
        drop_path_rate: stochastic depth rate of the last block; earlier blocks decay linearly.
        zero_init_residual: start every residual branch at zero so each block begins as the
            identity (Goyal et al. 2017), which helps large-batch training.
        replace_stride_with_dilation: one bool per stage after the first (torchvision's option):
            True keeps that stage at the previous resolution and dilates its 3x3 convolutions
            instead, so (False, True, True) gives output stride 8, as segmentation and crowd
            counting trunks use (Yu & Koltun 2015, arXiv:1511.07122). Same parameters and keys.
    """

    def __init__(
        self,
        block: str,
        stages: Sequence[StageSpec],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        stem_width: int = 64,
        groups: int = 1,
        width_per_group: int = 64,
        variant: str = "v1.5",
        shortcut: str = "B",
        act: str = "relu",
        se: bool | int = False,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_residual: bool = False,
        replace_stride_with_dilation: Sequence[bool] | None = None,
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {', '.join(_BLOCKS)}")
        if variant not in ("v1", "v1.5"):
            raise ValueError(f"variant must be 'v1' or 'v1.5', got {variant!r}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if block == "plain" and (drop_path_rate > 0 or se):
            raise ValueError("a plain net has no residual branch: drop_path_rate and se must be off")
        if dropout > 0 and block != "preact_basic":
            raise ValueError(f"dropout is the WRN regulariser of 'preact_basic' blocks, not of {block!r}")
        dilate = [False, *(replace_stride_with_dilation or [False] * (len(stages) - 1))]
        if len(dilate) != len(stages):
            raise ValueError(
                f"replace_stride_with_dilation takes one bool per stage after the first "
                f"({len(stages) - 1}), got {tuple(replace_stride_with_dilation or ())}"
            )
        if any(dilate) and block not in ("basic", "bottleneck"):
            raise ValueError(
                f"replace_stride_with_dilation needs 'basic' or 'bottleneck' blocks, not {block!r}"
            )
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes
        self.preact = block.startswith("preact")
        block_cls = _BLOCKS[block]
        expansion = block_cls.expansion  # type: ignore[attr-defined]
        se_reduction = (16 if se is True else int(se)) if se else None

        # A pre-activation net leaves the stem un-normalised: the first block's BN-act is "the
        # first activation right after conv1" (He et al. 2016, appendix).
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_chans, stem_width)
        self.bn1 = nn.Identity() if self.preact else nn.BatchNorm2d(stem_width)
        self.act1 = nn.Identity() if self.preact else get_act(act, stem_width)
        self.maxpool = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        )
        reduction = 2 if stem == "imagenet" else 1
        self.feature_info = [{"module": "act1", "num_chs": stem_width, "reduction": reduction}]
        reduction *= 2 if stem == "imagenet" else 1
        # Every layer maps n px to ceil(n / 2) px or keeps it ('same' 3x3/2 and 7x7/2 convs, the
        # padded max-pool, strided 1x1 projections, option A's [::2]), so even 1 px passes.
        self.min_input_size = 1

        block_kw: dict[str, Any] = {"act": act}
        if block != "plain":
            block_kw |= {"shortcut": shortcut, "se_reduction": se_reduction}
        if expansion > 1:
            block_kw |= {"groups": groups, "stride_on": "1x1" if variant == "v1" else "3x3"}
        if dropout > 0:
            block_kw["dropout"] = dropout
        rates = iter(drop_path_rates(drop_path_rate, sum(s.depth for s in stages)))
        in_ch = stem_width
        dilation = 1
        for i, spec in enumerate(stages):
            out_ch = spec.width * expansion
            if expansion > 1:
                block_kw["mid_ch"] = int(spec.width * width_per_group / 64) * groups
            stride, first_dilation = spec.stride, dilation
            if dilate[i]:
                dilation, stride = dilation * spec.stride, 1
            if dilation > 1:  # keyword left out otherwise: undilated nets build exactly as before
                block_kw |= {"dilation": dilation}
            blocks = []
            for j in range(spec.depth):
                rate = next(rates)
                if block != "plain":
                    block_kw["drop_path"] = rate
                extra = {"first_dilation": first_dilation} if j == 0 and dilation > 1 else {}
                blocks.append(block_cls(in_ch, out_ch, stride if j == 0 else 1, **block_kw, **extra))
                in_ch = out_ch
            reduction *= stride
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append({"module": f"layer{i + 1}", "num_chs": out_ch, "reduction": reduction})
        self.num_stages = len(stages)

        # Pre-activation nets end with the BN-act that their last block did not apply.
        self.norm = (
            nn.Sequential(nn.BatchNorm2d(in_ch), get_act(act, in_ch)) if self.preact else nn.Identity()
        )
        self.num_features = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He et al. 2015's "MSRA" init on the fan-out, as torchvision and the papers' code do;
        # BatchNorm starts at weight 1, bias 0. Before training, eval-mode BN (running mean 0,
        # variance 1) normalises nothing, so each residual block roughly doubles the signal: an
        # untrained ResNet-1202 or ResNet-1001 overflows float32 in eval mode. Training mode, and
        # any trained net, are unaffected; zero_init_residual=True also avoids it.
        he_init(self, linear_std=None)
        if not zero_init_residual:
            return
        for m in self.modules():
            if isinstance(m, BasicBlock | Bottleneck):
                nn.init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)
            elif isinstance(m, PreActBasicBlock | PreActBottleneck):
                # No BN follows a pre-activation branch's last conv, so that conv starts at zero.
                nn.init.zeros_(m.conv3.weight if isinstance(m, PreActBottleneck) else m.conv2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


# name -> (block, blocks per stage). He et al. 2015 Table 1 and the lecture's copy of it.
RESNET_SPECS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


def _resnet(depth_name: str, *, preact: bool = False, **kwargs: Any) -> ResNet:
    block, depths = RESNET_SPECS[depth_name]
    return ResNet(f"preact_{block}" if preact else block, imagenet_stages(depths), **kwargs)


_HE = "He, Zhang, Ren, Sun 2015, Deep Residual Learning, arXiv:1512.03385"
_RESNEXT = "Xie, Girshick, Dollar, Tu, He 2016, Aggregated Residual Transformations, arXiv:1611.05431"
_WRN = "Zagoruyko & Komodakis 2016, Wide Residual Networks, arXiv:1605.07146"
_SE = "Hu, Shen, Sun 2017, Squeeze-and-Excitation Networks, arXiv:1709.01507"
_PREACT = "He, Zhang, Ren, Sun 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027"


@register(family="resnet", paper=_HE, year=2015, min_input_size=1, torchvision=True)
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-18: basic blocks, stages [2, 2, 2, 2], 11.7M parameters, 1.8 GMACs."""
    return _resnet("resnet18", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="resnet", paper=_HE, year=2015, min_input_size=1, torchvision=True)
def resnet34(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-34: basic blocks, stages [3, 4, 6, 3], 21.8M parameters, 3.6 GMACs."""
    return _resnet("resnet34", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="resnet", paper=_HE, year=2015, min_input_size=1, torchvision=True)
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-50 (v1.5 by default): bottlenecks, stages [3, 4, 6, 3], 25.6M parameters."""
    return _resnet("resnet50", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="resnet", paper=_HE, year=2015, min_input_size=1, torchvision=True)
def resnet101(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-101 (v1.5 by default): bottlenecks, stages [3, 4, 23, 3], 44.5M parameters."""
    return _resnet("resnet101", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="resnet", paper=_HE, year=2015, min_input_size=1, torchvision=True)
def resnet152(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-152 (v1.5 by default): bottlenecks, stages [3, 8, 36, 3], 60.2M parameters."""
    return _resnet("resnet152", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="resnext", paper=_RESNEXT, year=2016, min_input_size=1, torchvision=True)
def resnext50_32x4d(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-50 32x4d: ResNet-50 whose 3x3s are 32 groups of 4 channels, 25.0M parameters."""
    return _resnet(
        "resnet50", num_classes=num_classes, in_chans=in_chans, groups=32, width_per_group=4, **kwargs
    )


@register(family="resnext", paper=_RESNEXT, year=2016, min_input_size=1, torchvision=True)
def resnext101_32x8d(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-101 32x8d: 32 groups of 8 channels, 88.8M parameters."""
    return _resnet(
        "resnet101", num_classes=num_classes, in_chans=in_chans, groups=32, width_per_group=8, **kwargs
    )


@register(family="resnext", paper=_RESNEXT, year=2016, min_input_size=1, torchvision=True)
def resnext101_64x4d(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-101 64x4d: 64 groups of 4 channels, 83.5M parameters."""
    return _resnet(
        "resnet101", num_classes=num_classes, in_chans=in_chans, groups=64, width_per_group=4, **kwargs
    )


@register(family="wide_resnet", paper=_WRN, year=2016, min_input_size=1, torchvision=True)
def wide_resnet50_2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide, 68.9M parameters."""
    return _resnet("resnet50", num_classes=num_classes, in_chans=in_chans, width_per_group=128, **kwargs)


@register(family="wide_resnet", paper=_WRN, year=2016, min_input_size=1, torchvision=True)
def wide_resnet101_2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide, 126.9M parameters."""
    return _resnet("resnet101", num_classes=num_classes, in_chans=in_chans, width_per_group=128, **kwargs)


@register(family="se_resnet", paper=_SE, year=2017, min_input_size=1)
def se_resnet18(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """SE-ResNet-18: ResNet-18 with a squeeze-and-excitation gate (r=16) in every block."""
    return _resnet(
        "resnet18", num_classes=num_classes, in_chans=in_chans, se=kwargs.pop("se", True), **kwargs
    )


@register(family="se_resnet", paper=_SE, year=2017, min_input_size=1)
def se_resnet34(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """SE-ResNet-34: ResNet-34 with a squeeze-and-excitation gate (r=16) in every block."""
    return _resnet(
        "resnet34", num_classes=num_classes, in_chans=in_chans, se=kwargs.pop("se", True), **kwargs
    )


@register(family="se_resnet", paper=_SE, year=2017, min_input_size=1)
def se_resnet50(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """SE-ResNet-50: ResNet-50 with squeeze-and-excitation (r=16), 28.1M parameters (paper)."""
    return _resnet(
        "resnet50", num_classes=num_classes, in_chans=in_chans, se=kwargs.pop("se", True), **kwargs
    )


@register(family="se_resnet", paper=_SE, year=2017, min_input_size=1)
def se_resnet101(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """SE-ResNet-101: ResNet-101 with squeeze-and-excitation (r=16), 49.3M parameters (paper)."""
    return _resnet(
        "resnet101", num_classes=num_classes, in_chans=in_chans, se=kwargs.pop("se", True), **kwargs
    )


@register(family="se_resnet", paper=_SE, year=2017, min_input_size=1)
def se_resnet152(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """SE-ResNet-152: ResNet-152 with squeeze-and-excitation (r=16), 66.8M parameters (paper)."""
    return _resnet(
        "resnet152", num_classes=num_classes, in_chans=in_chans, se=kwargs.pop("se", True), **kwargs
    )


@register(family="preact_resnet", paper=_PREACT, year=2016, min_input_size=1)
def preact_resnet18(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-18: BN-act-conv basic blocks, stages [2, 2, 2, 2]."""
    return _resnet("resnet18", preact=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="preact_resnet", paper=_PREACT, year=2016, min_input_size=1)
def preact_resnet34(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-34: BN-act-conv basic blocks, stages [3, 4, 6, 3]."""
    return _resnet("resnet34", preact=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="preact_resnet", paper=_PREACT, year=2016, min_input_size=1)
def preact_resnet50(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-50: BN-act-conv bottlenecks, stages [3, 4, 6, 3]."""
    return _resnet("resnet50", preact=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="preact_resnet", paper=_PREACT, year=2016, min_input_size=1)
def preact_resnet101(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-101: BN-act-conv bottlenecks, stages [3, 4, 23, 3]."""
    return _resnet("resnet101", preact=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="preact_resnet", paper=_PREACT, year=2016, min_input_size=1)
def preact_resnet152(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-152: BN-act-conv bottlenecks, stages [3, 8, 36, 3]."""
    return _resnet("resnet152", preact=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
