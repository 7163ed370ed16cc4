"""LeNet-5, AlexNet, ZFNet and VGG against the lecture's tables and torchvision.

Structure-only checks (parameter counts, state-dict keys, module types) build the models on the
meta device: no memory, no initialisation, milliseconds even for VGG-19's 144M parameters.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.models.lenet import lenet5


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_shapes(model: nn.Module, x: torch.Tensor, types: tuple[type[nn.Module], ...]) -> list[tuple]:
    """Per-sample output shape of every module of `types`, in the order they run."""
    shapes: list[tuple] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for m in model.modules()
        if isinstance(m, types)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


# -- parameter counts ---------------------------------------------------------------------------

# Lecture, LeNet-5: conv1 6*(1*5*5)+6 = 156, conv2 16*(6*5*5)+16 = 2,416, fc 400*120+120 = 48,120,
# 120*84+84 = 10,164, 84*10+10 = 850; 61,706 in all.
LENET5_PARAMS = 61_706

# The lecture's "AlexNet Network - Structural Details" table, its "# of Param" column.
ALEXNET_PAPER_LAYER_PARAMS = [34_944, 614_656, 885_120, 1_327_488, 884_992, 37_752_832, 16_781_312, 4_097_000]
ALEXNET_PAPER_PARAMS = 62_378_344  # the table's total

# torchvision's weights metadata ("num_params"); the test below also builds torchvision's models.
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}


def test_lenet5_parameter_count() -> None:
    assert num_params(lenet5()) == LENET5_PARAMS


def test_alexnet_paper_parameter_count_per_layer() -> None:
    model = meta_model("alexnet_paper")
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert [num_params(m) for m in layers] == ALEXNET_PAPER_LAYER_PARAMS
    assert num_params(model) == ALEXNET_PAPER_PARAMS


def test_zfnet_parameter_count_by_formula() -> None:
    # The lecture's count for a layer of K filters of F x F over D channels: F*F*D*K + K.
    # ZFNet as the lecture gives it (after Zeiler & Fergus 2013, arXiv:1311.2901):
    # conv1 96@7x7 over 3, conv2 256@5x5, conv3-5 512/1024/512 @3x3,
    # pool5 6x6x512 = 18,432 inputs to fc6, then 4096, 4096, 1000.
    layers = [(7, 3, 96), (5, 96, 256), (3, 256, 512), (3, 512, 1024), (3, 1024, 512)]
    layers += [(1, 6 * 6 * 512, 4096), (1, 4096, 4096), (1, 4096, 1000)]
    expected = sum(f * f * d * k + k for f, d, k in layers)
    assert expected == 107_627_624
    assert num_params(meta_model("zfnet")) == expected


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_same_state_dict_as_torchvision(name: str) -> None:
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
    ours = meta_model(name)
    assert num_params(ours) == num_params(reference) == TORCHVISION_PARAMS[name]
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want


# -- layer-by-layer shapes ---------------------------------------------------------------------


def test_lenet5_shapes_match_lecture() -> None:
    model = lenet5().eval()
    flat: list[tuple] = []
    model.fc1.register_forward_pre_hook(lambda _m, args: flat.append(tuple(args[0].shape[1:])))
    shapes = output_shapes(model, torch.randn(2, 1, 28, 28), (nn.Conv2d, nn.AvgPool2d, nn.Linear))
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120,), (84,), (10,)]
    assert flat == [(400,)]


def test_alexnet_paper_shapes_match_lecture() -> None:
    # Lecture table: 55x55x96, 27x27x96, 27x27x256, 13x13x256, 13x13x384 (x2 layers), 13x13x256, 6x6x256.
    model = cnnzoo.create_model("alexnet_paper", num_classes=10).eval()
    shapes = output_shapes(model, torch.randn(1, 3, 227, 227), (nn.Conv2d, nn.MaxPool2d))
    assert shapes == [
        (96, 55, 55),
        (96, 27, 27),
        (256, 27, 27),
        (256, 13, 13),
        (384, 13, 13),
        (384, 13, 13),
        (256, 13, 13),
        (256, 6, 6),
    ]


def test_zfnet_shapes_match_paper() -> None:
    # Zeiler & Fergus 2013, Figure 3, for a 224 input: 110, 55, 26, 13, 13, 13, 13, 6.
    model = cnnzoo.create_model("zfnet", num_classes=10).eval()
    shapes = output_shapes(model, torch.randn(1, 3, 224, 224), (nn.Conv2d, nn.MaxPool2d))
    assert [s[1] for s in shapes] == [110, 55, 26, 13, 13, 13, 13, 6]
    assert [s[0] for s in shapes] == [96, 96, 256, 256, 512, 1024, 512, 512]


# -- the head ----------------------------------------------------------------------------------


def test_mlp_head_resets_only_the_last_linear() -> None:
    model = cnnzoo.create_model("alexnet_paper", num_classes=10).eval()
    fc7 = model.classifier[3]
    x = torch.randn(1, 3, 67, 67)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pre.shape == (1, 4096)
        model.reset_classifier(0)
        assert isinstance(model.classifier[6], nn.Identity)
        assert model.classifier[3] is fc7
        assert torch.equal(model(x), pre)
    assert isinstance(meta_model("vgg16", num_classes=0).classifier[6], nn.Identity)


# -- LeNet-5's options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pool"),
    [
        ({}, nn.AvgPool2d),  # sigmoid, as in the lecture
        ({"act": "tanh"}, nn.AvgPool2d),  # LeCun's scaled tanh family
        ({"act": "relu"}, nn.MaxPool2d),  # the "modern" LeNet
        ({"act": "relu", "pool": "avg"}, nn.AvgPool2d),
        ({"pool": "max"}, nn.MaxPool2d),
    ],
)
def test_lenet5_pooling_follows_activation(kwargs: dict, pool: type[nn.Module]) -> None:
    model = lenet5(**kwargs)
    assert isinstance(model.pool1, pool) and isinstance(model.pool2, pool)
    assert num_params(model) == LENET5_PARAMS


def test_lenet5_options() -> None:
    assert lenet5().in_chans == 1
    big = lenet5(img_size=32)
    assert big.fc1.in_features == 16 * 6 * 6
    assert big(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    assert lenet5(img_size=12)(torch.randn(1, 1, 12, 12)).shape == (1, 10)
    with pytest.raises(ValueError, match="img_size >= 12"):
        lenet5(img_size=11)
    with pytest.raises(ValueError, match="pool must be"):
        lenet5(pool="sum")


@pytest.mark.parametrize("name", ["lenet5", "alexnet_paper", "zfnet", "vgg11_bn"])
def test_act_reaches_every_layer(name: str) -> None:
    model = meta_model(name, act="mish")
    assert any(isinstance(m, nn.Mish) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU | nn.Sigmoid) for m in model.modules())


# -- input checks ------------------------------------------------------------------------------


def test_lenet5_refuses_other_inputs() -> None:
    model = cnnzoo.create_model("lenet5", in_chans=1)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, H, W\) with H = W = 28"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 28, 28\)"):
        model(torch.randn(1, 1, 27, 27))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, 28, 28\)"):
        model(torch.randn(1, 1, 32, 32))


# name -> smallest H = W that passes every layer (derived in alexnet.py and vgg.py).
MIN_SIZES = {"alexnet": 63, "alexnet_paper": 67, "zfnet": 47, "vgg11": 32}


@pytest.mark.parametrize("name", list(MIN_SIZES))
def test_min_input_size_is_exact(name: str) -> None:
    m = MIN_SIZES[name]
    model = cnnzoo.create_model(name, num_classes=3).eval()
    assert model.min_input_size == cnnzoo.model_info(name).min_input_size == m
    with torch.no_grad():
        assert model(torch.randn(1, 3, m, m)).shape == (1, 3)
        # One pixel less really breaks a layer, so the declared minimum is not just safe but exact.
        with pytest.raises(RuntimeError):
            model.forward_features(torch.randn(1, 3, m - 1, m - 1))
    with pytest.raises(ValueError, match=rf"expects input of shape \(N, 3, H, W\) with H, W >= {m}"):
        model(torch.randn(1, 3, m - 1, m - 1))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\)"):
        model(torch.randn(1, 1, m, m))


# -- AlexNet's two-GPU layout (Krizhevsky et al. 2012, Fig. 2) ---------------------------------


def test_alexnet_2gpu_parameter_count_by_formula() -> None:
    # The lecture's F*F*D*K + K per layer, where a grouped layer's filters see D / 2 channels:
    # conv2, conv4 and conv5 read only their own GPU's half of the maps below.
    layers = [(11, 3, 96), (5, 96 // 2, 256), (3, 256, 384), (3, 384 // 2, 384), (3, 384 // 2, 256)]
    layers += [(1, 6 * 6 * 256, 4096), (1, 4096, 4096), (1, 4096, 1000)]
    per_layer = [f * f * d * k + k for f, d, k in layers]
    model = meta_model("alexnet_2gpu")
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert [num_params(m) for m in weighted] == per_layer
    assert num_params(model) == sum(per_layer) == 60_965_224  # the paper's "60 million parameters"
    # The lecture's table minus what the split removes: half of conv2's, conv4's and conv5's weights.
    halves = (614_656 - 256) // 2 + (1_327_488 - 384) // 2 + (884_992 - 256) // 2
    assert ALEXNET_PAPER_PARAMS - halves == 60_965_224


def test_alexnet_2gpu_grouped_conv_is_two_gpus() -> None:
    # Each GPU's 128 conv2 filters read only the 48 maps of its own conv1 half.
    torch.manual_seed(0)
    model = cnnzoo.create_model("alexnet_2gpu").eval()
    conv2 = model.features[4]
    x = torch.randn(1, 96, 27, 27)
    with torch.no_grad():
        gpu = [
            nn.functional.conv2d(x[:, 48 * g : 48 * (g + 1)], conv2.weight[128 * g : 128 * (g + 1)],
                                 conv2.bias[128 * g : 128 * (g + 1)], padding=2)
            for g in range(2)
        ]  # fmt: skip
        torch.testing.assert_close(conv2(x), torch.cat(gpu, 1))
        shapes = output_shapes(model, torch.randn(1, 3, 227, 227), (nn.Conv2d,))
    assert shapes == [(96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13)]


def test_lenet5_initialisations() -> None:
    """Glorot & Bengio's scale for the saturating nets (x 4 for the sigmoid), the paper's
    +-2.4 / fan-in on request, PyTorch's layer default for the ReLU net."""
    import math

    def bound(model: nn.Module) -> float:  # the largest |weight| of fc1 (400 -> 120)
        return float(model.fc1.weight.abs().max())

    torch.manual_seed(0)
    glorot_fc1 = math.sqrt(6 / (400 + 120))
    sig, tanh = lenet5(), lenet5(act="tanh")
    assert sig.init == tanh.init == "glorot"
    assert 0.95 * 4 * glorot_fc1 < bound(sig) <= 4 * glorot_fc1
    assert 0.95 * glorot_fc1 < bound(tanh) <= glorot_fc1
    assert float(sig.conv1.bias.abs().max()) == 0.0
    relu = lenet5(act="relu")
    assert relu.init == "torch" and 0.95 / math.sqrt(400) < bound(relu) <= 1 / math.sqrt(400)
    lecun = lenet5(init="lecun")
    assert 0.95 * 2.4 / 400 < bound(lecun) <= 2.4 / 400
    assert 0.95 * 2.4 / 25 < float(lecun.conv1.weight.abs().max()) <= 2.4 / 25
    with pytest.raises(ValueError, match="init must be one of"):
        lenet5(init="he")
