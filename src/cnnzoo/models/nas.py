"""A neural-architecture-search design space as data, and the one builder of its networks.

The lectures ("Can we learn good architectures automatically?") close with NAS
(Zoph & Le 2016) and EfficientNet, whose baseline B0 came out of MnasNet's search space (Tan et
al. 2018, arXiv:1807.11626): the network is a stem, a few stages of mobile inverted bottlenecks
(MBConv) and a classifier, and each *stage* chooses its own

    depth (blocks), width (output channels), kernel size of the depthwise conv,
    expansion ratio of the inverted bottleneck, squeeze-and-excitation or not.

A point of the space is a `NasSpec` (one `NasStage` per stage); the space itself is a
`DesignSpace` listing the choices of each stage, so `sample`, `mutate` and the MACs budget work
on plain data and never build a network. `NasNet` builds any point, with the zoo's interface,
and `spec_macs` gives its multiply-accumulates exactly without building it (what a search
needs to reject candidates over budget by the thousand).

Specs travel as short strings (`NasSpec.arch`), e.g. ``c16_d1w16k3e1s1_d2w24k5e6s2se_d2w64k3e3s2``:
stem of 16 channels, then per stage depth, width, kernel, expansion, stride of its first block
and ``se`` when it has squeeze-and-excitation. `create_model("nas_candidate", arch=...)`
builds any of them; `cnnzoo experiment nas` searches the space (random search and regularized
evolution) and `nas_fmnist` is the network its full-budget run found.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import ConvBnAct, MBConv
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register

__all__ = [
    "NAS_SPACE",
    "NAS_SPECS",
    "DesignSpace",
    "NasNet",
    "NasSpec",
    "NasStage",
    "StageChoices",
    "spec_macs",
]

SE_RATIO = 0.25  # MnasNet / EfficientNet: squeeze to a quarter of the block's input width


# -- a point of the space -------------------------------------------------------------------------
@dataclass(frozen=True)
class NasStage:
    depth: int  # MBConv blocks in the stage
    width: int  # output channels
    kernel: int  # depthwise kernel (3 or 5 in MnasNet)
    expansion: int  # inverted-bottleneck ratio; 1 leaves the expansion conv out
    se: bool  # squeeze-and-excitation in every block of the stage
    stride: int = 2  # of the stage's first block

    @property
    def arch(self) -> str:
        return f"d{self.depth}w{self.width}k{self.kernel}e{self.expansion}s{self.stride}" + (
            "se" if self.se else ""
        )


_STAGE_RE = re.compile(r"d(\d+)w(\d+)k(\d+)e(\d+)s(\d+)(se)?")


@dataclass(frozen=True)
class NasSpec:
    stages: tuple[NasStage, ...]
    stem_width: int = 16  # a 3x3 stride-1 conv: 28-px inputs have no resolution to spare

    @property
    def arch(self) -> str:
        """The spec as a string that `from_arch` reads back."""
        return "_".join([f"c{self.stem_width}", *(s.arch for s in self.stages)])

    @classmethod
    def from_arch(cls, arch: str) -> NasSpec:
        parts = arch.strip().split("_")
        stem = re.fullmatch(r"c(\d+)", parts[0]) if parts else None
        stages = [_STAGE_RE.fullmatch(p) for p in parts[1:]]
        if stem is None or not stages or not all(stages):
            raise ValueError(
                f"arch {arch!r} is not a NAS spec; write it as c<stem>_d<depth>w<width>k<kernel>e<expansion>"
                "s<stride>[se]_..., e.g. c16_d1w16k3e1s1_d2w24k5e6s2se"
            )
        spec = cls(
            tuple(
                NasStage(int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[6] is not None, int(m[5]))
                for m in stages  # type: ignore[index]
            ),
            int(stem[1]),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.stem_width < 1:
            raise ValueError(f"stem width must be >= 1, got {self.stem_width}")
        for i, s in enumerate(self.stages):
            if s.depth < 1 or s.width < 1 or s.expansion < 1:
                raise ValueError(f"stage {i + 1}: depth, width and expansion must be >= 1, got {s.arch}")
            if s.kernel % 2 == 0:
                raise ValueError(f"stage {i + 1}: the depthwise kernel must be odd, got {s.kernel}")
            if s.stride not in (1, 2):
                raise ValueError(f"stage {i + 1}: stride must be 1 or 2, got {s.stride}")

    @property
    def reduction(self) -> int:
        return math.prod(s.stride for s in self.stages)


# -- the space ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageChoices:
    depth: tuple[int, ...]
    width: tuple[int, ...]
    kernel: tuple[int, ...] = (3, 5)
    expansion: tuple[int, ...] = (1, 3, 6)  # MBConv1, MBConv3, MBConv6
    se: tuple[bool, ...] = (False, True)
    stride: int = 2

    def size(self) -> int:
        return len(self.depth) * len(self.width) * len(self.kernel) * len(self.expansion) * len(self.se)

    def sample(self, rng: random.Random) -> NasStage:
        return NasStage(
            rng.choice(self.depth),
            rng.choice(self.width),
            rng.choice(self.kernel),
            rng.choice(self.expansion),
            rng.choice(self.se),
            self.stride,
        )

    def contains(self, s: NasStage) -> bool:
        return (
            s.depth in self.depth
            and s.width in self.width
            and s.kernel in self.kernel
            and s.expansion in self.expansion
            and s.se in self.se
            and s.stride == self.stride
        )


MUTABLE = ("depth", "width", "kernel", "expansion", "se")


@dataclass(frozen=True)
class DesignSpace:
    """Independent choices per stage (MnasNet's factorised hierarchical space, one block type)."""

    stages: tuple[StageChoices, ...]
    stem_width: int = 16

    def size(self) -> int:
        return math.prod(s.size() for s in self.stages)

    def sample(self, rng: random.Random) -> NasSpec:
        """A uniformly random point."""
        return NasSpec(tuple(c.sample(rng) for c in self.stages), self.stem_width)

    def contains(self, spec: NasSpec) -> bool:
        return (
            spec.stem_width == self.stem_width
            and len(spec.stages) == len(self.stages)
            and all(c.contains(s) for c, s in zip(self.stages, spec.stages, strict=True))
        )

    def mutate(self, spec: NasSpec, rng: random.Random) -> NasSpec:
        """Change one choice of one stage to another of its values (Real et al. 2019's mutation)."""
        if not self.contains(spec):
            raise ValueError(f"{spec.arch} is not in this design space")
        while True:
            i = rng.randrange(len(self.stages))
            field = rng.choice(MUTABLE)
            options = [v for v in getattr(self.stages[i], field) if v != getattr(spec.stages[i], field)]
            if options:
                break
        stages = list(spec.stages)
        stages[i] = replace(stages[i], **{field: rng.choice(options)})
        return replace(spec, stages=tuple(stages))


# Three stages at 28, 14 and 7 px for the 28 x 28 datasets (Fashion-MNIST, MNIST): 559,872
# networks, from 0.7 to 42 million multiply-adds on 1 x 28 x 28 (ResNet-20 on the same input: 30.8M;
# a uniform sample has a median of 9.3M).
NAS_SPACE = DesignSpace(
    (
        StageChoices(depth=(1, 2), width=(16, 24), stride=1),
        StageChoices(depth=(1, 2, 3), width=(24, 32, 48)),
        StageChoices(depth=(1, 2, 3), width=(48, 64, 96)),
    ),
    stem_width=16,
)


def _hidden(in_ch: int, expansion: int) -> int:
    return round(in_ch * expansion)  # as MBConv computes it


def spec_macs(spec: NasSpec, input_size: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> int:
    """Multiply-accumulates of `NasNet(spec)` on one (C, H, W) input, counted without building it:
    convolutions and the classifier, as `cnnzoo.profile` (and torch's FlopCounterMode / 2) count."""
    c, h, w = input_size
    macs = h * w * spec.stem_width * c * 9  # 3x3 stem, stride 1
    in_ch = spec.stem_width
    for stage in spec.stages:
        for j in range(stage.depth):
            stride = stage.stride if j == 0 else 1
            hidden = _hidden(in_ch, stage.expansion)
            if stage.expansion != 1:
                macs += h * w * in_ch * hidden  # 1x1 expansion at the input resolution
            h, w = -(-h // stride), -(-w // stride)  # 'same' padding: ceil(n / stride)
            macs += h * w * hidden * stage.kernel**2  # depthwise
            if stage.se:
                squeeze = max(1, int(in_ch * SE_RATIO))
                macs += 2 * hidden * squeeze  # two 1x1 convs on the pooled 1x1 map
            macs += h * w * hidden * stage.width  # linear 1x1 projection
            in_ch = stage.width
    return macs + in_ch * num_classes


# -- the network ----------------------------------------------------------------------------------
class NasNet(ZooModel):
    """Stem conv, one stage of MBConv blocks per `NasStage`, global average pool, dropout, linear.

    Args:
        spec: the point of the design space (a `NasSpec` or its arch string).
        act: activation of the stem, the blocks and their SE gates (swish, as in EfficientNet).
        dropout: before the classifier.
    """

    head_name = "classifier"

    def __init__(
        self,
        spec: NasSpec | str,
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        act: str = "swish",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        spec = NasSpec.from_arch(spec) if isinstance(spec, str) else spec
        spec.validate()
        self.spec = spec
        self.in_chans, self.num_classes = in_chans, num_classes
        self.stem = ConvBnAct(in_chans, spec.stem_width, 3, 1, act=act)
        self.feature_info = [{"module": "stem", "num_chs": spec.stem_width, "reduction": 1}]
        in_ch, reduction, stages = spec.stem_width, 1, []
        for i, st in enumerate(spec.stages):
            blocks = []
            for j in range(st.depth):
                blocks.append(
                    MBConv(
                        in_ch,
                        st.width,
                        st.kernel,
                        st.stride if j == 0 else 1,
                        expand_ratio=st.expansion,
                        se_ratio=SE_RATIO if st.se else None,
                        act=act,
                    )
                )
                in_ch = st.width
            reduction *= st.stride
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append({"module": f"stages.{i}", "num_chs": st.width, "reduction": reduction})
        self.stages = nn.Sequential(*stages)
        self.num_features = in_ch
        # 'Same'-padded stride-2 depthwise convs map n px to ceil(n / 2): even 1 px passes.
        self.min_input_size = 1
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # EfficientNet's (torchvision's) init: He normal on the fan-out, BN (1, 0), and a uniform
        # +-1/sqrt(classes) classifier.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.classifier(x)


# -- named points ---------------------------------------------------------------------------------
NAS_SPECS: dict[str, str] = {
    # A MobileNetV2-like point of the space, the generic builder's default.
    "nas_candidate": "c16_d1w16k3e1s1_d2w24k3e6s2_d2w48k3e6s2",
    # What `cnnzoo experiment nas --budget full` found under 8M MACs (reports/nas/report.md): 85.85%
    # Fashion-MNIST test top-1 after 3 epochs on 10,000 images, ResNet-20's 85.80% at a quarter of
    # its multiply-adds and a seventh of its parameters.
    "nas_fmnist": "c16_d2w24k5e1s1_d1w48k5e6s2_d3w64k5e1s2se",
}

_MNAS = "Tan et al. 2018, MnasNet: Platform-Aware NAS for Mobile, arXiv:1807.11626 (search space)"


@register(family="nas", paper=_MNAS, year=2018, input_size=(1, 28, 28), min_input_size=1)
def nas_candidate(
    *, num_classes: int = 10, in_chans: int = 1, arch: str = NAS_SPECS["nas_candidate"], **kwargs: Any
) -> NasNet:
    """Any network of the NAS design space, given by its arch string (default: MobileNetV2-like)."""
    return NasNet(arch, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="nas", paper=_MNAS, year=2018, input_size=(1, 28, 28), min_input_size=1)
def nas_fmnist(*, num_classes: int = 10, in_chans: int = 1, **kwargs: Any) -> NasNet:
    """The network the NAS experiment found for Fashion-MNIST under 8M MACs: 7.2M MACs, 39k parameters."""
    return NasNet(NAS_SPECS["nas_fmnist"], num_classes=num_classes, in_chans=in_chans, **kwargs)
