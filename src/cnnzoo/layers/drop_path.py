"""Stochastic depth (Huang et al. 2016, arXiv:1603.09382): drop whole residual branches.

During training each sample's residual branch is kept with probability 1 - p and scaled by
1 / (1 - p) so that evaluation needs no rescaling. The paper's linear decay rule gives block l
of L the drop probability p_l = (l / L) * p_L: the stem-side blocks, whose features every
later block needs, are almost never dropped.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "drop_path", "drop_path_rates"]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    # Scale the (N, 1, 1, 1) mask, not the activation: one full-size multiply instead of two.
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)
    return x * mask


class DropPath(nn.Module):
    """Drops the whole input per sample with probability `p` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, num_blocks: int) -> list[float]:
    """Huang et al.'s linear decay: block l (1-based) of L gets rate * l / L."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
    return [rate * (i + 1) / num_blocks for i in range(num_blocks)]
