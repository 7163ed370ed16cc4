"""DenseNet against torchvision and the paper: layout and parameter counts, the old checkpoint
keys, channel growth and compression on real shapes, memory-efficient equivalence, options.

Parameter counts build the models on the meta device (no memory, no init cost); behaviour tests
run DenseNet-BC-100-12 at 8 px and DenseNet-121 at 32 px.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.layers import DenseBlock, DenseLayer, Transition
from cnnzoo.models.densenet import DENSENET_SPECS, convert_old_densenet_keys

TV = cnnzoo.list_models(family="densenet")


@functools.cache
def meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry() -> None:
    assert TV == ["densenet121", "densenet161", "densenet169", "densenet201"]
    assert cnnzoo.list_models(family="densenet_cifar") == ["densenet_bc_100_12"]
    for name in TV:
        info = cnnzoo.model_info(name)
        assert (info.torchvision, info.year, info.min_input_size) == (name, 2016, 29)
        assert "arXiv:1608.06993" in info.paper
    info = cnnzoo.model_info("densenet_bc_100_12")
    assert (info.input_size, info.num_classes, info.min_input_size) == ((3, 32, 32), 10, 4)


@pytest.mark.parametrize("name", TV)
def test_layout_and_parameters_match_torchvision(name: str) -> None:
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
    ours = meta_model(name)
    want = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == want
    # torchvision's published figure for its weights (e.g. 7,978,856 for DenseNet-121).
    documented = torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    assert count_params(ours) == count_params(reference) == documented


def bc_parameters(k: int, layers: int, theta: float = 0.5, classes: int = 10) -> int:
    """DenseNet-BC on CIFAR counted from Huang et al. §3, independently of the model code.

    Stem: 3x3 conv to 2k. Layer at c input channels: BN(c), 1x1 c -> 4k, BN(4k), 3x3 4k -> k.
    Transition: BN(c), 1x1 c -> floor(theta c). Then BN and the FC. The paper's code
    (liuzhuang13/DenseNet, models/densenet.lua) removes the conv biases.
    """
    c = 2 * k
    total = 3 * c * 9
    for block in range(3):
        for _ in range(layers):
            total += 2 * c + c * 4 * k + 2 * 4 * k + 4 * k * k * 9
            c += k
        if block < 2:
            total += 2 * c + c * math.floor(theta * c)
            c = math.floor(theta * c)
    return total + 2 * c + c * classes + classes


def test_densenet_bc_100_12_parameters() -> None:
    n = count_params(meta_model("densenet_bc_100_12"))
    assert n == bc_parameters(k=12, layers=16) == 769_162
    # Huang et al. 2016 (arXiv:1608.06993), Table 2: DenseNet-BC (L = 100, k = 12), 0.8M.
    assert round(n / 1e6, 1) == 0.8
    # L = 100 counts the stem, two convs per layer, the two transition convs and the FC.
    model = meta_model("densenet_bc_100_12")
    assert sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules()) == 100


def _record(model: nn.Module, types: tuple[type, ...]) -> dict[str, tuple]:
    """(input channels, output shape) of every module of `types`, by name, after a forward."""
    seen: dict[str, tuple] = {}
    for name, m in model.named_modules():
        if isinstance(m, types):

            def hook(m: nn.Module, i: tuple, o: torch.Tensor, name: str = name) -> None:
                x = i[0]
                c_in = sum(t.shape[1] for t in x) if isinstance(x, list | tuple) else x.shape[1]
                seen[name] = (c_in, tuple(o.shape))

            m.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize(("name", "px"), [("densenet_bc_100_12", 8), ("densenet121", 32)])
def test_channels_grow_by_k_and_transitions_compress(name: str, px: int) -> None:
    spec = DENSENET_SPECS[name]
    k = spec.growth_rate
    model = cnnzoo.create_model(name).eval()
    seen = _record(model, (DenseLayer, DenseBlock, Transition))
    with torch.no_grad():
        model(torch.randn(1, 3, px, px))

    size = px // 4 if spec.stem == "imagenet" else px
    k0 = spec.stem_width
    for b, num_layers in enumerate(spec.blocks, start=1):
        for i in range(1, num_layers + 1):
            # Layer i reads k0 + (i - 1) k channels (the block input and i - 1 earlier outputs)
            # and adds k at the block's resolution.
            c_in, out = seen[f"features.denseblock{b}.denselayer{i}"]
            assert (c_in, out) == (k0 + (i - 1) * k, (1, k, size, size))
        c_in, out = seen[f"features.denseblock{b}"]
        assert (c_in, out) == (k0, (1, k0 + num_layers * k, size, size))
        if b < len(spec.blocks):
            c_in, out = seen[f"features.transition{b}"]
            k0, size = c_in // 2, size // 2  # theta = 0.5 and a 2x2/2 average pool
            assert out == (1, k0, size, size)
    assert model.num_features == k0 + spec.blocks[-1] * k


@pytest.mark.parametrize(
    ("name", "px", "expected"),
    [
        (
            "densenet121",
            32,
            [
                ("relu0", 64, 2),
                ("denseblock1", 256, 4),
                ("denseblock2", 512, 8),
                ("denseblock3", 1024, 16),
                ("relu5", 1024, 32),
            ],
        ),
        (
            "densenet_bc_100_12",
            8,
            [("conv0", 24, 1), ("denseblock1", 216, 1), ("denseblock2", 300, 2), ("relu5", 342, 4)],
        ),
    ],
)
def test_feature_info_matches_the_stage_outputs(name: str, px: int, expected: list) -> None:
    model = cnnzoo.create_model(name).eval()
    got = [(f["module"].removeprefix("features."), f["num_chs"], f["reduction"]) for f in model.feature_info]
    assert got == expected
    outs = {}
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        module.register_forward_hook(lambda m, i, o, k=info["module"]: outs.__setitem__(k, o.shape))
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, px, px))
    for info in model.feature_info:
        s = px // info["reduction"]
        assert outs[info["module"]] == (1, info["num_chs"], s, s)
    s = px // model.feature_info[-1]["reduction"]
    assert feats.shape == (1, model.num_features, s, s)


# -- torchvision's pre-2018 checkpoints -------------------------------------------------------------


def _to_old_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The inverse of torchvision's renaming: denselayer1.norm1.weight -> denselayer1.norm.1.weight.
    return {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}


def test_old_style_torchvision_checkpoint_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.densenet121().eval()
    for m in reference.modules():  # random statistics, so a mis-mapped buffer cannot hide
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    # Old checkpoints predate num_batches_tracked.
    old = {k: v for k, v in _to_old_style(reference.state_dict()).items() if "num_batches" not in k}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    assert "features.denseblock4.denselayer16.conv.2.weight" in old

    # The fake file is what torchvision's own loader accepts for its old URLs.
    loader = getattr(torchvision.models.densenet, "_load_state_dict", None)
    if loader is not None:
        weights = SimpleNamespace(get_state_dict=lambda **_: dict(old))
        loader(model=torchvision.models.densenet121(), weights=weights, progress=False)

    path = tmp_path / "densenet121-old.pth"
    torch.save(old, path)
    ours = cnnzoo.create_model("densenet121", pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert ((want - got).abs().max() / want.abs().max()).item() <= 1e-5


def test_converter_touches_only_old_layer_keys() -> None:
    t = torch.zeros(1)
    keys = {
        "features.denseblock2.denselayer11.norm.2.running_var": "features.denseblock2.denselayer11.norm2.running_var",
        "features.denseblock1.denselayer1.conv.1.weight": "features.denseblock1.denselayer1.conv1.weight",
        "features.denseblock1.denselayer1.norm1.weight": "features.denseblock1.denselayer1.norm1.weight",
        "features.transition1.norm.weight": "features.transition1.norm.weight",
        "features.norm0.bias": "features.norm0.bias",
        "classifier.weight": "classifier.weight",
    }
    assert list(convert_old_densenet_keys(dict.fromkeys(keys, t))) == list(keys.values())


# -- options --------------------------------------------------------------------------------------------


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in model.named_parameters()}


def test_memory_efficient_gives_the_same_outputs_gradients_and_statistics() -> None:
    torch.manual_seed(0)
    plain = cnnzoo.create_model("densenet_bc_100_12").train()
    efficient = cnnzoo.create_model("densenet_bc_100_12", memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    calls = {"plain": 0, "efficient": 0}
    for key, model in (("plain", plain), ("efficient", efficient)):
        for m in model.modules():
            if isinstance(m, DenseLayer):
                m.norm1.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))

    x = torch.randn(4, 3, 8, 8)
    out_plain, out_efficient = plain(x), efficient(x)
    out_plain.square().mean().backward()
    out_efficient.square().mean().backward()

    assert torch.equal(out_plain, out_efficient)
    # Bitwise equal on CPU here; a tolerance in case the engine sums the concatenation's
    # gradients in another order elsewhere.
    g_plain, g_efficient = _grads(plain), _grads(efficient)
    for n, g in g_plain.items():
        assert torch.allclose(g, g_efficient[n], rtol=1e-5, atol=1e-7), n
    # The bottlenecks were recomputed in the backward pass: 48 layers, norm1 ran twice in each.
    assert calls == {"plain": 48, "efficient": 96}
    # ...without a second momentum step on their BN statistics (torchvision's version takes one).
    for k, v in plain.state_dict().items():
        assert torch.equal(v, efficient.state_dict()[k]), k

    # No graph, nothing to recompute: inference takes the plain path.
    with torch.no_grad():
        efficient(x)
    assert calls["efficient"] == 96 + 48


def test_drop_rate_adds_dropout_after_each_layer() -> None:
    torch.manual_seed(0)
    dropped = cnnzoo.create_model("densenet_bc_100_12", drop_rate=0.2)
    drops = [m for m in dropped.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 48 and all(d.p == 0.2 for d in drops)
    assert all(
        isinstance(layer.dropout, nn.Dropout) for layer in dropped.modules() if isinstance(layer, DenseLayer)
    )
    plain = cnnzoo.create_model("densenet_bc_100_12")
    plain.load_state_dict(dropped.state_dict())  # Dropout holds no state
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(dropped.eval()(x), plain.eval()(x))
        dropped.train()
        assert not torch.equal(dropped(x), dropped(x))
    with pytest.raises(ValueError, match="drop_rate"):
        cnnzoo.create_model("densenet121", drop_rate=1.0)


def test_drop_path_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="no residual branch"):
        cnnzoo.create_model("densenet121", drop_path_rate=0.1)
    # 0 is accepted, so a sweep that passes every model its default does not fail here.
    model = cnnzoo.create_model("densenet_bc_100_12", drop_path_rate=0.0)
    assert not any("DropPath" in type(m).__name__ for m in model.modules())


@pytest.mark.parametrize("act", ["mish", "prelu"])
def test_act_reaches_every_activation(act: str) -> None:
    model = cnnzoo.create_model("densenet_bc_100_12", act=act)
    want = nn.Mish if act == "mish" else nn.PReLU
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    # Two per dense layer, one per transition, the final one (the CIFAR stem has none).
    assert sum(isinstance(m, want) for m in model.modules()) == 2 * 48 + 2 + 1
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 8, 8))).all()


def test_min_input_size_is_exact_for_both_stems() -> None:
    # ImageNet: ceil(n / 4) after the stem must survive three 2x2 pools; CIFAR: two pools.
    for name, m in (("densenet121", 29), ("densenet_bc_100_12", 4)):
        model = cnnzoo.create_model(name).eval()
        model.check_input = lambda x: None  # let the layers themselves decide
        with torch.no_grad():
            assert model(torch.randn(1, 3, m, m)).shape[0] == 1
            with pytest.raises(RuntimeError):
                model(torch.randn(1, 3, m - 1, m - 1))
