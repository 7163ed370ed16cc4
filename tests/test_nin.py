"""Network in Network (Lin, Chen, Yan 2013, arXiv:1312.4400) and its mlpconv layer.

Oracles: hand counts of the authors' released definitions (the CIFAR-10 model of the paper's
Sec. 4.2 and their ImageNet model), written as formulas below; torch's FlopCounterMode against the
multiply-add formula; the paper's definition of a 1x1 "cccp" layer as a fully connected layer
applied at every pixel.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import MLPConv

# (kernel, in, out, output side) of every convolution, from the released definitions.
CIFAR = [
    (5, 3, 192, 32), (1, 192, 160, 32), (1, 160, 96, 32),
    (5, 96, 192, 16), (1, 192, 192, 16), (1, 192, 192, 16),
    (3, 192, 192, 8), (1, 192, 192, 8), (1, 192, 10, 8),
]  # fmt: skip
IMAGENET = [
    (11, 3, 96, 54), (1, 96, 96, 54), (1, 96, 96, 54),
    (5, 96, 256, 27), (1, 256, 256, 27), (1, 256, 256, 27),
    (3, 256, 384, 13), (1, 384, 384, 13), (1, 384, 384, 13),
    (3, 384, 1024, 6), (1, 1024, 1024, 6), (1, 1024, 1000, 6),
]  # fmt: skip


def test_parameters_and_macs_are_the_released_models() -> None:
    for name, layers, size in (("nin_cifar", CIFAR, 32), ("nin", IMAGENET, 224)):
        params = sum(k * k * i * o + o for k, i, o, _ in layers)
        macs = sum(k * k * i * o * s * s for k, i, o, s in layers)
        with torch.device("meta"):  # shapes only: no memory, no arithmetic
            model = cnnzoo.create_model(name).eval()
        assert sum(p.numel() for p in model.parameters()) == params
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty(1, 3, size, size, device="meta"))
        assert counter.get_total_flops() // 2 == macs
    assert sum(k * k * i * o + o for k, i, o, _ in CIFAR) == 966_986
    assert sum(k * k * i * o + o for k, i, o, _ in IMAGENET) == 7_595_176


def test_class_maps_are_averaged_globally() -> None:
    model = cnnzoo.create_model("nin_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 192, 8, 8)
        maps = torch.relu(model.classifier(feats))
        assert maps.shape == (2, 10, 8, 8)  # one map per class, no fully connected layer
        torch.testing.assert_close(model(x), maps.mean((2, 3)))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 192)


def test_mlpconv_1x1_layers_are_a_per_pixel_mlp() -> None:
    torch.manual_seed(0)
    block = MLPConv(3, 8, 3, padding=1, mlp=(6, 4)).eval()
    assert block.out_channels == 4
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        h = torch.relu(block[0](x)).permute(0, 2, 3, 1)  # (N, H, W, C): one vector a pixel
        for conv in (block[2], block[4]):
            h = torch.relu(nn.functional.linear(h, conv.weight.flatten(1), conv.bias))
        torch.testing.assert_close(block(x), h.permute(0, 3, 1, 2))
