"""The CIFAR-10 residual nets: He et al.'s 6n+2 ResNets and their plain twins, pre-activation
ResNets, Wide ResNets and ResNeXt-29.

He et al. 2015 §4.2: a 3x3 conv to 16 channels, then three stages of n blocks at 32, 16 and 8
pixels with 16, 32 and 64 channels, global average pooling and a 10-way FC: 6n+2 weighted
layers. No 7x7/2 stem and no max-pool, because a 32-px image has no resolution to spare. The
later CIFAR families keep this three-stage skeleton and change one thing each: the block order
(pre-activation), the block type (bottleneck), the width (WRN) or the cardinality (ResNeXt).

They are all `resnet.ResNet` with `stem="cifar"`: only the data below differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cnnzoo.models.resnet import ResNet, StageSpec
from cnnzoo.registry import register

__all__ = ["CIFAR_SPECS", "CifarSpec", "cifar_stages"]


def cifar_stages(depth: int, widths: Sequence[int]) -> tuple[StageSpec, ...]:
    """Three stages of `depth` blocks; the second and third halve the resolution (32, 16, 8 px)."""
    return tuple(StageSpec(depth, w, s) for w, s in zip(widths, (1, 2, 2), strict=True))


@dataclass(frozen=True)
class CifarSpec:
    block: str
    depth: int  # blocks in each of the three stages
    widths: tuple[int, int, int] = (16, 32, 64)  # base channels; a block outputs width * expansion
    stem_width: int = 16
    shortcut: str = "B"  # where a block changes shape: "A" zero-pads, "B" projects
    groups: int = 1  # ResNeXt's cardinality
    variant: str = "v1.5"  # a bottleneck's stride on its 3x3; "v1" strides the first 1x1


CIFAR_SPECS: dict[str, CifarSpec] = {
    # He et al. 2015 §4.2: 6n+2 layers, option-A shortcuts "in all cases", so that the ResNets
    # have exactly the parameters of their plain twins.
    "resnet20": CifarSpec("basic", 3, shortcut="A"),
    "resnet32": CifarSpec("basic", 5, shortcut="A"),
    "resnet44": CifarSpec("basic", 7, shortcut="A"),
    "resnet56": CifarSpec("basic", 9, shortcut="A"),
    "resnet110": CifarSpec("basic", 18, shortcut="A"),
    "resnet1202": CifarSpec("basic", 200, shortcut="A"),
    "plain20": CifarSpec("plain", 3),
    "plain32": CifarSpec("plain", 5),
    "plain44": CifarSpec("plain", 7),
    "plain56": CifarSpec("plain", 9),
    "plain110": CifarSpec("plain", 18),
    # He et al. 2016: 6n+2 (basic) or 9n+2 (bottleneck, 4x wider outputs) layers, 1x1
    # projections where the shape changes, and the stride on a bottleneck's first 1x1 (v1), as in
    # the paper's code (resnet-1k-layers).
    "preact_resnet56": CifarSpec("preact_basic", 9),
    "preact_resnet110": CifarSpec("preact_basic", 18),
    "preact_resnet164": CifarSpec("preact_bottleneck", 18, variant="v1"),
    "preact_resnet1001": CifarSpec("preact_bottleneck", 111, variant="v1"),
    # Zagoruyko & Komodakis: WRN-d-k has n = (d - 4) / 6 blocks a stage, 16k, 32k, 64k wide. The
    # 4 counts the stem and the three 1x1 projections, not the FC.
    "wrn16_8": CifarSpec("preact_basic", 2, (128, 256, 512)),
    "wrn28_10": CifarSpec("preact_basic", 4, (160, 320, 640)),
    "wrn40_4": CifarSpec("preact_basic", 6, (64, 128, 256)),
    # Xie et al. §5.3 (CIFAR): 9n+2 = 29 layers, outputs 256/512/1024, C groups of d = 64 in the
    # first stage, doubled per stage (inner width C * 64 * 2^i), stride on the grouped 3x3 and
    # BN'd projections, as in the paper's code (facebookresearch/ResNeXt).
    "resnext29_8x64d": CifarSpec("bottleneck", 3, (64, 128, 256), stem_width=64, groups=8),
    "resnext29_16x64d": CifarSpec("bottleneck", 3, (64, 128, 256), stem_width=64, groups=16),
}


def _cifar(name: str, **kwargs: Any) -> ResNet:
    spec = CIFAR_SPECS[name]
    # The spec's choices are defaults: shortcut="B" on resnet20 gives He et al.'s option-B twin.
    options = {
        "stem_width": spec.stem_width,
        "shortcut": spec.shortcut,
        "groups": spec.groups,
        "variant": spec.variant,
    }
    return ResNet(spec.block, cifar_stages(spec.depth, spec.widths), stem="cifar", **(options | kwargs))


_HE = "He, Zhang, Ren, Sun 2015, Deep Residual Learning, arXiv:1512.03385"
_PREACT = "He, Zhang, Ren, Sun 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027"
_WRN = "Zagoruyko & Komodakis 2016, Wide Residual Networks, arXiv:1605.07146"
_RESNEXT = "Xie, Girshick, Dollar, Tu, He 2016, Aggregated Residual Transformations, arXiv:1611.05431"


@register(family="cifar_resnet", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def resnet20(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-20: 3 stages of 3 basic blocks (16/32/64 ch), option-A shortcuts, 0.27M parameters."""
    return _cifar("resnet20", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_resnet", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def resnet32(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-32: 3 stages of 5 basic blocks (16/32/64 ch), option-A shortcuts, 0.46M parameters."""
    return _cifar("resnet32", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_resnet", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def resnet44(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-44: 3 stages of 7 basic blocks (16/32/64 ch), option-A shortcuts, 0.66M parameters."""
    return _cifar("resnet44", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_resnet", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def resnet56(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-56: 3 stages of 9 basic blocks (16/32/64 ch), option-A shortcuts, 0.85M parameters."""
    return _cifar("resnet56", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_resnet", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def resnet110(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-110: 3 stages of 18 basic blocks (16/32/64 ch), option-A shortcuts, 1.7M parameters."""
    return _cifar("resnet110", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_resnet", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def resnet1202(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """CIFAR ResNet-1202: 3 stages of 200 basic blocks, option-A shortcuts, 19.4M parameters (overfits)."""
    return _cifar("resnet1202", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_plain", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def plain20(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-20: ResNet-20 without shortcuts, the same 0.27M parameters."""
    return _cifar("plain20", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_plain", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def plain32(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-32: ResNet-32 without shortcuts, the same 0.46M parameters."""
    return _cifar("plain32", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_plain", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def plain44(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-44: ResNet-44 without shortcuts, the same 0.66M parameters."""
    return _cifar("plain44", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_plain", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def plain56(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-56: ResNet-56 without shortcuts, the same 0.85M parameters; trains worse than Plain-20."""
    return _cifar("plain56", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_plain", paper=_HE, year=2015, input_size=(3, 32, 32), min_input_size=1)
def plain110(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Plain-110: ResNet-110 without shortcuts, the same 1.7M parameters."""
    return _cifar("plain110", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_preact_resnet", paper=_PREACT, year=2016, input_size=(3, 32, 32), min_input_size=1)
def preact_resnet56(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-56: 3 stages of 9 BN-act-conv basic blocks, 0.86M parameters (ResNet-56's convs, option B)."""
    return _cifar("preact_resnet56", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_preact_resnet", paper=_PREACT, year=2016, input_size=(3, 32, 32), min_input_size=1)
def preact_resnet110(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-110: 3 stages of 18 BN-act-conv basic blocks, 1.7M parameters."""
    return _cifar("preact_resnet110", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_preact_resnet", paper=_PREACT, year=2016, input_size=(3, 32, 32), min_input_size=1)
def preact_resnet164(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-164: 3 stages of 18 bottlenecks (64/128/256 out), 1.7M parameters."""
    return _cifar("preact_resnet164", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="cifar_preact_resnet", paper=_PREACT, year=2016, input_size=(3, 32, 32), min_input_size=1)
def preact_resnet1001(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """Pre-activation ResNet-1001: 3 stages of 111 bottlenecks (64/128/256 out), 10.2M parameters."""
    return _cifar("preact_resnet1001", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="wide_resnet_cifar", paper=_WRN, year=2016, input_size=(3, 32, 32), min_input_size=1)
def wrn16_8(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """WRN-16-8: 3 stages of 2 pre-act basic blocks, 128/256/512 wide, 11.0M parameters (dropout=0.3 in the paper)."""
    return _cifar("wrn16_8", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="wide_resnet_cifar", paper=_WRN, year=2016, input_size=(3, 32, 32), min_input_size=1)
def wrn28_10(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """WRN-28-10: 3 stages of 4 pre-act basic blocks, 160/320/640 wide, 36.5M parameters (dropout=0.3 in the paper)."""
    return _cifar("wrn28_10", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="wide_resnet_cifar", paper=_WRN, year=2016, input_size=(3, 32, 32), min_input_size=1)
def wrn40_4(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """WRN-40-4: 3 stages of 6 pre-act basic blocks, 64/128/256 wide, 8.9M parameters (dropout=0.3 in the paper)."""
    return _cifar("wrn40_4", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="resnext_cifar", paper=_RESNEXT, year=2016, input_size=(3, 32, 32), min_input_size=1)
def resnext29_8x64d(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-29 8x64d: 3 stages of 3 bottlenecks with 8 groups of 64/128/256 ch, 34.4M parameters."""
    return _cifar("resnext29_8x64d", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="resnext_cifar", paper=_RESNEXT, year=2016, input_size=(3, 32, 32), min_input_size=1)
def resnext29_16x64d(*, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> ResNet:
    """ResNeXt-29 16x64d: 3 stages of 3 bottlenecks with 16 groups of 64/128/256 ch, 68.1M parameters."""
    return _cifar("resnext29_16x64d", num_classes=num_classes, in_chans=in_chans, **kwargs)
