"""Checkpoint files: safe reading, key clean-up, fitting to the model, atomic saving."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision

import cnnzoo
from cnnzoo.weights import CheckpointError, read_state_dict, save_weights


@pytest.fixture(scope="module")
def tv_resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture
def tv_file(tv_resnet18: torch.nn.Module, tmp_path: Path) -> Path:
    path = tmp_path / "resnet18.pth"
    torch.save(tv_resnet18.state_dict(), path)
    return path


def _same(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(a(x), b(x), rtol=1e-5, atol=1e-6)


def test_wrapped_and_prefixed_checkpoints_load(tv_resnet18: torch.nn.Module, tmp_path: Path) -> None:
    # DDP adds "module.", torch.compile "_orig_mod.", trainers wrap in {"state_dict": ...}.
    sd = {f"module._orig_mod.{k}": v for k, v in tv_resnet18.state_dict().items()}
    path = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": sd}, path)
    ours = cnnzoo.create_model("resnet18", pretrained=path).eval()
    assert _same(ours, tv_resnet18, torch.randn(1, 3, 64, 64))


def test_safetensors_round_trip_keeps_outputs_and_metadata(tmp_path: Path) -> None:
    from safetensors import safe_open

    model = cnnzoo.create_model("resnet18", num_classes=10).eval()
    path = save_weights(model, tmp_path / "sub" / "r18.safetensors", metadata={"epoch": 5})
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["cnnzoo_model"] == "resnet18" and meta["epoch"] == "5"
    again = cnnzoo.create_model("resnet18", num_classes=10, pretrained=path).eval()
    assert _same(model, again, torch.randn(2, 3, 32, 32))
    assert [p.name for p in path.parent.iterdir()] == ["r18.safetensors"], "temporary file left behind"


def test_failed_save_leaves_existing_file_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    path = tmp_path / "w.safetensors"
    path.write_bytes(b"previous contents")

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_weights(cnnzoo.create_model("resnet18"), path)
    assert path.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_save_weights_wants_safetensors_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_weights(cnnzoo.create_model("resnet18"), tmp_path / "w.pth")


def test_pickled_objects_are_refused(tv_resnet18: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(tv_resnet18, path)  # a pickled nn.Module: loading it would run code
    with pytest.raises(CheckpointError, match="pickled"):
        cnnzoo.create_model("resnet18", pretrained=path)


def test_corrupt_files_name_the_problem(tv_file: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tv_file.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="could not be read"):
        read_state_dict(cut)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_state_dict(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")


def test_mismatched_checkpoint_names_offending_keys(tv_file: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        cnnzoo.create_model("resnet34", pretrained=tv_file)
    msg = str(err.value)
    assert "missing keys" in msg and "layer1.2.conv1.weight" in msg and "resnet34" in msg


def test_shape_mismatch_is_reported(tv_resnet18: torch.nn.Module, tmp_path: Path) -> None:
    sd = tv_resnet18.state_dict()
    sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"shape mismatches: layer2\.0\.conv1\.weight"):
        cnnzoo.create_model("resnet18", pretrained=path)


def test_other_head_size_is_replaced_with_a_warning(tv_resnet18: torch.nn.Module, tv_file: Path) -> None:
    with pytest.warns(UserWarning, match="1000-way classifier 'fc' was replaced"):
        ours = cnnzoo.create_model("resnet18", num_classes=10, pretrained=tv_file).eval()
    assert ours.fc.out_features == 10
    # Everything but the head came from the file.
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            ours.forward_head(ours.forward_features(x), pre_logits=True),
            torch.flatten(tv_resnet18.avgpool(_trunk(tv_resnet18, x)), 1),
            atol=1e-6,
        )


def _trunk(tv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


def test_grey_input_adapts_rgb_stem(tv_resnet18: torch.nn.Module, tv_file: Path) -> None:
    # Summing the RGB filters makes the 1-channel net see a grey image x as the RGB net sees (x, x, x).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grey = cnnzoo.create_model("resnet18", in_chans=1, pretrained=tv_file).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(grey(x), tv_resnet18(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_googlenet_checkpoint_fits_without_aux_heads_and_other_class_counts(tmp_path: Path) -> None:
    # torchvision's GoogLeNet files always hold aux1/aux2; a model built without them, or with
    # another number of classes, must still load the trunk (and say what it skipped or replaced).
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's own FutureWarning about its init
        reference = torchvision.models.googlenet(aux_logits=True, init_weights=True).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(reference.state_dict(), path)
    with pytest.warns(UserWarning, match="'aux1' is not part of this model"):
        bare = cnnzoo.create_model("googlenet", aux_logits=False, pretrained=path).eval()
    assert _same(bare, reference, torch.randn(1, 3, 64, 64))
    with pytest.warns(UserWarning, match=r"classifier 'aux2\.fc2' was replaced"):
        ten = cnnzoo.create_model("googlenet", num_classes=10, pretrained=path)
    assert ten.aux1.fc2.out_features == 10 and ten.fc.out_features == 10
    assert torch.equal(ten.inception4a.branch1.conv.weight, reference.inception4a.branch1.conv.weight)
