"""The measuring parts of the depth experiments (gradflow, lesion, batchnorm) against oracles that
do not use the code under test: finite differences, a residual branch that is exactly zero, a
forward pass written out by hand, and the zoo's own Plain-20. Their end-to-end runs at the tiny
budget are in test_experiments.py (parametrised over every experiment).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo.experiments.activations import time_to_target
from cnnzoo.experiments.batchnorm import PlainStack, signal_rms
from cnnzoo.experiments.gradflow import conv_grad_norms, depth_notes, first_last_ratio, measure
from cnnzoo.experiments.lesion import blocks, deleted, replacement
from cnnzoo.registry import create_model


# -- gradflow ------------------------------------------------------------------------------------
def test_conv_grad_norms_match_finite_differences():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)
    ).double()
    x, y = torch.randn(4, 1, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    norms = conv_grad_norms(net, x, y)

    def loss() -> float:
        return float(nn.functional.cross_entropy(net(x), y))

    want = []
    with torch.no_grad():
        for conv in (net[0], net[2]):
            grad = torch.zeros_like(conv.weight)
            flat, g = conv.weight.view(-1), grad.view(-1)
            for i in range(flat.numel()):  # central differences, weight by weight
                keep = float(flat[i])
                flat[i] = keep + 1e-6
                up = loss()
                flat[i] = keep - 1e-6
                down = loss()
                flat[i] = keep
                g[i] = (up - down) / 2e-6
            want.append(float(grad.norm()))
    assert norms == pytest.approx(want, rel=1e-5)
    assert all(p.grad is None for p in net.parameters())  # cleared afterwards


def test_conv_grad_norms_are_in_depth_order_and_measure_keeps_bn_statistics():
    torch.manual_seed(0)
    model = create_model("plain20", num_classes=10, in_chans=1).eval()
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = measure(model, x, y)
    assert len(norms) == 19  # 6n + 1 convs of a 6n + 2-layer net (n = 3), the FC aside
    assert not model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running statistics put back
    # The first entry is the stem's, the last the last block's second conv (autograd, independently).
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    assert norms[0] == pytest.approx(float(model.conv1.weight.grad.norm()), rel=1e-5)
    assert norms[-1] == pytest.approx(float(model.layer3[-1].conv2.weight.grad.norm()), rel=1e-5)


def test_first_last_ratio():
    # first three: mean 2; last two: mean 0.5.
    assert first_last_ratio([1.0, 2.0, 3.0, 9.0, 0.25, 0.75]) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="at least 5 layers"):
        first_last_ratio([1.0, 2.0])


def test_depth_notes_name_an_exploding_plain_gradient_only():
    growing = {"plain20": 8.0, "plain56": 500.0, "resnet20": 3.0, "resnet56": 6.0}
    shrinking = {"plain20": 8.0, "plain56": 2.0, "resnet20": 3.0, "resnet56": 6.0}
    (note,) = depth_notes(growing, shrinking, (20, 56), steps=10)
    assert note.startswith("At initialisation") and "ratio 8 at 20 layers, 500 at 56" in note
    assert "a factor 2 from 20 to 56 layers, the plain nets' a factor 62.5" in note
    assert depth_notes(shrinking, shrinking, (20, 56), steps=10) == []


# -- lesion --------------------------------------------------------------------------------------
def test_deleting_a_zero_residual_branch_changes_nothing():
    # zero_init_residual starts every branch's last BN at 0: each block computes relu(0 + x) = x
    # for the non-negative x it receives, so deleting any block (even a downsampling one, whose
    # option-A shortcut then stands alone) cannot change the logits.
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1, zero_init_residual=True).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        want = model(x)
        for name, _ in blocks(model):
            with deleted(model, [name]):
                torch.testing.assert_close(model(x), want, rtol=0, atol=1e-6)
        with deleted(model, [n for n, _ in blocks(model)]):
            torch.testing.assert_close(model(x), want, rtol=0, atol=1e-6)


def _by_hand(model: nn.Module, x: torch.Tensor, skip: str, shortcut: bool) -> torch.Tensor:
    x = model.act1(model.bn1(model.conv1(x)))
    for i in (1, 2, 3):
        for j, block in enumerate(getattr(model, f"layer{i}")):
            if f"layer{i}.{j}" == skip:
                x = block.downsample(x) if shortcut and block.downsample is not None else x
            else:
                x = block(x)
    return model.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


@pytest.mark.parametrize("name", ["resnet20", "plain20"])
def test_deleted_blocks_match_a_hand_written_forward_and_are_restored(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        intact = model(x)
        skips = ["layer1.1", "layer3.2"] + (["layer2.0"] if name == "resnet20" else [])
        for skip in skips:
            with deleted(model, [skip]):
                lesioned = model(x)
            torch.testing.assert_close(lesioned, _by_hand(model, x, skip, shortcut=name == "resnet20"))
            assert (lesioned - intact).abs().max() > 1e-4  # a trained-looking net does change
        torch.testing.assert_close(model(x), intact, rtol=0, atol=0)  # every block back in place


def test_plain_downsampling_blocks_cannot_be_deleted():
    model = create_model("plain20", num_classes=10, in_chans=1)
    removable = {n for n, b in blocks(model) if replacement(b) is not None}
    assert {n for n, _ in blocks(model)} - removable == {"layer2.0", "layer3.0"}
    with (
        pytest.raises(ValueError, match=r"layer2\.0 changes the shape"),
        deleted(model, ["layer1.0", "layer2.0"]),
    ):
        pass
    assert not isinstance(model.layer1[0], nn.Identity)  # the block deleted before the refusal is back
    with pytest.raises(ValueError, match=r"no block 'layer4\.0'"), deleted(model, ["layer4.0"]):
        pass
    resnet = create_model("resnet20", num_classes=10)
    assert all(replacement(b) is not None for _, b in blocks(resnet))  # a shortcut is always there


# -- batchnorm -----------------------------------------------------------------------------------
def test_plain_stack_with_bn_is_the_zoos_plain20():
    torch.manual_seed(0)
    zoo = create_model("plain20", num_classes=10, in_chans=3).eval()
    ours = PlainStack(20, bn=True, in_chans=3, num_classes=10).eval()
    theirs, mine = list(zoo.parameters()), list(ours.parameters())
    assert [p.shape for p in mine] == [p.shape for p in theirs]  # layer for layer, in order
    with torch.no_grad():
        for a, b in zip(mine, theirs, strict=True):
            a.copy_(b)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), zoo(x))


def test_plain_stack_without_bn_shares_the_bn_nets_weights():
    bn, plain = PlainStack(14, bn=True, seed=3), PlainStack(14, bn=False, seed=3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    convs_bn = [m for m in bn.modules() if isinstance(m, nn.Conv2d)]
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(convs_bn) == 13 and all(c.bias is not None for c in convs)
    for a, b in zip(convs, convs_bn, strict=True):
        assert torch.equal(a.weight, b.weight) and not a.bias.any()
    assert torch.equal(plain.fc.weight, bn.fc.weight) and torch.equal(plain.fc.bias, bn.fc.bias)
    assert not torch.equal(PlainStack(14, bn=False, seed=4).fc.weight, plain.fc.weight)
    with pytest.raises(ValueError, match="6n\\+2"):
        PlainStack(21, bn=True)


def test_signal_rms_after_batchnorm_is_that_of_a_rectified_unit_variable():
    # BN (train mode) gives every channel mean 0 and variance 1; ReLU keeps the positive half, so
    # for a symmetric distribution E[relu(z)^2] = 1/2 and the RMS is sqrt(1/2).
    torch.manual_seed(0)
    rms = signal_rms(PlainStack(8, bn=True, in_chans=1), torch.randn(64, 1, 16, 16))
    assert len(rms) == 7  # the stem and 6 convs
    assert rms == pytest.approx([0.5**0.5] * 7, abs=0.12)


def test_steps_to_interpolates_from_chance():
    assert time_to_target([10, 20], [0.3, 0.7], 0.5, start=0.1) == pytest.approx(15.0)
    assert time_to_target([10, 20], [0.3, 0.4], 0.5, start=0.1) is None
