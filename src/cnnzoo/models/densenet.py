"""DenseNet (Huang, Liu, van der Maaten, Weinberger 2016, arXiv:1608.06993): the ImageNet
DenseNet-BC nets 121/169/201/161 and the CIFAR DenseNet-BC (L=100, k=12).

The lecture's picture: inside a dense block every layer receives the concatenation of all
earlier maps and adds k (the growth rate) channels of its own, so block b ends with
k_0 + L_b k channels; transitions (BN-act-1x1-avgpool) halve the resolution and the channels in
between. ImageNet (paper Table 1): a 7x7/2 conv to 2k channels and a 3x3/2 max-pool (224 -> 56),
four blocks at 56, 28, 14, 7 px. CIFAR (§3, "Implementation Details"): one 3x3 conv to 2k
channels, three blocks of equal depth at 32, 16, 8 px. Both end with BN-act, global average
pooling and one linear layer; the variants differ only in the data of `DENSENET_SPECS`.

Module names are torchvision's (features.conv0/norm0/relu0/pool0, features.denseblockN.denselayerM,
features.transitionN, features.norm5, classifier), so its checkpoints load as they are; the
pre-2018 ones, with keys such as `denselayer1.norm.1.weight`, are renamed by the converter at
the bottom of this file.

There is no residual branch to drop, so `drop_path_rate` (stochastic depth) is refused; the
regulariser the paper uses is dropout after each layer, `drop_rate`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import DenseBlock, Transition, get_act, resolve_act
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register
from cnnzoo.weights import register_key_converter

__all__ = ["DENSENET_SPECS", "DenseNet", "DenseNetSpec", "convert_old_densenet_keys"]


@dataclass(frozen=True)
class DenseNetSpec:
    growth_rate: int  # k: channels each dense layer adds
    blocks: tuple[int, ...]  # dense layers per block
    stem_width: int  # channels of the stem conv (2k in the paper)
    bn_size: int = 4  # bottleneck width in multiples of k (the "B" of DenseNet-BC)
    compression: float = 0.5  # theta: a transition keeps floor(theta * m) of m channels (the "C")
    stem: str = "imagenet"  # "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3 conv)


class DenseNet(ZooModel):
    """A stem, dense blocks joined by transitions, BN-act, global average pooling, one linear layer.

    Args:
        spec: growth rate, layers per block, stem width, bottleneck size, compression, stem kind.
        act: activation by name (see `cnnzoo.layers.ACTIVATIONS`), everywhere ReLU is in the paper.
        drop_rate: dropout probability after each dense layer's 3x3 conv (torchvision's option;
            the paper uses 0.2 on CIFAR without data augmentation).
        memory_efficient: recompute each layer's concatenation and bottleneck in the backward
            pass instead of storing them (Pleiss et al. 2017): same outputs and gradients, far less
            training memory, more time.
        drop_path_rate: accepted only as 0; DenseNet concatenates and has no branch to drop.
    """

    head_name = "classifier"

    def __init__(
        self,
        spec: DenseNetSpec,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        act: str = "relu",
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError(
                "DenseNet has no residual branch, so drop_path_rate (stochastic depth) does not apply; "
                "use drop_rate for dropout after each dense layer"
            )
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if spec.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {spec.stem!r}")
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes
        width = spec.stem_width

        if spec.stem == "imagenet":
            stem: list[tuple[str, nn.Module]] = [
                ("conv0", nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(width)),
                ("relu0", get_act(act, width)),
                ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
            self.feature_info = [{"module": "features.relu0", "num_chs": width, "reduction": 2}]
            reduction = 4
        else:
            # The paper's CIFAR code has no BN-act here: the first dense layer's BN-act follows.
            stem = [("conv0", nn.Conv2d(in_chans, width, kernel_size=3, padding=1, bias=False))]
            self.feature_info = [{"module": "features.conv0", "num_chs": width, "reduction": 1}]
            reduction = 1
        self.features = nn.Sequential(OrderedDict(stem))

        for i, num_layers in enumerate(spec.blocks):
            block = DenseBlock(
                num_layers,
                width,
                spec.growth_rate,
                spec.bn_size,
                act=act,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
            )
            self.features.add_module(f"denseblock{i + 1}", block)
            width = block.out_channels
            if i == len(spec.blocks) - 1:
                break
            self.feature_info.append(
                {"module": f"features.denseblock{i + 1}", "num_chs": width, "reduction": reduction}
            )
            transition = Transition(width, spec.compression, act=act)
            self.features.add_module(f"transition{i + 1}", transition)
            width, reduction = transition.out_channels, reduction * 2

        # torchvision applies this ReLU in forward(); as a module it follows `act`, and
        # forward_features returns the map the classifier pools.
        self.features.add_module("norm5", nn.BatchNorm2d(width))
        self.features.add_module("relu5", get_act(act, width))
        self.feature_info.append({"module": "features.relu5", "num_chs": width, "reduction": reduction})
        self.num_features = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

        # ImageNet: n -> ceil(n / 2) (conv0) -> ceil(n / 4) (pool0), then each transition's 2x2/2
        # pool floors, so ceil(n / 4) >= 2^3: n >= 4 * 2^3 - 3 = 29 (torchvision's min_size). CIFAR: the 3x3 keeps n and 2 transitions need n >= 2^2 = 4.
        halvings = len(spec.blocks) - 1
        self.min_input_size = 4 * 2**halvings - 3 if spec.stem == "imagenet" else 2**halvings
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's ("official init from torch repo"): He-normal on the fan-in, BN at 1 and 0,
        # zero classifier bias. The paper's Lua code draws convs on the fan-out instead.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.classifier(x)


# name -> spec. ImageNet: Huang et al. Table 1 (k = 32; DenseNet-161 has k = 48 and a 96-wide
# stem, as torchvision's, which ported all four from the authors' LuaTorch weights). CIFAR:
# DenseNet-BC with L = 100 has (100 - 4) / 6 = 16 bottleneck layers (two convs each) per block.
DENSENET_SPECS: dict[str, DenseNetSpec] = {
    "densenet121": DenseNetSpec(32, (6, 12, 24, 16), 64),
    "densenet169": DenseNetSpec(32, (6, 12, 32, 32), 64),
    "densenet201": DenseNetSpec(32, (6, 12, 48, 32), 64),
    "densenet161": DenseNetSpec(48, (6, 12, 36, 24), 96),
    "densenet_bc_100_12": DenseNetSpec(12, (16, 16, 16), 24, stem="cifar"),
}


def _densenet(name: str, **kwargs: Any) -> DenseNet:
    return DenseNet(DENSENET_SPECS[name], **kwargs)


_HUANG = (
    "Huang, Liu, van der Maaten, Weinberger 2016, Densely Connected Convolutional Networks, arXiv:1608.06993"
)


@register(family="densenet", paper=_HUANG, year=2016, min_input_size=29, torchvision=True)
def densenet121(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-121: k = 32, blocks [6, 12, 24, 16], 8.0M parameters, 2.8 GMACs."""
    return _densenet("densenet121", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="densenet", paper=_HUANG, year=2016, min_input_size=29, torchvision=True)
def densenet169(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-169: k = 32, blocks [6, 12, 32, 32], 14.1M parameters, 3.4 GMACs."""
    return _densenet("densenet169", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="densenet", paper=_HUANG, year=2016, min_input_size=29, torchvision=True)
def densenet201(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-201: k = 32, blocks [6, 12, 48, 32], 20.0M parameters, 4.3 GMACs."""
    return _densenet("densenet201", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="densenet", paper=_HUANG, year=2016, min_input_size=29, torchvision=True)
def densenet161(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-161: k = 48, 96-wide stem, blocks [6, 12, 36, 24], 28.7M parameters, 7.7 GMACs."""
    return _densenet("densenet161", num_classes=num_classes, in_chans=in_chans, **kwargs)


# Its own family, so the torchvision key converter below is not applied to CIFAR checkpoints.
@register(family="densenet_cifar", paper=_HUANG, year=2016, input_size=(3, 32, 32), min_input_size=4)
def densenet_bc_100_12(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> DenseNet:
    """CIFAR DenseNet-BC (L=100, k=12): 3 blocks of 16 bottleneck layers, theta = 0.5, 0.8M parameters."""
    return _densenet("densenet_bc_100_12", num_classes=num_classes, in_chans=in_chans, **kwargs)


# torchvision's checkpoints before 2018 named a layer's modules norm.1, relu.1, conv.1, norm.2, ...;
# '.' is no longer allowed in module names, so they became norm1, relu1, ... (torchvision renames
# them with a regex in its own loader, densenet._load_state_dict).
_OLD_LAYER_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


@register_key_converter("densenet")
def convert_old_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename pre-2018 torchvision keys (`denselayer1.norm.1.weight` -> `denselayer1.norm1.weight`)."""
    return {_OLD_LAYER_KEY.sub(r"\1\2.", k): v for k, v in state.items()}
