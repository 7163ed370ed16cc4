"""The lecture's activation zoo, selectable by name on every from-scratch family.

`act="relu"` is the default everywhere it was in the paper; the others let a student swap the
non-linearity of any net and watch what changes (see the activations experiment).

Four take one parameter after a colon: `leaky_relu:0.1` (the negative slope), `elu:0.5` (alpha),
`prelu:0.1` (the slopes' initial value) and `maxout:3` (pieces). A bare name keeps the default:
leaky ReLU's slope is 0.01, as in Maas et al. 2013 and on the lecture's leaky-ReLU slide
(f(x) = max(0.01x, x)); the lecture's overview chart draws max(0.1x, x), which is `leaky_relu:0.1`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Param:
    """The one parameter an activation takes after a colon, e.g. `leaky_relu:0.1`."""

    meaning: str
    default: float
    example: str
    valid: Callable[[float], bool]
    rule: str  # what `valid` asks, for the error message
    build: Callable[[int | None, float], nn.Module]
    integer: bool = False


def _maxout_pieces(channels: int | None, pieces: float) -> nn.Module:
    if channels is None:
        raise ValueError("act='maxout' needs the channel count where it is used")
    return Maxout(channels, int(pieces))


_PARAMS: dict[str, _Param] = {
    # A slope of 1 or more is no longer "leaky": the negative side would be as steep as the positive.
    "leaky_relu": _Param(
        "negative slope",
        0.01,
        "leaky_relu:0.1",
        lambda v: 0 <= v < 1,
        "a number in [0, 1)",
        lambda c, v: nn.LeakyReLU(v, inplace=True),
    ),
    "elu": _Param(
        "alpha", 1.0, "elu:0.5", lambda v: v > 0, "a number > 0", lambda c, v: nn.ELU(v, inplace=True)
    ),
    "prelu": _Param(
        "initial slope",
        0.25,
        "prelu:0.1",
        lambda v: 0 <= v < 1,
        "a number in [0, 1)",
        lambda c, v: nn.PReLU(num_parameters=c or 1, init=v),
    ),
    "maxout": _Param("pieces", 2, "maxout:3", lambda v: v >= 2, "an integer >= 2", _maxout_pieces, True),
}


def _forms() -> str:
    return (
        ", ".join(ACTIVATIONS)
        + "; with a parameter: "
        + ", ".join(f"{p.example} ({p.meaning})" for p in _PARAMS.values())
    )


def _format_value(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(float(value))


def resolve_act(name: str) -> str:
    """Canonical activation spec: a name ('relu'), or a name and its parameter ('leaky_relu:0.1').

    Names are case-insensitive and aliases resolve ('lrelu:0.1' -> 'leaky_relu:0.1'); a parameter
    equal to the default is dropped ('leaky_relu:0.01' -> 'leaky_relu'), so one activation has
    one spelling. Anything else is a ValueError naming the valid forms.
    """
    if not isinstance(name, str):
        raise TypeError(f"act must be a name such as 'relu', got {type(name).__name__}")
    base, colon, arg = name.strip().partition(":")
    key = _ALIASES.get(base.strip().lower(), base.strip().lower())
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {_forms()}")
    if not colon:
        return key
    param = _PARAMS.get(key)
    if param is None:
        raise ValueError(
            f"activation {key!r} takes no parameter, got {name!r}; only "
            + ", ".join(f"{k} ({p.example})" for k, p in _PARAMS.items())
            + " take one after a colon"
        )
    try:
        value = float(arg)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not param.valid(value) or (param.integer and value != int(value)):
        raise ValueError(
            f"bad {key} {param.meaning} {arg.strip()!r} in {name!r}: it must be {param.rule}, "
            f"e.g. {param.example}"
        )
    if value == param.default:
        return key
    return f"{key}:{_format_value(value, param.integer)}"


def get_act(name: str, channels: int | None = None) -> nn.Module:
    """A fresh activation module by spec ('relu', 'leaky_relu:0.1'); `channels` sizes PReLU and maxout."""
    key, colon, arg = resolve_act(name).partition(":")
    if colon:
        return _PARAMS[key].build(channels, float(arg))
    return ACTIVATIONS[key](channels)
