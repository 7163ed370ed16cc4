"""The lectures' building blocks, checked against formulas and libraries written by others.

Oracles: torch's own functions for the activations, the papers' formulas written out by hand
(Huang et al. 2016 for stochastic depth, Krizhevsky et al. 2012 for LRN, Hu et al. 2017 for SE),
torch's FlopCounterMode for the lecture's block costs, and torchvision's blocks and
Conv2dNormActivation for layouts and outputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet as tv_resnet

from cnnzoo.layers import (
    ACTIVATIONS,
    BasicBlock,
    Bottleneck,
    ConvBnAct,
    DropPath,
    LocalResponseNorm,
    Maxout,
    PadShortcut,
    PlainBlock,
    PreActBasicBlock,
    PreActBottleneck,
    SqueezeExcite,
    alexnet_lrn,
    drop_path_rates,
    get_act,
    make_shortcut,
    resolve_act,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the convolutions only, as torch's FlopCounterMode counts them (FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter:
        module(x)
    flops = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
    assert flops % 2 == 0
    return flops // 2


# -- activations ------------------------------------------------------------------------------
# Independent definitions of each activation (the papers' formulas, in torch primitives).
_REFERENCE = {
    "relu": lambda x: x.clamp(min=0),
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "prelu": lambda x: torch.where(x > 0, x, 0.25 * x),  # He et al. 2015 initialise a = 0.25
    "elu": lambda x: torch.where(x > 0, x, torch.exp(x) - 1),
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "maxout": lambda x: x.clamp(min=0),  # starts as ReLU
    "swish": lambda x: x / (1 + torch.exp(-x)),  # Ramachandran et al. 2017: x * sigmoid(x)
    "mish": lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),  # Misra 2019
    "relu6": lambda x: x.clamp(0, 6),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),  # Hendrycks & Gimpel, exact form
    "identity": lambda x: x,
}
_ALIASES = {"silu": "swish", "lrelu": "leaky_relu", "none": "identity", "linear": "identity"}


def test_reference_table_covers_every_activation():
    assert set(_REFERENCE) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS) + sorted(_ALIASES))
def test_activation_builds_and_keeps_shape(name):
    x = torch.randn(2, 5, 4, 3)
    act = get_act(name, 5)
    assert isinstance(act, nn.Module)
    y = act(x.clone())  # several are in-place
    assert y.shape == x.shape


@pytest.mark.parametrize("name", sorted(ACTIVATIONS) + sorted(_ALIASES))
def test_activation_matches_its_formula(name):
    canonical = _ALIASES.get(name, name)
    x = torch.linspace(-8, 8, 2 * 5 * 4 * 3, dtype=torch.float64).reshape(2, 5, 4, 3)
    y = get_act(name, 5).double()(x.clone())
    torch.testing.assert_close(y, _REFERENCE[canonical](x))


def test_activation_names_are_case_insensitive():
    assert resolve_act("ReLU") == "relu"
    assert resolve_act("SiLU") == "swish"
    assert isinstance(get_act("GELU"), nn.GELU)


def test_unknown_activation_lists_the_choices():
    with pytest.raises(ValueError, match="unknown activation 'relu7'") as e:
        get_act("relu7", 8)
    for name in ACTIVATIONS:
        assert name in str(e.value)


def test_activation_name_must_be_a_string():
    with pytest.raises(TypeError):
        get_act(nn.ReLU)  # type: ignore[arg-type]


# -- activations with a parameter ("leaky_relu:0.1") --------------------------------------------
@pytest.mark.parametrize(
    ("spec", "reference"),
    [
        # The lecture's overview chart: Leaky ReLU max(0.1x, x).
        ("leaky_relu:0.1", lambda x: torch.maximum(0.1 * x, x)),
        ("lrelu:0.2", lambda x: torch.maximum(0.2 * x, x)),
        ("leaky_relu:0", lambda x: x.clamp(min=0)),
        # Clevert et al. 2015 (arXiv:1511.07289): alpha (exp(x) - 1) for x <= 0.
        ("elu:0.5", lambda x: torch.where(x > 0, x, 0.5 * (torch.exp(x) - 1))),
        ("prelu:0.1", lambda x: torch.where(x > 0, x, 0.1 * x)),
        ("maxout:3", lambda x: x.clamp(min=0)),  # starts as ReLU with any number of pieces
    ],
)
def test_activation_parameter_matches_its_formula(spec, reference):
    x = torch.linspace(-8, 8, 2 * 5 * 4 * 3, dtype=torch.float64).reshape(2, 5, 4, 3)
    torch.testing.assert_close(get_act(spec, 5).double()(x.clone()), reference(x))


def test_activation_parameter_spellings_are_canonical():
    assert resolve_act("Leaky_ReLU:0.10") == resolve_act("lrelu: 0.1 ") == "leaky_relu:0.1"
    # The default value is the bare name: one activation, one spelling (and one run name).
    assert resolve_act("leaky_relu:0.01") == "leaky_relu"
    assert resolve_act("elu:1") == "elu" and resolve_act("maxout:2.0") == "maxout"
    assert resolve_act("maxout:4") == "maxout:4"
    assert get_act("leaky_relu").negative_slope == 0.01  # Maas et al. 2013; the lecture's slide
    assert get_act("leaky_relu:0.1").negative_slope == 0.1
    assert n_params(get_act("maxout:4", 3)) == 4 * 2 * 3
    assert n_params(get_act("prelu:0.1", 7)) == 7


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("relu:0.1", "'relu' takes no parameter"),
        ("leaky_relu:abc", "negative slope 'abc'.*a number in \\[0, 1\\), e.g. leaky_relu:0.1"),
        ("leaky_relu:1.5", "a number in \\[0, 1\\)"),
        ("leaky_relu:-0.1", "a number in \\[0, 1\\)"),
        ("leaky_relu:nan", "negative slope 'nan'"),
        ("leaky_relu:", "negative slope ''"),
        ("elu:0", "alpha '0'.*a number > 0"),
        ("maxout:2.5", "pieces '2.5'.*an integer >= 2"),
        ("maxout:1", "an integer >= 2"),
        ("swishy:1", "unknown activation 'swishy:1'.*leaky_relu:0.1 \\(negative slope\\)"),
    ],
)
def test_bad_activation_parameter_names_the_valid_forms(spec, message):
    with pytest.raises(ValueError, match=message):
        get_act(spec, 4)


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg11", "resnet20", "densenet121", "mobilenet_v2"])
def test_every_family_takes_an_activation_parameter(name):
    import cnnzoo

    with torch.device("meta"):  # structure only
        model = cnnzoo.create_model(name, act="leaky_relu:0.1")
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


@pytest.mark.parametrize(
    ("name", "channels", "expected"),
    [
        ("prelu", 7, 7),  # one slope per channel (He et al. 2015, channel-wise PReLU)
        ("prelu", None, 1),  # channel-shared
        ("maxout", 7, 2 * 2 * 7),  # 2 pieces x (weight, bias) x channels
        ("relu", 7, 0),
        ("gelu", 7, 0),
        ("identity", 7, 0),
    ],
)
def test_activation_parameter_counts(name, channels, expected):
    assert n_params(get_act(name, channels)) == expected


def test_maxout_starts_as_relu():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, 5)
    m = get_act("maxout", 6)
    assert isinstance(m, Maxout)
    y = m(x)
    assert y.shape == x.shape  # channel-preserving, unlike Goodfellow et al.'s k-to-1 form
    assert torch.equal(y, torch.relu(x))
    assert torch.equal(Maxout(6, pieces=4)(x), torch.relu(x))
    assert torch.equal(m(x[:, :, 0, 0]), torch.relu(x[:, :, 0, 0]))  # (N, C) input too


def test_maxout_can_learn_abs_and_leaky_relu():
    # The docstring's claim: |x| and leaky ReLU are special cases of the convex piecewise unit.
    x = torch.randn(2, 3, 4, 4)
    m = Maxout(3)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.1, -1.0]]))
    expected = torch.stack([x[:, 0].abs(), F.leaky_relu(x[:, 1], 0.1), x[:, 2].abs()], dim=1)
    torch.testing.assert_close(m(x), expected)


def test_maxout_needs_channels():
    with pytest.raises(ValueError, match="maxout"):
        get_act("maxout")
    with pytest.raises(ValueError):
        Maxout(4, pieces=1)


# -- stochastic depth -----------------------------------------------------------------------------
def test_drop_path_rates_linear_decay():
    # Huang et al. 2016 (arXiv:1603.09382) eq. 4: p_l = (l / L) * p_L for block l = 1..L.
    assert drop_path_rates(0.2, 4) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert drop_path_rates(0.0, 3) == [0.0, 0.0, 0.0]
    assert drop_path_rates(0.5, 1) == [0.5]


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_drop_path_probability(p):
    with pytest.raises(ValueError):
        DropPath(p)
    with pytest.raises(ValueError):
        drop_path_rates(p, 4)


def test_drop_path_is_identity_in_eval():
    x = torch.randn(64, 3, 4, 4)
    dp = DropPath(0.5).eval()
    assert torch.equal(dp(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_drop_path_drops_whole_samples_at_rate_p():
    torch.manual_seed(0)
    p, n = 0.3, 20_000
    x = torch.rand(n, 3, 2, 2) + 0.5  # strictly positive, so a zero means "dropped"
    y = DropPath(p).train()(x)
    flat_y, flat_x = y.flatten(1), x.flatten(1)
    dropped = (flat_y == 0).all(dim=1)
    kept = ~dropped
    # Every sample is either dropped whole or kept whole and scaled by 1 / (1 - p).
    assert ((flat_y == 0).any(dim=1) == dropped).all()
    torch.testing.assert_close(flat_y[kept], flat_x[kept] / (1 - p))
    # Binomial frequency: sd = sqrt(p(1-p)/n) = 0.0032; allow ~5 sd.
    assert abs(dropped.float().mean().item() - p) < 0.016


def test_drop_path_preserves_the_expectation():
    torch.manual_seed(1)
    p, draws = 0.25, 4000
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    # A batch of `draws` copies of x: each copy gets its own Bernoulli mask.
    y = DropPath(p).train()(x.repeat(draws, 1, 1, 1)).view(draws, *x.shape)
    mean = y.mean(dim=0)
    # sd of the mean per element: |x| * sqrt(p / (1 - p) / draws) = 0.009 |x|; allow ~6 sd.
    assert ((mean - x).abs() <= 0.055 * x.abs() + 1e-12).all()


# -- squeeze-and-excitation -------------------------------------------------------------------------
def test_squeeze_excite_parameters_and_shape():
    c, r = 256, 16
    se = SqueezeExcite(c, r)
    # Hu et al. 2017: W1 (C/r x C) + b1 + W2 (C x C/r) + b2.
    assert n_params(se) == 2 * c * c // r + c // r + c
    x = torch.randn(2, c, 5, 5)
    assert se(x).shape == x.shape


def test_squeeze_excite_gate_is_in_unit_interval():
    torch.manual_seed(0)
    se = SqueezeExcite(32, 4)
    x = torch.rand(3, 32, 6, 6) + 0.1
    y = se(x)
    assert (y > 0).all()
    assert (y < x).all()


def test_squeeze_excite_matches_paper_equations():
    # Hu et al. 2017, eqs. 2-4: z = mean_HW(u); s = sigmoid(W2 relu(W1 z)); out = s * u.
    torch.manual_seed(0)
    c, r = 64, 16
    se = SqueezeExcite(c, r).double()
    u = torch.randn(2, c, 7, 7, dtype=torch.float64)
    z = u.sum(dim=(2, 3)) / (7 * 7)
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    s = torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(se(u), u * s[:, :, None, None])


# -- local response normalisation -------------------------------------------------------------------
def lrn_paper(a: torch.Tensor, n: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75):
    """Krizhevsky et al. 2012 §3.3, as printed:

    b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta

    (alpha multiplies the plain sum; the paper does not divide it by n.)
    """
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        s = (a[:, lo : hi + 1] ** 2).sum(dim=1)
        out[:, i] = a[:, i] / (k + alpha * s) ** beta
    return out


def _large_activations() -> torch.Tensor:
    # Values like post-ReLU conv1 activations in the tens, so that alpha * sum(a^2) is not
    # negligible against k = 2 and the alpha convention shows.
    torch.manual_seed(0)
    return 40 * torch.rand(2, 12, 3, 3, dtype=torch.float64)


def test_alexnet_lrn_constants():
    lrn = alexnet_lrn()
    assert isinstance(lrn, LocalResponseNorm)
    assert (lrn.size, lrn.beta, lrn.k) == (5, 0.75, 2.0)


def test_torch_lrn_divides_alpha_by_n():
    # Pins down torch's convention (the Caffe one): b = a / (k + alpha/n * sum a^2)^beta.
    # So the paper's alpha must be passed to torch multiplied by n.
    a = _large_activations()
    torch.testing.assert_close(nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)(a), lrn_paper(a))
    torch.testing.assert_close(
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a), lrn_paper(a, alpha=1e-4 / 5)
    )


def test_alexnet_lrn_matches_paper_formula():
    # layers/lrn.py claims alexnet_lrn() is the paper's LRN with the paper's constants
    # (k=2, n=5, alpha=1e-4, beta=0.75).
    a = _large_activations()
    torch.testing.assert_close(alexnet_lrn()(a), lrn_paper(a))


# -- residual blocks: the lecture's cost table ----------------------------------------------------------
def test_basic_block_costs_18hwc2():
    # The lecture's "More layers, less computational cost": two 3x3 convs at C channels = 18HWC^2.
    c, h, w = 32, 8, 6
    assert conv_macs(BasicBlock(c, c), torch.randn(1, c, h, w)) == 18 * h * w * c * c


def test_bottleneck_costs_17hwc2():
    # Same slide: 1x1 (4C->C) 4HWC^2 + 3x3 (C->C) 9HWC^2 + 1x1 (C->4C) 4HWC^2 = 17HWC^2.
    c, h, w = 16, 8, 6
    block = Bottleneck(4 * c, 4 * c)
    assert block.conv2.in_channels == c
    assert conv_macs(block, torch.randn(1, 4 * c, h, w)) == 17 * h * w * c * c


@pytest.mark.parametrize(("stride_on", "s1", "s3"), [("1x1", 2, 1), ("3x3", 1, 2)])
def test_bottleneck_stride_placement(stride_on, s1, s3):
    b = Bottleneck(64, 128, stride=2, stride_on=stride_on)
    assert b.conv1.stride == (s1, s1)
    assert b.conv2.stride == (s3, s3)
    assert b.downsample[0].stride == (2, 2)
    assert b(torch.randn(1, 64, 8, 8)).shape == (1, 128, 4, 4)


def test_bottleneck_v1_costs_less_than_v15():
    cin, cout, h, w = 64, 128, 8, 8
    mid, ho, wo = cout // 4, h // 2, w // 2
    x = torch.randn(1, cin, h, w)
    v1 = conv_macs(Bottleneck(cin, cout, 2, stride_on="1x1"), x)
    v15 = conv_macs(Bottleneck(cin, cout, 2, stride_on="3x3"), x)
    # MACs of a conv = H_out * W_out * k^2 * C_in * C_out / groups.
    tail = ho * wo * (9 * mid * mid + mid * cout + cin * cout)  # 3x3, expand, projection
    assert v1 == ho * wo * cin * mid + tail
    assert v15 == h * w * cin * mid + tail
    assert v1 < v15


def test_grouped_bottleneck_cost():
    # ResNeXt's grouped 3x3 divides its cost by the cardinality.
    c, g, h, w = 32, 8, 4, 4
    block = Bottleneck(4 * c, 4 * c, mid_ch=c, groups=g)
    assert conv_macs(block, torch.randn(1, 4 * c, h, w)) == h * w * (8 * c * c + 9 * c * c // g)


# -- shortcuts ----------------------------------------------------------------------------------------
def test_make_shortcut_none_when_shapes_match():
    assert make_shortcut(64, 64, 1) is None
    assert make_shortcut(64, 64, 1, "A") is None


def test_make_shortcut_kinds():
    b = make_shortcut(64, 128, 2, "B")
    assert isinstance(b, nn.Sequential)
    assert isinstance(b[0], nn.Conv2d) and b[0].kernel_size == (1, 1) and b[0].stride == (2, 2)
    assert isinstance(b[1], nn.BatchNorm2d)
    no_bn = make_shortcut(64, 128, 2, "B", bn=False)
    assert isinstance(no_bn, nn.Conv2d)
    a = make_shortcut(64, 128, 2, "A")
    assert isinstance(a, PadShortcut)
    with pytest.raises(ValueError, match="shortcut kind"):
        make_shortcut(64, 128, 2, "C")


def test_option_a_shortcut_pads_zeros_and_subsamples():
    # He et al. 2015 §4.2 option A. Reference form, as in the widely used CIFAR re-implementation
    # (akamaster/pytorch_resnet_cifar10): F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4)).
    x = torch.randn(2, 16, 8, 8)
    sc = PadShortcut(16, 32, 2)
    assert n_params(sc) == 0
    y = sc(x)
    planes = 32
    expected = torch.cat(
        [torch.zeros(2, planes // 4, 4, 4), x[:, :, ::2, ::2], torch.zeros(2, planes // 4, 4, 4)], dim=1
    )
    assert torch.equal(y, expected)
    # Odd channel growth and stride 1 also work: zeros only, no subsampling.
    y = PadShortcut(16, 19, 1)(x)
    assert y.shape == (2, 19, 8, 8)
    assert torch.equal(y[:, 1:17], x)
    assert (y[:, :1] == 0).all() and (y[:, 17:] == 0).all()
    with pytest.raises(ValueError):
        PadShortcut(32, 16, 2)


def test_option_a_block_has_plain_block_parameter_count():
    # §4.2: option A makes a residual net exactly as large as its plain twin.
    assert n_params(BasicBlock(16, 32, 2, shortcut="A")) == n_params(PlainBlock(16, 32, 2))
    assert n_params(BasicBlock(16, 32, 2, shortcut="B")) > n_params(PlainBlock(16, 32, 2))


# -- residual blocks: what the addition does ---------------------------------------------------------------
def _zero_(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.zero_()


@pytest.mark.parametrize(
    ("block", "last"), [(PreActBasicBlock(16, 16), "conv2"), (PreActBottleneck(64, 64), "conv3")]
)
def test_preact_block_with_zero_last_conv_is_exact_identity(block, last):
    # He et al. 2016 (arXiv:1603.05027): nothing after the addition, so zero residual weights
    # give the identity, negative values included.
    _zero_(getattr(block, last))
    x = torch.randn(2, block.conv1.in_channels, 5, 5)
    y = block.train()(x)
    assert torch.equal(y, x)
    assert (y < 0).any()


@pytest.mark.parametrize(("block", "last"), [(BasicBlock(16, 16), "conv2"), (Bottleneck(64, 64), "conv3")])
def test_post_activation_block_with_zero_last_conv_is_relu(block, last):
    # He et al. 2015: ReLU after the addition, so the best a zeroed branch gives is relu(x).
    _zero_(getattr(block, last))
    x = torch.randn(2, block.conv1.in_channels, 5, 5)
    y = block.eval()(x)
    assert torch.equal(y, torch.relu(x))


def test_preact_output_can_be_negative_post_activation_cannot():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 6, 6)
    assert (PreActBasicBlock(16, 16)(x) < 0).any()
    assert (PreActBottleneck(64, 64)(torch.randn(4, 64, 6, 6)) < 0).any()
    assert (BasicBlock(16, 16)(x) >= 0).all()
    assert (Bottleneck(64, 64)(torch.randn(4, 64, 6, 6)) >= 0).all()


def test_plain_block_has_no_shortcut():
    # With the last conv zeroed, a residual block still passes relu(x); a plain block passes nothing.
    block = PlainBlock(16, 16)
    _zero_(block.conv2)
    x = torch.randn(2, 16, 5, 5)
    assert torch.equal(block.eval()(x), torch.zeros_like(x))
    assert torch.equal(block.train()(x), torch.zeros_like(x))
    # Shape-changing plain block: still only the two convs and two BNs, no projection.
    assert n_params(PlainBlock(16, 32, 2)) == 9 * 16 * 32 + 9 * 32 * 32 + 2 * (2 * 32)


@pytest.mark.parametrize("stride", [1, 2])
def test_blocks_load_torchvision_blocks_and_agree(stride):
    # Module names follow torchvision's resnet.py: its block state dicts load strictly and the
    # outputs agree (v1.5: stride on the 3x3, as torchvision's Bottleneck).
    torch.manual_seed(0)
    cases = [
        (BasicBlock(32, 32 * stride, stride), tv_resnet.BasicBlock, 32, 32 * stride, 32 * stride),
        (Bottleneck(64, 128 * stride, stride), tv_resnet.Bottleneck, 64, 32 * stride, 128 * stride),
    ]
    for ours, tv_cls, cin, planes, cout in cases:
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(tv_resnet.conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        theirs = tv_cls(cin, planes, stride, downsample=down)
        for m in theirs.modules():  # non-trivial BN statistics so a misplaced BN shows
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
                nn.init.uniform_(m.running_var, 0.5, 1.5)
                nn.init.uniform_(m.running_mean, -0.5, 0.5)
        ours.load_state_dict(theirs.state_dict(), strict=True)
        x = torch.randn(2, cin, 8, 8)
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


# -- conv-bn-act ------------------------------------------------------------------------------------------
_CBA_CASES = [
    # (ConvBnAct args, kwargs) -> Conv2dNormActivation with the same meaning
    ((3, 8, 3, 1), {}, {}),
    ((8, 16, 3, 2), {}, {}),
    ((16, 16, 3, 1), {"groups": 4}, {"groups": 4}),
    ((8, 8, 1, 1), {}, {}),
    ((8, 8, 5, 1), {}, {}),
    ((8, 8, 3, 1), {"act": None}, {"activation_layer": None}),
    ((8, 8, 3, 1), {"bn": False}, {"norm_layer": None}),
    ((8, 8, 3, 1), {"act": "swish"}, {"activation_layer": nn.SiLU}),
]


@pytest.mark.parametrize(("args", "ours_kw", "tv_kw"), _CBA_CASES)
def test_conv_bn_act_matches_torchvision_conv2d_norm_activation(args, ours_kw, tv_kw):
    torch.manual_seed(0)
    ours = ConvBnAct(*args, **ours_kw)
    theirs = torchvision.ops.Conv2dNormActivation(*args, **tv_kw)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in theirs_sd.items()}
    assert "0.weight" in ours_sd
    ours.load_state_dict(theirs_sd, strict=True)
    x = torch.randn(2, args[0], 9, 9)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
