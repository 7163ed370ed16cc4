"""Network in Network (Lin, Chen, Yan 2013, arXiv:1312.4400).

Stacked mlpconv layers (`cnnzoo.layers.MLPConv`: a convolution, then 1x1 convolutions, each with
a ReLU) and no fully connected layer: the last 1x1 convolution gives one map per class and global
average pooling turns them into the logits (the paper's Sec. 3.2, which SqueezeNet and GoogLeNet's
head adopt). Two variants, both as the authors released them (their Caffe and cuda-convnet
definitions; the paper's text gives the design but not the widths):

- `nin_cifar`: the paper's CIFAR-10 network (Sec. 4.2): three mlpconv layers, max-pool (then
  average-pool) 3x3/2 and 50% dropout after the first two, 10 class maps averaged over 8x8.

      conv 192@5x5, cccp 160, 96   -> 32x32x96,  max-pool 3x3/2, dropout -> 16x16
      conv 192@5x5, cccp 192, 192  -> 16x16x192, avg-pool 3x3/2, dropout -> 8x8
      conv 192@3x3, cccp 192, 10   -> 8x8x10, global average pooling       966,986 parameters

- `nin`: the authors' ImageNet model (the "NIN-Imagenet" of the Caffe model zoo, 2014), four
  mlpconv layers on AlexNet's grid for a 224 input:

      conv 96@11x11/4, cccp 96, 96        -> 54x54,  max-pool 3x3/2 -> 27x27
      conv 256@5x5, cccp 256, 256         -> 27x27,  max-pool 3x3/2 -> 13x13
      conv 384@3x3, cccp 384, 384         -> 13x13,  max-pool 3x3/2 -> 6x6, dropout 50%
      conv 1024@3x3, cccp 1024, 1000      -> 6x6x1000, global average pooling   7,595,176 parameters

The last mlpconv's final 1x1 convolution is the classifier (`classifier`); a ReLU follows it as in
the released models. Pools round up (`ceil_mode`), as Caffe did: 32 -> 16 -> 8, 54 -> 27 -> 13 -> 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import MLPConv, resolve_act
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register

__all__ = ["NIN_SPECS", "MLPConvSpec", "NetworkInNetwork", "NiNSpec"]


@dataclass(frozen=True)
class MLPConvSpec:
    width: int  # filters of the k x k convolution
    kernel: int
    stride: int = 1
    padding: int = 0
    mlp: tuple[int, ...] = ()  # widths of the 1x1 convolutions after it
    pool: str | None = None  # "max" or "avg": a 3x3/2 pooling after the layer
    dropout: bool = False  # dropout after that pooling


@dataclass(frozen=True)
class NiNSpec:
    layers: tuple[MLPConvSpec, ...]  # the last one's 1x1 class layer is not listed: the classifier
    min_input_size: int  # smallest H = W that passes every layer (derivation in the table below)


class NetworkInNetwork(ZooModel):
    """mlpconv layers with pools (`features`), a 1x1 conv to `num_classes` maps (`classifier`),
    ReLU and global average pooling.

    `forward_head(x, pre_logits=True)` returns the globally pooled maps of the last mlpconv before
    its class layer (1024 for `nin`, 192 for `nin_cifar`); `reset_classifier` swaps the class layer.

    Args:
        spec: the variant, a `NiNSpec`.
        num_classes: class maps of the last layer; 0 leaves it out (pre-logits).
        in_chans: input channels.
        act: activation by name after every convolution (ReLU in the paper).
        dropout: drop probability where the spec puts dropout (the paper's 50%).
    """

    head_name = "classifier"
    conv_head = True

    def __init__(
        self,
        spec: NiNSpec,
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

        layers: list[nn.Module] = []
        self.feature_info = []
        c, reduction = in_chans, 1
        for s in spec.layers:
            block = MLPConv(c, s.width, s.kernel, s.stride, s.padding, mlp=s.mlp, act=act)
            layers.append(block)
            c, reduction = block.out_channels, reduction * s.stride
            self.feature_info.append(
                {"module": f"features.{len(layers) - 1}", "num_chs": c, "reduction": reduction}
            )
            if s.pool is not None:
                pool = nn.MaxPool2d if s.pool == "max" else nn.AvgPool2d
                layers.append(pool(3, stride=2, ceil_mode=True))
                reduction *= 2
            if s.dropout:
                layers.append(nn.Dropout(dropout))
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.classifier: nn.Module = nn.Conv2d(c, num_classes, 1) if num_classes > 0 else nn.Identity()
        # A plain ReLU whatever `act` is, so that the head holds no per-class state.
        self.logit_act = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # The released models drew weights from small Gaussians (std 0.01 to 0.05, tuned per
        # layer); He et al. 2015's normal on the fan-in trains the 9- and 12-layer plain nets
        # without that tuning.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not pre_logits:
            x = self.logit_act(self.classifier(x))
        return torch.flatten(self.avgpool(x), 1)


# Minimum sizes: a ceil-mode 3x3/2 pool maps n >= 2 to ceil((n - 3) / 2) + 1, so walking back from
# one output pixel of the last pool the pools need 2, 4 and 8 px. `nin`'s conv1 (11x11/4, no
# padding) then needs 7 * 4 + 11 = 39 px; `nin_cifar`'s 'same' convolutions need nothing more: 4 px.
NIN_SPECS: dict[str, NiNSpec] = {
    "nin": NiNSpec(
        (
            MLPConvSpec(96, 11, stride=4, mlp=(96, 96), pool="max"),
            MLPConvSpec(256, 5, padding=2, mlp=(256, 256), pool="max"),
            MLPConvSpec(384, 3, padding=1, mlp=(384, 384), pool="max", dropout=True),
            MLPConvSpec(1024, 3, padding=1, mlp=(1024,)),
        ),
        min_input_size=39,
    ),
    "nin_cifar": NiNSpec(
        (
            MLPConvSpec(192, 5, padding=2, mlp=(160, 96), pool="max", dropout=True),
            MLPConvSpec(192, 5, padding=2, mlp=(192, 192), pool="avg", dropout=True),
            MLPConvSpec(192, 3, padding=1, mlp=(192,)),
        ),
        min_input_size=4,
    ),
}

_LIN = "Lin, Chen, Yan 2013, Network In Network, arXiv:1312.4400"


@register(family="nin", paper=_LIN, year=2013, min_input_size=NIN_SPECS["nin"].min_input_size)
def nin(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> NetworkInNetwork:
    """Network in Network (Lin et al. 2013, arXiv:1312.4400), the authors' ImageNet model: four mlpconv layers, 7.6M parameters."""
    return NetworkInNetwork(NIN_SPECS["nin"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="nin",
    paper=_LIN,
    year=2013,
    input_size=(3, 32, 32),
    min_input_size=NIN_SPECS["nin_cifar"].min_input_size,
)
def nin_cifar(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> NetworkInNetwork:
    """Network in Network for CIFAR-10 (Lin et al. 2013, arXiv:1312.4400, Sec. 4.2): three mlpconv layers, 0.97M parameters."""
    return NetworkInNetwork(NIN_SPECS["nin_cifar"], num_classes=num_classes, in_chans=in_chans, **kwargs)
