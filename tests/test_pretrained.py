"""create_model(name, pretrained=True): torchvision's ImageNet weights through torch's hub cache.

The oracle is torchvision's own builder with `weights=`: it reads the same cached file (torch.hub
only downloads what is missing), so both libraries load one local file and must compute the same
function. The files hold random weights saved by torchvision; nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo.pretrained import PretrainedUnavailable, imagenet_url

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def published_file(checkpoints: Path, name: str) -> Path:
    return checkpoints / os.path.basename(imagenet_url(name))


def old_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The published DenseNet files predate torchvision's module renaming (`norm1` was `norm.1`)
    # and BatchNorm's num_batches_tracked.
    return {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }


# name -> (torchvision builder options for saving its full state dict, key rewrite of the file)
PUBLISHED = {
    "resnet18": ({}, None),
    # The file carries the auxiliary heads; torchvision's loader builds with transform_input=True.
    "googlenet": ({"aux_logits": True, "init_weights": True}, None),
    "densenet121": ({}, old_densenet_keys),
    # Likewise: the auxiliary head is in the file, and transform_input=True on loading.
    "inception_v3": ({"aux_logits": True, "init_weights": False}, None),
}


def save_published(checkpoints: Path, name: str) -> Path:
    """A torchvision model's random weights, saved as the published ImageNet file would be."""
    torch.manual_seed(0)
    options, rewrite = PUBLISHED[name]
    tv = torchvision.models.get_model(cnnzoo.model_info(name).torchvision, **options)
    # He-initialised weights, so the signal reaches the logits (GoogLeNet's own std-0.01 start
    # leaves them a constant), and statistics away from the fresh (0, 1), so a mis-mapped
    # running mean or var shows.
    for m in tv.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            torch.nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    state = tv.state_dict()
    path = published_file(checkpoints, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rewrite(state) if rewrite else state, path)
    return path


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_pretrained_true_computes_what_torchvision_computes_with_its_weights(name, hub_cache) -> None:
    save_published(hub_cache, name)
    tv_name = cnnzoo.model_info(name).torchvision
    weights = torchvision.models.get_model_weights(tv_name).IMAGENET1K_V1
    reference = torchvision.models.get_model(tv_name, weights=weights).eval()  # reads the same file

    ours = cnnzoo.create_model(name, pretrained=True).eval()
    size = max(64, cnnzoo.model_info(name).min_input_size)  # Inception v3 needs 75 px
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert ((want - got).abs().max() / want.abs().max()).item() <= 1e-5
    again = cnnzoo.create_model(name, pretrained="imagenet").eval()
    with torch.no_grad():
        assert torch.equal(again(x), got)


def test_pretrained_with_another_head_keeps_the_trunk_and_warns(hub_cache) -> None:
    save_published(hub_cache, "resnet18")
    full = cnnzoo.create_model("resnet18", pretrained=True).eval()
    with pytest.warns(UserWarning, match="1000-way classifier 'fc' was replaced"):
        ours = cnnzoo.create_model("resnet18", pretrained=True, num_classes=10).eval()
    assert ours.fc.out_features == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.forward_features(x), full.forward_features(x))
    # GoogLeNet's input re-mapping is for RGB; a one-channel stem is adapted and goes without it.
    save_published(hub_cache, "googlenet")
    with pytest.warns(UserWarning, match="filters were adapted"):
        grey = cnnzoo.create_model("googlenet", pretrained=True, in_chans=1)
    assert grey.transform_input is False


def test_pretrained_false_or_none_builds_fresh_weights(hub_cache) -> None:
    path = save_published(hub_cache, "resnet18")
    state = torch.load(path, weights_only=True)
    for pretrained in (False, None):
        model = cnnzoo.create_model("resnet18", pretrained=pretrained)
        assert not torch.equal(model.conv1.weight, state["conv1.weight"])
    with pytest.raises(TypeError, match="pretrained must be True, 'imagenet', a path or None"):
        cnnzoo.create_model("resnet18", pretrained=1)


def test_missing_file_offline_is_one_line_naming_the_url_and_the_place(hub_cache) -> None:
    with pytest.raises(PretrainedUnavailable) as e:
        cnnzoo.create_model("resnet18", pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert str(hub_cache / "resnet18-f37072fd.pth") in msg and "offline in tests" in msg
    assert isinstance(e.value, FileNotFoundError)  # what a caller catching missing files expects


def test_a_model_without_published_weights_says_so(hub_cache) -> None:
    assert "resnet20" not in cnnzoo.list_models(pretrained=True)
    with pytest.raises(cnnzoo.PretrainedUnavailable) as e:
        cnnzoo.create_model("resnet20", pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg and "resnet20 has no torchvision twin" in msg
    assert "list_models(pretrained=True)" in msg
