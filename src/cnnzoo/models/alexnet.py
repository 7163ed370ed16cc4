"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) as torchvision and as the lecture has it, and ZFNet.

Five convolutions, three 3x3/2 max-pools and three fully connected layers. The lecture's
structural table ("AlexNet Network - Structural Details", after Krizhevsky et al. 2012) for a 227x227 input:

    conv1  96@11x11/4, pad 0   -> 55x55x96      34,944 parameters
    pool1  3x3/2, then LRN     -> 27x27x96
    conv2  256@5x5, pad 2      -> 27x27x256    614,656
    pool2  3x3/2, then LRN     -> 13x13x256
    conv3  384@3x3, pad 1      -> 13x13x384    885,120
    conv4  384@3x3, pad 1      -> 13x13x384  1,327,488
    conv5  256@3x3, pad 1      -> 13x13x256    884,992
    pool5  3x3/2               -> 6x6x256
    fc6 4096, fc7 4096, fc8 1000 (dropout 0.5 on fc6, fc7)    62,378,344 in all

Four variants share that skeleton and differ only in data (`ALEXNET_SPECS`):

- `alexnet`: torchvision's one-GPU version (64/192/384/256/256 filters, conv1 pad 2, no LRN), with
  its module names, so torchvision checkpoints load as they are.
- `alexnet_paper`: the table above. Its 227 px input is what makes conv1 give 55 (the paper's
  text says 224). Like the lecture it ignores the paper's two-GPU split: conv2, conv4 and conv5
  see all channels of the layer below (the grouped version has 60,965,224 parameters).
- `alexnet_2gpu`: the paper's own layout (its Fig. 2), the table's filters split over two GPUs
  that exchange activations only at conv3 and the fully connected layers. conv2, conv4 and conv5
  read only the half of the maps on their own GPU: grouped convolutions with groups=2, which
  halves their weights: 307,456 + 663,936 + 442,624 parameters instead of 614,656 + 1,327,488 +
  884,992, i.e. 60,965,224 in all (the paper's "60 million"). conv1's two halves both read the
  whole image, which is an ordinary 96-filter conv. LRN normalises over all 96 (256) maps as the
  reference Caffe model does; on the paper's GPUs each half was normalised on its own.
- `zfnet`: Zeiler & Fergus 2013, "AlexNet but conv1 7x7 stride 2 and conv3/4/5 with 512, 1024,
  512 filters" (the course's lecture); conv2 gets stride 2 as in ZF's Figure 3, whose sizes for a
  224 input are 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import alexnet_lrn, get_act, resolve_act
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register

__all__ = ["ALEXNET_SPECS", "AlexNet", "AlexNetSpec", "ConvSpec"]


@dataclass(frozen=True)
class ConvSpec:
    width: int  # output channels
    kernel: int
    stride: int = 1
    padding: int = 0
    pool: bool = False  # a 3x3/2 max-pool after the activation
    lrn: bool = False  # local response normalisation after that pool (the lecture's NORM1/2)
    groups: int = 1  # 2 where the paper's two GPUs each see only their own half of the maps


@dataclass(frozen=True)
class AlexNetSpec:
    convs: tuple[ConvSpec, ...]
    min_input_size: int  # smallest H = W that passes every layer (derivation in the table below)
    # Caffe rounds pooled sizes up; ZF's 110 -> 55 and 26 -> 13 need it.
    ceil_mode: bool = False
    # torchvision drops the inputs of fc6 and fc7; the paper drops the outputs of fc6 and fc7.
    dropout_before_fc: bool = False


class AlexNet(ZooModel):
    """Conv trunk (`features`), adaptive pooling to 6x6, and a three-layer MLP (`classifier`).

    The pooling is the identity at the native input size (227 for the paper's table, 224 for
    torchvision's and ZFNet) and lets smaller images through, as torchvision's does. The head is
    the whole MLP; `reset_classifier` replaces only its last Linear (`classifier.6`), and
    `forward_head(x, pre_logits=True)` returns fc7's 4096 units.

    Args:
        spec: the layers, an `AlexNetSpec`.
        num_classes: outputs of fc8; 0 drops it.
        in_chans: input channels.
        act: activation by name (see `cnnzoo.layers.ACTIVATIONS`); ReLU in all three papers.
        dropout: drop probability on the two hidden fully connected layers.
    """

    def __init__(
        self,
        spec: AlexNetSpec,
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
        in_ch, reduction = in_chans, 1
        for c in spec.convs:
            conv = nn.Conv2d(in_ch, c.width, c.kernel, c.stride, c.padding, groups=c.groups)
            layers += [conv, get_act(act, c.width)]
            reduction *= c.stride
            in_ch = c.width
            if c.pool:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=spec.ceil_mode))
                if c.lrn:
                    layers.append(alexnet_lrn())
                reduction *= 2
                self.feature_info.append(
                    {"module": f"features.{len(layers) - 1}", "num_chs": c.width, "reduction": reduction}
                )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))

        hidden = 4096
        self.num_features = hidden
        self.head_name = "classifier.6"
        fc8: nn.Module = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()
        if spec.dropout_before_fc:
            head = [nn.Dropout(dropout), nn.Linear(in_ch * 36, hidden), get_act(act, hidden)]
            head += [nn.Dropout(dropout), nn.Linear(hidden, hidden), get_act(act, hidden), fc8]
        else:
            head = [nn.Linear(in_ch * 36, hidden), get_act(act, hidden), nn.Dropout(dropout)]
            head += [nn.Linear(hidden, hidden), get_act(act, hidden), nn.Dropout(dropout), fc8]
        self.classifier = nn.Sequential(*head)
        # PyTorch's default (Kaiming-uniform) initialisation, which torchvision's AlexNet keeps
        # too; the paper drew weights from N(0, 0.01) and set some biases to 1.

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


# Minimum sizes, walking back from pool5's single output pixel: a 3x3/2 pool needs 2n + 1 inputs
# for n outputs, a conv k/s/p needs (n - 1) * s + k - 2p. torchvision: pool5 needs 3, pool2 7,
# pool1 15, conv1 (11x11/4, pad 2) 63; the paper's conv1 has no padding: 67. ZFNet's ceil-mode
# pools need only 2n: pool5 needs 2, pool2 4, conv2 (5x5/2) 11, pool1 22, conv1 (7x7/2, pad 1) 47.
ALEXNET_SPECS: dict[str, AlexNetSpec] = {
    "alexnet": AlexNetSpec(
        (
            ConvSpec(64, 11, 4, 2, pool=True),
            ConvSpec(192, 5, 1, 2, pool=True),
            ConvSpec(384, 3, 1, 1),
            ConvSpec(256, 3, 1, 1),
            ConvSpec(256, 3, 1, 1, pool=True),
        ),
        min_input_size=63,
        dropout_before_fc=True,
    ),
    "alexnet_paper": AlexNetSpec(
        (
            ConvSpec(96, 11, 4, 0, pool=True, lrn=True),
            ConvSpec(256, 5, 1, 2, pool=True, lrn=True),
            ConvSpec(384, 3, 1, 1),
            ConvSpec(384, 3, 1, 1),
            ConvSpec(256, 3, 1, 1, pool=True),
        ),
        min_input_size=67,
    ),
    "alexnet_2gpu": AlexNetSpec(
        (
            ConvSpec(96, 11, 4, 0, pool=True, lrn=True),
            ConvSpec(256, 5, 1, 2, pool=True, lrn=True, groups=2),
            ConvSpec(384, 3, 1, 1),
            ConvSpec(384, 3, 1, 1, groups=2),
            ConvSpec(256, 3, 1, 1, pool=True, groups=2),
        ),
        min_input_size=67,
    ),
    "zfnet": AlexNetSpec(
        (
            # Padding 1 gives ZF's 110 from 224; conv2 has no padding (55 -> 26).
            ConvSpec(96, 7, 2, 1, pool=True, lrn=True),
            ConvSpec(256, 5, 2, 0, pool=True, lrn=True),
            ConvSpec(512, 3, 1, 1),
            ConvSpec(1024, 3, 1, 1),
            ConvSpec(512, 3, 1, 1, pool=True),
        ),
        min_input_size=47,
        ceil_mode=True,
    ),
}

_KRIZHEVSKY = "Krizhevsky, Sutskever, Hinton 2012, ImageNet Classification with Deep Convolutional Neural Networks, NeurIPS"
_ZF = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks, arXiv:1311.2901"


@register(
    family="alexnet",
    paper=_KRIZHEVSKY,
    year=2012,
    min_input_size=ALEXNET_SPECS["alexnet"].min_input_size,
    torchvision=True,
)
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """AlexNet (Krizhevsky et al. 2012) as in torchvision: 64/192/384/256/256 filters, no LRN, 61.1M parameters."""
    return AlexNet(ALEXNET_SPECS["alexnet"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="alexnet",
    paper=_KRIZHEVSKY,
    year=2012,
    input_size=(3, 227, 227),
    min_input_size=ALEXNET_SPECS["alexnet_paper"].min_input_size,
)
def alexnet_paper(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """AlexNet as in the lecture's table (Krizhevsky et al. 2012): 227 px, LRN, 62,378,344 parameters."""
    return AlexNet(ALEXNET_SPECS["alexnet_paper"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="alexnet",
    paper=_KRIZHEVSKY,
    year=2012,
    input_size=(3, 227, 227),
    min_input_size=ALEXNET_SPECS["alexnet_2gpu"].min_input_size,
)
def alexnet_2gpu(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """AlexNet in the paper's two-GPU layout (Krizhevsky et al. 2012): conv2/4/5 grouped (groups=2), LRN, 60,965,224 parameters."""
    return AlexNet(ALEXNET_SPECS["alexnet_2gpu"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="zfnet", paper=_ZF, year=2013, min_input_size=ALEXNET_SPECS["zfnet"].min_input_size)
def zfnet(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> AlexNet:
    """ZFNet (Zeiler & Fergus 2013, arXiv:1311.2901): AlexNet with a 7x7/2 conv1 and 512/1024/512 filters."""
    return AlexNet(ALEXNET_SPECS["zfnet"], num_classes=num_classes, in_chans=in_chans, **kwargs)
