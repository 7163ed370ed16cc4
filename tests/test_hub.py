"""hubconf.py through torch.hub's own loader, as a user would call it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import cnnzoo

REPO_ROOT = str(Path(__file__).resolve().parents[1])


def hub_load(name: str, **kwargs):
    return torch.hub.load(REPO_ROOT, name, source="local", **kwargs)


def test_hub_load_passes_num_classes():
    model = hub_load("resnet18", num_classes=3).eval()
    assert model.fc.out_features == 3
    assert model.model_name == "resnet18"
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


@pytest.fixture
def local_repo(monkeypatch):
    """Point torch.hub.list/help (GitHub-only in this torch) at the working tree.

    Only the download step is replaced; the listing and help code that reads hubconf.py is torch's.
    """
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: REPO_ROOT)
    return "local/cnnzoo"


def test_hub_list_is_exactly_the_registry(local_repo):
    entries = torch.hub.list(local_repo)
    assert sorted(entries) == sorted(cnnzoo.list_models())
    assert not [e for e in entries if e.startswith("_")]
    assert "dependencies" not in entries


def test_hub_help_is_the_builder_docstring(local_repo):
    doc = torch.hub.help(local_repo, "resnet50")
    assert doc.strip().startswith("ResNet-50")


def test_hub_unknown_entry_raises():
    with pytest.raises(RuntimeError, match="resnt50"):
        hub_load("resnt50")


def test_hub_passes_pretrained_path(tmp_path):
    torch.manual_seed(0)
    source = cnnzoo.create_model("resnet18", num_classes=3).eval()
    path = cnnzoo.save_weights(source, tmp_path / "resnet18.safetensors")

    loaded = hub_load("resnet18", num_classes=3, pretrained=str(path)).eval()
    fresh = hub_load("resnet18", num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(x)
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
        assert not torch.allclose(fresh(x), expected)  # so the equality above is the file's doing
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_hub_passes_pretrained_true(hub_cache):
    # torchvision's hub entries take pretrained=True; ours read the same hub cache as create_model.
    from cnnzoo.pretrained import imagenet_url

    torch.manual_seed(0)
    source = torchvision.models.resnet18()
    hub_cache.mkdir(parents=True)
    torch.save(source.state_dict(), hub_cache / Path(imagenet_url("resnet18")).name)
    loaded = hub_load("resnet18", pretrained=True)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
