"""The registry: refuses bad builders, names unknown models helpfully, describes every model."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo import registry
from cnnzoo.registry import UnknownModelError, create_model, list_models, model_info, register

ALL_MODELS = list_models()
_THROWAWAY = "zz_registry_test_throwaway_net"


@pytest.fixture
def cleanup_throwaway():
    yield _THROWAWAY
    registry._BUILDERS.pop(_THROWAWAY, None)
    registry._INFO.pop(_THROWAWAY, None)


def _throwaway_builder():
    def zz_registry_test_throwaway_net(
        *, num_classes: int = 7, in_chans: int = 3, **kwargs: Any
    ) -> nn.Module:
        """Throwaway test net (Nobody 2024)."""
        return nn.Linear(in_chans, num_classes)

    return zz_registry_test_throwaway_net


# -- register ---------------------------------------------------------------------------------
def test_register_refuses_duplicate_names(cleanup_throwaway):
    deco = register(family="test", paper="Nobody 2024", year=2024)
    deco(_throwaway_builder())
    assert cleanup_throwaway in list_models()
    info = model_info(cleanup_throwaway)
    assert info.num_classes == 7  # read from the builder's own default
    assert info.description == "Throwaway test net (Nobody 2024)."
    first = registry._BUILDERS[cleanup_throwaway]
    with pytest.raises(ValueError, match="registered twice"):
        deco(_throwaway_builder())
    assert registry._BUILDERS[cleanup_throwaway] is first


def test_register_refuses_existing_model_name():
    def resnet18(*, num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
        """Impostor."""
        return nn.Identity()

    original = registry._BUILDERS["resnet18"]
    with pytest.raises(ValueError, match="resnet18"):
        register(family="test", paper="Nobody 2024", year=2024)(resnet18)
    assert registry._BUILDERS["resnet18"] is original


def test_register_refuses_builder_without_keyword_only_num_classes(cleanup_throwaway):
    def zz_registry_test_throwaway_net(num_classes: int = 10, *, in_chans: int = 3) -> nn.Module:
        """Positional num_classes."""
        return nn.Identity()

    with pytest.raises(TypeError, match="keyword-only num_classes"):
        register(family="test", paper="Nobody 2024", year=2024)(zz_registry_test_throwaway_net)
    assert cleanup_throwaway not in registry._BUILDERS
    assert cleanup_throwaway not in registry._INFO

    def no_num_classes(*, in_chans: int = 3) -> nn.Module:
        """No head size at all."""
        return nn.Identity()

    with pytest.raises(TypeError):
        register(family="test", paper="Nobody 2024", year=2024)(no_num_classes)
    assert "no_num_classes" not in registry._BUILDERS


# -- unknown names ----------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [create_model, model_info, registry.get_builder])
def test_unknown_name_suggests_close_names(call):
    with pytest.raises(UnknownModelError) as e:
        call("resnt50")
    assert isinstance(e.value, KeyError)
    message = str(e.value)
    assert message.startswith("unknown model 'resnt50'")  # not KeyError's quoted repr
    assert "resnet50" in message


def test_unknown_name_without_close_match_points_to_list_models():
    with pytest.raises(KeyError, match=r"list_models"):
        create_model("qqqqqqqqqq")
    assert not cnnzoo.is_model("qqqqqqqqqq")
    assert cnnzoo.is_model("resnet50")


# -- list_models ------------------------------------------------------------------------------------
def test_list_models_pattern_is_anchored_shell_style():
    names = list_models("resnet*")
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"} <= set(names)
    assert all(n.startswith("resnet") for n in names)
    assert "preact_resnet50" not in names and "se_resnet50" not in names
    assert "se_resnet50" in list_models("*resnet50")
    assert list_models("no_such_model*") == []
    # fnmatch semantics against an independent regular expression.
    for pattern, regex in [
        ("resnet5?", r"resnet5."),
        ("*_resnet*", r".*_resnet.*"),
        ("vgg1[16]", r"vgg1[16]"),
    ]:
        assert list_models(pattern) == [n for n in ALL_MODELS if re.fullmatch(regex, n)]


def test_list_models_natural_order():
    names = list_models("resnet*")
    order = [names.index(n) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")]
    assert order == sorted(order)  # plain string sorting would put resnet101 first
    everything = list_models()
    assert everything.index("resnet18") < everything.index("resnet101")
    assert len(everything) == len(set(everything))


def test_list_models_family_filter():
    names = list_models(family="resnet")
    assert "resnet50" in names and "se_resnet50" not in names and "resnext50_32x4d" not in names
    assert all(model_info(n).family == "resnet" for n in names)
    assert list_models("*50", family="resnet") == ["resnet50"]
    assert list_models(family="no_such_family") == []


def test_list_models_torchvision_filter():
    with_tv = list_models(torchvision=True)
    without_tv = list_models(torchvision=False)
    assert "resnet50" in with_tv and "wide_resnet50_2" in with_tv
    assert "se_resnet50" in without_tv  # torchvision has no SE-ResNet
    assert set(with_tv).isdisjoint(without_tv)
    assert sorted(with_tv + without_tv) == sorted(ALL_MODELS)
    assert all(model_info(n).torchvision is not None for n in with_tv)


def test_torchvision_twins_exist_in_torchvision():
    import torchvision.models

    available = set(torchvision.models.list_models())
    for name in list_models(torchvision=True):
        assert model_info(name).torchvision in available, name


def test_list_models_pretrained_is_what_torchvision_publishes_weights_for():
    import fnmatch

    import torchvision.models

    published = set(torchvision.models.list_models(module=torchvision.models))  # classification nets
    expected = [n for n in ALL_MODELS if model_info(n).torchvision in published]
    assert all(list(torchvision.models.get_model_weights(model_info(n).torchvision)) for n in expected)
    assert list_models(pretrained=True) == expected
    assert "resnet50" in expected and "googlenet" in expected and "resnet20" not in expected
    assert list_models(pretrained=False) == ALL_MODELS  # timm's meaning: False filters nothing
    # The filters combine.
    resnets = [n for n in expected if fnmatch.fnmatchcase(n, "resnet*")]
    assert list_models("resnet*", pretrained=True) == resnets
    assert list_models(family="vgg", pretrained=True) == [n for n in expected if n.startswith("vgg")]
    assert list_models("*_bn", family="vgg", pretrained=True) == [f"vgg{d}_bn" for d in (11, 13, 16, 19)]
    assert list_models(torchvision=False, pretrained=True) == []


# -- model_info --------------------------------------------------------------------------------------
def test_model_info_resnet18():
    info = model_info("resnet18")
    assert info.name == "resnet18"
    assert info.family == "resnet"
    assert "arXiv:1512.03385" in info.paper  # He et al. 2015
    assert isinstance(info.year, int) and info.year == 2015
    assert info.input_size == (3, 224, 224)
    assert info.torchvision == "resnet18"
    model = create_model("resnet18").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, info.num_classes) == (1, 1000)
    d = info.to_dict()
    assert d["name"] == "resnet18" and d["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_info_fields(name):
    info = model_info(name)
    assert info.name == name
    assert isinstance(info.family, str) and info.family
    assert isinstance(info.year, int) and 1980 <= info.year <= 2030
    assert str(info.year) in info.paper  # the paper string names its year
    assert re.search(r"[A-Z][a-z]+", info.paper)  # and an author
    assert len(info.input_size) == 3 and all(isinstance(v, int) and v > 0 for v in info.input_size)
    assert 1 <= info.min_input_size <= info.input_size[1]
    assert isinstance(info.num_classes, int) and info.num_classes > 0
    assert info.description


@pytest.mark.parametrize("name", ALL_MODELS)
def test_default_model_matches_its_model_info(name):
    # create_model(name) with no options must build the architecture model_info describes: its
    # first convolution reads input_size[0] channels and its classifier gives num_classes.
    # Built on the meta device, so the large nets cost no memory; no forward, so no time.
    info = model_info(name)
    with torch.device("meta"):
        model = create_model(name)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == info.input_size[0], (
        f"create_model({name!r}) reads {first_conv.in_channels} channels, model_info says {info.input_size}"
    )
    # The classifier: the last Linear, or the 1x1 conv before the global pooling of Network in
    # Network and SqueezeNet, which have no Linear at all.
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        assert linears[-1].out_features == info.num_classes
    else:
        head = model.get_classifier()
        assert isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1), f"{name} has no classifier"
        assert head.out_channels == info.num_classes


# -- builders -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_builder_signature_and_docstring(name):
    builder = registry.get_builder(name)
    params = inspect.signature(builder).parameters
    positional = [
        p.name
        for p in params.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    assert positional == [], f"{name} takes positional arguments {positional}"
    for arg in ("num_classes", "in_chans"):
        assert arg in params, f"{name} lacks {arg}"
        assert params[arg].kind is inspect.Parameter.KEYWORD_ONLY
        assert isinstance(params[arg].default, int)
    assert params["num_classes"].default == model_info(name).num_classes
    assert params["in_chans"].default == model_info(name).input_size[0]
    doc = inspect.getdoc(builder)
    assert doc and doc.strip(), f"{name} has no docstring"


# -- create_model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"), [({"num_classes": -1}, "num_classes"), ({"in_chans": 0}, "in_chans")]
)
def test_create_model_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("resnet18", **kwargs)


def test_create_model_unknown_option_names_the_model():
    with pytest.raises(TypeError) as e:
        create_model("resnet18", not_an_option=1)
    assert "resnet18" in str(e.value)
    assert "not_an_option" in str(e.value)


def test_create_model_sets_model_name_and_sizes():
    model = create_model("resnet18", num_classes=5, in_chans=1).eval()
    assert model.model_name == "resnet18"
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_create_model_without_head_gives_pre_logits():
    model = create_model("resnet18", num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_the_param_count_table_matches_every_model_built_afresh():
    """`cnnzoo list` reads cnnzoo/_param_counts.py; a stale entry would be a wrong number."""
    from cnnzoo._param_counts import MODEL_FACTS
    from cnnzoo.registry import _facts_of_build, list_models

    fresh = {name: _facts_of_build(name) for name in list_models()}
    stale = {n: (MODEL_FACTS.get(n), c) for n, c in fresh.items() if MODEL_FACTS.get(n) != c}
    assert not stale, (
        f"table vs model: {stale}; rewrite it with "
        "python -c 'from cnnzoo.registry import write_param_counts; write_param_counts()'"
    )


def test_list_and_info_build_no_model(monkeypatch, capsys):
    import cnnzoo.registry as registry
    from cnnzoo.cli.main import main

    def refuse(*args, **kwargs):
        raise AssertionError("cnnzoo list built a model")

    monkeypatch.setattr(registry, "create_model", refuse)
    # Any other route to a model (a builder called directly, a meta-device build) makes a layer.
    monkeypatch.setattr(torch.nn.modules.conv._ConvNd, "__init__", refuse)
    monkeypatch.setattr(torch.nn.Linear, "__init__", refuse)
    assert main(["list"]) == 0
    assert "resnet50" in capsys.readouterr().out
    assert main(["info", "resnet50"]) == 0
    assert "25,557,032" in capsys.readouterr().out  # torchvision's resnet50
