"""ShuffleNet v1 and v2: cheap 1x1 convolutions, then a shuffle so the channels still mix.

ShuffleNet (Zhang et al. 2017, Table 1): a 3x3/2 conv to 24 channels and a 3x3/2 max-pool
(224 -> 56), three stages of 4, 8 and 4 ShuffleNet units at 28, 14 and 7 px whose first unit
halves the resolution, global pooling and a linear layer. The number of groups g of the 1x1
convs is the knob: at a fixed budget (~140 MFLOPs) more groups afford wider stages
(g = 1: 144/288/576 channels ... g = 8: 384/768/1536). "ShuffleNet s x" multiplies every width
by s, which scales the cost by about s^2.

ShuffleNet V2 (Ma et al. 2018, Table 5): the same skeleton with the channel-split unit and a
final 1x1 conv (1024 or 2048 channels) before pooling. Module names and order are torchvision's
(`conv1`, `maxpool`, `stage2..4`, `conv5`, `fc`), so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cnnzoo.layers import ConvBnAct, ShuffleUnitV1, ShuffleUnitV2, get_act, make_divisible, resolve_act
from cnnzoo.models.base import ZooModel, he_init
from cnnzoo.registry import register

__all__ = [
    "SHUFFLENET_V1_DEPTHS",
    "SHUFFLENET_V1_WIDTHS",
    "SHUFFLENET_V2_DEPTHS",
    "SHUFFLENET_V2_WIDTHS",
    "ShuffleNetV1",
    "ShuffleNetV2",
]


class _ShuffleNet(ZooModel):
    """The skeleton of both versions: conv1 and max-pool (224 -> 56), stage2..4, pooling, fc."""

    min_input_size = 1  # 'same' 3x3/2 convs, the padded 3x3/2 max- and average pools: n -> ceil(n / 2)
    stage2: nn.Sequential
    stage3: nn.Sequential
    stage4: nn.Sequential

    def _make_stages(
        self,
        in_ch: int,
        widths: Sequence[int],
        depths: Sequence[int],
        unit: Callable[[int, int, int, int, int], nn.Module],
    ) -> tuple[int, int]:
        """Build stage2..4 with `unit(in_ch, out_ch, stride, stage, index)`; return (width, reduction)."""
        reduction = 4
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = []
            for j in range(depth):
                blocks.append(unit(in_ch, width, 2 if j == 0 else 1, i, j))
                in_ch = width
            reduction *= 2
            self.add_module(f"stage{i + 2}", nn.Sequential(*blocks))
            self.feature_info.append({"module": f"stage{i + 2}", "num_chs": width, "reduction": reduction})
        return in_ch, reduction

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.stage4(self.stage3(self.stage2(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)


class ShuffleNetV1(_ShuffleNet):
    """ShuffleNet (v1): conv1, max-pool, three stages of ShuffleNet units, pooling, fc.

    Args:
        groups: g of the grouped 1x1 convs (1, 2, 3, 4 or 8 in the paper; any g works if the
            scaled widths divide, which the rounding below ensures).
        widths: output channels of stages 2-4 at scale 1 (Table 1).
        depths: units per stage (4, 8, 4).
        scale: s of "ShuffleNet s x" (0.25, 0.5, 1, 1.5, 2 in the paper). Stage widths are rounded
            to a multiple of 4g (the bottleneck, a quarter of the width, must split into g groups);
            at s = 1 nothing moves.
        stem_width: conv1's output channels. By default the authors' released models' (12 at
            s = 0.5, 24 at 1 and 1.5, 48 at 2: their code keeps 24 at 1.5x, which gives the
            published 292 MFLOPs for 1.5x (g = 3) where 36 would give 300), else 24 s; rounded
            to a multiple of g (the stride-2 unit's branch, stage width minus stem width, must
            split into g groups).
        act: activation by name (ReLU in the paper; see `cnnzoo.layers.ACTIVATIONS`).
    """

    def __init__(
        self,
        groups: int,
        widths: Sequence[int],
        depths: Sequence[int] = (4, 8, 4),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        scale: float = 1.0,
        stem_width: int | None = None,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        act = resolve_act(act)
        self.in_chans, self.num_classes, self.groups = in_chans, num_classes, groups

        # Table 1's conv1 has 24 channels.
        if stem_width is None:
            stem_width = make_divisible(_V1_RELEASED_STEMS.get(scale, 24 * scale), groups)
        stem = stem_width
        widths = [make_divisible(w * scale, 4 * groups) for w in widths]
        self.conv1 = ConvBnAct(in_chans, stem, 3, 2, act=act)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [{"module": "conv1", "num_chs": stem, "reduction": 2}]

        def unit(in_ch: int, out_ch: int, stride: int, stage: int, index: int) -> ShuffleUnitV1:
            # §3.3: "for Stage 2, we do not apply group convolution on the first pointwise layer
            # because the number of input channels is relatively small".
            return ShuffleUnitV1(
                in_ch,
                out_ch,
                stride,
                mid_ch=out_ch // 4,
                groups=groups,
                group_first=(stage, index) != (0, 0),
                act=act,
            )

        self.num_features, _ = self._make_stages(stem, widths, depths, unit)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # He (fan-out) as the other from-scratch families; the authors' code draws std 1 / in-channels.
        he_init(self, linear_std=0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x)


class ShuffleNetV2(_ShuffleNet):
    """ShuffleNet V2: conv1, max-pool, three stages of channel-split units, conv5, pooling, fc.

    Args:
        widths: conv1, stage2..4 and conv5 output channels (Table 5).
        depths: units per stage (4, 8, 4).
        act: activation by name (ReLU in the paper; see `cnnzoo.layers.ACTIVATIONS`).

    PyTorch's default initialisation, as torchvision's.
    """

    def __init__(
        self,
        widths: Sequence[int],
        depths: Sequence[int] = (4, 8, 4),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if len(widths) != len(depths) + 2:
            raise ValueError(f"need conv1, one per stage and conv5 widths, got {tuple(widths)}")
        act = resolve_act(act)
        self.in_chans, self.num_classes = in_chans, num_classes

        stem, *stage_widths, last = widths
        # Plain Sequentials, not ConvBnAct, to keep torchvision's keys (conv1.0, conv1.1, ...).
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), get_act(act, stem)
        )
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [{"module": "conv1", "num_chs": stem, "reduction": 2}]

        def unit(in_ch: int, out_ch: int, stride: int, stage: int, index: int) -> ShuffleUnitV2:
            return ShuffleUnitV2(in_ch, out_ch, stride, act=act)

        in_ch, reduction = self._make_stages(stem, stage_widths, depths, unit)
        self.conv5 = nn.Sequential(
            nn.Conv2d(in_ch, last, 1, bias=False), nn.BatchNorm2d(last), get_act(act, last)
        )
        self.feature_info.append({"module": "conv5", "num_chs": last, "reduction": reduction})
        self.num_features = last
        self.fc = nn.Linear(last, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv5(self._trunk(x))


# conv1's width in the authors' released ShuffleNet v1 models per scale (megvii-model's
# ShuffleNet-Series code): not 24 s at 1.5x.
_V1_RELEASED_STEMS = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}

# Zhang et al. 2017, Table 1: output channels of stages 2-4 for g = 1, 2, 3, 4, 8 at scale 1,
# chosen to keep the cost near 140 MFLOPs; units per stage.
SHUFFLENET_V1_WIDTHS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
SHUFFLENET_V1_DEPTHS = (4, 8, 4)

# Ma et al. 2018, Table 5: conv1, stage2..4, conv5 output channels per width; units per stage.
SHUFFLENET_V2_WIDTHS: dict[str, tuple[int, ...]] = {
    "x0_5": (24, 48, 96, 192, 1024),
    "x1_0": (24, 116, 232, 464, 1024),
    "x1_5": (24, 176, 352, 704, 1024),
    "x2_0": (24, 244, 488, 976, 2048),
}
SHUFFLENET_V2_DEPTHS = (4, 8, 4)

_ZHANG = (
    "Zhang, Zhou, Lin, Sun 2017, ShuffleNet: An Extremely Efficient CNN for Mobile Devices, arXiv:1707.01083"
)
_MA = "Ma, Zhang, Zheng, Sun 2018, ShuffleNet V2: Practical Guidelines for Efficient CNN Design, arXiv:1807.11164"


def _v1(groups: int, **kwargs: Any) -> ShuffleNetV1:
    return ShuffleNetV1(groups, SHUFFLENET_V1_WIDTHS[groups], SHUFFLENET_V1_DEPTHS, **kwargs)


def _v2(width: str, **kwargs: Any) -> ShuffleNetV2:
    return ShuffleNetV2(SHUFFLENET_V2_WIDTHS[width], SHUFFLENET_V2_DEPTHS, **kwargs)


@register(family="shufflenet", paper=_ZHANG, year=2017, min_input_size=1)
def shufflenet_v1_g1(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 1 (Zhang et al. 2017): stages 144/288/576, 143 MFLOPs."""
    return _v1(1, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="shufflenet", paper=_ZHANG, year=2017, min_input_size=1)
def shufflenet_v1_g2(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 2 (Zhang et al. 2017): stages 200/400/800, 140 MFLOPs."""
    return _v1(2, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="shufflenet", paper=_ZHANG, year=2017, min_input_size=1)
def shufflenet_v1_g3(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 3 (Zhang et al. 2017): stages 240/480/960, 137 MFLOPs."""
    return _v1(3, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="shufflenet", paper=_ZHANG, year=2017, min_input_size=1)
def shufflenet_v1_g4(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 4 (Zhang et al. 2017): stages 272/544/1088, 133 MFLOPs."""
    return _v1(4, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="shufflenet", paper=_ZHANG, year=2017, min_input_size=1)
def shufflenet_v1_g8(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV1:
    """ShuffleNet 1x, g = 8 (Zhang et al. 2017): stages 384/768/1536, 137 MFLOPs."""
    return _v1(8, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="shufflenet", paper=_MA, year=2018, min_input_size=1, torchvision=True)
def shufflenet_v2_x0_5(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 0.5x (Ma et al. 2018): stages 48/96/192, 1.4M parameters, 41 MFLOPs."""
    return _v2("x0_5", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="shufflenet", paper=_MA, year=2018, min_input_size=1, torchvision=True)
def shufflenet_v2_x1_0(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 1x (Ma et al. 2018): stages 116/232/464, 2.3M parameters, 146 MFLOPs."""
    return _v2("x1_0", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="shufflenet", paper=_MA, year=2018, min_input_size=1, torchvision=True)
def shufflenet_v2_x1_5(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 1.5x (Ma et al. 2018): stages 176/352/704, 3.5M parameters, 299 MFLOPs."""
    return _v2("x1_5", num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(family="shufflenet", paper=_MA, year=2018, min_input_size=1, torchvision=True)
def shufflenet_v2_x2_0(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> ShuffleNetV2:
    """ShuffleNet V2 2x (Ma et al. 2018): stages 244/488/976, conv5 2048, 7.4M parameters, 591 MFLOPs."""
    return _v2("x2_0", num_classes=num_classes, in_chans=in_chans, **kwargs)
