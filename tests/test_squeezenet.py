"""SqueezeNet 1.0 and 1.1 against the paper's Table 1 and torchvision, and the Fire module.

Oracles: Table 1 of Iandola et al. 2016 (arXiv:1602.07360), its "# parameter before pruning"
column; torchvision's weights metadata ("num_params", "_ops" in GMACs at 224 px) and its models
(state dicts, multiply-adds through torch's FlopCounterMode). Outputs with torchvision's
weights: tests/test_torchvision_parity.py.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import Fire

# torchvision's SqueezeNet1_0_Weights / SqueezeNet1_1_Weights.IMAGENET1K_V1.meta.
TORCHVISION = {"squeezenet1_0": (1_248_424, 0.819), "squeezenet1_1": (1_235_496, 0.349)}

# Table 1: conv1, fire2 .. fire9, conv10, and the total 1,248,424.
TABLE1 = [14_208, 11_920, 12_432, 45_344, 49_440, 104_880, 111_024, 188_992, 197_184, 513_000]


def meta_macs(model: nn.Module, size: int) -> int:
    x = torch.empty(1, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_parameters_and_macs_match_torchvision(name: str) -> None:
    params, gmacs = TORCHVISION[name]
    with torch.device("meta"):
        ours, ref = cnnzoo.create_model(name), getattr(torchvision.models, name)()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert sum(p.numel() for p in ours.parameters()) == params
    macs = meta_macs(ours, 224)
    assert macs == meta_macs(ref, 224)
    assert round(macs / 1e9, 3) == gmacs


def test_squeezenet1_0_parameters_per_layer_are_table_1s() -> None:
    with torch.device("meta"):
        model = cnnzoo.create_model("squeezenet1_0")
    layers = [model.features[0], *(m for m in model.features if isinstance(m, Fire)), model.classifier[1]]
    assert [sum(p.numel() for p in m.parameters()) for m in layers] == TABLE1
    assert sum(TABLE1) == 1_248_424


def test_squeezenet1_0_shapes_are_table_1s() -> None:
    # Table 1's output sizes: conv1 111, pools 55, 27, 13; fire9 13x13x512. They are those of the
    # reference Caffe model's 227 px crops (at 224 px a 7x7/2 unpadded conv gives 109, then 54).
    with torch.device("meta"):
        model = cnnzoo.create_model("squeezenet1_0").eval()
    shapes = []
    for m in model.features:
        m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        model(torch.empty(1, 3, 227, 227, device="meta"))
    convs_and_fires = [
        s for s, m in zip(shapes, model.features, strict=True) if isinstance(m, nn.Conv2d | Fire)
    ]
    assert convs_and_fires == [
        (96, 111, 111),
        (128, 55, 55),
        (128, 55, 55),
        (256, 55, 55),
        (256, 27, 27),
        (384, 27, 27),
        (384, 27, 27),
        (512, 27, 27),
        (512, 13, 13),
    ]


def test_fire_module() -> None:
    torch.manual_seed(0)
    fire = Fire(8, 2, 3, 5).eval()
    assert fire.out_channels == 8
    # in*s + s*e1 + 9*s*e3 weights plus s + e1 + e3 biases.
    assert sum(p.numel() for p in fire.parameters()) == 8 * 2 + 2 * 3 + 9 * 2 * 5 + 2 + 3 + 5
    x = torch.randn(1, 8, 6, 6)
    s = torch.relu(fire.squeeze(x))
    want = torch.cat([torch.relu(fire.expand1x1(s)), torch.relu(fire.expand3x3(s))], 1)  # 1x1 maps first
    with torch.no_grad():
        torch.testing.assert_close(fire(x), want)
    with pytest.raises(ValueError, match="squeezes"):
        Fire(8, 8, 4, 4)


def test_classifier_is_a_1x1_conv_that_resets() -> None:
    model = cnnzoo.create_model("squeezenet1_1", num_classes=4).eval()
    assert isinstance(model.get_classifier(), nn.Conv2d) and model.get_classifier().out_channels == 4
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) >= 0).all()  # the reference model's ReLU on the class maps
        model.reset_classifier(7)
        assert isinstance(model.get_classifier(), nn.Conv2d) and model(x).shape == (1, 7)
        model.reset_classifier(0)
        assert model(x).shape == (1, 512)
        model.reset_classifier(2)  # back from no head to a 1x1 conv, not a Linear
        assert isinstance(model.get_classifier(), nn.Conv2d) and model(x).shape == (1, 2)
