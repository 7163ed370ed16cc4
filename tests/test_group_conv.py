"""p4 group convolutions (Cohen & Welling 2016, arXiv:1602.07576) against the paper's formulas.

Oracle: the group correlation written out as a sum over the group elements, one plain
`F.conv2d` per (output rotation, input rotation) pair with the filter rotated by hand - eq. 10
of the paper for p4 - instead of the layer's stacked filter bank.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.layers.group_conv import P4Conv2d, P4LiftConv2d, RotationPool, rotate_p4, rotation_pool


def rot(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    return torch.rot90(x, k, dims=(-2, -1))


def lift_oracle(x: torch.Tensor, layer: P4LiftConv2d) -> torch.Tensor:
    # [f * psi](r) = sum_c f_c * (L_r psi_c): correlate with the filter rotated by r.
    outs = [F.conv2d(x, rot(layer.weight, r), layer.bias, padding=layer.padding) for r in range(4)]
    return torch.stack(outs, dim=2)


def group_oracle(x: torch.Tensor, layer: P4Conv2d) -> torch.Tensor:
    # [f * psi](r) = sum_s f(s) * (L_r psi)(s), and (L_r psi)(s) = rot^r(psi(r^-1 s)) on p4.
    outs = []
    for r in range(4):
        acc = 0
        for s in range(4):
            w = rot(layer.weight[:, :, (s - r) % 4], r)
            acc = acc + F.conv2d(x[:, :, s], w, padding=layer.padding)
        outs.append(acc + layer.bias.view(1, -1, 1, 1))
    return torch.stack(outs, dim=2)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_lifting_matches_the_sum_over_rotations(gen):
    torch.manual_seed(0)
    layer = P4LiftConv2d(3, 5, 5)
    nn.init.normal_(layer.bias)
    x = torch.randn(2, 3, 11, 11, generator=gen)
    y = layer(x)
    assert y.shape == (2, 5, 4, 11, 11)
    torch.testing.assert_close(y, lift_oracle(x, layer), rtol=1e-5, atol=1e-5)
    # The identity rotation is the ordinary convolution with the learned filter.
    torch.testing.assert_close(y[:, :, 0], F.conv2d(x, layer.weight, layer.bias, padding=2))


def test_group_conv_matches_the_sum_over_the_group(gen):
    torch.manual_seed(1)
    layer = P4Conv2d(4, 6, 3)
    nn.init.normal_(layer.bias)
    x = torch.randn(2, 4, 4, 9, 9, generator=gen)
    torch.testing.assert_close(layer(x), group_oracle(x, layer), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_equivariant_to_every_rotation(gen, k):
    torch.manual_seed(2)
    lift, conv = P4LiftConv2d(1, 4, 3), P4Conv2d(4, 3, 5)
    x = torch.randn(3, 1, 12, 12, generator=gen)
    with torch.no_grad():
        y = conv(torch.relu(lift(x)))
        y_rot = conv(torch.relu(lift(rot(x, k))))
    # Rotating the input rotates every plane and shifts the rotation axis by k: float precision.
    torch.testing.assert_close(y_rot, rotate_p4(y, k), rtol=0, atol=1e-5)
    pooled, pooled_rot = rotation_pool(y), rotation_pool(y_rot)
    torch.testing.assert_close(pooled_rot, rot(pooled, k), rtol=0, atol=1e-5)
    # ...and the global average of the pooled map does not change at all.
    torch.testing.assert_close(pooled_rot.mean((-2, -1)), pooled.mean((-2, -1)), rtol=0, atol=1e-6)


def test_an_ordinary_conv_is_not_rotation_equivariant(gen):
    # The contrast the lecture draws: a random 3x3 filter is not its own rotation.
    torch.manual_seed(3)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    x = torch.randn(2, 1, 12, 12, generator=gen)
    with torch.no_grad():
        err = (conv(rot(x)) - rot(conv(x))).norm() / conv(x).norm()
    assert err > 0.1


def test_parameters_are_a_quarter_of_the_equivalent_plain_conv():
    # A p4 layer with C fields makes 4C maps; an ordinary conv with as many maps has 4x the weights.
    p4 = P4Conv2d(8, 16, 3, bias=False)
    plain = nn.Conv2d(8 * 4, 16 * 4, 3, bias=False)
    assert 4 * sum(p.numel() for p in p4.parameters()) == sum(p.numel() for p in plain.parameters())
    assert sum(p.numel() for p in P4LiftConv2d(1, 8, 3).parameters()) == 8 * 9 + 8


def test_gradients_reach_the_shared_filters(gen):
    lift, conv = P4LiftConv2d(1, 2, 3), P4Conv2d(2, 2, 3)
    out = rotation_pool(conv(lift(torch.randn(2, 1, 6, 6, generator=gen))), "mean")
    out.square().mean().backward()
    for p in (*lift.parameters(), *conv.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_bad_settings_and_inputs_are_refused():
    with pytest.raises(ValueError, match="odd kernel_size"):
        P4Conv2d(2, 2, 4)
    with pytest.raises(ValueError, match=r"expects \(N, 3, H, W\)"):
        P4LiftConv2d(3, 2)(torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"expects \(N, 2, 4, H, W\)"):
        P4Conv2d(2, 2)(torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match="'max' or 'mean'"):
        RotationPool("median")
    with pytest.raises(ValueError, match="p4 feature map"):
        rotate_p4(torch.zeros(1, 2, 3, 4, 4))
