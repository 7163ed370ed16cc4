"""SqueezeNet (Iandola et al. 2016, SqueezeNet: AlexNet-level accuracy with 50x fewer parameters
and <0.5MB model size, arXiv:1602.07360).

A 7x7/2 convolution, eight Fire modules (`cnnzoo.layers.Fire`) with max-pools between them, and
no fully connected layer at all: a 1x1 convolution gives one map per class, which global average
pooling turns into the logits (Network in Network's head). The paper's Table 1, whose sizes are
those of the reference Caffe model's 227x227 crops (at torchvision's 224 px conv1 gives 109x109
and the pools 54, 27, 13):

    conv1   96@7x7/2        -> 111x111x96
    maxpool 3x3/2           -> 55x55x96
    fire2-4 s1x1 16, 16, 32; e1x1 = e3x3 = 64, 64, 128  -> 55x55x256
    maxpool 3x3/2           -> 27x27x256
    fire5-8 s1x1 32, 48, 48, 64; e = 128, 192, 192, 256 -> 27x27x512
    maxpool 3x3/2           -> 13x13x512
    fire9   s1x1 64, e = 256 -> 13x13x512, dropout 50%
    conv10  1000@1x1        -> 13x13x1000, global average pooling -> 1000

Two variants share that design and differ only in data (`SQUEEZENET_SPECS`), both with
torchvision's module names, so its checkpoints load as they are:

- `squeezenet1_0`: the paper's table (1,248,424 parameters, 0.82 GMACs).
- `squeezenet1_1`: the authors' v1.1 (SqueezeNet's repository, 2016): a 3x3/2 conv1 with 64
  filters and the pools moved forward (after fire3 and fire5), 2.4x fewer operations for the same
  accuracy (1,235,496 parameters, 0.35 GMACs).

Max-pools round up (`ceil_mode`), as Caffe did: 111 -> 55 -> 27 -> 13.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import Fire, get_act, resolve_act
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register

__all__ = ["SQUEEZENET_SPECS", "FireSpec", "SqueezeNet", "SqueezeNetSpec"]


@dataclass(frozen=True)
class FireSpec:
    squeeze: int  # s1x1
    expand: int  # e1x1 = e3x3 in every Fire module of both versions
    pool_after: bool = False  # a 3x3/2 max-pool follows


@dataclass(frozen=True)
class SqueezeNetSpec:
    conv1_width: int
    conv1_kernel: int  # stride 2, no padding
    fires: tuple[FireSpec, ...]
    min_input_size: int  # smallest H = W that passes every layer (derivation in the table below)


class SqueezeNet(ZooModel):
    """conv1, a max-pool, Fire modules and pools (`features`), then dropout, a 1x1 conv to
    `num_classes` maps, ReLU and global average pooling (`classifier`, torchvision's layout).

    The classifier is the 1x1 conv `classifier.1` (`reset_classifier` replaces it by another);
    `forward_head(x, pre_logits=True)` returns the 512 globally pooled features of fire9.

    Args:
        spec: the variant, a `SqueezeNetSpec`.
        num_classes: maps of the last conv; 0 leaves it out (pre-logits).
        in_chans: input channels.
        act: activation by name after every convolution (ReLU in the paper).
        dropout: drop probability before the last conv (the paper's 50% after fire9).
    """

    head_name = "classifier.1"
    conv_head = True

    def __init__(
        self,
        spec: SqueezeNetSpec,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        act: str = "relu",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes
        self.min_input_size = spec.min_input_size

        c = spec.conv1_width
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, c, spec.conv1_kernel, stride=2),
            get_act(act, c),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        ]
        self.feature_info = [{"module": "features.1", "num_chs": c, "reduction": 2}]
        reduction = 4
        for f in spec.fires:
            fire = Fire(c, f.squeeze, f.expand, f.expand, act=act)
            layers.append(fire)
            c = fire.out_channels
            if f.pool_after:
                self.feature_info.append(
                    {"module": f"features.{len(layers) - 1}", "num_chs": c, "reduction": reduction}
                )
                layers.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
                reduction *= 2
        self.feature_info.append(
            {"module": f"features.{len(layers) - 1}", "num_chs": c, "reduction": reduction}
        )
        self.features = nn.Sequential(*layers)
        self.num_features = c
        final: nn.Module = nn.Conv2d(c, num_classes, 1) if num_classes > 0 else nn.Identity()
        # The reference model's ReLU after conv10 stays, as in torchvision (logits are never
        # negative); a plain ReLU whatever `act` is, so that the head holds no per-class state.
        self.classifier = nn.Sequential(nn.Dropout(dropout), final, nn.ReLU(), nn.AdaptiveAvgPool2d(1))

        # torchvision's: Kaiming-uniform (gain 1) convolutions with zero biases, and the class
        # conv from N(0, 0.01) so that the untrained net's logits start small.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return torch.flatten(self.classifier[3](self.classifier[0](x)), 1)
        return torch.flatten(self.classifier(x), 1)


# Minimum sizes: a ceil-mode 3x3/2 max-pool maps n >= 2 to ceil((n - 3) / 2) + 1 (torch lets the
# one window hang over the edge), so walking back from one output pixel the three pools need 2,
# 4 and 8 px, and conv1 (k x k / 2, no padding) needs 2 * 7 + k: 21 for 1.0's 7x7, 17 for 1.1's
# 3x3 (torchvision's min_size for both).
SQUEEZENET_SPECS: dict[str, SqueezeNetSpec] = {
    "squeezenet1_0": SqueezeNetSpec(
        96,
        7,
        (
            FireSpec(16, 64),
            FireSpec(16, 64),
            FireSpec(32, 128, pool_after=True),
            FireSpec(32, 128),
            FireSpec(48, 192),
            FireSpec(48, 192),
            FireSpec(64, 256, pool_after=True),
            FireSpec(64, 256),
        ),
        min_input_size=21,
    ),
    "squeezenet1_1": SqueezeNetSpec(
        64,
        3,
        (
            FireSpec(16, 64),
            FireSpec(16, 64, pool_after=True),
            FireSpec(32, 128),
            FireSpec(32, 128, pool_after=True),
            FireSpec(48, 192),
            FireSpec(48, 192),
            FireSpec(64, 256),
            FireSpec(64, 256),
        ),
        min_input_size=17,
    ),
}

_IANDOLA = (
    "Iandola et al. 2016, SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB "
    "model size, arXiv:1602.07360"
)


@register(
    family="squeezenet",
    paper=_IANDOLA,
    year=2016,
    min_input_size=SQUEEZENET_SPECS["squeezenet1_0"].min_input_size,
    torchvision=True,
)
def squeezenet1_0(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.0 (Iandola et al. 2016, arXiv:1602.07360): Table 1's Fire modules, 1.25M parameters."""
    return SqueezeNet(SQUEEZENET_SPECS["squeezenet1_0"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="squeezenet",
    paper=_IANDOLA,
    year=2016,
    min_input_size=SQUEEZENET_SPECS["squeezenet1_1"].min_input_size,
    torchvision=True,
)
def squeezenet1_1(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> SqueezeNet:
    """SqueezeNet 1.1 (Iandola et al. 2016, arXiv:1602.07360; the authors' v1.1): 3x3 conv1, earlier pools, 2.4x fewer MACs."""
    return SqueezeNet(SQUEEZENET_SPECS["squeezenet1_1"], num_classes=num_classes, in_chans=in_chans, **kwargs)
