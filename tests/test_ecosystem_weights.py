"""Weights from other projects load as they are: timm's files, Lightning checkpoints, aux-less GoogLeNets.

Oracles: timm's own models (built without weights, their state dicts saved in each file format)
and torchvision's GoogLeNet; each cnnzoo model must compute what the model that wrote the file
computes, to 1e-5 relative.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pytest
import timm  # test-only: the `dev` extra
import torch
import torchvision
from safetensors.torch import save_file

import cnnzoo
from cnnzoo.train.evaluate import load_model
from cnnzoo.weights import CheckpointError, convert_state_dict, fit_state_dict

# cnnzoo name -> timm name: every architecture the two projects share.
SHARED = {
    **{n: n for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
    **{f"se_resnet{d}": f"seresnet{d}" for d in (18, 34, 50, 101, 152)},
    **{n: n for n in ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d")},
    **{n: n for n in ("wide_resnet50_2", "wide_resnet101_2")},
    **{f"densenet{d}": f"densenet{d}" for d in (121, 161, 169, 201)},
    "mobilenet_v2": "mobilenetv2_100",
    **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)},
    **{f"vgg{d}{bn}": f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "inception_v3": "inception_v3",
    "inception_v4": "inception_v4",  # renamed by its key map; outputs: tests/test_inception.py
    "xception": "legacy_xception",  # outputs: tests/test_xception.py
}
# Compared output to output (each file format at least once); the rest, which only repeat these
# blocks at other depths and widths, are checked by a strict fit of every tensor's name and shape,
# so the file stays fast on one thread. A 32 px input is enough: every net here ends in a global
# pool, and for VGG timm and torchvision both pool a map smaller than 7x7 up to 7x7.
FORWARD = [
    "resnet18",
    "resnet50",
    "se_resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "mobilenet_v2",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b5",
    "vgg11_bn",
]
# Build options a timm file needs: timm trains B5-B7 with torch's BatchNorm eps, cnnzoo keeps
# torchvision's TF-ported 1e-3 for them (tested below: refused without the option).
# timm builds Inception v3 without the auxiliary head torchvision's files carry.
NEEDS = {**{f"efficientnet_b{i}": {"bn_eps": 1e-5} for i in (5, 6, 7)}, "inception_v3": {"aux_logits": False}}


def _timm_model(name: str, **kwargs) -> torch.nn.Module:
    """timm's model with random weights and non-trivial BatchNorm statistics (fresh ones are 0/1)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    """As timm and its hub store them: safetensors, or torch.save (`.pth`, `pytorch_model.bin`)."""
    state = {k: v.contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _assert_same_outputs(ours: torch.nn.Module, theirs: torch.nn.Module, side: int) -> None:
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = theirs(x), ours.eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("name", FORWARD)
def test_timm_state_dict_loads_with_identical_outputs(name: str, tmp_path: Path) -> None:
    theirs = _timm_model(SHARED[name])
    # Rotate the three formats over the architectures so each family meets more than one.
    suffix = [".safetensors", ".pth", ".bin"][FORWARD.index(name) % 3]
    path = _save(theirs.state_dict(), tmp_path / f"{SHARED[name]}{suffix}")
    ours = cnnzoo.create_model(name, pretrained=path, **NEEDS.get(name, {}))
    _assert_same_outputs(ours, theirs, 32)


@pytest.mark.parametrize("name", [n for n in SHARED if n not in FORWARD])
def test_timm_state_dict_fits_strictly(name: str) -> None:
    with torch.device("meta"):  # names and shapes only: nothing is allocated
        state = timm.create_model(SHARED[name], pretrained=False).state_dict()
        ours = cnnzoo.create_model(name, **NEEDS.get(name, {}))
    ours.model_name = name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no head replaced, nothing skipped
        fitted = fit_state_dict(ours, convert_state_dict(state, model=ours, model_name=name))
    assert fitted.keys() == ours.state_dict().keys()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_every_file_format_of_a_converted_layout(suffix: str, tmp_path: Path) -> None:
    theirs = _timm_model("mobilenetv2_100")
    path = _save(theirs.state_dict(), tmp_path / f"mobilenetv2_100{suffix}")
    _assert_same_outputs(cnnzoo.create_model("mobilenet_v2", pretrained=path), theirs, 32)


@pytest.mark.parametrize(
    "timm_name, width", [("mobilenetv2_035", 0.35), ("mobilenetv2_050", 0.5), ("mobilenetv2_140", 1.4)]
)
def test_timm_mobilenetv2_widths_load_with_width_mult(timm_name: str, width: float, tmp_path: Path) -> None:
    theirs = _timm_model(timm_name)
    path = _save(theirs.state_dict(), tmp_path / f"{timm_name}.safetensors")
    _assert_same_outputs(cnnzoo.create_model("mobilenet_v2", width_mult=width, pretrained=path), theirs, 32)


def test_a_fine_tuned_timm_file_keeps_its_head(tmp_path: Path) -> None:
    theirs = _timm_model("efficientnet_b0", num_classes=10)
    path = _save(theirs.state_dict(), tmp_path / "pytorch_model.bin")
    _assert_same_outputs(cnnzoo.create_model("efficientnet_b0", num_classes=10, pretrained=path), theirs, 32)
    # `cnnzoo eval`'s loader reads the class count off the converted head.
    loaded = load_model(path, model="efficientnet_b0")
    assert loaded.model.num_classes == 10
    _assert_same_outputs(loaded.model, theirs, 32)


def test_timm_b5_to_b7_need_their_batchnorm_eps(tmp_path: Path) -> None:
    with torch.device("meta"):
        shapes = timm.create_model("efficientnet_b5", pretrained=False).state_dict()
    path = _save({k: torch.ones(v.shape) for k, v in shapes.items()}, tmp_path / "efficientnet_b5.pth")
    with pytest.raises(CheckpointError, match=r"eps 1e-5.*bn_eps=1e-5") as err:
        cnnzoo.create_model("efficientnet_b5", pretrained=path)
    assert "\n" not in str(err.value)


def test_tf_efficientnet_is_refused_by_name(tmp_path: Path) -> None:
    theirs = _timm_model("tf_efficientnet_b0")
    # Why a refusal and not a load: the tensors fit efficientnet_b0 exactly, yet its outputs differ
    # ('same' padding, BatchNorm eps 1e-3), so no key map can make the file right.
    plain = _save(theirs.state_dict(), tmp_path / "weights.safetensors")
    ours = cnnzoo.create_model("efficientnet_b0", pretrained=plain).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(ours(x), theirs(x), rtol=1e-3, atol=1e-3)

    named = _save(theirs.state_dict(), tmp_path / "tf_efficientnet_b0_aa-827b6e33.pth")
    with pytest.raises(CheckpointError, match=r"TensorFlow port.*'same' padding"):
        cnnzoo.create_model("efficientnet_b0", pretrained=named)
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "config.json").write_text(json.dumps({"architecture": "tf_efficientnet_b0", "num_classes": 1000}))
    with pytest.raises(CheckpointError, match="tf_efficientnet_b0"):
        cnnzoo.create_model(
            "efficientnet_b0", pretrained=_save(theirs.state_dict(), hub / "model.safetensors")
        )


# -- PyTorch Lightning -----------------------------------------------------------------------


def _lightning_checkpoint(model_state: dict[str, torch.Tensor], attribute: str, **extra) -> dict:
    """What `Trainer.save_checkpoint` writes: the LightningModule's state_dict plus training state."""
    state = {f"{attribute}.{k}": v for k, v in model_state.items()}
    state["criterion.weight"] = torch.ones(10)  # a loss module with a class-weight buffer
    return {
        "epoch": 4,
        "global_step": 1200,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_acc'}": {"best_model_score": torch.tensor(0.91)}},
        "optimizer_states": [
            {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.1}]}
        ],
        "lr_schedulers": [{"last_epoch": 4}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.1, "model": "resnet18"},
        **extra,
    }


def test_lightning_checkpoint_loads_without_its_prefix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "epoch=4-step=1200.ckpt"
    torch.save(_lightning_checkpoint(net.state_dict(), "model"), path)
    with pytest.warns(UserWarning, match=r"under 'model'.*criterion"):
        ours = cnnzoo.create_model("resnet18", num_classes=10, pretrained=path)
    _assert_same_outputs(ours, net, 32)
    with pytest.warns(UserWarning, match="criterion"):
        loaded = load_model(path, model="resnet18")  # `cnnzoo eval`: 10 classes read off the file
    _assert_same_outputs(loaded.model, net, 32)


def test_lightning_checkpoint_of_a_timm_model(tmp_path: Path) -> None:
    theirs = _timm_model("mobilenetv2_100", num_classes=10)
    ckpt = _lightning_checkpoint(theirs.state_dict(), "net")
    del ckpt["state_dict"]["criterion.weight"]  # a single attribute: nothing left out, no warning
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = cnnzoo.create_model("mobilenet_v2", num_classes=10, pretrained=path)
    _assert_same_outputs(ours, theirs, 32)


def test_lightning_checkpoint_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    net = torchvision.models.resnet18(num_classes=10)
    # Lightning saves argparse namespaces and other objects as hyper-parameters: not loadable safely.
    ckpt = _lightning_checkpoint(net.state_dict(), "model", hyper_parameters=argparse.Namespace(lr=0.1))
    path = tmp_path / "unsafe.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"torch\.save\(torch\.load\(path, weights_only=False\)") as err:
        cnnzoo.create_model("resnet18", num_classes=10, pretrained=path)
    assert "\n" not in str(err.value)


# -- GoogLeNet saved without its auxiliary heads ------------------------------------------------


@pytest.fixture(scope="module")
def tv_googlenet_no_aux() -> torch.nn.Module:
    # What a fine-tuned GoogLeNet looks like: torchvision's model built with aux_logits=False.
    torch.manual_seed(0)
    return torchvision.models.googlenet(aux_logits=False, init_weights=True, transform_input=False).eval()


def test_aux_less_googlenet_loads_with_fresh_heads(
    tv_googlenet_no_aux: torch.nn.Module, tmp_path: Path
) -> None:
    path = _save(tv_googlenet_no_aux.state_dict(), tmp_path / "googlenet_finetuned.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = cnnzoo.create_model("googlenet", pretrained=path)
    messages = [str(w.message) for w in caught]
    for head in ("aux1", "aux2"):
        assert any(
            f"no '{head}'" in m and "freshly initialised" in m and "aux_logits=False" in m for m in messages
        )
    assert ours.aux1 is not None
    _assert_same_outputs(ours, tv_googlenet_no_aux, 64)


def test_aux_less_googlenet_loads_silently_without_heads(
    tv_googlenet_no_aux: torch.nn.Module, tmp_path: Path
) -> None:
    path = _save(tv_googlenet_no_aux.state_dict(), tmp_path / "googlenet_finetuned.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = cnnzoo.create_model("googlenet", aux_logits=False, pretrained=path)
    _assert_same_outputs(ours, tv_googlenet_no_aux, 64)


def test_mismatched_aux_heads_name_the_option(tmp_path: Path) -> None:
    state = cnnzoo.create_model("googlenet").state_dict()
    state["aux1.conv.conv.weight"] = state["aux1.conv.conv.weight"][:, :10]  # a damaged aux head
    path = _save(state, tmp_path / "odd_aux.pth")
    with pytest.raises(CheckpointError, match="aux_logits=False"):
        cnnzoo.create_model("googlenet", pretrained=path)
