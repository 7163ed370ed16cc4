"""Inception v3 (Szegedy et al. 2015, arXiv:1512.00567) and Inception v4 (Szegedy et al. 2016, arXiv:1602.07261).

Both are a stem of plain convolutions and poolings, then three grids of mixed blocks separated
by grid reductions, global average pooling, dropout and one linear layer. For a 299x299 input:

    Inception v3 (torchvision's layout, Table 1 of the v3 paper)
    stem  3x3/2 32, 3x3 32, 3x3 64, max 3x3/2, 1x1 80, 3x3 192, max 3x3/2  -> 35x35x192
    Mixed_5b-5d   Fig. 5, with a 5x5 branch beside the two stacked 3x3s -> 35x35x288
    Mixed_6a      grid reduction (Fig. 10)                             -> 17x17x768
    Mixed_6b-6e   Fig. 6: 7x7 factorised into 1x7 and 7x1, n = 128..192 -> 17x17x768
                  (auxiliary classifier on Mixed_6e, training only)
    Mixed_7a      grid reduction                                       -> 8x8x1280
    Mixed_7b-7c   Fig. 7: forks into 1x3 and 3x1                       -> 8x8x2048

    Inception v4 (Fig. 9 of the v4 paper, with TensorFlow-slim's and timm's kernel order)
    stem (Fig. 3) 3x3/2 32, 3x3 32, 3x3 64, then three two-branch blocks -> 35x35x384
    Mixed_5b-5e   4 x Inception-A (Fig. 4)                             -> 35x35x384
    Mixed_6a      Reduction-A (Fig. 7; k, l, m, n = 192, 224, 256, 384) -> 17x17x1024
    Mixed_6b-6h   7 x Inception-B (Fig. 5)                             -> 17x17x1024
    Mixed_7a      Reduction-B (Fig. 8)                                 -> 8x8x1536
    Mixed_7b-7d   3 x Inception-C (Fig. 6)                             -> 8x8x1536

Every block is data (`INCEPTION_SPECS`): a tuple of branches of `Conv` and `Pool` steps that
`cnnzoo.layers.MixedBlock` builds. Every convolution is conv (no bias) -> BatchNorm (eps 1e-3,
TensorFlow's default, which the published weights were trained with) -> ReLU.

`inception_v3` has torchvision's module names, so torchvision's checkpoints load as they are
(27,161,264 parameters with the auxiliary head, 23,834,568 without). `inception_v4` follows the
TensorFlow-slim layout that timm's `inception_v4` ports (42,679,816 parameters); its module names
are the slim scopes (`Mixed_6b`, ...) with branches numbered as in the paper's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.layers import BasicConv2d, Branch, Conv, MixedBlock, Pool, resolve_act
from cnnzoo.layers.inception import tf_input_transform
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register

__all__ = ["INCEPTION_SPECS", "Inception", "InceptionAux3", "InceptionOutputs", "InceptionSpec"]

Layer = Conv | Pool | tuple[Branch, ...]


@dataclass(frozen=True)
class InceptionSpec:
    layers: tuple[tuple[str, Layer], ...]  # (module name, a stem step or a mixed block), in order
    aux_after: str | None  # the block the auxiliary classifier reads, or None
    dropout: float  # before the last linear layer
    init: str  # "torchvision" (truncated normals) or "he"
    min_input_size: int  # smallest H = W that passes every layer (derivation in the table below)


class InceptionOutputs(NamedTuple):
    """What Inception v3 with its auxiliary head returns in training mode (torchvision's order)."""

    logits: torch.Tensor
    aux_logits: torch.Tensor | None


class InceptionAux3(nn.Module):
    """Inception v3's auxiliary classifier on the 17x17 grid: avg-pool 5x5/3, 1x1 conv 128,
    5x5 conv 768, global average pooling, linear (Szegedy et al. 2015, Sec. 4 and Fig. 8's head).

    The v3 paper credits it with regularising, not with speeding up training, and gives it
    BatchNorm ("BN-auxiliary", the last row of its Table 3). Names follow torchvision.

    At 299 px the pool turns the 17x17 map into 5x5, which the 5x5 conv reads whole. Maps under
    17 px, which the paper's pooling cannot bring to 5x5, are pooled adaptively to 5x5 instead,
    so that small inputs still train (torchvision's head fails on them).
    """

    def __init__(self, in_ch: int, num_classes: int, *, act: str = "relu") -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_ch, 128, 1, act=act)
        self.conv1 = BasicConv2d(128, 768, 5, act=act)
        self.fc: nn.Module = nn.Linear(768, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh `num_classes`-way last layer; 0 makes the head return its 768 pooled features."""
        old = self.conv1.conv.weight
        self.fc = (
            nn.Linear(768, num_classes).to(device=old.device, dtype=old.dtype)
            if num_classes > 0
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 5, stride=3) if min(x.shape[-2:]) >= 17 else F.adaptive_avg_pool2d(x, 5)
        x = self.conv1(self.conv0(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Inception(ZooModel):
    """A stem, mixed blocks, global average pooling, dropout and a linear layer (`fc`).

    In training mode with `aux_logits` the forward pass returns `InceptionOutputs(logits,
    aux_logits)` as torchvision's Inception3 does; in eval mode, or without the auxiliary head,
    the logits alone. `forward_features` and `forward_head` never involve the auxiliary head;
    `reset_classifier(n)` replaces the last layer of both heads.

    Args:
        spec: the variant, an `InceptionSpec`.
        num_classes: outputs of every classifier; 0 leaves them out (pre-logits).
        in_chans: input channels.
        aux_logits: build the auxiliary classifier (only where the spec has one; on by default
            there, as in torchvision, whose checkpoints hold it).
        transform_input: take input normalised with ImageNet's mean and std and map it to
            [-1, 1] as the TensorFlow-trained weights expect (torchvision's option).
        act: activation by name after every convolution.
        dropout: drop probability before the last linear layer; None takes the spec's.
    """

    def __init__(
        self,
        spec: InceptionSpec,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        transform_input: bool = False,
        act: str = "relu",
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        act = resolve_act(act)
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input re-maps ImageNet's RGB normalisation; in_chans is {in_chans}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.transform_input = transform_input
        self.min_input_size = spec.min_input_size
        self.aux_after = spec.aux_after if aux_logits else None
        self.aux_logits = self.aux_after is not None

        # Stages end before each stride-2 layer and at the last block.
        self.feature_info = []
        self._order: list[str] = []
        self.AuxLogits: InceptionAux3 | None = None
        ch, reduction, last = in_chans, 1, ""
        for name, layer in spec.layers:
            module: nn.Module
            if isinstance(layer, Conv):
                module = BasicConv2d(ch, layer.out, layer.kernel, layer.stride, layer.padding, act=act)
                stride, ch = layer.stride, layer.out
            elif isinstance(layer, Pool):
                module, stride = layer.module(), layer.stride
            else:
                module = MixedBlock(ch, layer, act=act)
                stride, ch = module.stride, module.out_channels
            if stride > 1 and last:
                self.feature_info.append(
                    {"module": last, "num_chs": self._channels(last), "reduction": reduction}
                )
            reduction *= stride
            self.add_module(name, module)
            self._order.append(name)
            if not isinstance(layer, Pool):
                last = name
            if name == self.aux_after:
                self.AuxLogits = InceptionAux3(ch, num_classes, act=act)
        self.feature_info.append({"module": last, "num_chs": ch, "reduction": reduction})
        # torchvision's checkpoints hold the auxiliary head (for the weights module).
        self.optional_prefixes = ("AuxLogits.",) if spec.aux_after else ()
        self.optional_option = "aux_logits=False"
        self.extra_head_names = ("AuxLogits.fc",) if self.aux_logits else ()

        self.num_features = ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self.fc: nn.Module = nn.Linear(ch, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(spec.init)

    def _channels(self, name: str) -> int:
        return self.get_submodule(name).out_channels  # type: ignore[return-value]

    def _init_weights(self, scheme: str) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif not isinstance(m, nn.Conv2d | nn.Linear):
                continue
            elif scheme == "torchvision":
                # torchvision's Inception3: truncated normals, std 0.1, except 0.01 for the
                # auxiliary head's 5x5 conv and 0.001 for its linear layer; biases keep PyTorch's default.
                std = {"AuxLogits.conv1.conv": 0.01, "AuxLogits.fc": 0.001}.get(name, 0.1)
                nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2, b=2)
            elif isinstance(m, nn.Conv2d):
                # He et al. 2015's normal on the fan-out (timm's Inception v4 keeps PyTorch's default).
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _forward_trunk(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.transform_input:
            x = tf_input_transform(x)
        aux = None
        for name in self._order:
            x = self._modules[name](x)  # type: ignore[misc]
            if with_aux and name == self.aux_after and self.AuxLogits is not None:
                aux = self.AuxLogits(x)
        return x, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_trunk(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionOutputs:  # type: ignore[override]
        self.check_input(x)
        with_aux = self.training and self.aux_logits
        x, aux = self._forward_trunk(x, with_aux)
        logits = self.forward_head(x)
        return InceptionOutputs(logits, aux) if with_aux else logits

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last linear layer of the main and the auxiliary head (0: pre-logits)."""
        super().reset_classifier(num_classes)
        if self.AuxLogits is not None:
            self.AuxLogits.reset_classifier(num_classes)


# -- Inception v3's blocks (Szegedy et al. 2015), with torchvision's branch names and widths -------
def _v3_a(pool_proj: int) -> tuple[Branch, ...]:
    # Fig. 5 as torchvision and the released model build it: one branch keeps a 5x5 (48 -> 64)
    # beside the two stacked 3x3s the figure draws; avg-pooling counts the zero padding.
    return (
        Branch("branch1x1", (Conv(64, 1),)),
        Branch("branch5x5", (Conv(48, 1), Conv(64, 5, padding=2))),
        Branch("branch3x3dbl", (Conv(64, 1), Conv(96, 3, padding=1), Conv(96, 3, padding=1))),
        Branch("branch_pool", (Pool("avg", 3, 1, 1), Conv(pool_proj, 1))),
    )


def _1xn(out: int, n: int) -> Conv:
    return Conv(out, (1, n), padding=(0, n // 2))


def _nx1(out: int, n: int) -> Conv:
    return Conv(out, (n, 1), padding=(n // 2, 0))


def _v3_c(n: int) -> tuple[Branch, ...]:
    # Fig. 6 with n x n = 7x7 as 1x7 then 7x1; n is the width of the factorised layers.
    return (
        Branch("branch1x1", (Conv(192, 1),)),
        Branch("branch7x7", (Conv(n, 1), _1xn(n, 7), _nx1(192, 7))),
        Branch("branch7x7dbl", (Conv(n, 1), _nx1(n, 7), _1xn(n, 7), _nx1(n, 7), _1xn(192, 7))),
        Branch("branch_pool", (Pool("avg", 3, 1, 1), Conv(192, 1))),
    )


def _v3_e() -> tuple[Branch, ...]:
    # Fig. 7: the 3x3s of the last grid fork into a 1x3 and a 3x1 ("expanded filter bank").
    fork = (_1xn(384, 3), _nx1(384, 3))
    return (
        Branch("branch1x1", (Conv(320, 1),)),
        Branch("branch3x3", (Conv(384, 1),), fork=fork),
        Branch("branch3x3dbl", (Conv(448, 1), Conv(384, 3, padding=1)), fork=fork),
        Branch("branch_pool", (Pool("avg", 3, 1, 1), Conv(192, 1))),
    )


V3_REDUCTION_A = (  # Mixed_6a, Fig. 10: stride-2 convolutions beside a stride-2 max-pool
    Branch("branch3x3", (Conv(384, 3, stride=2),)),
    Branch("branch3x3dbl", (Conv(64, 1), Conv(96, 3, padding=1), Conv(96, 3, stride=2))),
    Branch("branch_pool", (Pool("max", 3, 2),)),
)
V3_REDUCTION_B = (  # Mixed_7a
    Branch("branch3x3", (Conv(192, 1), Conv(320, 3, stride=2))),
    Branch(
        "branch7x7x3",
        (Conv(192, 1), _1xn(192, 7), _nx1(192, 7), Conv(192, 3, stride=2)),
    ),
    Branch("branch_pool", (Pool("max", 3, 2),)),
)


# -- Inception v4's blocks (Szegedy et al. 2016), in TensorFlow-slim's kernel order -------------
def _pool_branch(name: str, width: int) -> Branch:
    # slim's avg-pooling ("SAME" padding) divides by the valid pixels only.
    return Branch(name, (Pool("avg", 3, 1, 1, count_include_pad=False), Conv(width, 1)))


V4_INCEPTION_A = (  # Fig. 4
    Branch("branch0", (Conv(96, 1),)),
    Branch("branch1", (Conv(64, 1), Conv(96, 3, padding=1))),
    Branch("branch2", (Conv(64, 1), Conv(96, 3, padding=1), Conv(96, 3, padding=1))),
    _pool_branch("branch3", 96),
)
V4_REDUCTION_A = (  # Fig. 7 with Table 1's k, l, m, n = 192, 224, 256, 384 for Inception-v4
    Branch("branch0", (Conv(384, 3, stride=2),)),
    Branch("branch1", (Conv(192, 1), Conv(224, 3, padding=1), Conv(256, 3, stride=2))),
    Branch("branch2", (Pool("max", 3, 2),)),
)
V4_INCEPTION_B = (  # Fig. 5 (slim's second branch starts with 1x7 where the figure draws 7x1)
    Branch("branch0", (Conv(384, 1),)),
    Branch("branch1", (Conv(192, 1), _1xn(224, 7), _nx1(256, 7))),
    Branch("branch2", (Conv(192, 1), _nx1(192, 7), _1xn(224, 7), _nx1(224, 7), _1xn(256, 7))),
    _pool_branch("branch3", 128),
)
V4_REDUCTION_B = (  # Fig. 8
    Branch("branch0", (Conv(192, 1), Conv(192, 3, stride=2))),
    Branch(
        "branch1",
        (Conv(256, 1), _1xn(256, 7), _nx1(320, 7), Conv(320, 3, stride=2)),
    ),
    Branch("branch2", (Pool("max", 3, 2),)),
)
_V4_FORK = (_1xn(256, 3), _nx1(256, 3))
V4_INCEPTION_C = (  # Fig. 6 (slim's 448-wide layer is 3x1 then 1x3 where the figure draws 1x3, 3x1)
    Branch("branch0", (Conv(256, 1),)),
    Branch("branch1", (Conv(384, 1),), fork=_V4_FORK),
    Branch("branch2", (Conv(384, 1), _nx1(448, 3), _1xn(512, 3)), fork=_V4_FORK),
    _pool_branch("branch3", 256),
)
V4_STEM = (  # Fig. 3: from 147x147x64 on, every downsampling step runs a conv beside a max-pool
    ("Conv2d_1a_3x3", Conv(32, 3, stride=2)),
    ("Conv2d_2a_3x3", Conv(32, 3)),
    ("Conv2d_2b_3x3", Conv(64, 3, padding=1)),
    ("Mixed_3a", (Branch("branch0", (Pool("max", 3, 2),)), Branch("branch1", (Conv(96, 3, stride=2),)))),
    (
        "Mixed_4a",
        (
            Branch("branch0", (Conv(64, 1), Conv(96, 3))),
            Branch(
                "branch1",
                (Conv(64, 1), _1xn(64, 7), _nx1(64, 7), Conv(96, 3)),
            ),
        ),
    ),
    ("Mixed_5a", (Branch("branch0", (Conv(192, 3, stride=2),)), Branch("branch1", (Pool("max", 3, 2),)))),
)

# Minimum sizes, walking back from one output pixel of the last grid reduction: a 3x3/2 layer
# without padding needs 2n + 1 inputs for n outputs, a 3x3 without padding n + 2. Inception v3:
# Mixed_7a needs 3, Mixed_6a 7, maxpool2 15, Conv2d_4a 17, maxpool1 35, Conv2d_2a 37,
# Conv2d_1a 75 (torchvision's min_size). Inception v4: Mixed_7a 3, Mixed_6a 7, Mixed_5a 15,
# Mixed_4a 17, Mixed_3a 35, Conv2d_2a 37, Conv2d_1a 75.
INCEPTION_SPECS: dict[str, InceptionSpec] = {
    "inception_v3": InceptionSpec(
        layers=(
            ("Conv2d_1a_3x3", Conv(32, 3, stride=2)),
            ("Conv2d_2a_3x3", Conv(32, 3)),
            ("Conv2d_2b_3x3", Conv(64, 3, padding=1)),
            ("maxpool1", Pool("max", 3, 2)),
            ("Conv2d_3b_1x1", Conv(80, 1)),
            ("Conv2d_4a_3x3", Conv(192, 3)),
            ("maxpool2", Pool("max", 3, 2)),
            ("Mixed_5b", _v3_a(32)),
            ("Mixed_5c", _v3_a(64)),
            ("Mixed_5d", _v3_a(64)),
            ("Mixed_6a", V3_REDUCTION_A),
            ("Mixed_6b", _v3_c(128)),
            ("Mixed_6c", _v3_c(160)),
            ("Mixed_6d", _v3_c(160)),
            ("Mixed_6e", _v3_c(192)),
            ("Mixed_7a", V3_REDUCTION_B),
            ("Mixed_7b", _v3_e()),
            ("Mixed_7c", _v3_e()),
        ),
        aux_after="Mixed_6e",
        dropout=0.5,
        init="torchvision",
        min_input_size=75,
    ),
    "inception_v4": InceptionSpec(
        layers=(
            *V4_STEM,
            *((f"Mixed_5{c}", V4_INCEPTION_A) for c in "bcde"),
            ("Mixed_6a", V4_REDUCTION_A),
            *((f"Mixed_6{c}", V4_INCEPTION_B) for c in "bcdefgh"),
            ("Mixed_7a", V4_REDUCTION_B),
            *((f"Mixed_7{c}", V4_INCEPTION_C) for c in "bcd"),
        ),
        aux_after=None,
        # The paper's Fig. 9: "Dropout (keep 0.8)".
        dropout=0.2,
        init="he",
        min_input_size=75,
    ),
}

_V3 = "Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision, arXiv:1512.00567"
_V4 = "Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning, arXiv:1602.07261"


@register(
    family="inception",
    paper=_V3,
    year=2015,
    input_size=(3, 299, 299),
    min_input_size=INCEPTION_SPECS["inception_v3"].min_input_size,
    torchvision=True,
)
def inception_v3(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Inception:
    """Inception v3 (Szegedy et al. 2015, arXiv:1512.00567) as in torchvision: 299 px, 23.8M parameters + 3.3M in the auxiliary head."""
    return Inception(INCEPTION_SPECS["inception_v3"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="inception",
    paper=_V4,
    year=2016,
    input_size=(3, 299, 299),
    min_input_size=INCEPTION_SPECS["inception_v4"].min_input_size,
)
def inception_v4(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> Inception:
    """Inception v4 (Szegedy et al. 2016, arXiv:1602.07261): the pure Inception net of Fig. 9, 299 px, 42.7M parameters."""
    return Inception(INCEPTION_SPECS["inception_v4"], num_classes=num_classes, in_chans=in_chans, **kwargs)
