"""Parity with torchvision for every architecture both libraries have.

The weights travel through a real `.pth` file, as a user's would: torchvision model ->
state_dict -> torch.save -> cnnzoo.create_model(name, pretrained=path). The two models must then
agree to 1e-5 relative error (issue 2's acceptance bound).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import cnnzoo

SHARED = cnnzoo.list_models(torchvision=True)
# Every shared input size must pass all of AlexNet's pooling (63 px minimum).
SIZE = 64


def test_shared_names_cover_the_issue() -> None:
    expected = {"alexnet", "vgg11", "vgg16_bn", "vgg19", "resnet18", "resnet50", "resnet152"}
    expected |= {"resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"}
    assert expected <= set(SHARED)


@pytest.mark.parametrize("name", SHARED)
def test_torchvision_checkpoint_gives_same_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv_name = cnnzoo.model_info(name).torchvision
    reference = getattr(torchvision.models, tv_name)().eval()
    # Random BN statistics, so a mis-mapped running mean/var cannot hide behind defaults.
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{tv_name}.pth"
    torch.save(reference.state_dict(), path)

    ours = cnnzoo.create_model(name, pretrained=path).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    size = max(SIZE, cnnzoo.model_info(name).min_input_size)  # Inception v3 needs 75 px
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want, got = reference(x), ours(x)
    rel = ((want - got).abs().max() / want.abs().max()).item()
    assert rel <= 1e-5, f"{name}: relative error {rel:.2e}"
