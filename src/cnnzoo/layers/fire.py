"""SqueezeNet's Fire module (Iandola et al. 2016, arXiv:1602.07360, Sec. 3.2).

A 1x1 "squeeze" convolution cuts the channels to s1x1, then two "expand" convolutions read the
squeezed map side by side, e1x1 filters of 1x1 and e3x3 filters of 3x3, and their outputs are
concatenated (e1x1 + e3x3 channels). The paper's strategies 1 and 2 in one block: most filters
are 1x1 (9x fewer parameters than 3x3), and the 3x3 filters see only s1x1 input channels
(s1x1 < e1x1 + e3x3). Parameters: in*s + s*e1 + 9*s*e3 weights, plus s + e1 + e3 biases.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.layers.activations import get_act

__all__ = ["Fire"]


class Fire(nn.Module):
    """squeeze 1x1 -> act -> [expand 1x1 -> act | expand 3x3 (pad 1) -> act], concatenated.

    Module names follow torchvision's SqueezeNet (`squeeze`, `expand1x1`, `expand3x3` and their
    `*_activation`), so its checkpoints load unchanged.

    Args:
        in_ch: input channels.
        squeeze: s1x1, filters of the squeeze layer.
        expand1x1, expand3x3: e1x1 and e3x3, filters of the two expand layers.
        act: activation by name after each of the three convolutions (ReLU in the paper).
    """

    def __init__(
        self, in_ch: int, squeeze: int, expand1x1: int, expand3x3: int, *, act: str = "relu"
    ) -> None:
        super().__init__()
        if squeeze >= expand1x1 + expand3x3:
            # The paper's condition for the squeeze layer to limit the 3x3 filters' inputs.
            raise ValueError(
                f"a Fire module squeezes: s1x1 ({squeeze}) must be below e1x1 + e3x3 ({expand1x1 + expand3x3})"
            )
        self.squeeze = nn.Conv2d(in_ch, squeeze, 1)
        self.squeeze_activation = get_act(act, squeeze)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = get_act(act, expand1x1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = get_act(act, expand3x3)
        self.in_channels, self.out_channels = in_ch, expand1x1 + expand3x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )
