"""Dense connectivity (Huang et al. 2016, arXiv:1608.06993): every layer reads all earlier maps.

Layer l of a block sees the concatenation [x_0, x_1, ..., x_{l-1}] of the block's input (k_0
channels) and every earlier layer's output (k channels each, the growth rate), so its input has
k_0 + (l - 1) k channels and the block ends with k_0 + L k. Nothing is added, only concatenated:
there is no residual branch. A transition between blocks (BN-act-1x1 conv-2x2 average pool)
halves the resolution and keeps floor(theta * m) of its m channels (theta = 0.5: the "C" of
DenseNet-BC); the 1x1 bottleneck to 4k channels in each layer is the "B".

Attribute names (norm1, relu1, conv1, ..., denselayerN; norm, relu, conv, pool) are torchvision's,
so its checkpoints' keys land on the same tensors; the `relu` names stay when `act` picks another
activation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from cnnzoo.layers.activations import get_act
from cnnzoo.layers.conv_bn_act import conv1x1, conv3x3

__all__ = ["DenseBlock", "DenseLayer", "Transition"]


@contextlib.contextmanager
def _running_stats_kept(bn: nn.BatchNorm2d) -> Iterator[None]:
    """Undo whatever a forward pass inside the block does to `bn`'s running statistics."""
    buffers = [b for b in (bn.running_mean, bn.running_var, bn.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved, strict=True):
                b.copy_(s)


class DenseLayer(nn.Module):
    """BN-act-1x1 conv (bn_size * k) -> BN-act-3x3 conv (k): the k new channels of one layer.

    Takes the list of earlier feature maps rather than their concatenation, so that with
    `memory_efficient=True` the concatenation and the bottleneck (the two tensors that grow with
    depth) are recomputed in the backward pass instead of stored (Pleiss et al. 2017,
    arXiv:1707.06990): memory linear rather than quadratic in depth, for 15-20% more time in
    their measurements.
    """

    def __init__(
        self,
        in_ch: int,
        growth_rate: int,
        bn_size: int = 4,
        *,
        act: str = "relu",
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.relu1 = get_act(act, in_ch)
        self.conv1 = conv1x1(in_ch, mid)
        self.norm2 = nn.BatchNorm2d(mid)
        self.relu2 = get_act(act, mid)
        self.conv2 = conv3x3(mid, growth_rate)
        # After the 3x3, as in torchvision; the paper's code also drops after each transition.
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else None
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def _recompute_contexts(self) -> tuple[contextlib.AbstractContextManager, ...]:
        # The recomputation is a second training-mode pass through norm1: without this its
        # running statistics would take two momentum steps per batch (torchvision's version
        # does), and a memory-efficient net would evaluate differently from a plain one.
        return contextlib.nullcontext(), _running_stats_kept(self.norm1)

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(features, torch.Tensor):
            features = [features]
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            out = checkpoint(
                self.bottleneck, *features, use_reentrant=False, context_fn=self._recompute_contexts
            )
        else:
            out = self.bottleneck(*features)
        out = self.conv2(self.relu2(self.norm2(out)))
        return self.dropout(out) if self.dropout is not None else out


class DenseBlock(nn.ModuleDict):
    """`num_layers` dense layers; outputs the input and all their outputs, concatenated.

    A ModuleDict (keys denselayer1, denselayer2, ...) rather than a Sequential because each
    layer reads every earlier output, not only the last one.
    """

    def __init__(
        self,
        num_layers: int,
        in_ch: int,
        growth_rate: int,
        bn_size: int = 4,
        *,
        act: str = "relu",
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                in_ch + i * growth_rate,
                growth_rate,
                bn_size,
                act=act,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
            )
            self.add_module(f"denselayer{i + 1}", layer)
        self.in_channels = in_ch
        self.out_channels = in_ch + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-act-1x1 conv-2x2/2 average pool: halves the resolution, keeps floor(theta * m) channels."""

    def __init__(self, in_ch: int, compression: float = 0.5, *, act: str = "relu") -> None:
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression (theta) must be in (0, 1], got {compression}")
        out_ch = math.floor(compression * in_ch)
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch)
        self.relu = get_act(act, in_ch)
        self.conv = conv1x1(in_ch, out_ch)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.in_channels, self.out_channels = in_ch, out_ch
