"""Group-equivariant convolution on p4, the group of translations and 90-degree rotations.

Cohen & Welling 2016 (Group Equivariant Convolutional Networks, arXiv:1602.07576), the
lecture's answer to "convolutions are not equivariant to rotation" (the course's lecture: "what if a CNN
learns rotated copies of the same filter?"): give every filter its four rotated copies, so a
rotation of the input becomes a rotation of the maps plus a cyclic shift of the copies.

A p4 feature map is a tensor (N, C, 4, H, W): C fields, each with one plane per rotation r of
its filter. The group acts on it (`rotate_p4`) by rotating every plane spatially and shifting
the rotation axis by one: (T f)[r] = rot(f[r - 1]).

    P4LiftConv2d  Z2 -> p4   out[r] = x * rot^r(W)                       (lifting layer)
    P4Conv2d      p4 -> p4   out[r] = sum_s x[s] * rot^r(W[(s - r) mod 4])
    rotation_pool p4 -> Z2   max (or mean) over the rotation axis: invariant to the shift,
                             so the result rotates with the input like an ordinary map

Both convolutions are one `F.conv2d` with the rotated copies stacked as output channels, so a
p4 layer costs four ordinary convolutions and learns a quarter of their parameters. Exact
equivariance needs the sampling grid to rotate onto itself: stride 1 and 'same' padding with an
odd kernel (zero padding is rotation-symmetric); downsample with an even-sized 2x2 pooling.
BatchNorm must share its statistics over the four planes of a field (`nn.BatchNorm3d(C)` on
(N, C, 4, H, W) does), and a bias is one number per field, for the same reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["P4Conv2d", "P4LiftConv2d", "RotationPool", "rotate_p4", "rotation_pool"]

P4_ORDER = 4  # |rotations| of the square lattice


def rotate_p4(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The p4 action on a feature map (N, C, 4, H, W): rotate each plane by k * 90 degrees
    counter-clockwise and shift the rotation axis by k (plane r moves to r + k)."""
    if x.dim() != 5 or x.shape[2] != P4_ORDER:
        raise ValueError(f"a p4 feature map has shape (N, C, 4, H, W), got {tuple(x.shape)}")
    return torch.rot90(x, k, dims=(-2, -1)).roll(k, dims=2)


def _check_kernel(kernel_size: int, padding: int | None) -> int:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"p4 convolutions need an odd kernel_size ('same' padding), got {kernel_size}")
    pad = kernel_size // 2 if padding is None else padding
    if pad != kernel_size // 2:
        # Any other padding shifts the output grid by a fraction that a rotation does not map
        # onto itself, and equivariance is lost at every layer.
        raise ValueError(
            f"p4 convolutions need 'same' padding ({kernel_size // 2} for kernel_size={kernel_size}), got {pad}"
        )
    return pad


class P4LiftConv2d(nn.Module):
    """Lifting convolution Z2 -> p4: (N, C_in, H, W) -> (N, C_out, 4, H, W).

    Args:
        in_channels, out_channels: input channels and output fields (each field has 4 planes).
        kernel_size: odd; padding is 'same' (kernel_size // 2) and the stride 1, both required
            for exact equivariance.
        bias: one learned bias per output field, shared by its four planes.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, *, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.padding = _check_kernel(kernel_size, None)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # He et al. 2015's normal on the fan-in (C_in * k * k), as for an ordinary ReLU conv.
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def expanded_weight(self) -> torch.Tensor:
        """The (C_out * 4, C_in, k, k) filter bank: field o's copy rotated by r at row 4 * o + r."""
        w = torch.stack([torch.rot90(self.weight, r, dims=(-2, -1)) for r in range(P4_ORDER)], dim=1)
        return w.reshape(self.out_channels * P4_ORDER, self.in_channels, self.kernel_size, self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"P4LiftConv2d expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        bias = None if self.bias is None else self.bias.repeat_interleave(P4_ORDER)
        y = F.conv2d(x, self.expanded_weight(), bias, padding=self.padding)
        return y.view(x.shape[0], self.out_channels, P4_ORDER, *y.shape[-2:])

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"


class P4Conv2d(nn.Module):
    """Group convolution p4 -> p4: (N, C_in, 4, H, W) -> (N, C_out, 4, H, W).

    The filter of a field has a plane per input rotation, (C_in, 4, k, k); its copy for output
    rotation r is rotated spatially by r and cyclically shifted by r along the input rotations
    (Cohen & Welling 2016, eq. 10 with the p4 filter transformation of section 7).

    Args: as `P4LiftConv2d`, with `in_channels` counting input fields.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, *, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.padding = _check_kernel(kernel_size, None)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, P4_ORDER, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # kaiming_normal_ reads the fan-in C_in * 4 * k * k off the weight's shape.
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def expanded_weight(self) -> torch.Tensor:
        """The (C_out * 4, C_in * 4, k, k) filter bank of the four transformed copies."""
        copies = [
            torch.rot90(self.weight, r, dims=(-2, -1)).roll(r, dims=2)  # plane s reads W[s - r]
            for r in range(P4_ORDER)
        ]
        w = torch.stack(copies, dim=1)
        k = self.kernel_size
        return w.reshape(self.out_channels * P4_ORDER, self.in_channels * P4_ORDER, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[2] != P4_ORDER:
            raise ValueError(f"P4Conv2d expects (N, {self.in_channels}, 4, H, W), got {tuple(x.shape)}")
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        bias = None if self.bias is None else self.bias.repeat_interleave(P4_ORDER)
        y = F.conv2d(
            x.reshape(n, self.in_channels * P4_ORDER, h, w),
            self.expanded_weight(),
            bias,
            padding=self.padding,
        )
        return y.view(n, self.out_channels, P4_ORDER, *y.shape[-2:])

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"


def rotation_pool(x: torch.Tensor, mode: str = "max") -> torch.Tensor:
    """(N, C, 4, H, W) -> (N, C, H, W): max or mean over the rotation axis (Cohen & Welling's
    "coset pooling" over the rotations), invariant to their cyclic shift."""
    if x.dim() != 5 or x.shape[2] != P4_ORDER:
        raise ValueError(f"rotation_pool expects a p4 map (N, C, 4, H, W), got {tuple(x.shape)}")
    if mode == "max":
        return x.amax(dim=2)
    if mode == "mean":
        return x.mean(dim=2)
    raise ValueError(f"rotation_pool mode must be 'max' or 'mean', got {mode!r}")


class RotationPool(nn.Module):
    """`rotation_pool` as a module."""

    def __init__(self, mode: str = "max") -> None:
        super().__init__()
        rotation_pool(torch.zeros(1, 1, P4_ORDER, 1, 1), mode)  # an unknown mode fails here, not mid-forward
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rotation_pool(x, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
