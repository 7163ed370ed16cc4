"""GoogLeNet / Inception v1 (Szegedy et al. 2014, Going Deeper with Convolutions, arXiv:1409.4842).

The paper's Table 1, which the lecture copies (Szegedy et al. 2014, arXiv:1409.4842), for a 224x224 input:

    conv 7x7/2                -> 112x112x64
    max-pool 3x3/2, LRN       -> 56x56x64
    conv 1x1 64, conv 3x3 192 -> 56x56x192   (the table's "3x3 reduce" and "3x3"), then LRN
    max-pool 3x3/2            -> 28x28x192
    inception 3a, 3b          -> 28x28x480
    max-pool 3x3/2            -> 14x14x480
    inception 4a .. 4e        -> 14x14x832   (auxiliary classifiers read 4a and 4d)
    max-pool 3x3/2            -> 7x7x832
    inception 5a, 5b          -> 7x7x1024
    avg-pool 7x7, dropout 40%, linear 1000

Two variants share that skeleton and the module widths (`INCEPTION_TABLE`) and differ only in
data (`GOOGLENET_SPECS`):

- `googlenet`: torchvision's, with its module names, so torchvision checkpoints load as they
  are: BatchNorm after every convolution and no LRN, the "5x5" branch built with 3x3 kernels
  (pytorch/vision#906), a 2x2/2 last max-pool, dropout 0.2, and the auxiliary heads on.
- `googlenet_paper` (alias `inception_v1`): Table 1 itself: true 5x5 kernels, convolutions with
  bias and no BatchNorm (published months later), LRN in the stem, dropout 0.4, and the auxiliary
  heads off unless asked for (`aux_logits=True`).

Max-pools round their output size up (`ceil_mode`), as Caffe did: 112 -> 56 -> 28 -> 14 -> 7.
The global pooling is adaptive: 7x7 average pooling at 224 px, and smaller images still pass.
Per-module parameters and multiply-adds against the lecture's table: tests/test_googlenet.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.layers import BasicConv2d, InceptionModule, LocalResponseNorm, get_act, resolve_act
from cnnzoo.layers.inception import tf_input_transform
from cnnzoo.models.base import ZooModel
from cnnzoo.registry import register

__all__ = [
    "GOOGLENET_SPECS",
    "INCEPTION_TABLE",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "GoogLeNetSpec",
    "InceptionAux",
    "InceptionSpec",
]


@dataclass(frozen=True)
class InceptionSpec:
    """One Inception row of Table 1: the widths of its four branches."""

    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    ch5x5_reduce: int
    ch5x5: int
    pool_proj: int

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


@dataclass(frozen=True)
class GoogLeNetSpec:
    bn: bool  # BatchNorm after every convolution (torchvision) or convolutions with bias (paper)
    branch3_kernel: int  # kernel of the "5x5" branch: 3 in torchvision's layout, 5 in the paper
    lrn: bool  # LRN after the first max-pool and after conv 3x3 (the paper's stem)
    pool4_kernel: int  # the max-pool before 5a: torchvision 2x2/2, the paper 3x3/2
    dropout: float  # before the last linear layer
    aux_logits: bool  # auxiliary heads by default
    init: str  # "torchvision" or "caffe" (the reference bvlc_googlenet's fillers)
    min_input_size: int  # smallest H = W that passes every layer (derivation below)


class GoogLeNetOutputs(NamedTuple):
    """What a GoogLeNet with auxiliary heads returns in training mode (torchvision's order)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor | None
    aux_logits1: torch.Tensor | None


class InceptionAux(nn.Module):
    """An auxiliary classifier (Szegedy et al. §5): avg-pool -> 1x1 conv 128 -> fc 1024 -> dropout -> fc.

    The paper pools 5x5/3, which turns 4a's and 4d's 14x14 maps into 4x4; adaptive pooling to
    4x4 is the same at 224 px and lets smaller images through (torchvision does the same). The
    paper adds the two auxiliary losses to the main one with weight 0.3 during training and
    discards the heads at inference.
    """

    def __init__(
        self, in_ch: int, num_classes: int, *, bn: bool, act: str = "relu", dropout: float = 0.7
    ) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_ch, 128, 1, bn=bn, act=act)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = get_act(act, 1024)
        self.dropout = nn.Dropout(dropout)
        self.fc2: nn.Module = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh `num_classes`-way last layer; 0 makes the head return its 1024 hidden units."""
        old = self.fc1.weight
        self.fc2 = (
            nn.Linear(1024, num_classes).to(device=old.device, dtype=old.dtype)
            if num_classes > 0
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, 4))
        x = self.dropout(self.act(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


class GoogLeNet(ZooModel):
    """Stem, nine Inception modules, global average pooling, dropout and one linear layer.

    In training mode with `aux_logits` the forward pass returns `GoogLeNetOutputs(logits,
    aux_logits2, aux_logits1)`, as torchvision's does, so that the caller can weight the
    auxiliary losses (0.3 in the paper); in eval mode, or without auxiliary heads, it returns the
    logits alone. `forward_features` and `forward_head` never involve the auxiliary heads.

    `reset_classifier(n)` replaces the last linear layer of all three heads, so the auxiliary
    heads keep training the trunk towards the new classes; `n = 0` makes each head return its
    pre-logits (1024 features for the main head, the 1024 hidden units for the auxiliary ones).

    Args:
        spec: the variant, a `GoogLeNetSpec`.
        num_classes: outputs of every classifier; 0 leaves them out (pre-logits).
        in_chans: input channels.
        aux_logits: build the two auxiliary classifiers; None takes the spec's default. On for
            torchvision's layout, whose checkpoints hold them. Off for the paper's: they serve
            only in training, and Table 1, the lecture's costs and the paper's inference network
            leave them out, so `googlenet_paper` is that network unless asked.
        transform_input: take input normalised with ImageNet's mean and std (torchvision's
            usual transform) and re-map it to (img - 0.5) / 0.5 of the [0, 1] image, the [-1, 1]
            range that torchvision's ported weights were trained on. RGB only.
        act: activation by name (see `cnnzoo.layers.ACTIVATIONS`); ReLU in the paper.
        dropout: drop probability before the last linear layer; None takes the spec's.
        dropout_aux: drop probability inside the auxiliary heads (the paper's 70%).
    """

    def __init__(
        self,
        spec: GoogLeNetSpec,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool | None = None,
        transform_input: bool = False,
        act: str = "relu",
        dropout: float | None = None,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        act = resolve_act(act)
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input re-maps ImageNet's RGB normalisation; in_chans is {in_chans}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.aux_logits = spec.aux_logits if aux_logits is None else aux_logits
        self.transform_input = transform_input
        self.min_input_size = spec.min_input_size
        bn = spec.bn

        def lrn() -> nn.Module:
            # The paper gives no constants; these are the reference Caffe model's (bvlc_googlenet:
            # local_size 5, alpha 1e-4, beta 0.75, k 1). Caffe divides alpha by n as torch does.
            return LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if spec.lrn else nn.Identity()

        self.conv1 = BasicConv2d(in_chans, 64, 7, stride=2, padding=3, bn=bn, act=act)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = lrn()
        self.conv2 = BasicConv2d(64, 64, 1, bn=bn, act=act)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1, bn=bn, act=act)
        self.lrn2 = lrn()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.feature_info = [
            {"module": "conv1", "num_chs": 64, "reduction": 2},
            {"module": "conv3", "num_chs": 192, "reduction": 4},
        ]

        in_ch, reduction = 192, 8
        for name, row in INCEPTION_TABLE.items():
            block = InceptionModule(in_ch, **asdict(row), branch3_kernel=spec.branch3_kernel, bn=bn, act=act)
            self.add_module(f"inception{name}", block)
            in_ch = block.out_channels
            if name in ("3b", "4e"):
                self.feature_info.append(
                    {"module": f"inception{name}", "num_chs": in_ch, "reduction": reduction}
                )
                reduction *= 2
            if name == "3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "4e":
                self.maxpool4 = nn.MaxPool2d(spec.pool4_kernel, stride=2, ceil_mode=True)
        self.feature_info.append({"module": "inception5b", "num_chs": in_ch, "reduction": reduction})

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        # torchvision's checkpoints always hold the auxiliary heads (for the weights module).
        self.optional_prefixes = ("aux1.", "aux2.")
        self.optional_option = "aux_logits=False"
        self.extra_head_names = ("aux1.fc2", "aux2.fc2") if self.aux_logits else ()
        if self.aux_logits:
            aux_in = (INCEPTION_TABLE["4a"].out_channels, INCEPTION_TABLE["4d"].out_channels)
            self.aux1 = InceptionAux(aux_in[0], num_classes, bn=bn, act=act, dropout=dropout_aux)
            self.aux2 = InceptionAux(aux_in[1], num_classes, bn=bn, act=act, dropout=dropout_aux)

        self.num_features = in_ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self.fc: nn.Module = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(spec.init)

    def _init_weights(self, scheme: str) -> None:
        for name, m in self.named_modules():
            if not isinstance(m, nn.Conv2d | nn.Linear):
                if isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                continue
            if scheme == "torchvision":
                # torchvision's (when built without weights): N(0, 0.01), the bounds at +-2 are
                # 200 standard deviations away; biases keep PyTorch's default.
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            else:
                # The paper's "gaussian" has no published std; the reference Caffe model uses
                # "xavier" (uniform, variance 1 / fan_in, which is kaiming_uniform with a = 1)
                # and biases of 0.2 that keep ReLUs alive in a net without BatchNorm; its
                # classifiers start with bias 0.
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    classifier = name == "fc" or name.endswith(".fc2")
                    nn.init.constant_(m.bias, 0.0 if classifier else 0.2)

    def _forward_trunk(
        self, x: torch.Tensor, with_aux: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.transform_input:
            x = tf_input_transform(x)
        x = self.lrn1(self.maxpool1(self.conv1(x)))
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(x))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if with_aux and self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux and self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return x, aux1, aux2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_trunk(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:  # type: ignore[override]
        self.check_input(x)
        with_aux = self.training and self.aux_logits
        x, aux1, aux2 = self._forward_trunk(x, with_aux)
        logits = self.forward_head(x)
        return GoogLeNetOutputs(logits, aux2, aux1) if with_aux else logits

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last linear layer of the main and the auxiliary heads (0: pre-logits)."""
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.reset_classifier(num_classes)


# Table 1 of Szegedy et al. 2014 (which the lecture copies): #1x1, #3x3 reduce, #3x3, #5x5 reduce,
# #5x5, pool proj. Max-pools 3x3/2 follow 3b and 4e.
INCEPTION_TABLE: dict[str, InceptionSpec] = {
    "3a": InceptionSpec(64, 96, 128, 16, 32, 32),
    "3b": InceptionSpec(128, 128, 192, 32, 96, 64),
    "4a": InceptionSpec(192, 96, 208, 16, 48, 64),
    "4b": InceptionSpec(160, 112, 224, 24, 64, 64),
    "4c": InceptionSpec(128, 128, 256, 24, 64, 64),
    "4d": InceptionSpec(112, 144, 288, 32, 64, 64),
    "4e": InceptionSpec(256, 160, 320, 32, 128, 128),
    "5a": InceptionSpec(256, 160, 320, 32, 128, 128),
    "5b": InceptionSpec(384, 192, 384, 48, 128, 128),
}

# Minimum sizes. 'Same' convolutions keep n and conv1 (7x7/2, pad 3) maps n to ceil(n / 2). A
# ceil-mode 3x3/2 max-pool without padding maps n to floor(n / 2) and needs n >= 2 (torch lets
# the one window hang over the edge); a ceil-mode 2x2/2 maps n >= 1 to ceil(n / 2). Walking back
# from the last max-pool: the paper's 3x3/2 needs 2 px, so maxpool3 needs 4, maxpool2 8,
# maxpool1 16, and conv1 31. torchvision's 2x2/2 last pool takes 1 px, so maxpool3 needs 2,
# maxpool2 4, maxpool1 8, conv1 15 (its weights' "min_size"). The auxiliary heads pool
# adaptively and add no constraint.
GOOGLENET_SPECS: dict[str, GoogLeNetSpec] = {
    "googlenet": GoogLeNetSpec(
        bn=True,
        branch3_kernel=3,
        lrn=False,
        pool4_kernel=2,
        dropout=0.2,
        aux_logits=True,
        init="torchvision",
        min_input_size=15,
    ),
    "googlenet_paper": GoogLeNetSpec(
        bn=False,
        branch3_kernel=5,
        lrn=True,
        pool4_kernel=3,
        dropout=0.4,
        aux_logits=False,
        init="caffe",
        min_input_size=31,
    ),
}

_SZEGEDY = "Szegedy et al. 2014, Going Deeper with Convolutions, arXiv:1409.4842"


@register(
    family="googlenet",
    paper=_SZEGEDY,
    year=2014,
    min_input_size=GOOGLENET_SPECS["googlenet"].min_input_size,
    torchvision=True,
)
def googlenet(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet (Szegedy et al. 2014, arXiv:1409.4842) as in torchvision: BatchNorm, 6.6M parameters + 6.4M in the auxiliary heads."""
    return GoogLeNet(GOOGLENET_SPECS["googlenet"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="googlenet",
    paper=_SZEGEDY,
    year=2014,
    min_input_size=GOOGLENET_SPECS["googlenet_paper"].min_input_size,
)
def googlenet_paper(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet as in Table 1 of Szegedy et al. 2014 (arXiv:1409.4842): true 5x5s, LRN, no BatchNorm, 7.0M parameters."""
    return GoogLeNet(GOOGLENET_SPECS["googlenet_paper"], num_classes=num_classes, in_chans=in_chans, **kwargs)


@register(
    family="googlenet",
    paper=_SZEGEDY,
    year=2014,
    min_input_size=GOOGLENET_SPECS["googlenet_paper"].min_input_size,
)
def inception_v1(*, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> GoogLeNet:
    """Inception v1 (Szegedy et al. 2014, arXiv:1409.4842): another name for `googlenet_paper`."""
    return googlenet_paper(num_classes=num_classes, in_chans=in_chans, **kwargs)
