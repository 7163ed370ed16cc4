"""EfficientNet-B0 to B7 (Tan & Le 2019, arXiv:1905.11946): one searched net, scaled up.

The lecture ("Smart Compound Scaling", after Tan & Le 2019): instead of making a net only deeper (ResNet),
only wider (WRN) or only fed larger images, scale all three together. B0 was found by neural
architecture search (MnasNet's search space, optimising accuracy and FLOPs); its table below is
the paper's Table 1. The compound rule (Eq. 3) then scales it with one coefficient phi:

    depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi,
    alpha = 1.2, beta = 1.1, gamma = 1.15 (grid search at phi = 1),
    s.t. alpha * beta^2 * gamma^2 ~ 2,

since a conv net's FLOPs grow as d * w^2 * r^2: each step of phi about doubles them.

The released B1-B7 do *not* use the rule's numbers. The paper gives only alpha, beta, gamma; the
reference code (TF `efficientnet_builder.py`, copied by timm and torchvision) hard-codes per-model
(width, depth, resolution, dropout) tuples that the paper never lists. What the rule gives
(`compound_scaling(phi)`, resolution from 224 px) against what was released, with parameters
and multiply-adds (FlopCounterMode) of the nets each builds:

    phi  rule w / d / px      params  GMACs    released w / d / px   params  GMACs  (paper)
     0   1.000/1.000/224       5.3M   0.39     B0 1.0/1.0/224         5.3M   0.39   (0.39)
     1   1.100/1.200/258       9.1M   0.99     B1 1.0/1.1/240         7.8M   0.69   (0.70)
     2   1.210/1.440/296      12.3M   1.81     B2 1.1/1.2/260         9.1M   0.99   (1.0)
     3   1.331/1.728/341      16.4M   3.25     B3 1.2/1.4/300        12.2M   1.83   (1.8)
     4   1.464/2.074/392      25.9M   6.32     B4 1.4/1.8/380        19.3M   4.39   (4.2)
     5   1.611/2.488/451      33.7M   11.4     B5 1.6/2.2/456        30.4M   10.3   (9.9)
     6   1.772/2.986/518      45.5M   20.1     B6 1.8/2.6/528        43.0M   19.1   (19)
     7   1.949/3.583/596      68.7M   39.7     B7 2.0/3.1/600        66.3M   37.7   (37)

Every released net is shallower than its phi says, and up to B4 also narrower and at lower
resolution: the rule's phi = 1 net has exactly B2's channels and repeats (at 258 instead of
260 px), and its phi = 2 net is about B3. From B5 on width and resolution follow the rule and
only the depth stays below it (5-10% fewer MACs). The eight builders use the released tuples,
so they match the paper's Table 2 and torchvision's weights;
`EfficientNet(scaling=compound_scaling(phi))` builds the rule's net.

Channels are rounded to multiples of 8 (`make_divisible`, never more than 10% down) and repeats
up (ceil), as in the reference code, so B1 (width 1.0, depth 1.1) has B0's channels, one more
block in each of its seven stages (ceil(1.1 n) = n + 1), and a 240 px input.

Module names are torchvision's (features.0 stem, features.1-7 the stages of MBConv blocks,
features.8 the 1x1 head conv, avgpool, classifier = Dropout + Linear): its checkpoints load as
they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import ConvBnAct, MBConv, drop_path_rates, make_divisible, resolve_act
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register

__all__ = [
    "ALPHA",
    "B0_STAGES",
    "BETA",
    "EFFICIENTNET_SCALES",
    "GAMMA",
    "EfficientNet",
    "MBConvStage",
    "Scaling",
    "compound_scaling",
    "scale_depth",
    "scale_width",
    "scaling_table",
]


# -- the scaling rules ----------------------------------------------------------------------------
def scale_width(channels: int, width_mult: float) -> int:
    # TF's MobileNet rounding (torchvision's `_make_divisible`): multiples of 8 suit the
    # hardware's vector widths, and no layer loses more than 10% to the rounding.
    return make_divisible(channels * width_mult, 8)


def scale_depth(repeats: int, depth_mult: float) -> int:
    # Rounded up, as in the reference code: a stage never loses a block to rounding.
    return math.ceil(repeats * depth_mult)


@dataclass(frozen=True)
class Scaling:
    width_mult: float  # channels x (beta^phi in the rule)
    depth_mult: float  # blocks per stage x (alpha^phi)
    resolution: int  # input side in pixels (224 * gamma^phi)
    dropout: float = 0.2  # before the classifier; the released nets raise it with size


# Tan & Le 2019, §3.3: a grid search at phi = 1 under alpha * beta^2 * gamma^2 ~ 2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


def compound_scaling(
    phi: float,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    base_resolution: int = 224,
    dropout: float = 0.2,
) -> Scaling:
    """The paper's Eq. 3: depth alpha^phi, width beta^phi, resolution gamma^phi (from B0's 224).

    FLOPs then grow by (alpha * beta^2 * gamma^2)^phi = 1.92^phi. The released B1-B7 use
    hand-rounded coefficients instead (`EFFICIENTNET_SCALES`, the module docstring's table).
    """
    return Scaling(
        width_mult=beta**phi,
        depth_mult=alpha**phi,
        resolution=round(base_resolution * gamma**phi),
        dropout=dropout,
    )


# -- the model ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MBConvStage:
    expand_ratio: int  # MBConv1 or MBConv6
    kernel: int  # depthwise kernel, 3 or 5
    stride: int  # stride of the stage's first block
    width: int  # output channels at width 1.0
    depth: int  # blocks at depth 1.0


class EfficientNet(ZooModel):
    """A 3x3/2 stem, seven stages of MBConv blocks, a 1x1 head conv, pooling, dropout, linear.

    Args:
        stages: the baseline's stages (B0's Table 1 by default), before scaling.
        scaling: width, depth, resolution and dropout; resolution is only recorded (the net is
            fully convolutional), dropout is the default of `dropout`.
        stem_width, head_width: B0's 32 and 1280 channels, scaled by the width multiplier.
        act: activation by name everywhere the paper has swish (stem, blocks, SE, head).
        dropout: before the classifier; None takes the scaling's (0.2 for B0 up to 0.5 for B7).
        drop_path_rate: stochastic depth of the residual branches, 0.2 as in the paper's §5.2
            and torchvision's `stochastic_depth_prob`. Block i (0-based) of n gets rate * i / n,
            the TF reference's and torchvision's rule: Huang et al.'s l / L shifted by one
            block, so the first block is never dropped and the last gets rate * (n - 1) / n.
        bn_eps, bn_momentum: BatchNorm constants, which differ between the released weights
            (see `_TF_BATCHNORM`).
    """

    head_name = "classifier.1"

    def __init__(
        self,
        stages: Sequence[MBConvStage] | None = None,
        *,
        scaling: Scaling | None = None,
        stem_width: int = 32,
        head_width: int = 1280,
        num_classes: int = 1000,
        in_chans: int = 3,
        act: str = "swish",
        dropout: float | None = None,
        drop_path_rate: float = 0.2,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        stages = B0_STAGES if stages is None else tuple(stages)
        scaling = scaling or EFFICIENTNET_SCALES["efficientnet_b0"]
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes
        self.scaling = scaling
        w, d = scaling.width_mult, scaling.depth_mult

        in_ch = scale_width(stem_width, w)
        layers: list[nn.Module] = [ConvBnAct(in_chans, in_ch, 3, 2, act=act)]
        reduction = 2
        self.feature_info = [{"module": "features.0", "num_chs": in_ch, "reduction": reduction}]

        depths = [scale_depth(s.depth, d) for s in stages]
        total = sum(depths)
        rates = [0.0, *drop_path_rates(drop_path_rate, total)[:-1]]  # rate * i / total
        i = 0
        for spec, depth in zip(stages, depths, strict=True):
            out_ch = scale_width(spec.width, w)
            blocks = []
            for j in range(depth):
                stride = spec.stride if j == 0 else 1
                blocks.append(
                    MBConv(
                        in_ch,
                        out_ch,
                        spec.kernel,
                        stride,
                        expand_ratio=spec.expand_ratio,
                        act=act,
                        drop_path=rates[i],
                    )
                )
                in_ch, i = out_ch, i + 1
            reduction *= spec.stride
            layers.append(nn.Sequential(*blocks))
            self.feature_info.append(
                {"module": f"features.{len(layers) - 1}", "num_chs": out_ch, "reduction": reduction}
            )

        self.num_features = scale_width(head_width, w)
        layers.append(ConvBnAct(in_ch, self.num_features, 1, act=act))
        self.feature_info.append(
            {"module": f"features.{len(layers) - 1}", "num_chs": self.num_features, "reduction": reduction}
        )
        self.features = nn.Sequential(*layers)
        # 'Same'-padded 3x3/2 and 5x5/2 convs map n px to ceil(n / 2), so even 1 px passes.
        self.min_input_size = 1

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        p = scaling.dropout if dropout is None else dropout
        self.classifier = nn.Sequential(
            nn.Dropout(p, inplace=True),
            nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity(),
        )
        self._init_weights(bn_eps, bn_momentum)

    def _init_weights(self, bn_eps: float, bn_momentum: float) -> None:
        # torchvision's init: He normal on the fan-out, BN at (1, 0), uniform +-1/sqrt(classes)
        # for the classifier (the TF reference's dense initializer).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = bn_eps, bn_momentum
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.classifier(x)


# -- the spec tables -----------------------------------------------------------------------------
# Tan & Le 2019, Table 1 (stages 2-8; stage 1 is the 3x3/2 stem of 32 channels, stage 9 the 1x1
# head conv of 1280): operator, kernel, stride, output channels, repeats.
B0_STAGES: tuple[MBConvStage, ...] = (
    MBConvStage(1, 3, 1, 16, 1),  # 112 px
    MBConvStage(6, 3, 2, 24, 2),  # 112 -> 56
    MBConvStage(6, 5, 2, 40, 2),  # 56 -> 28
    MBConvStage(6, 3, 2, 80, 3),  # 28 -> 14
    MBConvStage(6, 5, 1, 112, 3),  # 14
    MBConvStage(6, 5, 2, 192, 4),  # 14 -> 7
    MBConvStage(6, 3, 1, 320, 1),  # 7
)

# The released coefficients (TF reference `efficientnet_params`, torchvision's builders):
# width, depth, resolution, dropout. phi = 1..7 of the rule would give the docstring's table.
EFFICIENTNET_SCALES: dict[str, Scaling] = {
    "efficientnet_b0": Scaling(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": Scaling(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": Scaling(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": Scaling(1.2, 1.4, 300, 0.3),
    "efficientnet_b4": Scaling(1.4, 1.8, 380, 0.4),
    "efficientnet_b5": Scaling(1.6, 2.2, 456, 0.4),
    "efficientnet_b6": Scaling(1.8, 2.6, 528, 0.5),
    "efficientnet_b7": Scaling(2.0, 3.1, 600, 0.5),
}

# torchvision's B5-B7 weights are ports of the TF checkpoints and keep TF's BatchNorm (eps 1e-3,
# decay 0.99 = momentum 0.01); its B0-B4 weights come from timm's PyTorch-trained models, which
# use torch's defaults (eps 1e-5, momentum 0.1). eps changes eval outputs, so each net uses its weights' constants.
_TF_BATCHNORM = {"bn_eps": 1e-3, "bn_momentum": 0.01}
_BATCHNORM: dict[str, dict[str, float]] = {
    name: _TF_BATCHNORM for name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
}


def scaling_table(max_phi: int = 7) -> list[tuple[str, int, Scaling, Scaling]]:
    """(name, phi, the rule's scaling, the released scaling) for B0 to B`max_phi`."""
    return [
        (f"efficientnet_b{phi}", phi, compound_scaling(phi), EFFICIENTNET_SCALES[f"efficientnet_b{phi}"])
        for phi in range(max_phi + 1)
    ]


def _efficientnet(name: str, **kwargs: Any) -> EfficientNet:
    options = {**_BATCHNORM.get(name, {}), **kwargs}
    return EfficientNet(B0_STAGES, scaling=EFFICIENTNET_SCALES[name], **options)


_TAN = "Tan & Le 2019, EfficientNet: Rethinking Model Scaling for CNNs, arXiv:1905.11946"


@register(
    family="efficientnet", paper=_TAN, year=2019, input_size=(3, 224, 224), min_input_size=1, torchvision=True
)
def efficientnet_b0(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B0: the searched baseline (Table 1), 224 px, 5.3M parameters, 0.39 GMACs."""
    return _efficientnet("efficientnet_b0", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="efficientnet", paper=_TAN, year=2019, input_size=(3, 240, 240), min_input_size=1, torchvision=True
)
def efficientnet_b1(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B1: B0 at width 1.0, depth 1.1, 240 px; 7.8M parameters, 0.69 GMACs."""
    return _efficientnet("efficientnet_b1", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="efficientnet", paper=_TAN, year=2019, input_size=(3, 260, 260), min_input_size=1, torchvision=True
)
def efficientnet_b2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B2: B0 at width 1.1, depth 1.2, 260 px; 9.1M parameters, 0.99 GMACs."""
    return _efficientnet("efficientnet_b2", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="efficientnet", paper=_TAN, year=2019, input_size=(3, 300, 300), min_input_size=1, torchvision=True
)
def efficientnet_b3(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B3: B0 at width 1.2, depth 1.4, 300 px; 12.2M parameters, 1.8 GMACs."""
    return _efficientnet("efficientnet_b3", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="efficientnet", paper=_TAN, year=2019, input_size=(3, 380, 380), min_input_size=1, torchvision=True
)
def efficientnet_b4(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B4: B0 at width 1.4, depth 1.8, 380 px; 19.3M parameters, 4.4 GMACs."""
    return _efficientnet("efficientnet_b4", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="efficientnet", paper=_TAN, year=2019, input_size=(3, 456, 456), min_input_size=1, torchvision=True
)
def efficientnet_b5(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B5: B0 at width 1.6, depth 2.2, 456 px; 30.4M parameters, 10.3 GMACs."""
    return _efficientnet("efficientnet_b5", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="efficientnet", paper=_TAN, year=2019, input_size=(3, 528, 528), min_input_size=1, torchvision=True
)
def efficientnet_b6(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B6: B0 at width 1.8, depth 2.6, 528 px; 43.0M parameters, 19.1 GMACs."""
    return _efficientnet("efficientnet_b6", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="efficientnet", paper=_TAN, year=2019, input_size=(3, 600, 600), min_input_size=1, torchvision=True
)
def efficientnet_b7(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B7: B0 at width 2.0, depth 3.1, 600 px; 66.3M parameters, 37.7 GMACs."""
    return _efficientnet("efficientnet_b7", num_classes=num_classes, in_chans=in_chans, **kwargs)
