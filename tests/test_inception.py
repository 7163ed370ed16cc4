"""Inception v3 against torchvision and Inception v4 against timm, and the MixedBlock they are built of.

Oracles: torchvision's Inception3 (state-dict names and shapes, parameter count, its weights'
metadata for parameters and GMACs, outputs and auxiliary outputs with shared weights), timm's
`inception_v4` (parameter shapes in order, outputs with the same tensors, multiply-adds), torch's
FlopCounterMode for multiply-adds (FLOPs / 2), and the grid sizes of the papers' figures.
Shape-only checks run on the meta device: no memory, no arithmetic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import Branch, Conv, MixedBlock, Pool
from cnnzoo.models.inception import InceptionOutputs


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_macs(model: nn.Module, size: int) -> int:
    """Multiply-adds of one eval-mode forward pass at size x size, counted on the meta device."""
    x = torch.empty(1, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def tv_inception_v3(**kwargs) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notes on its default init and scipy
        return torchvision.models.inception_v3(init_weights=False, **kwargs)


def randomise_bn(model: nn.Module) -> None:
    """Random BN statistics and affine terms, so a mis-mapped tensor cannot hide behind defaults."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)


# -- Inception v3 (Szegedy et al. 2015, arXiv:1512.00567) vs torchvision ----------------------------

# torchvision's Inception_V3_Weights.IMAGENET1K_V1.meta: "num_params" and "_ops" (GMACs at 299 px).
TV_V3_PARAMS, TV_V3_GMACS = 27_161_264, 5.713


def test_inception_v3_state_dict_and_parameters_match_torchvision() -> None:
    with torch.device("meta"):
        ours, ref = cnnzoo.create_model("inception_v3"), tv_inception_v3()
        ours_no_aux, ref_no_aux = (
            cnnzoo.create_model("inception_v3", aux_logits=False),
            tv_inception_v3(aux_logits=False),
        )
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert num_params(ours) == num_params(ref) == TV_V3_PARAMS
    assert num_params(ours_no_aux) == num_params(ref_no_aux) == 23_834_568
    assert cnnzoo.registry.num_params("inception_v3") == TV_V3_PARAMS


def test_inception_v3_macs_match_torchvision() -> None:
    with torch.device("meta"):
        ours, ref = cnnzoo.create_model("inception_v3"), tv_inception_v3()
    macs = meta_macs(ours, 299)
    assert macs == meta_macs(ref, 299)
    assert round(macs / 1e9, 3) == TV_V3_GMACS


def test_inception_v3_outputs_match_torchvision_in_both_modes() -> None:
    torch.manual_seed(0)
    ref = tv_inception_v3(transform_input=True)
    randomise_bn(ref)
    ours = cnnzoo.create_model("inception_v3", transform_input=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 299, 299)  # the auxiliary head's own 5x5/3 pooling needs 299 px
    with torch.no_grad():
        # Training mode: logits and the auxiliary head's, with the same dropout mask (same seed).
        torch.manual_seed(1)
        want = ref.train()(x)
        torch.manual_seed(1)
        got = ours.train()(x)
        assert isinstance(got, InceptionOutputs)
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.aux_logits, want.aux_logits, rtol=1e-5, atol=1e-5)
        small = x[:, :, :80, :80]  # eval mode: running statistics, no auxiliary head
        torch.testing.assert_close(ours.eval()(small), ref.eval()(small), rtol=1e-5, atol=1e-5)


def test_inception_v3_grids_are_the_papers() -> None:
    # The v3 paper's Sec. 6 and Table 1: 35x35x288, then 17x17x768, then 8x8x2048 for 299 px.
    with torch.device("meta"):
        model = cnnzoo.create_model("inception_v3").eval()
    seen = {}
    for f in model.feature_info:
        model.get_submodule(f["module"]).register_forward_hook(
            lambda m, i, o, key=f["module"]: seen.__setitem__(key, tuple(o.shape[1:]))
        )
    with torch.no_grad():
        model(torch.empty(1, 3, 299, 299, device="meta"))
    assert list(seen.values()) == [(64, 147, 147), (192, 71, 71), (288, 35, 35), (768, 17, 17), (2048, 8, 8)]


def test_inception_v3_auxiliary_head_is_training_only_and_resets() -> None:
    model = cnnzoo.create_model("inception_v3", num_classes=5)
    x = torch.randn(2, 3, 75, 75)  # below the 17x17 grid the paper's head needs: pooled adaptively
    out = model.train()(x)
    assert out.logits.shape == out.aux_logits.shape == (2, 5)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 5)
    model.reset_classifier(3)
    assert model.AuxLogits.fc.out_features == model.fc.out_features == 3
    with torch.device("meta"):
        assert "AuxLogits" not in dict(cnnzoo.create_model("inception_v3", aux_logits=False).named_children())


# -- Inception v4 (Szegedy et al. 2016, arXiv:1602.07261) vs timm ------------------------------------


def test_inception_v4_parameters_and_macs_match_timm() -> None:
    with torch.device("meta"):
        ours, ref = cnnzoo.create_model("inception_v4"), timm.create_model("inception_v4")
    # Same layers in the same order: every parameter's shape, one by one.
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
    assert num_params(ours) == num_params(ref) == 42_679_816  # the paper's "42.7M"
    assert meta_macs(ours, 299) == meta_macs(ref, 299)


def test_timm_inception_v4_checkpoint_gives_same_outputs(tmp_path: Path) -> None:
    # timm names the tensors otherwise (features.N.branchK.i...); the file goes through its key map.
    torch.manual_seed(0)
    ref = timm.create_model("inception_v4").eval()
    randomise_bn(ref)
    path = tmp_path / "inception_v4.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = cnnzoo.create_model("inception_v4", pretrained=path).eval()
    x = torch.randn(2, 3, 107, 107)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert ((want - got).abs().max() / want.abs().max()).item() < 1e-5


def test_inception_v4_grids_are_figure_9s() -> None:
    # Fig. 9: stem 35x35x384, Inception-A 35x35x384, Reduction-A 17x17x1024, Inception-B
    # 17x17x1024, Reduction-B 8x8x1536, Inception-C 8x8x1536.
    with torch.device("meta"):
        model = cnnzoo.create_model("inception_v4").eval()
    names = ["Mixed_5a", "Mixed_5e", "Mixed_6a", "Mixed_6h", "Mixed_7a", "Mixed_7d"]
    seen = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, key=name: seen.__setitem__(key, tuple(o.shape[1:]))
        )
    with torch.no_grad():
        model(torch.empty(1, 3, 299, 299, device="meta"))
    assert [seen[n] for n in names] == [
        (384, 35, 35),
        (384, 35, 35),
        (1024, 17, 17),
        (1024, 17, 17),
        (1536, 8, 8),
        (1536, 8, 8),
    ]


# -- MixedBlock -----------------------------------------------------------------------------------


def test_mixed_block_names_concatenates_and_forks() -> None:
    block = MixedBlock(
        8,
        (
            Branch("b1", (Conv(4, 1),)),
            Branch(
                "b2",
                (Conv(3, 1), Conv(5, 3, padding=1)),
                fork=(Conv(2, (1, 3), padding=(0, 1)), Conv(6, (3, 1), padding=(1, 0))),
            ),
            Branch("pool", (Pool("max", 3, 1, 1),)),
        ),
    ).eval()
    convs = [n for n, m in block.named_children() if not isinstance(m, nn.MaxPool2d)]
    assert convs == ["b1", "b2_1", "b2_2", "b2_3a", "b2_3b"]  # torchvision's naming rule
    assert block.out_channels == 4 + 2 + 6 + 8
    x = torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        y = block(x)
        mid = block.b2_2(block.b2_1(x))
        want = torch.cat(
            [block.b1(x), block.b2_3a(mid), block.b2_3b(mid), nn.functional.max_pool2d(x, 3, 1, 1)], 1
        )
    assert torch.equal(y, want)


def test_mixed_block_refuses_branches_of_different_strides() -> None:
    with pytest.raises(ValueError, match="one stride"):
        MixedBlock(8, (Branch("a", (Conv(4, 3, stride=2),)), Branch("b", (Conv(4, 1),))))
    with pytest.raises(ValueError, match="'max' or 'avg'"):
        MixedBlock(8, (Branch("a", (Pool("min"),)),))
