"""Squeeze-and-excitation (Hu et al. 2017, arXiv:1709.01507).

Squeeze: global average pool to one number per channel. Excite: a two-layer bottleneck MLP
(reduction r = 16 in the paper) ending in a sigmoid gives each channel a weight in (0, 1).
The MLP is written with 1x1 convolutions so it works on (N, C, 1, 1) without reshapes.

Later nets size the bottleneck from something other than the gated width: MBConv (Tan & Le
2019) squeezes to a quarter of the block's *input* channels, not of the expanded ones it gates,
so `hidden` may be given outright.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.layers.activations import get_act

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        act: str = "relu",
        min_channels: int = 8,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        if hidden is None:
            hidden = max(min_channels, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = get_act(act, hidden)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))
