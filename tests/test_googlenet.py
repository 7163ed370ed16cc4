"""GoogLeNet against the lectures' tables and torchvision.

Oracles: the paper's Table 1 (Szegedy et al. 2014) as the lecture prints it and the arithmetic of its own
filter counts, the lecture's naive-vs-reduced Inception module costs, the lecture's
stem table (its second GoogLeNet slide), torch's FlopCounterMode for multiply-adds
(FLOPs / 2), and torchvision's GoogLeNet for layout, auxiliary outputs and `transform_input`.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import InceptionModule
from cnnzoo.layers.inception import tf_input_transform
from cnnzoo.models.googlenet import GoogLeNetOutputs


def weights(module: nn.Module) -> int:
    """Weights only, no biases: what Table 1's "params" column counts."""
    return sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight"))


def macs_by_module(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Multiply-adds per submodule (FLOPs / 2) of one forward pass, keyed by dotted name."""
    prefix = type(model).__name__
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    counts = counter.get_flop_counts()
    out = {"": sum(counts["Global"].values()) // 2}
    for key, ops in counts.items():
        if key.startswith(prefix + "."):
            out[key[len(prefix) + 1 :]] = sum(ops.values()) // 2
    return out


def tv_googlenet(**kwargs) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torchvision's note on its default init
        return torchvision.models.googlenet(init_weights=True, **kwargs)


# -- Table 1 (Szegedy et al. 2014, arXiv:1409.4842) as the lecture prints it -----------------------


def inception_weights(cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, pp: int) -> int:
    """A row's own arithmetic: 1x1 branches read all `cin` channels; 3x3 and 5x5 read their reductions."""
    return cin * (c1 + r3 + r5 + pp) + 9 * r3 * c3 + 25 * r5 * c5


# row -> (our modules, output px, weights from the row's own filter counts, slide params, slide ops).
# The slide's units: params in K = 1024 weights (biases not counted), ops in M = 10^6 multiply-adds.
TABLE1 = {
    "convolution 7x7/2": (("conv1",), 112, 7 * 7 * 3 * 64, 2.7, 34),
    "convolution 3x3/1": (("conv2", "conv3"), 56, 64 * 64 + 9 * 64 * 192, 112, 360),
    "inception (3a)": (("inception3a",), 28, inception_weights(192, 64, 96, 128, 16, 32, 32), 159, 128),
    "inception (3b)": (("inception3b",), 28, inception_weights(256, 128, 128, 192, 32, 96, 64), 380, 304),
    "inception (4a)": (("inception4a",), 14, inception_weights(480, 192, 96, 208, 16, 48, 64), 364, 73),
    "inception (4b)": (("inception4b",), 14, inception_weights(512, 160, 112, 224, 24, 64, 64), 437, 88),
    "inception (4c)": (("inception4c",), 14, inception_weights(512, 128, 128, 256, 24, 64, 64), 463, 100),
    "inception (4d)": (("inception4d",), 14, inception_weights(512, 112, 144, 288, 32, 64, 64), 580, 119),
    "inception (4e)": (("inception4e",), 14, inception_weights(528, 256, 160, 320, 32, 128, 128), 840, 170),
    "inception (5a)": (("inception5a",), 7, inception_weights(832, 256, 160, 320, 32, 128, 128), 1072, 54),
    "inception (5b)": (("inception5b",), 7, inception_weights(832, 384, 192, 384, 48, 128, 128), 1388, 71),
    "linear": (("fc",), 1, 1024 * 1000, 1000, 1),
}

# Rows whose printed params are not their own arithmetic (true weights / 1024 in brackets). The
# paper's table has these slips too; no other convention (K = 1000, biases counted) repairs them.
# - 7x7/2: 7*7*3*64 = 9,408 weights (9.2K) and 118M multiply-adds, not 2.7K and 34M. The ops
#   follow the wrong params (2.7K x 1024 x 112^2 = 34.7M): the error is in the params.
# - 3b (379.0K) and 4b (438.0K): the weights are exact multiples of 1024, yet the slide prints 380
#   and 437: off by one in the last digit, which no rounding gives.
# - 4a (366.75K, printed 364) and 5a (1018K, printed 1072): each row is consistent with itself
#   (364 x 1024 x 14^2 = 73.1M, printed 73; 1072 x 1024 x 7^2 = 53.8M, printed 54) but not with
#   its filter counts: 5a's true cost is 51.1M, and 4a's 73.6M still shows as 73 when truncated.
# - 4c (497.5K, printed 463), 4d (590.5K, 580), 4e (847K, 840), 5b (1409K, 1388): the ops column
#   (100, 119, 170, 71M) follows the printed widths; only the params column is off.
PARAMS_OFF = {"convolution 7x7/2", "inception (3b)", "inception (4a)", "inception (4b)"}
PARAMS_OFF |= {"inception (4c)", "inception (4d)", "inception (4e)", "inception (5a)", "inception (5b)"}
OPS_OFF = {"convolution 7x7/2", "inception (5a)"}


@pytest.fixture(scope="module")
def paper_costs() -> tuple[nn.Module, dict[str, int]]:
    torch.manual_seed(0)
    model = cnnzoo.create_model("googlenet_paper").eval()
    return model, macs_by_module(model, torch.randn(1, 3, 224, 224))


@pytest.mark.parametrize("row", list(TABLE1))
def test_table1_row(row: str, paper_costs: tuple[nn.Module, dict[str, int]]) -> None:
    model, macs = paper_costs
    modules, px, own_weights, slide_k, slide_m = TABLE1[row]
    got_weights = sum(weights(model.get_submodule(m)) for m in modules)
    got_macs = sum(macs[m] for m in modules)

    # The model is the row's own arithmetic: every conv runs at the row's output resolution.
    assert got_weights == own_weights
    assert got_macs == own_weights * px * px

    # The slide, to its printed precision (it rounds some rows and truncates others: 4a's 73.6M
    # is printed 73, 4b's 87.9M is printed 88), except for the rows listed above.
    params_ok = abs(own_weights / 1024 - slide_k) < 1
    ops_ok = abs(own_weights * px * px / 1e6 - slide_m) < 1
    assert params_ok == (row not in PARAMS_OFF), f"{row}: {own_weights / 1024:.2f}K vs slide {slide_k}K"
    assert ops_ok == (row not in OPS_OFF), f"{row}: {own_weights * px * px / 1e6:.2f}M vs slide {slide_m}M"


def test_table1_counts_weights_in_units_of_1024() -> None:
    # Inception (3a): 163,328 weights + 368 biases. Only weights / 1024 gives the slide's 159K.
    _, _, w, slide_k, _ = TABLE1["inception (3a)"]
    biases = 64 + 96 + 128 + 16 + 32 + 32
    assert math.floor(w / 1024) == slide_k
    assert round(w / 1000) != slide_k and round((w + biases) / 1000) != slide_k
    assert round((w + biases) / 1024) != slide_k
    # The same convention gives the 3x3 stem row (114,688 = 112 x 1024) and the linear layer
    # (1,024,000 = 1000 x 1024) exactly.
    assert TABLE1["convolution 3x3/1"][2] == 112 * 1024 and TABLE1["linear"][2] == 1000 * 1024


def test_table1_totals(paper_costs: tuple[nn.Module, dict[str, int]]) -> None:
    model, macs = paper_costs
    # The paper's "computational budget of 1.5 billion multiply-adds at inference time" is the
    # sum of Table 1's ops column (1,502M); with conv1's true 118M and 5a's 51M it is 1,583M.
    assert sum(row[4] for row in TABLE1.values()) == 1502
    assert round(macs[""] / 1e6) == 1583
    assert macs[""] == sum(w * px * px for _, px, w, _, _ in TABLE1.values())
    # 6.99M weights: the lecture's "only 5 million parameters" undercounts (the paper says 12x
    # fewer than AlexNet's 60M); 7.0M with biases, auxiliary heads off.
    assert weights(model) == sum(row[2] for row in TABLE1.values()) == 6_990_272
    assert sum(p.numel() for p in model.parameters()) == 6_998_552


def test_lecture_stem_table() -> None:
    # The lecture's second GoogLeNet slide: layer outputs (C, H/W), memory in KB (4-byte floats)
    # and params in K = 1000 *with* biases, rounded. Its max-pools pad by 1 where the paper's
    # ceil-mode pools do not; both give 56 and 28.
    model = cnnzoo.create_model("googlenet_paper").eval()
    rows = {
        "conv1": (64, 112, 3136, 9),
        "maxpool1": (64, 56, 784, 0),
        "conv2": (64, 56, 784, 4),
        "conv3": (192, 56, 2352, 111),
        "maxpool2": (192, 28, 588, 0),
    }
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            shapes[name] = tuple(output.shape)

        return hook

    hooks = [model.get_submodule(n).register_forward_hook(record(n)) for n in rows]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    for name, (c, px, kb, params_k) in rows.items():
        assert shapes[name][1:] == (c, px, px)
        assert c * px * px * 4 / 1024 == kb
        assert round(sum(p.numel() for p in model.get_submodule(name).parameters()) / 1000) == params_k
    # "Total from 224 to 28 spatial resolution: Memory 7.5 MB, Params 124K".
    assert round(sum(r[2] for r in rows.values()) / 1024, 1) == 7.5
    stem_params = sum(
        p.numel() for n in ("conv1", "conv2", "conv3") for p in model.get_submodule(n).parameters()
    )
    assert round(stem_params / 1000) == 124


# -- The naive and the reduced Inception module (the lecture's "Inception Module" slides) ----------

HW, CIN = 28 * 28, 256
# "Naive Inception module. Conv Ops: [1x1 conv, 128] 28x28x128x1x1x256, [3x3 conv, 192]
# 28x28x192x3x3x256, [5x5 conv, 96] 28x28x96x5x5x256. Total: 854M ops".
NAIVE_TERMS = [HW * 128 * 1 * 256, HW * 192 * 9 * 256, HW * 96 * 25 * 256]
# "Inception module with dimension reduction. Conv Ops: [1x1 conv, 64] 28x28x64x1x1x256,
# [1x1 conv, 64] 28x28x64x1x1x256, [1x1 conv, 128] 28x28x128x1x1x256, [3x3 conv, 192]
# 28x28x192x3x3x64, [5x5 conv, 96] 28x28x96x5x5x64, [1x1 conv, 64] 28x28x64x1x1x256.
# Total: 358M ops".
REDUCED_TERMS = [
    HW * 64 * 256,
    HW * 64 * 256,
    HW * 128 * 256,
    HW * 192 * 9 * 64,
    HW * 96 * 25 * 64,
    HW * 64 * 256,
]


def module_macs(module: nn.Module) -> tuple[int, torch.Size]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = module(torch.randn(1, CIN, 28, 28))
    return counter.get_total_flops() // 2, out.shape


def test_naive_inception_module_costs_854m() -> None:
    naive = InceptionModule(CIN, ch1x1=128, ch3x3=192, ch5x5=96, reduce=False)
    macs, shape = module_macs(naive)
    assert macs == sum(NAIVE_TERMS) == 854_196_224
    assert round(macs / 1e6) == 854
    # The pool branch passes all 256 channels: 128 + 192 + 96 + 256 = 672 ("28x28x672").
    assert shape == (1, 672, 28, 28)


def test_reduced_inception_module_costs_271m_not_358m() -> None:
    reduced = InceptionModule(
        CIN, ch1x1=128, ch3x3_reduce=64, ch3x3=192, ch5x5_reduce=64, ch5x5=96, pool_proj=64
    )
    macs, shape = module_macs(reduced)
    assert macs == sum(REDUCED_TERMS) == 271_351_808
    assert shape == (1, 128 + 192 + 96 + 64, 28, 28)
    # The slide's six terms add up to 271M, not its printed 358M. 358M is what they give with the
    # 3x3 term (86.7M) counted twice: 271.4M + 86.7M = 358.1M. The reduction is 3.1x, not 2.4x.
    assert round((macs + REDUCED_TERMS[3]) / 1e6) == 358
    assert round(sum(NAIVE_TERMS) / macs, 1) == 3.1


def test_inception_module_refuses_mixed_arguments() -> None:
    with pytest.raises(ValueError, match="needs ch3x3_reduce"):
        InceptionModule(CIN, ch1x1=128, ch3x3=192, ch5x5=96)
    with pytest.raises(ValueError, match="naive Inception module"):
        InceptionModule(CIN, ch1x1=128, ch3x3=192, ch5x5=96, pool_proj=64, reduce=False)


# -- torchvision's layout -----------------------------------------------------------------------


def test_state_dict_matches_torchvision() -> None:
    ours, ref = cnnzoo.create_model("googlenet"), tv_googlenet()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref.state_dict().items()
    ]
    # The "5x5" branch really is 3x3 (pytorch/vision#906), kept for checkpoint compatibility.
    assert ours.inception3a.branch3[1].conv.kernel_size == (3, 3)
    assert ours.inception3a.branch3[1].conv.bias is None and ours.conv1.bn.eps == 1e-3


def test_auxiliary_outputs_match_torchvision_in_training_mode() -> None:
    # The shared parity test compares eval outputs; this one the three heads in training mode
    # (batch-statistics BN, dropout off so that both are deterministic).
    torch.manual_seed(0)
    ref = tv_googlenet(dropout=0.0, dropout_aux=0.0).train()
    ours = cnnzoo.create_model("googlenet", dropout=0.0, dropout_aux=0.0).train()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert isinstance(got, GoogLeNetOutputs) and got._fields == want._fields
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_auxiliary_heads_train_vs_eval() -> None:
    model = cnnzoo.create_model("googlenet", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    out = model.train()(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert [o.shape for o in out] == [(2, 10)] * 3
    assert isinstance(model.eval()(x), torch.Tensor)

    no_aux = cnnzoo.create_model("googlenet", aux_logits=False)
    assert no_aux.aux1 is None and isinstance(no_aux.train()(x), torch.Tensor)

    # The paper's model leaves them out unless asked; they are then the paper's §5 heads: a 1x1
    # conv with 128 filters (and bias), fc 1024, dropout 70%, a linear classifier.
    paper = cnnzoo.create_model("googlenet_paper")
    assert paper.aux1 is None and isinstance(paper.train()(x), torch.Tensor)
    paper = cnnzoo.create_model("googlenet_paper", aux_logits=True, num_classes=10)
    out = paper.train()(x)
    assert [o.shape for o in out] == [(2, 10)] * 3
    aux = paper.aux1
    assert aux.conv.conv.out_channels == 128 and aux.conv.conv.bias is not None
    assert (aux.fc1.out_features, aux.dropout.p, aux.fc2.in_features) == (1024, 0.7, 1024)
    assert (paper.aux1.conv.conv.in_channels, paper.aux2.conv.conv.in_channels) == (512, 528)


def test_reset_classifier_resets_auxiliary_heads() -> None:
    model = cnnzoo.create_model("googlenet").train()
    x = torch.randn(2, 3, 32, 32)
    model.reset_classifier(5)
    assert [o.shape for o in model(x)] == [(2, 5)] * 3
    model.reset_classifier(0)  # every head returns its pre-logits
    assert [o.shape for o in model(x)] == [(2, 1024)] * 3
    assert model.eval()(x).shape == (2, 1024)


def test_transform_input_equals_torchvision() -> None:
    torch.manual_seed(0)
    ref = tv_googlenet(transform_input=True).eval()
    ours = cnnzoo.create_model("googlenet", transform_input=True).eval()
    ours.load_state_dict(ref.state_dict())
    img = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (img - mean) / std
    # The re-mapping itself: an ImageNet-normalised image becomes (img - 0.5) / 0.5.
    assert torch.equal(tf_input_transform(x), ref._transform_input(x))
    torch.testing.assert_close(tf_input_transform(x), (img - 0.5) / 0.5)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
        assert not torch.equal(ours(x), cnnzoo.create_model("googlenet").eval()(x))
    with pytest.raises(ValueError, match="transform_input"):
        cnnzoo.create_model("googlenet", transform_input=True, in_chans=1)


# -- The paper's layout --------------------------------------------------------------------------


def test_paper_layout() -> None:
    model = cnnzoo.create_model("googlenet_paper")
    mods = list(model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in mods)
    assert all(m.bias is not None for m in mods if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in mods) == 2
    assert model.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert model.maxpool4.kernel_size == 3 and model.dropout.p == 0.4
    # inception_v1 is the same model under another name.
    alias = cnnzoo.create_model("inception_v1")
    assert [(k, v.shape) for k, v in alias.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]
    assert cnnzoo.model_info("inception_v1").min_input_size == 31


@pytest.mark.parametrize("name", ["googlenet", "googlenet_paper"])
def test_act_reaches_every_unit(name: str) -> None:
    model = cnnzoo.create_model(name, act="mish", num_classes=3)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    # 57 convolutions in the trunk (3 in the stem, 6 per module) plus one per auxiliary head,
    # each followed by the activation, and one more in each auxiliary head's fc1.
    n_act = sum(isinstance(m, nn.Mish) for m in model.modules())
    n_aux = 2 if model.aux_logits else 0
    assert n_act == 3 + 9 * 6 + 2 * n_aux
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
