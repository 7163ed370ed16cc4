"""`cnnzoo.profile`: every number against an oracle that does not share its code.

Oracles: torch's `FlopCounterMode` (every registered model), torchvision's published "GFLOPS"
(which are GMACs), the lecture's AlexNet table (after Krizhevsky et al. 2012), hand arithmetic for the
lectures' cost identities (after He et al. 2015, Simonyan & Zisserman 2014, Howard et al. 2017),
and Araujo et al.'s receptive fields (Distill 2019).

Profiling runs on the meta device, where nothing is computed, so even the all-model test at
each model's own input size takes about a second per model.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.analysis import Profile, profile
from cnnzoo.analysis.receptive_field import WHOLE_INPUT
from cnnzoo.layers import BasicBlock, Bottleneck

ALL = cnnzoo.list_models()


def flop_counter_macs(model: nn.Module, size: tuple[int, ...], device: str = "meta") -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, *size, device=device))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def macs_of(module: nn.Module, size: tuple[int, ...]) -> Profile:
    return profile(module, size)


# -- every registered model ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_total_macs_equal_flop_counter(name: str) -> None:
    info = cnnzoo.model_info(name)
    p = profile(name)
    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    assert p.input_size == info.input_size
    assert p.total_macs == flop_counter_macs(model, info.input_size)
    # Every parameter is counted once; the only ones an eval forward skips are auxiliary heads.
    aux = sum(
        p_.numel()
        for n, m in model.named_children()
        if "aux" in n.lower()
        for p_ in m.parameters(recurse=True)
    )
    assert p.num_parameters == sum(q.numel() for q in model.parameters())
    assert p.total_params == p.num_parameters - aux
    assert all(r.macs >= 0 and r.params >= 0 and r.memory_bytes > 0 for r in p.layers)
    json.dumps(p.to_dict())  # JSON-ready as it is


# torchvision's weight metadata "_ops" (its docs' "GFLOPS" column) for 224-px inputs: they are
# multiply-accumulates, to the third decimal (https://pytorch.org/vision/stable/models.html).
TORCHVISION_GFLOPS = {
    "alexnet": 0.714,
    "vgg16": 15.47,
    "vgg19_bn": 19.632,
    "resnet18": 1.814,
    "resnet50": 4.089,
    "resnet101": 7.801,
    "resnext50_32x4d": 4.23,
    "wide_resnet50_2": 11.398,
}


@pytest.mark.parametrize("name", list(TORCHVISION_GFLOPS))
def test_torchvision_gflops_are_gmacs(name: str) -> None:
    assert round(profile(name, (3, 224, 224)).total_macs / 1e9, 3) == TORCHVISION_GFLOPS[name]


def test_torchvision_table_is_torchvision_s() -> None:
    from torchvision.models import get_model_weights

    for name, gflops in TORCHVISION_GFLOPS.items():
        assert get_model_weights(name).IMAGENET1K_V1.meta["_ops"] == pytest.approx(gflops, abs=1e-3)


# -- the lecture's AlexNet table ("AlexNet Network - Structural Details") --------------------------
# (layer, kernel, stride, pad, output (C, H, W), parameters); 227 x 227 x 3 input.
ALEXNET_TABLE = [
    ("conv1", 11, 4, 0, (96, 55, 55), 34_944),
    ("maxpool1", 3, 2, 0, (96, 27, 27), 0),
    ("conv2", 5, 1, 2, (256, 27, 27), 614_656),
    ("maxpool2", 3, 2, 0, (256, 13, 13), 0),
    ("conv3", 3, 1, 1, (384, 13, 13), 885_120),
    ("conv4", 3, 1, 1, (384, 13, 13), 1_327_488),
    ("conv5", 3, 1, 1, (256, 13, 13), 884_992),
    ("maxpool5", 3, 2, 0, (256, 6, 6), 0),
    ("fc6", None, None, None, (4096,), 37_752_832),
    ("fc7", None, None, None, (4096,), 16_781_312),
    ("fc8", None, None, None, (1000,), 4_097_000),
]


def test_alexnet_lecture_table_row_by_row() -> None:
    p = profile("alexnet_paper")
    assert p.input_size == (3, 227, 227)
    rows = [r for r in p.layers if r.kind in ("Conv2d", "MaxPool2d", "Linear")]
    assert len(rows) == len(ALEXNET_TABLE)
    for row, (label, k, s, pad, out, params) in zip(rows, ALEXNET_TABLE, strict=True):
        assert row.output_shape == out, label
        assert row.params == params, label
        if k is not None:
            assert (row.kernel, row.stride, row.padding) == ((k, k), (s, s), (pad, pad)), label
    assert rows[0].input_shape == (3, 227, 227)
    assert p.total_params == 62_378_344  # the table's "62.378.344"
    # Memory (KB) as the lecture computes it: C * H * W * 4 bytes / 1024; conv1's 55x55x96.
    assert rows[0].memory_bytes == 96 * 55 * 55 * 4


# -- functional calls, shared modules, joins ------------------------------------------------------
class Toy(nn.Module):
    """F.conv2d on a parameter, one module called twice, two branches joined, x @ w at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 3, 3, 3))
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.wide = nn.Conv2d(8, 8, 5, padding=2, bias=False)
        self.proj = nn.Parameter(torch.randn(8 * 8 * 8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.conv2d(x, self.w, padding=1))
        x = self.shared(self.shared(x))
        x = x + self.wide(x)
        return torch.flatten(x, 1) @ self.proj


def test_functional_ops_and_shared_module() -> None:
    hw = 8 * 8
    p = profile(Toy(), (3, 8, 8))
    names = [r.name for r in p.layers]
    assert names == ["conv2d", "relu", "shared", "shared", "wide", "add", "flatten", "matmul"]
    by = {r.name: r for r in p.layers}
    assert by["conv2d"].params == 8 * 3 * 9 and by["conv2d"].macs == hw * 8 * 3 * 9
    shared = [r for r in p.layers if r.name == "shared"]
    assert [r.params for r in shared] == [8 * 8 * 9 + 8, 0]  # parameters once
    assert [r.macs for r in shared] == [hw * 8 * 8 * 9] * 2  # MACs twice
    assert by["matmul"].params == 512 * 10 and by["matmul"].macs == 512 * 10
    assert p.total_params == sum(q.numel() for q in Toy().parameters())
    assert p.total_macs == flop_counter_macs(Toy(), (3, 8, 8), device="cpu")
    assert by["relu"].elementwise and by["add"].elementwise and not by["flatten"].elementwise
    # Receptive fields: 3, then 5 and 7 through the shared conv; the 5x5 branch reaches 11, the
    # identity branch 7, and the add takes the larger. Flatten and the product end it.
    assert [r.receptive_field for r in p.layers] == [3, 3, 5, 7, 11, 11, None, None]


class DataDependent(nn.Module):
    """Control flow on values (impossible on the meta device) and a dict output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        if y.abs().sum() >= 0:
            y = y * 2
        return {"out": y, "score": y.mean()}


def test_data_dependent_model_on_cpu_and_meta() -> None:
    p = profile(DataDependent(), (3, 8, 8))
    assert p.device == "cpu" and p.total_macs == 6 * 6 * 4 * 27 and p.layers[-1].receptive_field is None
    with pytest.raises(RuntimeError, match="meta device"):
        profile(DataDependent().to("meta"), (3, 8, 8))


def test_elementwise_rows_are_hidden_from_memory_total() -> None:
    p = profile(Toy(), (3, 8, 8))
    assert p.total_memory_bytes == sum(r.memory_bytes for r in p.visible_layers())
    assert p.total_memory_bytes < sum(r.memory_bytes for r in p.layers)


# -- receptive fields (Araujo et al., Distill 2019, Table 1: AlexNet 195, VGG-16 212) ------------
@pytest.mark.parametrize(
    ("name", "rf", "stride"),
    [
        # torchvision's and the lecture's AlexNet differ in filters and padding only, and neither
        # changes the field: both give 195.
        ("alexnet", 195, 32),
        ("alexnet_paper", 195, 32),
        ("vgg16", 212, 32),
        ("vgg19", 268, 32),
        ("lenet5", 16, 4),
    ],
)
def test_receptive_field(name: str, rf: int, stride: int) -> None:
    p = profile(name)
    assert (p.receptive_field, p.effective_stride) == (rf, stride)


def test_receptive_field_resnet50_v1_and_v1_5() -> None:
    # Araujo et al. list 483 for ResNet-50 (v1: the stride on the first 1x1). v1.5's strided
    # 3x3 comes before the stage's other 3x3s see the coarser grid, so its field is smaller.
    assert profile("resnet50", variant="v1").receptive_field == 483
    assert profile("resnet50").receptive_field == 427


def test_receptive_field_ends_at_global_pooling() -> None:
    p = profile("resnet18")
    by = {r.name: r for r in p.layers}
    assert by["layer4.1.conv2"].receptive_field == p.receptive_field
    assert by["avgpool"].receptive_field is None and by["fc"].receptive_field is None


# -- the lectures' cost identities ----------------------------------------------------------------
C, H = 64, 16  # any C and H: the identities are exact


def conv(cin: int, cout: int, k: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False)


@pytest.mark.parametrize(
    ("stack", "n", "k"),
    [("one 5x5", 1, 5), ("two 3x3", 2, 3), ("one 7x7", 1, 7), ("three 3x3", 3, 3)],
)
def test_stacked_3x3_costs(stack: str, n: int, k: int) -> None:
    # The lecture's "Why only 3x3 convs?" (Simonyan & Zisserman 2014, Sec. 2.3): a 5x5 C->C costs
    # 25C^2 parameters and 25C^2HW flops, two 3x3s 18C^2 and 18C^2HW, and see the same 5x5 window;
    # 7x7 49 vs three 3x3s 27.
    p = profile(nn.Sequential(*[conv(C, C, k) for _ in range(n)]), (C, H, H))
    assert p.total_params == n * k * k * C * C
    assert p.total_macs == n * k * k * C * C * H * H
    assert p.receptive_field == n * (k - 1) + 1
    assert {"one 5x5": 25, "two 3x3": 18, "one 7x7": 49, "three 3x3": 27}[stack] * C * C == p.total_params


def test_halve_resolution_double_channels_same_cost() -> None:
    # The lecture: C x 2H x 2W through a 3x3 C->C: memory 4CHW, params 9C^2, 36HWC^2 flops;
    # 2C x H x W through a 3x3 2C->2C: memory 2CHW, params 36C^2, 36HWC^2 flops.
    big = profile(conv(C, C, 3), (C, 2 * H, 2 * H))
    small = profile(conv(2 * C, 2 * C, 3), (2 * C, H, H))
    assert big.total_macs == small.total_macs == 36 * H * H * C * C
    assert (big.total_params, small.total_params) == (9 * C * C, 36 * C * C)
    assert (big.total_memory_bytes, small.total_memory_bytes) == (4 * C * H * H * 4, 2 * C * H * H * 4)


def test_bottleneck_17_vs_basic_18() -> None:
    # He et al. 2015, Sec. 4.1 ("More layers, less computational cost"): basic block at C: 18HWC^2; bottleneck
    # at 4C in and out (C inside): 4 + 9 + 4 = 17HWC^2. BatchNorm and the add are not MACs.
    basic = profile(BasicBlock(C, C), (C, H, H))
    bottleneck = profile(Bottleneck(4 * C, 4 * C), (4 * C, H, H))
    assert basic.total_macs == 18 * H * H * C * C
    assert bottleneck.total_macs == 17 * H * H * C * C


def test_depthwise_separable_speedup() -> None:
    # Howard et al. 2017, Sec. 3.1: standard 3x3 costs 9C^2HW, depthwise 3x3 + pointwise 1x1 (9C + C^2)HW,
    # a speed-up of 9C / (9 + C). Built from plain convolutions so it tests the counter alone.
    standard = profile(conv(C, C, 3), (C, H, H))
    separable = profile(nn.Sequential(conv(C, C, 3, groups=C), conv(C, C, 1)), (C, H, H))
    assert standard.total_macs == 9 * C * C * H * H
    assert separable.total_macs == (9 * C + C * C) * H * H
    assert standard.total_macs / separable.total_macs == pytest.approx(9 * C / (9 + C))


@pytest.mark.parametrize(
    ("name", "tv_name"), [("mobilenet_v2", "mobilenet_v2"), ("resnext50_32x4d", "resnext50_32x4d")]
)
def test_conv_rows_record_groups(name: str, tv_name: str) -> None:
    # The oracle: torchvision's own Conv2d modules (same names as cnnzoo's) and their `groups`
    # (depthwise: groups = channels, 17 of them in MobileNetV2; ResNeXt: cardinality 32).
    import torchvision

    with torch.device("meta"):
        tv = getattr(torchvision.models, tv_name)()
    expected = {n: m.groups for n, m in tv.named_modules() if isinstance(m, nn.Conv2d)}
    rows = profile(name).layers
    assert {r.name: r.groups for r in rows if r.kind == "Conv2d"} == expected
    assert all(r.groups is None for r in rows if r.kind != "Conv2d")  # not a convolution: no groups


@pytest.mark.parametrize("t", [1, 6])
def test_mobilenet_v2_block(t: int) -> None:
    # Sandler et al. 2018, Table 1: 1x1 C->tC (tHWC^2), depthwise 3x3 on tC (9tHWC), 1x1 tC->C (tHWC^2).
    block = nn.Sequential(conv(C, t * C, 1), conv(t * C, t * C, 3, groups=t * C), conv(t * C, C, 1))
    assert profile(block, (C, H, H)).total_macs == 2 * t * H * H * C * C + 9 * t * H * H * C


class Inception(nn.Module):
    """The lecture's inception module on 28x28x256: naive, or with 1x1 reductions."""

    def __init__(self, reduce: bool) -> None:
        super().__init__()
        self.reduce = reduce
        self.b1 = conv(256, 128, 1)
        self.b3 = nn.Sequential(conv(256, 64, 1), conv(64, 192, 3)) if reduce else conv(256, 192, 3)
        self.b5 = nn.Sequential(conv(256, 64, 1), conv(64, 96, 5)) if reduce else conv(256, 96, 5)
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.proj = conv(256, 64, 1) if reduce else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.proj(self.pool(x))], 1)


def test_inception_naive_and_reduced() -> None:
    hw = 28 * 28
    naive = profile(Inception(reduce=False), (256, 28, 28))
    reduced = profile(Inception(reduce=True), (256, 28, 28))
    # The slide's terms: 28x28x128x1x1x256 + 28x28x192x3x3x256 + 28x28x96x5x5x256 = 854M.
    assert naive.total_macs == hw * 256 * (128 + 192 * 9 + 96 * 25) == 854_196_224
    # Its six reduced terms add up to 271M, not the "358M" the slide prints (docs/lectures.md).
    six = hw * 256 * (64 + 64 + 128 + 64) + hw * 192 * 9 * 64 + hw * 96 * 25 * 64
    assert reduced.total_macs == six == 271_351_808
    assert naive.layers[-1].output_shape == (128 + 192 + 96 + 256, 28, 28)
    assert reduced.layers[-1].output_shape == (128 + 192 + 96 + 64, 28, 28)
    assert reduced.receptive_field == 5  # the widest branch


# -- bad input names the layer ---------------------------------------------------------------------
def test_too_small_input_names_the_layer() -> None:
    with pytest.raises(ValueError, match=r"features\.30 \(MaxPool2d\).*|.*>= 32") as e:
        profile("vgg16", (3, 16, 16))
    msg = str(e.value)
    assert "features.30" in msg and ">= 32" in msg and "512x1x1" in msg


def test_too_small_input_of_a_plain_module() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(2), nn.Conv2d(8, 8, 5))
    with pytest.raises(ValueError, match=r"layer 2 \(Conv2d\) on its input 8x3x3"):
        profile(net, (3, 8, 8))


def test_wrong_input_rank_and_values() -> None:
    with pytest.raises(ValueError, match="3x224x224"):
        profile("resnet18", (224, 224))
    with pytest.raises(ValueError, match="positive"):
        profile("resnet18", (3, 0, 224))
    with pytest.raises(TypeError, match="registered model name"):
        profile(nn.Conv2d(3, 3, 1), (3, 8, 8), num_classes=3)


# -- the same numbers on real tensors, and the API ------------------------------------------------
def test_meta_and_cpu_agree() -> None:
    on_meta = profile("resnet20")
    on_cpu = profile(cnnzoo.create_model("resnet20"))
    assert on_cpu.device == "cpu" and on_meta.device == "meta"
    assert [r.to_dict() for r in on_cpu.layers] == [r.to_dict() for r in on_meta.layers]


def test_model_kwargs_and_model_left_as_found() -> None:
    v1, v15 = profile("resnet50", variant="v1"), profile("resnet50")
    # He et al.'s 3.8 GFLOPs is v1's 3.86 GMACs truncated; v1.5 moves the stride onto the 3x3.
    assert round(v1.total_macs / 1e9, 2) == 3.86 and round(v15.total_macs / 1e9, 2) == 4.09
    model = cnnzoo.create_model("lenet5").train()
    profile(model)
    assert model.training and "check_input" not in vars(model)
    assert not any(hook for m in model.modules() for hook in (m._forward_hooks, m._forward_pre_hooks))


def test_aggregate_keeps_totals() -> None:
    p = profile("resnet18")
    for depth in (1, 2, 3):
        rows = p.aggregate(depth)
        assert sum(r.macs for r in rows) == p.total_macs
        assert sum(r.params for r in rows) == p.total_params
    names = [r.name for r in p.aggregate(1) if not r.elementwise]
    assert names == ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "flatten", "fc"]
    with pytest.raises(ValueError):
        p.aggregate(0)


def test_public_api() -> None:
    assert cnnzoo.profile is profile and cnnzoo.Profile is Profile
    p = cnnzoo.profile("lenet5")
    assert p.total_params == 61_706  # the lecture's LeNet-5
    d = p.to_dict()
    assert d["total_params"] == 61_706 and d["layers"][0]["output_shape"] == [6, 28, 28]
    assert p.total_flops == 2 * p.total_macs + p.total_ops
    assert "lenet5 at 1x28x28" in str(p)


def test_a_concatenation_row_shows_every_inputs_channels():
    """Issue 17: a cat row showed only its first input's channels. Oracles: GoogLeNet's Table 1
    (Szegedy et al. 2014: inception 3a = #1x1 64, #3x3 128, #5x5 32, pool proj 32) and DenseNet's
    growth rate (Huang et al. 2017: DenseNet-121, k = 32, block 1 entered with 64 channels)."""
    from cnnzoo.analysis.formats import lecture_row

    rows = {r.name: r for r in cnnzoo.profile("googlenet").layers}
    assert rows["inception3a.cat"].parts == (64, 128, 32, 32)
    assert lecture_row(rows["inception3a.cat"])["C"] == "64+128+32+32"
    rows = {r.name: r for r in cnnzoo.profile("densenet121").layers}
    sixth = rows["features.denseblock1.denselayer6.cat"]
    assert sixth.parts == (64, 32, 32, 32, 32, 32) and lecture_row(sixth)["C"] == "64+5x32"
    assert sixth.output_shape[0] == 64 + 5 * 32


def test_a_model_without_submodules_gets_a_row_per_operation():
    """Issue 17: parameters + functional calls only was one row with no receptive field.
    Hand count: conv 8x3x3x3 = 216 weights, 8 x 32 x 32 x 27 = 221,184 MACs; conv 8x8x3x3 = 576,
    stride 2 on 32 -> 16: 8 x 16 x 16 x 72 = 147,456 MACs; fields 3, then 3 + 2 = 5."""
    import torch.nn.functional as F

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3))
            self.w2 = nn.Parameter(torch.randn(8, 8, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.relu(F.conv2d(x, self.w1, padding=1)), self.w2, stride=2, padding=1)

    p = cnnzoo.profile(Functional(), (3, 32, 32))
    convs = [r for r in p.layers if r.kind == "conv2d"]
    assert [(r.params, r.macs, r.receptive_field) for r in convs] == [(216, 221_184, 3), (576, 147_456, 5)]
    assert p.receptive_field == 5 and p.total_params == 792


def test_fused_attention_on_the_cpu_is_counted_from_its_shapes():
    """Issue 17: a model run on the CPU calls a fused attention kernel that torch's counter has no
    formula for, so timm's ViT-Tiny showed 1.075 GMACs instead of 1.254. Oracle: the same model
    profiled on the meta device, where attention decomposes into two batched matmuls that are
    counted one by one (and the 1.254 G that timm's own model card gives)."""
    import timm  # a dev dependency (pyproject's dev extra), installed by `make test`

    with torch.device("meta"):
        meta = timm.create_model("vit_tiny_patch16_224")
    on_meta = cnnzoo.profile(meta.eval(), (3, 224, 224))
    on_cpu = cnnzoo.profile(timm.create_model("vit_tiny_patch16_224").eval(), (3, 224, 224))
    assert (on_meta.device, on_cpu.device) == ("meta", "cpu")
    assert on_cpu.total_macs == on_meta.total_macs
    assert round(on_cpu.total_macs / 1e9, 3) == 1.254


def _measured_field(net: nn.Module, size: int, in_chans: int = 1) -> int | str:
    """The receptive field of the centre output unit, measured: with all-positive weights nothing
    cancels, so the input pixels with a non-zero gradient are exactly the ones it sees. The output
    may be a map (N, C, H, W) or tokens (N, L, C); the unit is channel 0 at the middle position.
    "whole input" when every pixel has a gradient (use inputs larger than any local field). Small
    weights in float64 keep a softmax from saturating, where a gradient would underflow to zero."""
    net = net.double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand_like(p) * 0.05 + 0.01)
    x = torch.rand(1, in_chans, size, size, dtype=torch.float64, requires_grad=True)
    y = net.eval()(x)
    unit = y[0, 0, y.shape[2] // 2, y.shape[3] // 2] if y.dim() == 4 else y[0, y.shape[1] // 2, 0]
    unit.backward()
    seen = x.grad[0].abs().sum(0) > 0
    if seen.all():
        return WHOLE_INPUT
    extents = [int(idx.max() - idx.min() + 1) for idx in (seen.any(1).nonzero(), seen.any(0).nonzero())]
    return max(extents)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_receptive_field_through_upsampling_equals_the_measured_one(mode):
    """Issue 17: bilinear and bicubic resizes were treated like nearest. Here the measured fields
    are 7, 9 and 13; counting every mode as nearest gave 7 for all three."""
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    net = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1),
        nn.Conv2d(1, 1, 3, stride=2, padding=1),
        nn.Upsample(scale_factor=2, mode=mode, **kwargs),
        nn.Conv2d(1, 1, 3, padding=1),
    )
    measured = _measured_field(net, 64)
    assert cnnzoo.profile(net, (1, 64, 64)).receptive_field == measured


class Im2colConv(nn.Module):
    """A k x k convolution written as im2col (F.unfold), a matrix product and a reshape back (or
    F.fold with a 1x1 kernel, col2im's identity case)."""

    def __init__(self, k: int, stride: int = 1, fold: bool = False) -> None:
        super().__init__()
        self.k, self.stride, self.fold = k, stride, fold
        self.weight = nn.Parameter(torch.randn(2, k * k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x.shape[2] + 2 * (self.k // 2) - self.k) // self.stride + 1
        cols = F.unfold(x, self.k, padding=self.k // 2, stride=self.stride)  # (N, k k, L)
        out = self.weight @ cols  # (N, 2, L): one column per output position
        if self.fold:
            return F.fold(out, (h, h), kernel_size=1)
        return out.view(x.shape[0], 2, h, h)


@pytest.mark.parametrize("fold", [False, True])
def test_receptive_field_through_im2col_equals_the_measured_one(fold):
    """Issue 17: F.unfold + matmul lost the field (1 where the 7x7 kernel sees 7). Then a 3x3 conv
    on the stride-2 grid adds 2 x 2: 11, measured."""
    one = Im2colConv(7, fold=fold)
    assert _measured_field(one, 32) == 7
    assert cnnzoo.profile(one, (1, 32, 32)).receptive_field == 7
    two = nn.Sequential(Im2colConv(7, stride=2, fold=fold), nn.Conv2d(2, 1, 3, padding=1))
    measured = _measured_field(two, 48)
    assert measured == 11
    p = cnnzoo.profile(two, (1, 48, 48))
    assert (p.receptive_field, p.effective_stride) == (measured, 2)
    assert (p.layers[0].kind, p.layers[0].kernel, p.layers[0].stride) == ("Im2colConv", (7, 7), (2, 2))


class Tokens(nn.Module):
    """Patches to tokens and back (ViT's patch embedding, an MLP per token, no attention): the field
    stays local. With `attention`, one self-attention layer mixes the tokens."""

    def __init__(self, attention: bool) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 8, 4, stride=4)
        self.mlp = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True) if attention else None
        self.conv = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x)
        n, c, h, w = t.shape
        t = t.flatten(2).transpose(1, 2)  # (N, L, C)
        t = t + self.mlp(t)
        if self.attn is not None:
            t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.conv(t.transpose(1, 2).reshape(n, c, h, w))


@pytest.mark.parametrize("attention", [False, True])
def test_receptive_field_through_tokens_equals_the_measured_one(attention):
    """The field follows positions through flatten, transpose, a per-token Linear and the reshape
    back (4, then the 3x3 on the stride-4 grid: 4 + 2 x 4 = 12); attention makes it whole."""
    net = Tokens(attention)
    measured = _measured_field(net, 32)
    assert measured == (WHOLE_INPUT if attention else 12)
    p = cnnzoo.profile(net, (1, 32, 32))
    assert p.receptive_field == measured
    assert any("attention" in n for n in p.notes) == attention


def test_squeeze_and_excitation_makes_the_field_the_whole_input():
    """Issue 17: an SE gate (Hu et al. 2017) multiplies a global average of the map back into it,
    so every unit after it sees the whole input; the field was the convolutions' 5."""
    from cnnzoo.layers import SqueezeExcite

    def net(se: bool) -> nn.Module:
        gate = SqueezeExcite(8, reduction=2) if se else nn.Identity()
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), gate, nn.Conv2d(8, 1, 3, padding=1))

    assert (
        _measured_field(net(se=False), 32) == cnnzoo.profile(net(se=False), (1, 32, 32)).receptive_field == 5
    )
    measured = _measured_field(net(se=True), 32)
    assert measured == WHOLE_INPUT
    p = cnnzoo.profile(net(se=True), (1, 32, 32))
    assert p.receptive_field == measured
    # The gate's own 1x1 convolutions act on the pooled vector: no spatial extent, no field.
    assert [r.receptive_field for r in p.layers if r.kind == "Conv2d"] == [3, None, None, WHOLE_INPUT]
    assert p.notes == [
        "the receptive field is the whole input from 1.mul (mul) on: a summary with no spatial extent "
        "left (a global pooling or mean) is combined with the map again, as a squeeze-and-excitation "
        "gate or a pooled vector broadcast back"
    ]


def test_group_norm_statistics_make_the_field_the_whole_input():
    """GroupNorm divides by one sample's statistics over all positions (Wu & He 2018), so every
    unit depends on every pixel; BatchNorm in eval mode uses stored statistics and does not."""
    for norm, expected in ((nn.GroupNorm(2, 4), WHOLE_INPUT), (nn.BatchNorm2d(4), 3)):
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm)
        assert _measured_field(net, 16) == expected
        assert cnnzoo.profile(net, (1, 16, 16)).receptive_field == expected


def test_efficientnet_b0_sees_the_whole_input_after_its_first_se_gate():
    """Issue 17: EfficientNet-B0 reported 851. Its first MBConv block (Tan & Le 2019, Table 1)
    gates its depthwise conv's output with squeeze-and-excitation: from there on every unit sees
    every pixel, measured on the stem and first stage at 64x64 (conv fields 3, then 7)."""
    p = cnnzoo.profile("efficientnet_b0")
    assert p.receptive_field == WHOLE_INPUT
    fields = {r.name: r.receptive_field for r in p.layers}
    assert fields["features.0.0"] == 3 and fields["features.1.0.block.0.0"] == 7
    assert fields["features.1.0.block.1.mul"] == fields["features.8.0"] == WHOLE_INPUT
    assert p.notes[0].startswith("the receptive field is the whole input from features.1.0.block.1.mul (mul)")
    trunk = cnnzoo.create_model("efficientnet_b0").features[:2]
    assert _measured_field(trunk, 64, in_chans=3) == WHOLE_INPUT
    assert cnnzoo.profile(trunk, (3, 64, 64)).receptive_field == WHOLE_INPUT


def test_vit_tiny_sees_the_whole_input_after_its_first_attention():
    """Issue 17: timm's ViT-Tiny (Dosovitskiy et al. 2020, arXiv:2010.11929) reported 16, its patch
    size. Measured on the centre patch's token of `forward_features`, at 64 px (16 tokens) to
    keep the float64 backward pass fast; the profile at its own 224 px, on the meta device."""
    import timm  # a dev dependency (pyproject's dev extra), installed by `make test`

    with torch.device("meta"):
        meta = timm.create_model("vit_tiny_patch16_224")
    p = cnnzoo.profile(meta, (3, 224, 224))
    assert p.receptive_field == WHOLE_INPUT
    fields = {r.name: r.receptive_field for r in p.layers}
    assert fields["patch_embed.proj"] == fields["blocks.0.attn.qkv"] == 16
    assert fields["blocks.0.attn.scaled_dot_product_attention"] == WHOLE_INPUT
    assert not [n for n in p.notes if "unchanged" in n]  # the tokens' reshapes are followed

    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Built on meta and given uninitialised memory: _measured_field sets every parameter.
            with torch.device("meta"):
                self.vit = timm.create_model("vit_tiny_patch16_224", img_size=64)
            self.vit.to_empty(device="cpu")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.vit.forward_features(x)

    assert _measured_field(Features(), 64, in_chans=3) == WHOLE_INPUT


class WindowAttention(nn.Module):
    """Self-attention inside 4x4 windows (Swin's window partition, Liu et al. 2021): local, not
    global. The partition splits each image axis in two, which the tracer does not follow."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)
        self.conv = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1).reshape(n, h // 4, 4, w // 4, 4, c).permute(0, 1, 3, 2, 4, 5)
        t = t.reshape(-1, 16, c)  # (windows, 16 tokens, C)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t.reshape(n, h // 4, w // 4, 4, 4, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)
        return self.conv(t)


def test_a_reshape_the_tracer_cannot_follow_claims_no_global_operation():
    """Where positions are split into windows the tracer loses the axes: it says so in a note and
    does not call the windows' attention global (measured: the field stays local)."""
    net = nn.Sequential(nn.Conv2d(1, 4, 1), WindowAttention())
    measured = _measured_field(net, 32)
    assert measured != WHOLE_INPUT and measured < 32
    p = cnnzoo.profile(net, (1, 32, 32))
    assert p.receptive_field != WHOLE_INPUT
    assert any("passed unchanged" in n and "splits a spatial axis" in n for n in p.notes)
