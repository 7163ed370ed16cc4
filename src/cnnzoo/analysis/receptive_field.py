"""Receptive fields across branches and skips (Araujo, Norris, Sim 2019, Distill, "Computing
Receptive Fields of Convolutional Neural Networks").

Every activation carries, per spatial axis, three numbers in input pixels:

    rf     the receptive field of one output unit (r)
    jump   the distance between two neighbouring units, the effective stride (j)
    start  the centre of the first unit's field (s; pixel centres at 0, 1, 2, ...)

A layer with kernel k, stride s, padding p and dilation d maps (r, j, s0) to

    r' = r + (d(k - 1)) j        j' = j s        s0' = s0 + (d(k - 1) / 2 - p) j

Where paths meet (a residual add, an inception concat, a gate's multiply) the field is the
maximum over the paths, as in Araujo et al.'s treatment of multi-path networks. A tensor with no
spatial extent left (after flatten, a linear layer or global pooling) has field None.

A global operation makes the field the whole input, whatever its size: once an output unit
depends on every input pixel, no kernel arithmetic bounds it any more. That happens where a
summary with no spatial extent is combined with the map again (a squeeze-and-excitation gate, a
global pool broadcast back), where every position is mixed with every other (attention, a dense
layer or matrix product across positions, a softmax over them) and where statistics are taken
over the positions of one sample (GroupNorm, InstanceNorm, a LayerNorm over space). `Field.whole`
marks it, and the tables print `WHOLE_INPUT` instead of a number.

`Field.dims` records which tensor axis holds each spatial axis, so that a field survives the
reshapes of token-based and im2col code: `x.flatten(2).transpose(1, 2)` puts both image axes into
one token axis (two entries with the same axis), `F.unfold` into the last one. None means the
trailing axes, as in (N, C, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = ["WHOLE_INPUT", "Field", "adaptive_window", "join", "spatial_layer"]

# What the tables show for a field that covers the whole input (see the module docstring).
WHOLE_INPUT = "whole input"


@dataclass(frozen=True)
class Field:
    """Receptive field, effective stride and first centre, one entry per spatial axis."""

    rf: tuple[float, ...]
    jump: tuple[float, ...]
    start: tuple[float, ...]
    whole: bool = False  # every unit sees the whole input (after a global operation)
    dims: tuple[int, ...] | None = None  # the tensor axis of each spatial axis; None: the trailing ones
    # Its axes were lost in a reshape the tracer cannot follow (a Swin window partition): no
    # global operation is inferred from it, the kernel arithmetic goes on as before.
    lost: bool = False

    @classmethod
    def identity(cls, ndim: int) -> Field:
        """The input image: each unit sees one pixel, neighbours are one pixel apart."""
        return cls((1,) * ndim, (1,) * ndim, (0.0,) * ndim)

    @property
    def ndim(self) -> int:
        return len(self.rf)

    def scalar_rf(self) -> int | float | str:
        """The larger axis (square kernels give equal axes), an int when it is whole; `WHOLE_INPUT`
        after a global operation."""
        return WHOLE_INPUT if self.whole else _whole(max(self.rf))

    def axes(self, tensor_ndim: int) -> tuple[int, ...]:
        """The tensor axis of each spatial axis in a tensor of `tensor_ndim` axes."""
        return self.dims if self.dims is not None else tuple(range(tensor_ndim - self.ndim, tensor_ndim))

    def made_whole(self) -> Field:
        return replace(self, whole=True)

    def moved(self, dims: Sequence[int] | None) -> Field:
        return replace(self, dims=None if dims is None else tuple(dims))

    def untracked(self) -> Field:
        return replace(self, lost=True)

    def scalar_jump(self) -> int | float:
        return _whole(max(self.jump))


def _whole(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 4)


def spatial_layer(
    field: Field,
    kernel: Sequence[int],
    stride: Sequence[float],
    padding: Sequence[float],
    dilation: Sequence[int] | None = None,
) -> Field:
    """The field after a conv or pooling layer (Araujo et al., eqs. 1-2 per axis)."""
    n = field.ndim
    dilation = dilation or (1,) * n
    if not (len(kernel) == len(stride) == len(padding) == len(dilation) == n):
        raise ValueError(f"layer has {len(kernel)} spatial axes, the field {n}")
    rf, jump, start = [], [], []
    for r, j, s0, k, s, p, d in zip(
        field.rf, field.jump, field.start, kernel, stride, padding, dilation, strict=True
    ):
        k_eff = d * (k - 1) + 1
        rf.append(r + (k_eff - 1) * j)
        start.append(s0 + ((k_eff - 1) / 2 - p) * j)
        jump.append(j * s)
    return Field(tuple(rf), tuple(jump), tuple(start), field.whole)


def adaptive_window(size_in: int, size_out: int) -> tuple[int, float]:
    """(largest window, mean stride) of an adaptive pool; exact k = s = in / out when it divides.

    Adaptive pooling's window i spans [floor(i in / out), ceil((i + 1) in / out)): windows can
    differ by one pixel, and the largest one bounds the field.
    """
    if size_in % size_out == 0:
        k = size_in // size_out
        return k, float(k)
    k = max(
        math.ceil((i + 1) * size_in / size_out) - math.floor(i * size_in / size_out) for i in range(size_out)
    )
    return k, size_in / size_out


def join(fields: Sequence[Field | None]) -> Field | None:
    """Where paths meet: the largest field and stride; None only if no operand is spatial.

    An operand with no spatial extent left (None) is a summary of the whole input: combined with
    a map (a squeeze-and-excitation gate's multiply, a pooled vector added back) it makes every
    output unit see the whole input.
    """
    spatial = [f for f in fields if f is not None]
    if not spatial:
        return None
    lost = any(f.lost for f in spatial)  # then a non-spatial operand may be a lost map, not a summary
    whole = any(f.whole for f in spatial) or (len(spatial) < len(fields) and not lost)
    n = spatial[0].ndim
    spatial = [f for f in spatial if f.ndim == n]
    rf = tuple(max(f.rf[a] for f in spatial) for a in range(n))
    jump = tuple(max(f.jump[a] for f in spatial) for a in range(n))
    # The centre of the path with the widest field; aligned paths (same padding) agree anyway.
    widest = max(spatial, key=lambda f: max(f.rf))
    return Field(rf, jump, widest.start, whole, widest.dims, lost)
