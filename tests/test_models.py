"""Registry-wide checks: every registered model, the same questions (timm's test_models.py idea).

Small inputs keep CI fast: each model runs at the larger of 32 px and its smallest accepted size
(its native size when that is smaller, as for LeNet-5 at 28 px).
"""

from __future__ import annotations

import pytest
import torch

import cnnzoo

ALL = cnnzoo.list_models()


def input_px(name: str) -> int:
    info = cnnzoo.model_info(name)
    native = info.input_size[1]
    return native if native <= 32 else max(32, info.min_input_size)


# Families whose stage maps are exactly input / reduction ('same'-padded stride-2 layers).
EXACT_REDUCTIONS = {"mobilenet_v1", "mobilenet_v2", "shufflenet_v1_g8", "shufflenet_v2_x0_5"}


def outputs(out: torch.Tensor | tuple) -> list[torch.Tensor]:
    """All heads' outputs: a tensor, or (logits, *auxiliary logits) for nets with auxiliary
    classifiers in training mode (GoogLeNet), so that the auxiliary heads get gradients too."""
    return [out] if isinstance(out, torch.Tensor) else [o for o in out if o is not None]


@pytest.fixture(scope="module", autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_default(name: str) -> None:
    info = cnnzoo.model_info(name)
    model = cnnzoo.create_model(name)
    c, s = info.input_size[0], input_px(name)
    outs = outputs(model(torch.randn(2, c, s, s)))
    for out in outs:
        assert out.shape == (2, info.num_classes)
        assert torch.isfinite(out).all()
    sum(out.float().pow(2).mean() for out in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"

    # The interface: features -> head, pre-logits width, stages.
    model.eval()
    seen: dict[str, tuple[int, ...]] = {}
    for f in model.feature_info:
        model.get_submodule(f["module"]).register_forward_hook(
            lambda m, i, o, key=f["module"]: seen.__setitem__(key, tuple(o.shape))
        )
    with torch.no_grad():
        x = torch.randn(1, c, s, s)
        feats = model.forward_features(x)
        assert feats.shape[1] == model.feature_info[-1]["num_chs"]
        # Every stage feature_info names exists and has the channels it claims; where the stage
        # maps divide the input exactly, the spatial reduction is checked too.
        for f in model.feature_info:
            shape = seen[f["module"]]
            assert shape[1] == f["num_chs"], f
            if name in EXACT_REDUCTIONS:
                assert shape[2:] == (s // f["reduction"],) * 2, f
        assert torch.equal(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
        reductions = [f["reduction"] for f in model.feature_info]
        assert reductions == sorted(reductions)
        for n_cls in (5, 0):
            model.reset_classifier(n_cls)
            width = n_cls or model.num_features
            assert model(x).shape == (1, width)


@pytest.mark.parametrize("name", ALL)
def test_classes_and_channels(name: str) -> None:
    s = input_px(name)
    # Train mode: BN normalises with batch statistics. In eval mode an untrained net's BN (mean 0,
    # variance 1) normalises nothing, and 600 un-normalised blocks (ResNet-1202) overflow.
    model = cnnzoo.create_model(name, num_classes=7, in_chans=1)
    with torch.no_grad():
        outs = outputs(model(torch.randn(2, 1, s, s)))
    for out in outs:
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()
    model.eval()

    # A wrong channel count is a ValueError that names the expected shape.
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, "):
        model(torch.randn(2, 3, s, s))

    # The smallest accepted input works; one pixel less is refused with the expected shape.
    info = cnnzoo.model_info(name)
    assert model.min_input_size == info.min_input_size, "registry and model disagree on min size"
    if getattr(model, "fixed_input_size", None) is None:
        m = info.min_input_size
        with torch.no_grad():
            assert model(torch.randn(1, 1, m, m)).shape == (1, 7)
        if m > 1:
            with pytest.raises(ValueError, match="expects input of shape"):
                model(torch.randn(1, 1, m - 1, m - 1))
