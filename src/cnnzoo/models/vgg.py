"""VGG (Simonyan & Zisserman 2014): only 3x3 convolutions (stride 1, pad 1) and 2x2/2 max-pools.

Five stages at 64, 128, 256, 512, 512 channels, each closed by a max-pool that halves the
resolution (224 -> 7), then FC 4096 -> FC 4096 -> FC 1000. The paper's configurations differ only
in how many convolutions each stage stacks (Table 1; the lecture's "16 - 19 layers"): two 3x3s
see a 5x5 window and three a 7x7 one, with fewer parameters and more non-linearities.

Module names and order are torchvision's (`features.N`, `avgpool`, `classifier.0..6`), so its
checkpoints load as they are. The `_bn` variants put a BatchNorm after every convolution, which
the paper predates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import get_act, resolve_act
from cnnzoo.models.base import ZooModel, he_init
from cnnzoo.registry import register

__all__ = ["VGG", "VGG_CONFIGS", "VGG_WIDTHS"]

VGG_WIDTHS = (64, 128, 256, 512, 512)  # output channels of the five stages


class VGG(ZooModel):
    """Five stages of 3x3 convolutions with max-pools, adaptive pooling to 7x7, a 3-layer MLP.

    The adaptive pooling is the identity at 224 px and lets smaller images (>= 32 px) through, as
    torchvision's does. The head is the whole MLP; `reset_classifier` replaces only its last
    Linear (`classifier.6`), and `forward_head(x, pre_logits=True)` returns fc7's 4096 units.

    Args:
        depths: 3x3 convolutions per stage, e.g. (2, 2, 3, 3, 3) for VGG-16.
        num_classes: outputs of the last layer; 0 drops it.
        in_chans: input channels.
        batch_norm: a BatchNorm after every convolution (the `_bn` models).
        act: activation by name (see `cnnzoo.layers.ACTIVATIONS`).
        dropout: drop probability after fc6 and fc7.
    """

    min_input_size = 32  # five 2x2/2 pools: 32 -> 1

    def __init__(
        self,
        depths: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = False,
        act: str = "relu",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(depths) != len(VGG_WIDTHS):
            raise ValueError(f"VGG has {len(VGG_WIDTHS)} stages, got depths {tuple(depths)}")
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes

        layers: list[nn.Module] = []
        self.feature_info = []
        in_ch = in_chans
        for i, (depth, width) in enumerate(zip(depths, VGG_WIDTHS, strict=True)):
            for _ in range(depth):
                # The conv keeps its bias before a BatchNorm, as torchvision does (checkpoints).
                layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(get_act(act, width))
                in_ch = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            self.feature_info.append(
                {"module": f"features.{len(layers) - 1}", "num_chs": width, "reduction": 2 ** (i + 1)}
            )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))

        hidden = 4096
        self.num_features = hidden
        self.head_name = "classifier.6"
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 7 * 7, hidden),
            get_act(act, hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            get_act(act, hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity(),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's: He (fan-out) for the convs, N(0, 0.01) for the linears, zero biases. The
        # paper instead trained VGG-11 from N(0, 0.01) and copied its layers into the deeper nets.
        he_init(self, linear_std=0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


# Simonyan & Zisserman Table 1: 3x3 convolutions per stage of configurations A, B, D and E.
# (C, which has 1x1 convolutions in its last three stages, and A-LRN are left out, as in torchvision.)
VGG_CONFIGS: dict[str, tuple[int, ...]] = {
    "A": (1, 1, 2, 2, 2),  # VGG-11
    "B": (2, 2, 2, 2, 2),  # VGG-13
    "D": (2, 2, 3, 3, 3),  # VGG-16
    "E": (2, 2, 4, 4, 4),  # VGG-19
}


def _vgg(config: str, *, batch_norm: bool = False, **kwargs: Any) -> VGG:
    return VGG(VGG_CONFIGS[config], batch_norm=batch_norm, **kwargs)


_SZ = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition, arXiv:1409.1556"


@register(family="vgg", paper=_SZ, year=2014, min_input_size=VGG.min_input_size, torchvision=True)
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-11 (Simonyan & Zisserman 2014, configuration A): 8 convs + 3 FCs, 132.9M parameters."""
    return _vgg("A", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="vgg", paper=_SZ, year=2014, min_input_size=VGG.min_input_size, torchvision=True)
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-13 (Simonyan & Zisserman 2014, configuration B): 10 convs + 3 FCs, 133.0M parameters."""
    return _vgg("B", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="vgg", paper=_SZ, year=2014, min_input_size=VGG.min_input_size, torchvision=True)
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 (Simonyan & Zisserman 2014, configuration D): 13 convs + 3 FCs, 138.4M parameters."""
    return _vgg("D", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="vgg", paper=_SZ, year=2014, min_input_size=VGG.min_input_size, torchvision=True)
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 (Simonyan & Zisserman 2014, configuration E): 16 convs + 3 FCs, 143.7M parameters."""
    return _vgg("E", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="vgg", paper=_SZ, year=2014, min_input_size=VGG.min_input_size, torchvision=True)
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-11 (Simonyan & Zisserman 2014) with BatchNorm after every convolution."""
    return _vgg("A", batch_norm=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="vgg", paper=_SZ, year=2014, min_input_size=VGG.min_input_size, torchvision=True)
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-13 (Simonyan & Zisserman 2014) with BatchNorm after every convolution."""
    return _vgg("B", batch_norm=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="vgg", paper=_SZ, year=2014, min_input_size=VGG.min_input_size, torchvision=True)
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 (Simonyan & Zisserman 2014) with BatchNorm after every convolution."""
    return _vgg("D", batch_norm=True, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="vgg", paper=_SZ, year=2014, min_input_size=VGG.min_input_size, torchvision=True)
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 (Simonyan & Zisserman 2014) with BatchNorm after every convolution."""
    return _vgg("E", batch_norm=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
