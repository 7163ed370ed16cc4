"""Counters: the dilated ResNet against torchvision, trunks cut at the right layer, output stride 8
for any input size, CSRNet's published size, ImageNet-file loading and checkpoint round trips."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo.counting import (
    COUNTER_SPECS,
    CrowdCounter,
    create_counter,
    cut_trunk,
    list_counters,
    load_counter,
)
from cnnzoo.weights import CheckpointError, fit_state_dict, save_weights


@pytest.fixture(scope="module")
def counters():
    torch.manual_seed(0)
    return {name: create_counter(name).eval() for name in list_counters()}


# -- output stride 8 in the zoo's ResNet ---------------------------------------------------------
def test_dilated_resnet50_matches_torchvision():
    # Oracle: torchvision's resnet50(replace_stride_with_dilation=[False, True, True]), its weights copied.
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    ours = cnnzoo.create_model("resnet50", replace_stride_with_dilation=(False, True, True)).eval()
    state = tv.state_dict()
    assert set(ours.state_dict()) == set(state) == set(cnnzoo.create_model("resnet50").state_dict())
    ours.load_state_dict(fit_state_dict(ours, state))
    x = torch.randn(1, 3, 72, 56)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-5, atol=1e-5)
        assert ours.forward_features(x).shape == (1, 2048, 9, 7)
    assert [f["reduction"] for f in ours.feature_info] == [2, 4, 8, 8, 8]
    conv = ours.layer4[1].conv2
    assert (conv.dilation, conv.padding) == (
        (4, 4),
        (4, 4),
    )  # torchvision's rates: stage 3 at 2, stage 4 at 4


def test_dilation_for_basic_blocks_and_bad_options():
    m = cnnzoo.create_model("resnet18", replace_stride_with_dilation=(False, False, True)).eval()
    assert m.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 512, 4, 4)
    # The first conv of the dilated stage keeps the previous rate, the next runs at the new one.
    assert m.layer4[0].conv1.dilation == (1, 1) and m.layer4[0].conv2.dilation == (2, 2)
    assert m.layer4[1].conv1.dilation == (2, 2)
    with pytest.raises(ValueError, match="one bool per stage after the first \\(3\\)"):
        cnnzoo.create_model("resnet18", replace_stride_with_dilation=(True,))
    with pytest.raises(ValueError, match="needs 'basic' or 'bottleneck' blocks"):
        cnnzoo.create_model("preact_resnet18", replace_stride_with_dilation=(False, True, True))


# -- counters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_counters())
def test_trunk_is_the_zoo_model_up_to_the_cut(name):
    # The cut trunk must give exactly the full zoo model's activation at the cut module.
    spec = COUNTER_SPECS[name]
    torch.manual_seed(0)
    full = cnnzoo.create_model(spec.trunk, num_classes=0, **dict(spec.trunk_kwargs)).eval()
    trunk = cut_trunk(full, spec.cut)
    seen = {}
    full.get_submodule(spec.cut).register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        full.forward_features(x)
        torch.testing.assert_close(trunk(x), seen["out"], rtol=0, atol=0)
    assert set(trunk.state_dict()) <= set(full.state_dict())  # the zoo's names, so ImageNet files load


@pytest.mark.parametrize("name", list_counters())
@pytest.mark.parametrize("size", [(16, 24), (50, 70), (7, 9)])
def test_every_input_size_gives_output_stride_8(counters, name, size):
    model = counters[name]
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        d = model(x)
        counts = model.count(x)
    assert d.shape == (2, 1, -(-size[0] // 8), -(-size[1] // 8))
    torch.testing.assert_close(counts, d.flatten(1).sum(1) / 100.0)


def test_published_sizes(counters):
    # Li, Zhang, Chen 2018 (arXiv:1802.10062), the parameter comparison table: CSRNet 16.26M.
    n = sum(p.numel() for p in counters["csrnet"].parameters())
    assert round(n / 1e6, 2) == 16.26
    # C-3's Res50 head: 1x1 conv 1024 -> 128, ReLU, 1x1 conv 128 -> 1 (models/SCC_Model/Res50.py).
    r50 = counters["resnet50_counter"]
    assert sum(p.numel() for p in r50.head.parameters()) == 1024 * 128 + 128 + 128 + 1
    assert r50.trunk_channels == 1024 and counters["csrnet"].trunk_channels == 512


def test_counter_refuses_wrong_input(counters):
    with pytest.raises(
        ValueError, match="expects RGB images of shape \\(N, 3, H, W\\), got \\(1, 1, 32, 32\\)"
    ):
        counters["resnet18_counter"](torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="unknown counter 'resnet51_counter'"):
        create_counter("resnet51_counter")


def test_trunk_loads_a_torchvision_file_without_classifier_noise(tmp_path):
    torch.manual_seed(3)
    tv = torchvision.models.resnet18()
    path = tmp_path / "resnet18-tv.pth"
    torch.save(tv.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dropping the 1000-way classifier is expected, not a warning
        model = create_counter("resnet18_counter", pretrained=path)
    torch.testing.assert_close(model.trunk.conv1.weight, tv.conv1.weight)
    torch.testing.assert_close(model.trunk.layer2[1].bn2.running_var, tv.layer2[1].bn2.running_var)


def test_checkpoint_round_trip_and_foreign_files(tmp_path, counters):
    model = counters["resnet18_counter"]
    path = save_weights(model, tmp_path / "model.safetensors", metadata={"cnnzoo_counter": model.metadata()})
    loaded, info = load_counter(tmp_path)  # a run directory holding model.safetensors
    assert isinstance(loaded, CrowdCounter) and info["name"] == "resnet18_counter"
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    classifier = save_weights(cnnzoo.create_model("lenet5"), tmp_path / "lenet.safetensors")
    with pytest.raises(CheckpointError, match="not a crowd-counting checkpoint"):
        load_counter(classifier)
    assert path.is_file()
