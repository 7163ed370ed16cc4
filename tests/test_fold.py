"""BatchNorm folding and inference tidying: same function, fewer layers, on every registered model."""

from __future__ import annotations

import fnmatch

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.deploy.fold import (
    example_input,
    fold_batchnorm,
    fold_conv_bn,
    optimize_for_inference,
    strip_training_modules,
)

ALL = cnnzoo.list_models()
_BN = nn.modules.batchnorm._BatchNorm

# Architectures whose BatchNorm layers do not all follow a convolution: pre-activation blocks
# (BN -> ReLU -> conv, He et al. 2016) and DenseNet's composite BN-ReLU-conv layers (Huang et al.
# 2016) normalise a sum or a concatenation first. Those BN layers stay; every other one folds.
PRE_ACTIVATION = ("densenet*", "preact_*", "wrn*")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@torch.no_grad()
def randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> int:
    """Statistics and affine parameters away from the fresh (0, 1, 1, 0), which fold to nothing."""
    n = 0
    for m in model.modules():
        if isinstance(m, _BN):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(m.num_features, generator=gen))
            if m.affine:
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            n += 1
    return n


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("name", ALL)
def test_folding_keeps_the_function_of_every_model(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=5)
    n_bn = randomise_batchnorm(model, gen)
    bn_names = [n for n, m in model.named_modules() if isinstance(m, _BN)]
    model.eval()
    x = example_input(model, batch=2)  # the smallest input the model accepts
    with torch.no_grad():
        ref = model(x)
    folded, report = optimize_for_inference(model, example=x, inplace=True, return_report=True)
    with torch.no_grad():
        out = folded(x)

    assert folded is model and type(folded).__name__ == type(model).__name__  # interface kept
    assert out.shape == ref.shape
    assert rel_error(out, ref) <= 1e-5, f"{name}: {rel_error(out, ref):.2e}"
    remaining = [n for n, m in folded.named_modules() if isinstance(m, _BN)]
    assert sorted(remaining) == sorted(report.kept_batchnorms)
    # Every BN was folded, kept, or went with an auxiliary head that inference never runs.
    gone = [n for n in bn_names if any(n.startswith(r + ".") for r in report.removed)]
    assert sorted([bn for _, bn in report.folded] + report.kept_batchnorms + gone) == sorted(bn_names)
    if any(fnmatch.fnmatchcase(name, p) for p in PRE_ACTIVATION):
        assert report.kept_batchnorms, f"{name}: a pre-activation BN was folded into something"
    else:
        assert not report.kept_batchnorms, f"{name}: BN layers left unfolded: {report.kept_batchnorms[:3]}"
    if n_bn:
        assert report.folded
    assert not any(isinstance(m, nn.Dropout) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())


@pytest.mark.parametrize("bias,groups", [(False, 1), (True, 1), (False, 4)])
def test_fold_conv_bn_agrees_with_torch_fusion(bias: bool, groups: int) -> None:
    # Oracle: torch's own eval-mode fusion (torch.nn.utils.fusion.fuse_conv_bn_eval).
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    gen = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=bias, groups=groups)
    bn = nn.BatchNorm2d(12, eps=1e-3)
    seq = nn.Sequential(conv, bn).eval()
    randomise_batchnorm(seq, gen)
    expected = fuse_conv_bn_eval(conv, bn)
    fold_conv_bn(conv, bn)
    torch.testing.assert_close(conv.weight, expected.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(conv.bias, expected.bias, rtol=1e-6, atol=1e-7)


class RawConvReadTwice(nn.Module):
    """conv -> BN, plus a skip that adds the raw conv output: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.bn(y) + y
        return self.bn2(self.conv2(z))


class AddBeforeBN(nn.Module):
    """conv, an in-place add, then BN: the BN does not read what the conv computed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y += 1.0
        return self.bn(y)


class SharedConv(nn.Module):
    """One conv called twice, each output into a different BN: one conv cannot absorb both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(3)
        self.bn_b = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_b(self.conv(self.bn_a(self.conv(x))))


@pytest.mark.parametrize(
    "module,expected_folds",
    [(RawConvReadTwice, [("conv2", "bn2")]), (AddBeforeBN, []), (SharedConv, [])],
)
def test_only_batchnorms_that_read_nothing_but_a_conv_output_are_folded(module, expected_folds) -> None:
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = module().eval()
    randomise_batchnorm(model, gen)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    folded, _ = fold_batchnorm(model, x)
    assert folded == expected_folds
    with torch.no_grad():
        assert rel_error(model(x), ref) <= 1e-6


def test_training_only_modules_and_auxiliary_heads_are_removed() -> None:
    torch.manual_seed(0)
    model = cnnzoo.create_model("googlenet", num_classes=5).eval()
    x = example_input(model, batch=2)
    with torch.no_grad():
        ref = model(x)
    removed = strip_training_modules(model, x)
    assert {"aux1", "aux2", "dropout"} <= set(removed)
    assert model.aux1 is None and model.aux2 is None and model.aux_logits is False
    assert not any(n.startswith("aux") for n in model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), ref)

    # Drop-path (stochastic depth) is the identity at inference.
    from cnnzoo.layers.drop_path import DropPath

    net = cnnzoo.create_model("resnet20", drop_path_rate=0.2).eval()
    assert any(isinstance(m, DropPath) for m in net.modules())
    strip_training_modules(net)
    assert not any(isinstance(m, DropPath) for m in net.modules())


def test_optimized_model_keeps_the_interface_and_input_check() -> None:
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet18", num_classes=3)
    randomise_batchnorm(model, torch.Generator().manual_seed(3))
    model.eval()
    fast, report = optimize_for_inference(model, return_report=True)
    assert fast is not model and any(isinstance(m, _BN) for m in model.modules())  # a copy
    assert report.channels_last and "folded 20 BatchNorm" in report.summary()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert rel_error(fast.forward_head(fast.forward_features(x)), model(x)) <= 1e-5
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\)"):
        fast(torch.randn(1, 1, 64, 64))


def test_optimize_for_inference_returns_a_model_like_torch_jit_does() -> None:
    # torch.jit.optimize_for_inference and timm return the module; the report is opt-in.
    torch.manual_seed(0)
    model = cnnzoo.create_model("mobilenet_v2", num_classes=4)
    randomise_batchnorm(model, torch.Generator().manual_seed(4))
    model.eval()
    fast = optimize_for_inference(model)
    assert isinstance(fast, nn.Module) and type(fast) is type(model) and fast is not model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_error(fast(x), model(x)) <= 1e-5
    assert not any(isinstance(m, _BN) for m in fast.modules())
    same, report = optimize_for_inference(fast, inplace=True, return_report=True)
    assert same is fast and not report.folded  # already folded: nothing left to do
