"""Xception against its paper and timm's `legacy_xception` (the Keras model ported to PyTorch).

Oracles: the paper's Table 3 parameter count (Chollet 2016, arXiv:1610.02357), timm's model
(state-dict names and shapes, outputs through a checkpoint file, multiply-adds) and torch's
FlopCounterMode; the separable convolution against the arithmetic of its two factors.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import SeparableConv2d

XCEPTION_PARAMS = 22_855_952  # Table 3 of the paper, "Xception: 22,855,952"


def meta_macs(model: nn.Module, size: int) -> int:
    x = torch.empty(1, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def test_parameters_names_and_macs_match_the_paper_and_timm() -> None:
    with torch.device("meta"):
        ours, ref = cnnzoo.create_model("xception"), timm.create_model("legacy_xception")
    assert sum(p.numel() for p in ours.parameters()) == XCEPTION_PARAMS
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert meta_macs(ours, 299) == meta_macs(ref, 299)


def test_timm_checkpoint_gives_same_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = timm.create_model("legacy_xception").eval()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "legacy_xception.pth"
    torch.save(ref.state_dict(), path)
    ours = cnnzoo.create_model("xception", pretrained=path).eval()
    x = torch.randn(2, 3, 71, 71)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    # Middle-flow blocks add their input back: an in-place ReLU at a block's start would change it.
    assert ((want - got).abs().max() / want.abs().max()).item() < 1e-5


def test_grids_are_figure_5s() -> None:
    # Fig. 5 at 299 px: entry flow to 19x19x728, exit flow to 10x10x2048.
    with torch.device("meta"):
        model = cnnzoo.create_model("xception").eval()
    seen = {}
    for name in ("block3", "block11", "block12", "act4"):
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, key=name: seen.__setitem__(key, tuple(o.shape[1:]))
        )
    with torch.no_grad():
        model(torch.empty(1, 3, 299, 299, device="meta"))
    assert seen == {
        "block3": (728, 19, 19),
        "block11": (728, 19, 19),
        "block12": (1024, 10, 10),
        "act4": (2048, 10, 10),
    }


def test_separable_conv_is_depthwise_then_pointwise() -> None:
    torch.manual_seed(0)
    sep = SeparableConv2d(6, 10)
    # k*k*C depthwise weights + C*C' pointwise weights, against 9*C*C' for a full 3x3 conv.
    assert sum(p.numel() for p in sep.parameters()) == 9 * 6 + 6 * 10
    x = torch.randn(1, 6, 7, 7)
    depthwise = torch.cat(
        [nn.functional.conv2d(x[:, c : c + 1], sep.conv1.weight[c : c + 1], padding=1) for c in range(6)], 1
    )
    want = nn.functional.conv2d(depthwise, sep.pointwise.weight)
    torch.testing.assert_close(sep(x), want)
