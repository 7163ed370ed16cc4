"""MobileNets: networks of depthwise separable convolutions for phones (Howard 2017; Sandler 2018).

MobileNet (Howard et al. 2017, Table 1): a full 3x3/2 conv, then 13 depthwise separable blocks
(3x3 depthwise conv-BN-ReLU, 1x1 conv-BN-ReLU), five of them with stride 2 (224 -> 7), global
average pooling and one linear layer. Two knobs trade accuracy for cost: the width multiplier
alpha thins every layer (cost ~ alpha^2), the resolution multiplier rho shrinks the input (cost ~
rho^2). Here rho is simply the input size: the net is fully convolutional up to a global pool, so
MobileNet-192 is `mobilenet_v1` fed 192-px images (rho = 192/224).

MobileNetV2 (Sandler et al. 2018, Table 2): a 3x3/2 conv, 17 inverted residual blocks (expand
x t, depthwise, linear projection), a 1x1 conv to 1280 channels, pooling and a linear layer.
Module names and order are torchvision's (`features.N`, `classifier.1`), so its checkpoints load
unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import (
    ConvBnAct,
    DepthwiseSeparable,
    InvertedResidual,
    drop_path_rates,
    make_divisible,
    resolve_act,
)
from cnnzoo.models.base import ZooModel, he_init
from cnnzoo.registry import register

__all__ = ["MOBILENET_V1_STAGES", "MOBILENET_V2_STAGES", "MobileNetV1", "MobileNetV2", "StageSpec"]


@dataclass(frozen=True)
class StageSpec:
    depth: int  # blocks in the stage (n)
    width: int  # output channels at width_mult 1 (c)
    stride: int  # stride of the stage's first block (s)
    expand: int = 1  # MobileNetV2's expansion t; v1's separable blocks have none


class _MobileNet(ZooModel):
    """The part both versions share: `features`, global average pooling, `classifier`."""

    head_name = "classifier.1"
    min_input_size = 1  # every layer maps n px to ceil(n / 2) or n ('same' 3x3 convs), then a global pool

    features: nn.Sequential
    classifier: nn.Sequential

    def _make_head(self, dropout: float) -> None:
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity(),
        )

    def _init_weights(self) -> None:
        # torchvision's MobileNetV2 init: He (fan-out) convs, N(0, 0.01) linear, zero biases.
        he_init(self, linear_std=0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.classifier(x)


class MobileNetV1(_MobileNet):
    """MobileNet (v1): a 3x3/2 conv, depthwise separable stages, pooling, one linear layer.

    Args:
        stages: one StageSpec per group of blocks of equal width (Table 1 as data).
        width_mult: alpha; every width is int(alpha * width), at least 8 (TensorFlow's
            `min_depth`). The paper's alphas (0.75, 0.5, 0.25) give whole numbers.
        stem_width: output channels of the first conv at alpha = 1.
        act: activation by name (ReLU in the paper; see `cnnzoo.layers.ACTIVATIONS`).
        dropout: before the classifier (the paper uses none).
    """

    def __init__(
        self,
        stages: Sequence[StageSpec] | None = None,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        stem_width: int = 32,
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        stages = MOBILENET_V1_STAGES if stages is None else stages
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes

        def scaled(width: int) -> int:
            return max(8, int(width * width_mult))

        in_ch = scaled(stem_width)
        layers: list[nn.Module] = [ConvBnAct(in_chans, in_ch, 3, 2, act=act)]
        reduction = 2
        self.feature_info = [{"module": "features.0", "num_chs": in_ch, "reduction": reduction}]
        for spec in stages:
            out_ch = scaled(spec.width)
            for j in range(spec.depth):
                layers.append(DepthwiseSeparable(in_ch, out_ch, spec.stride if j == 0 else 1, act=act))
                in_ch = out_ch
            reduction *= spec.stride
            self.feature_info.append(
                {"module": f"features.{len(layers) - 1}", "num_chs": out_ch, "reduction": reduction}
            )
        self.features = nn.Sequential(*layers)
        self.num_features = in_ch
        self._make_head(dropout)
        self._init_weights()


class MobileNetV2(_MobileNet):
    """MobileNetV2: a 3x3/2 conv, inverted residual stages, a 1x1 conv to 1280, pooling, linear.

    Args:
        stages: one StageSpec (n, c, s, t) per row of the paper's Table 2.
        width_mult: scales every width, rounded to a multiple of `round_nearest` (torchvision's
            and TensorFlow's rule); the last conv is only ever widened (1280 * max(1, alpha)).
        act: activation by name (ReLU6 in the paper, chosen for low-precision inference).
        dropout: before the classifier (0.2, torchvision's).
        drop_path_rate: stochastic depth of the residual blocks; block l of the L = 17 gets
            rate * l / L (Huang et al.'s linear rule by depth), the blocks without a residual none.
    """

    def __init__(
        self,
        stages: Sequence[StageSpec] | None = None,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        round_nearest: int = 8,
        stem_width: int = 32,
        last_width: int = 1280,
        act: str = "relu6",
        dropout: float = 0.2,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        stages = MOBILENET_V2_STAGES if stages is None else stages
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes

        in_ch = make_divisible(stem_width * width_mult, round_nearest)
        layers: list[nn.Module] = [ConvBnAct(in_chans, in_ch, 3, 2, act=act)]
        reduction = 2
        self.feature_info = [{"module": "features.0", "num_chs": in_ch, "reduction": reduction}]
        rates = iter(drop_path_rates(drop_path_rate, sum(s.depth for s in stages)))
        for spec in stages:
            out_ch = make_divisible(spec.width * width_mult, round_nearest)
            for j in range(spec.depth):
                stride = spec.stride if j == 0 else 1
                layers.append(
                    InvertedResidual(in_ch, out_ch, stride, spec.expand, act=act, drop_path=next(rates))
                )
                in_ch = out_ch
            reduction *= spec.stride
            self.feature_info.append(
                {"module": f"features.{len(layers) - 1}", "num_chs": out_ch, "reduction": reduction}
            )
        last = make_divisible(last_width * max(1.0, width_mult), round_nearest)
        layers.append(ConvBnAct(in_ch, last, 1, act=act))
        self.feature_info.append(
            {"module": f"features.{len(layers) - 1}", "num_chs": last, "reduction": reduction}
        )
        self.features = nn.Sequential(*layers)
        self.num_features = last
        self._make_head(dropout)
        self._init_weights()


# Howard et al. 2017, Table 1: (blocks, width, stride). The table's second-to-last row reads
# "Conv dw / s2" at 7x7 -> 7x7, a known typo: the output stays 7x7, so that block has stride 1.
MOBILENET_V1_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 64, 1),
    StageSpec(2, 128, 2),
    StageSpec(2, 256, 2),
    StageSpec(6, 512, 2),
    StageSpec(2, 1024, 2),
)

# Sandler et al. 2018, Table 2: the rows (t, c, n, s), here as (n, c, s, t).
MOBILENET_V2_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 16, 1, expand=1),
    StageSpec(2, 24, 2, expand=6),
    StageSpec(3, 32, 2, expand=6),
    StageSpec(4, 64, 2, expand=6),
    StageSpec(3, 96, 1, expand=6),
    StageSpec(3, 160, 2, expand=6),
    StageSpec(1, 320, 1, expand=6),
)

_HOWARD = "Howard et al. 2017, MobileNets: Efficient CNNs for Mobile Vision Applications, arXiv:1704.04861"
_SANDLER = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks, arXiv:1801.04381"


@register(family="mobilenet", paper=_HOWARD, year=2017, min_input_size=1)
def mobilenet_v1(
    *, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, **kwargs: Any
) -> MobileNetV1:
    """MobileNet 1.0 (Howard et al. 2017): 4.2M parameters, 569M multiply-adds at 224 px."""
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, **kwargs)


@register(family="mobilenet", paper=_HOWARD, year=2017, min_input_size=1)
def mobilenet_v1_075(
    *, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 0.75, **kwargs: Any
) -> MobileNetV1:
    """MobileNet 0.75 (Howard et al. 2017, width multiplier 0.75): 2.6M parameters, 325M MACs."""
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, **kwargs)


@register(family="mobilenet", paper=_HOWARD, year=2017, min_input_size=1)
def mobilenet_v1_050(
    *, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 0.5, **kwargs: Any
) -> MobileNetV1:
    """MobileNet 0.5 (Howard et al. 2017, width multiplier 0.5): 1.3M parameters, 149M MACs."""
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, **kwargs)


@register(family="mobilenet", paper=_HOWARD, year=2017, min_input_size=1)
def mobilenet_v1_025(
    *, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 0.25, **kwargs: Any
) -> MobileNetV1:
    """MobileNet 0.25 (Howard et al. 2017, width multiplier 0.25): 0.5M parameters, 41M MACs."""
    return MobileNetV1(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, **kwargs)


@register(family="mobilenet", paper=_SANDLER, year=2018, min_input_size=1, torchvision=True)
def mobilenet_v2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2 1.0 (Sandler et al. 2018): 17 inverted residuals, 3.5M parameters, 300M MACs."""
    return MobileNetV2(num_classes=num_classes, in_chans=in_chans, **kwargs)
