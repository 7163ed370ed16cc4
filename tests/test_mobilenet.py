"""MobileNet v1 and v2 against the lecture's cost formulas, the papers' tables and torchvision."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import DepthwiseSeparable, DropPath, InvertedResidual, make_divisible


def macs(module: nn.Module, shape: tuple[int, ...] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates from torch's FlopCounterMode (2 FLOPs per MAC): convolutions and
    linear layers only, as the papers count them (BatchNorm, activations and pooling are free).
    Shapes only: the module and input live on the meta device."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.eval()(torch.empty(shape, device="meta"))
    return counter.get_total_flops() // 2


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- the cost formulas (Howard et al. 2017, arXiv:1704.04861, Sec. 3.1) --------------------------


@pytest.mark.parametrize("c", [8, 32, 64, 256, 1024])
def test_depthwise_separable_speedup_is_9c_over_9_plus_c(c: int) -> None:
    h = w = 7
    with torch.device("meta"):
        standard = nn.Conv2d(c, c, 3, padding=1, bias=False)
        separable = DepthwiseSeparable(c, c)
    cost_std, cost_sep = macs(standard, (1, c, h, w)), macs(separable, (1, c, h, w))
    assert cost_std == 9 * c * c * h * w
    assert cost_sep == (9 * c + c * c) * h * w
    assert Fraction(cost_std, cost_sep) == Fraction(9 * c, 9 + c)  # -> 9 as C grows


@pytest.mark.parametrize(("c", "t"), [(16, 6), (24, 6), (32, 4), (64, 3)])
def test_inverted_residual_costs_2thwc2_plus_9thwc(c: int, t: int) -> None:
    h = w = 14
    with torch.device("meta"):
        block = InvertedResidual(c, c, 1, t)
    assert block.use_res_connect
    assert macs(block, (1, c, h, w)) == 2 * t * h * w * c * c + 9 * t * h * w * c


def test_blocks_compute_what_they_claim() -> None:
    torch.manual_seed(0)
    block = InvertedResidual(16, 16, 1, 6).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), x + block.conv(x))
        # The projection is linear: the last module of the branch is a BatchNorm, not an activation.
        assert isinstance(block.conv[-1], nn.BatchNorm2d)
    strided = InvertedResidual(16, 24, 2, 6)
    assert not strided.use_res_connect
    assert strided(torch.randn(1, 16, 9, 9)).shape == (1, 24, 5, 5)
    sep = DepthwiseSeparable(16, 32, stride=2)
    assert sep.conv_dw[0].groups == 16 and sep.conv_dw[0].stride == (2, 2)
    assert sep(torch.randn(1, 16, 9, 9)).shape == (1, 32, 5, 5)


def test_make_divisible_is_torchvisions() -> None:
    from torchvision.models._utils import _make_divisible

    for v in (3.2, 8, 11.2, 12, 16 * 0.35, 24 * 0.35, 32 * 0.75, 1280 * 1.4, 320 * 0.1, 100):
        for d in (1, 3, 4, 8, 16):
            assert make_divisible(v, d) == _make_divisible(v, d), (v, d)


# -- MobileNet v1: Howard et al. 2017 --------------------------------------------------------------

# Table 6 (width multiplier alpha at 224 px): alpha, parameters (M), mult-adds (M).
V1_WIDTH_ROWS = {
    "mobilenet_v1": (1.0, 4.2, 569),
    "mobilenet_v1_075": (0.75, 2.6, 325),
    "mobilenet_v1_050": (0.5, 1.3, 149),
    "mobilenet_v1_025": (0.25, 0.5, 41),
}


@pytest.mark.parametrize("name", list(V1_WIDTH_ROWS))
def test_v1_width_multiplier_matches_table_6(name: str) -> None:
    alpha, params, mult_adds = V1_WIDTH_ROWS[name]
    model = meta_model(name)
    assert round(n_params(model) / 1e6, 1) == params
    assert round(macs(model) / 1e6) == mult_adds  # 568.7, 325.4, 149.5, 41.0
    assert n_params(meta_model("mobilenet_v1", width_mult=alpha)) == n_params(model)


# Table 7 (resolution multiplier rho): the same net fed smaller images, 4.2M parameters throughout.
# 290.7M is printed as 290 (truncated) where 568.7M is printed as 569, hence the tolerance of 1.
@pytest.mark.parametrize(("size", "mult_adds"), [(224, 569), (192, 418), (160, 290), (128, 186)])
def test_v1_resolution_multiplier_matches_table_7(size: int, mult_adds: int) -> None:
    model = meta_model("mobilenet_v1")
    assert abs(macs(model, (1, 3, size, size)) / 1e6 - mult_adds) < 1


def test_v1_cost_breakdown_matches_table_2() -> None:
    # Table 2, "Resource per layer type": shares of mult-adds and of parameters. The parameters are
    # weights only (no BatchNorm, no FC bias). Two entries have transposed digits in the paper:
    # the full conv's 1.19% of mult-adds is 1.91% and the 1x1 convs' 74.95% of parameters is
    # 74.59%; with them each column sums to 100% (as printed, 99.29% and 100.36%).
    model = meta_model("mobilenet_v1")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.empty(1, 3, 224, 224, device="meta"))
    flops = counter.get_flop_counts()
    cost = dict.fromkeys(("pw", "dw", "full", "fc"), 0)
    weights = dict.fromkeys(cost, 0)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            kind = "fc" if isinstance(m, nn.Linear) else "dw" if m.groups > 1 else "pw"
            kind = "full" if name == "features.0.0" else kind
            cost[kind] += sum(flops[f"MobileNetV1.{name}"].values())
            weights[kind] += m.weight.numel()
    share = lambda d, k: round(100 * d[k] / sum(d.values()), 2)  # noqa: E731
    assert [share(cost, k) for k in cost] == [94.86, 3.06, 1.91, 0.18]
    assert [share(weights, k) for k in weights] == [74.59, 1.06, 0.02, 24.33]


def test_v1_layout_follows_table_1() -> None:
    model = cnnzoo.create_model("mobilenet_v1")
    blocks = [m for m in model.features if isinstance(m, DepthwiseSeparable)]
    assert len(blocks) == 13
    assert [b.out_channels for b in blocks] == [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
    assert [b.stride for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert model.features[0][0].out_channels == 32 and model.features[0][0].stride == (2, 2)
    assert isinstance(model.features[1].conv_pw[2], nn.ReLU)
    x = torch.randn(1, 3, 224, 224)
    assert model.eval().forward_features(x).shape == (1, 1024, 7, 7)


# -- MobileNetV2: Sandler et al. 2018 and torchvision ----------------------------------------------


def test_v2_matches_paper_and_torchvision_counts() -> None:
    model = meta_model("mobilenet_v2")
    meta = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta
    assert n_params(model) == meta["num_params"] == 3_504_872
    assert round(macs(model) / 1e9, 3) == meta["_ops"]  # 300.8M; the paper's Table 4: 300M
    # Table 4 gives 3.4M parameters: the weights and the FC bias without BatchNorm's 34k
    # affine parameters are 3.47M (TensorFlow's published count), printed truncated.
    no_bn = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) for p in m.parameters()
    )
    assert no_bn == 3_470_760


@pytest.mark.parametrize("width_mult", [0.35, 0.5, 0.75, 1.4])
def test_v2_width_mult_matches_torchvision(width_mult: float) -> None:
    ours = meta_model("mobilenet_v2", width_mult=width_mult)
    with torch.device("meta"):
        ref = torchvision.models.mobilenet_v2(width_mult=width_mult)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_v2_width_mult_checkpoint_gives_torchvisions_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2(width_mult=0.5).eval()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(ref.state_dict(), tmp_path / "mnv2_050.pth")
    ours = cnnzoo.create_model("mobilenet_v2", width_mult=0.5, pretrained=tmp_path / "mnv2_050.pth").eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_v2_drop_path_decays_linearly_over_the_residual_blocks() -> None:
    model = cnnzoo.create_model("mobilenet_v2", drop_path_rate=0.2)
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    for depth, b in enumerate(blocks, start=1):
        if b.use_res_connect:
            assert isinstance(b.drop_path, DropPath)
            assert b.drop_path.p == pytest.approx(0.2 * depth / 17)
        else:
            assert isinstance(b.drop_path, nn.Identity)
    assert sum(b.use_res_connect for b in blocks) == 10
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # inert in eval


@pytest.mark.parametrize(("name", "default"), [("mobilenet_v1", nn.ReLU), ("mobilenet_v2", nn.ReLU6)])
def test_act_zoo(name: str, default: type[nn.Module]) -> None:
    assert any(type(m) is default for m in cnnzoo.create_model(name).modules())
    model = cnnzoo.create_model(name, act="swish")
    assert not any(isinstance(m, nn.ReLU | nn.ReLU6) for m in model.modules())
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    with pytest.raises(ValueError, match="unknown activation"):
        cnnzoo.create_model(name, act="relu7")
    assert [i["reduction"] for i in model.feature_info][-1] == 32


def test_bad_width_is_refused() -> None:
    with pytest.raises(ValueError, match="width_mult"):
        cnnzoo.create_model("mobilenet_v1", width_mult=0)
    with pytest.raises(ValueError, match="width_mult"):
        cnnzoo.create_model("mobilenet_v2", width_mult=-1.0)
