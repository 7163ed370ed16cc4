"""The lecture's activation zoo, selectable by name on every from-scratch family.

`act="relu"` is the default everywhere it was in the paper; the others let a student swap the
non-linearity of any net and watch what changes (see the activations experiment).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "Maxout", "get_act", "resolve_act"]


class Maxout(nn.Module):
    """Channel-preserving maxout: y_c = max_j (w_cj * x_c + b_cj) over `pieces` affine maps.

    Goodfellow et al. 2013 (arXiv:1302.4389) take the max over k linear units; the original
    form divides the channel count by k, so it cannot be dropped in where the architecture
    fixes the widths. Here every channel owns k scalar affine pieces: the unit is a learned
    convex piecewise-linear function (ReLU, leaky ReLU and |x| are special cases), with the
    same channel count as its input. It starts as ReLU: pieces (1·x + 0) and (0·x + 0).
    """

    def __init__(self, num_channels: int, pieces: int = 2) -> None:
        super().__init__()
        if pieces < 2:
            raise ValueError("maxout needs at least 2 pieces")
        self.num_channels = num_channels
        self.pieces = pieces
        weight = torch.zeros(pieces, num_channels)
        weight[0] = 1.0
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(pieces, num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Broadcast the per-channel pieces over (N, C, *spatial) or (N, C).
        shape = (self.pieces, 1, self.num_channels) + (1,) * (x.dim() - 2)
        return (self.weight.view(shape) * x.unsqueeze(0) + self.bias.view(shape)).amax(dim=0)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, pieces={self.pieces}"


def _prelu(channels: int | None) -> nn.Module:
    # Channel-wise slopes as in He et al. 2015 (arXiv:1502.01852) when the width is known.
    return nn.PReLU(num_parameters=channels or 1, init=0.25)


def _maxout(channels: int | None) -> nn.Module:
    if channels is None:
        raise ValueError("act='maxout' needs the channel count where it is used")
    return Maxout(channels)


# name -> factory(channels). In-place where it is safe, as torchvision does, to save memory.
ACTIVATIONS: dict[str, Callable[[int | None], nn.Module]] = {
    "relu": lambda c: nn.ReLU(inplace=True),
    "leaky_relu": lambda c: nn.LeakyReLU(0.01, inplace=True),
    "prelu": _prelu,
    "elu": lambda c: nn.ELU(inplace=True),
    "sigmoid": lambda c: nn.Sigmoid(),
    "tanh": lambda c: nn.Tanh(),
    "maxout": _maxout,
    "swish": lambda c: nn.SiLU(inplace=True),
    "mish": lambda c: nn.Mish(inplace=True),
    "relu6": lambda c: nn.ReLU6(inplace=True),
    "gelu": lambda c: nn.GELU(),
    "identity": lambda c: nn.Identity(),
}
_ALIASES = {"silu": "swish", "lrelu": "leaky_relu", "none": "identity", "linear": "identity"}


def resolve_act(name: str) -> str:
    """Canonical activation name, or a ValueError listing the choices."""
    if not isinstance(name, str):
        raise TypeError(f"act must be a name such as 'relu', got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return key


def get_act(name: str, channels: int | None = None) -> nn.Module:
    """A fresh activation module by name; `channels` sizes PReLU and maxout."""
    return ACTIVATIONS[resolve_act(name)](channels)
