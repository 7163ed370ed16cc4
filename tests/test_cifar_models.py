"""The CIFAR residual nets against their papers: parameter tables, depths, stage shapes, option-A
shortcuts and stochastic depth.

Parameter counts and depths build the models on the meta device (no memory, no init cost), so
even ResNet-1202 and ResNet-1001 take about a second to build; behaviour tests run the small
members at small inputs.
"""

from __future__ import annotations

import functools
import re

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.layers import DropPath, PadShortcut

CIFAR = cnnzoo.list_models(family="cifar_resnet")
PLAIN = cnnzoo.list_models(family="cifar_plain")
FAMILIES = ("cifar_resnet", "cifar_plain", "cifar_preact_resnet", "wide_resnet_cifar", "resnext_cifar")
ALL = [n for f in FAMILIES for n in cnnzoo.list_models(family=f)]

# Parameters in millions, written as the papers print them (the digits give the rounding).
PAPER_PARAMS = {
    # He et al. 2015, Deep Residual Learning (arXiv:1512.03385), Table 6.
    "resnet20": "0.27",
    "resnet32": "0.46",
    "resnet44": "0.66",
    "resnet56": "0.85",
    "resnet110": "1.7",
    "resnet1202": "19.4",
    # He et al. 2016, Identity Mappings (arXiv:1603.05027), Table 4 (CIFAR comparison); the
    # pre-activation ResNet-110 has the 1.7M of its original (Table 6 of the 2015 paper).
    "preact_resnet110": "1.7",
    "preact_resnet164": "1.7",
    "preact_resnet1001": "10.2",
    # Zagoruyko & Komodakis 2016, Wide Residual Networks (arXiv:1605.07146), Tables 4 and 5.
    "wrn16_8": "11.0",
    "wrn28_10": "36.5",
    "wrn40_4": "8.9",
    # Xie et al. 2016, Aggregated Residual Transformations (arXiv:1611.05431), Table 7 (CIFAR).
    "resnext29_8x64d": "34.4",
    "resnext29_16x64d": "68.1",
}
# Which parameters a figure counts differs by paper. He et al. 2016 and Xie et al. 2016 count
# conv and FC weights only: with BatchNorm's affine parameters, ResNet-1001 and ResNeXt-29 16x64d
# (built layer by layer as the papers' code, resnet-1k-layers and facebookresearch/ResNeXt, builds
# them) have 10.33M and 68.16M, which would print as 10.3M and 68.2M. He et al. 2015 count BN:
# ResNet-1202 has 19.33M without it. WRN's figures agree either way.
WEIGHTS_ONLY = {
    "preact_resnet110",
    "preact_resnet164",
    "preact_resnet1001",
    "resnext29_8x64d",
    "resnext29_16x64d",
}


@functools.cache
def meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name)


def count_params(model: nn.Module, *, with_bn: bool = True) -> int:
    return sum(
        p.numel()
        for m in model.modules()
        if with_bn or not isinstance(m, nn.BatchNorm2d)
        for p in m.parameters(recurse=False)
    )


def depth_of(name: str) -> int:
    return int(re.search(r"\d+", name).group())  # resnet110 -> 110, wrn28_10 -> 28


# Members no paper's table prints a parameter count for; tested against their twins instead.
NO_PAPER_FIGURE = {"preact_resnet56"}


def test_registry_lists_every_cifar_model() -> None:
    assert len(ALL) == len(PAPER_PARAMS) + len(PLAIN) + len(NO_PAPER_FIGURE) == 20
    for name in ALL:
        info = cnnzoo.model_info(name)
        assert info.input_size == (3, 32, 32)
        assert info.num_classes == 10
        assert info.min_input_size == 1 == meta_model(name).min_input_size


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_parameter_count_matches_paper(name: str) -> None:
    figure = PAPER_PARAMS[name]
    digits = len(figure.split(".")[1])
    n = count_params(meta_model(name), with_bn=name not in WEIGHTS_ONLY)
    assert round(n / 1e6, digits) == float(figure), f"{name}: {n / 1e6:.3f}M, paper {figure}M"


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_twin_has_exactly_the_resnet_parameters(depth: int) -> None:
    # The premise of He et al.'s Fig. 6: the comparison adds shortcuts and nothing else.
    assert count_params(meta_model(f"plain{depth}")) == count_params(meta_model(f"resnet{depth}"))


@pytest.mark.parametrize("depth", [56, 110])
def test_preact_twin_has_exactly_the_convs_and_fc_of_the_original(depth: int) -> None:
    # He et al. 2016 (arXiv:1603.05027) compare the orders at equal depth: the pre-activation net
    # has the original's convolutions and FC (with 1x1 projections, option B) and moves only the
    # BN-ReLU; BatchNorm's own parameters differ (the BN before a conv has its input's width).
    with torch.device("meta"):
        original = cnnzoo.create_model(f"resnet{depth}", shortcut="B")
    pre = meta_model(f"preact_resnet{depth}")
    assert count_params(pre, with_bn=False) == count_params(original, with_bn=False)
    shapes = sorted(tuple(m.weight.shape) for m in original.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    assert (
        sorted(tuple(m.weight.shape) for m in pre.modules() if isinstance(m, nn.Conv2d | nn.Linear)) == shapes
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in pre.modules()) == 2 * 3 * (depth - 2) // 6 + 1


@pytest.mark.parametrize("name", CIFAR)
def test_option_a_shortcuts_are_parameter_free(name: str) -> None:
    model = meta_model(name)
    shortcuts = [m.downsample for m in model.modules() if getattr(m, "downsample", None) is not None]
    assert len(shortcuts) == 2  # 16 -> 32 and 32 -> 64 channels
    assert all(isinstance(s, PadShortcut) for s in shortcuts)
    assert sum(p.numel() for s in shortcuts for p in s.parameters()) == 0


@pytest.mark.parametrize("name", ALL)
def test_depth_counts_the_weighted_layers(name: str) -> None:
    model = meta_model(name)
    layers = {k: m for k, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    if name.startswith("wrn"):
        # WRN-d counts every convolution, the three 1x1 projections included, but not the FC:
        # d = 6n + 4 (the paper's code asserts it).
        assert sum(isinstance(m, nn.Conv2d) for m in layers.values()) == depth_of(name)
    else:
        # The others count the main path's convs and the FC: 6n+2 (basic) or 9n+2 (bottleneck).
        assert sum("downsample" not in k for k in layers) == depth_of(name)


def test_resnet20_stage_shapes() -> None:
    # He et al. 2015 §4.2: feature maps of 32x32, 16x16, 8x8 with 16, 32, 64 filters.
    model = cnnzoo.create_model("resnet20").eval()
    shapes = {}
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        module.register_forward_hook(lambda m, i, o, k=info["module"]: shapes.__setitem__(k, o.shape[1:]))
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 32, 32))
    assert shapes == {
        "act1": (16, 32, 32),
        "layer1": (16, 32, 32),
        "layer2": (32, 16, 16),
        "layer3": (64, 8, 8),
    }
    assert feats.shape == (1, 64, 8, 8)
    assert [(f["num_chs"], f["reduction"]) for f in model.feature_info] == [
        (16, 1),
        (16, 1),
        (32, 2),
        (64, 4),
    ]


@pytest.mark.parametrize(
    ("name", "widths"),
    [
        ("preact_resnet164", (16, 64, 128, 256)),
        ("wrn40_4", (16, 64, 128, 256)),
        ("wrn28_10", (16, 160, 320, 640)),
        ("resnext29_8x64d", (64, 256, 512, 1024)),
    ],
)
def test_feature_info_widths(name: str, widths: tuple[int, ...]) -> None:
    model = meta_model(name)
    assert [f["num_chs"] for f in model.feature_info] == list(widths)
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4]
    assert model.num_features == widths[-1]


@pytest.mark.parametrize("name", ["resnet20", "plain20", "preact_resnet164", "wrn16_8", "resnext29_8x64d"])
def test_feature_info_matches_the_stage_outputs(name: str) -> None:
    # Run at 8 px: stage widths do not depend on the input size, and it keeps ResNeXt cheap.
    model = cnnzoo.create_model(name).eval()
    outs = {}
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        module.register_forward_hook(lambda m, i, o, k=info["module"]: outs.__setitem__(k, o.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 8))
    for info in model.feature_info:
        s = 8 // info["reduction"]
        assert outs[info["module"]] == (1, info["num_chs"], s, s)


@pytest.mark.parametrize("px", [1, 2, 3, 7, 9])
def test_option_a_and_convs_agree_at_odd_sizes(px: int) -> None:
    # The zero-pad shortcut subsamples with [::2] (ceil(n/2) px) where the 3x3/2 conv gives
    # floor((n-1)/2)+1: the same, so any size down to 1 px works.
    model = cnnzoo.create_model("resnet20").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, px, px)).shape == (1, 10)


def test_no_head() -> None:
    model = cnnzoo.create_model("resnet20", num_classes=0).eval()
    assert isinstance(model.fc, nn.Identity)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110", "wrn40_4", "resnext29_8x64d"])
def test_drop_path_rates_decay_linearly(name: str) -> None:
    # Huang et al. 2016 (arXiv:1603.09382): block l of L drops with p_l = (l / L) * p_L.
    with torch.device("meta"):
        model = cnnzoo.create_model(name, drop_path_rate=0.5)
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    num_blocks = sum(len(getattr(model, f"layer{i}")) for i in (1, 2, 3))
    assert rates == pytest.approx([0.5 * (i + 1) / num_blocks for i in range(num_blocks)])


def test_plain_nets_refuse_drop_path() -> None:
    with pytest.raises(ValueError, match="no residual branch"):
        cnnzoo.create_model("plain20", drop_path_rate=0.1)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110", "preact_resnet164", "resnext29_8x64d"])
def test_drop_path_is_inert_in_eval(name: str) -> None:
    torch.manual_seed(0)
    dropped = cnnzoo.create_model(name, drop_path_rate=0.5).eval()
    plain = cnnzoo.create_model(name).eval()
    plain.load_state_dict(dropped.state_dict())  # DropPath holds no state: the keys agree
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(dropped(x), plain(x))


def test_drop_path_drops_whole_samples_in_train() -> None:
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet20", drop_path_rate=0.5).train()
    last = model.layer3[-1].drop_path  # p = 0.5, the rate of the last block
    seen = {}
    # Copies: the block adds the shortcut into the branch's output in place, after the hook.
    last.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].clone(), out=o.clone()))
    x = torch.randn(32, 3, 8, 8)
    model(x)
    inp, out = seen["inp"].flatten(1), seen["out"].flatten(1)
    dropped = (out == 0).all(dim=1)
    assert 0 < dropped.sum() < 32  # some samples lose the branch, some keep it
    # Kept branches are scaled by 1 / (1 - p) so that evaluation needs no rescaling.
    assert torch.allclose(out[~dropped], inp[~dropped] * 2)

    # Two training passes differ only through the drop masks (BN uses batch statistics).
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
        no_drop = cnnzoo.create_model("resnet20").train()
        assert torch.equal(no_drop(x), no_drop(x))


def test_wrn_dropout_sits_between_the_convs() -> None:
    with torch.device("meta"):
        model = cnnzoo.create_model("wrn16_8", dropout=0.3)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 6 and all(d.p == 0.3 for d in drops)  # one per block, 3 x 2 blocks
    assert not any(isinstance(m, nn.Dropout) for m in meta_model("wrn16_8").modules())
    with pytest.raises(ValueError, match="dropout"):
        cnnzoo.create_model("resnet20", dropout=0.3)


def test_option_b_is_a_spec_override() -> None:
    # He et al. §4.2 use option A on CIFAR; option B (1x1 projections) adds parameters.
    with torch.device("meta"):
        model = cnnzoo.create_model("resnet20", shortcut="B")
    extra = count_params(model) - count_params(meta_model("resnet20"))
    assert extra == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 convs and their BNs


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110", "preact_resnet164", "resnext29_8x64d"])
def test_zero_init_residual_starts_blocks_as_identity(name: str) -> None:
    model = cnnzoo.create_model(name, zero_init_residual=True).eval()
    pairs = []
    for i in (1, 2, 3):
        for block in getattr(model, f"layer{i}"):
            if block.downsample is None:  # shape-keeping blocks: output = input exactly
                block.register_forward_hook(lambda m, i, o: pairs.append((i[0], o)))
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    assert pairs and all(torch.equal(x, y) for x, y in pairs)
