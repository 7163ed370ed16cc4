"""The lectures' arithmetic that docs/lectures.md regenerates, recomputed.

Oracles: PyTorch's own convolution (`nn.Conv2d`, `F.conv2d`, `F.conv_transpose2d`) for the
output-size formula and the 2-D convolution examples, the slides' printed numbers (quoted in each
test), the papers' tables (GoogLeNet: Szegedy et al. 2014, Table 1), torchvision's weight metadata
for single-model accuracy, and hand sums. Each test also checks that docs/lectures.md states the
number it recomputes, so the page cannot drift from the code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.analysis.compare import compare

DOC = (Path(__file__).resolve().parents[1] / "docs" / "lectures.md").read_text(encoding="utf-8")


def in_doc(*numbers: str) -> None:
    missing = [n for n in numbers if n not in DOC]
    assert not missing, f"docs/lectures.md does not state {missing}"


# -- the output-size formula ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "k", "stride", "pad", "formula", "out"),
    [
        (7, 3, 1, 0, 5.0, 5),  # the slide's P = 0, S = 1 case: W - F + 1
        (7, 3, 2, 0, 3.0, 3),  # "7x7 input, 3x3 filter applied with stride 2 => 3x3 output!"
        (7, 3, 1, 1, 7.0, 7),  # "pad with 1 pixel border => 7x7 output!"
        (7, 3, 3, 0, 7 / 3, 2),  # the window does not fit: PyTorch floors
        (32, 5, 1, 2, 32.0, 32),  # "(32+2*2-5)/1+1 = 32 spatially, so 32x32x10"
    ],
)
def test_output_size_formula(size, k, stride, pad, formula, out) -> None:
    assert (size - k + 2 * pad) / stride + 1 == pytest.approx(formula)
    conv = nn.Conv2d(3, 10, k, stride=stride, padding=pad, device="meta")
    assert conv(torch.empty(1, 3, size, size, device="meta")).shape == (1, 10, out, out)
    if size == 32:
        # "each filter has 5*5*3 + 1 = 76 params (+1 for bias) => 76*10 = 760"
        assert sum(p.numel() for p in conv.parameters()) == 760
    in_doc(f"{out}x{out}")


# -- the 2-D convolution worked example and the emboss kernel ------------------------------------
A = torch.tensor([[1.0, 3, 1], [0, -1, 1], [2, 2, -1]])
B = torch.tensor([[1.0, 2], [0, -1]])
SLIDE_4X4 = [[1, 5, 7, 2], [0, -2, -4, 1], [2, 6, 4, -3], [0, -2, -2, 1]]  # the slide's result


def test_the_worked_example_is_a_full_convolution() -> None:
    full = F.conv_transpose2d(A[None, None], B[None, None])[0, 0]
    assert full.tolist() == SLIDE_4X4
    # The same as sliding the 180-degree-turned kernel (the slide draws [[-1, 0], [2, 1]]) over A
    # padded by one: the formula's B_(i-s, j-t).
    flipped = B.flip(0, 1)
    assert flipped.tolist() == [[-1, 0], [2, 1]]
    assert F.conv2d(F.pad(A, (1, 1, 1, 1))[None, None], flipped[None, None])[0, 0].tolist() == SLIDE_4X4
    # A CNN layer's "convolution": valid cross-correlation, no flip, only where B fits.
    valid = F.conv2d(A[None, None], B[None, None])[0, 0]
    assert valid.tolist() == [[8, 4], [-4, 2]]
    in_doc("[[1,  5,  7,  2],", "[0, -2, -2,  1]]", "[[8, 4], [-4, 2]]", "[[-1, 0], [2, 1]]")


def test_the_emboss_kernel_sign_depends_on_the_convention() -> None:
    kernel = torch.tensor([[4.0, 0, 0], [0, 0, 0], [0, 0, -4]])
    pixels = torch.tensor([[0.0, 0, 0], [0, 1, 1], [0, 1, 2]])
    # The slide's products, (4 x 0) ... (-4 x 2), each kernel entry with the pixel under it.
    assert float((kernel * pixels).sum()) == -8
    assert F.conv2d(pixels[None, None], kernel[None, None]).item() == -8  # cross-correlation
    assert F.conv2d(pixels[None, None], kernel.flip(0, 1)[None, None]).item() == 8  # the formula's flip
    in_doc("**-8**", "**+8**", "[[4, 0, 0], [0, 0, 0], [0, 0, -4]]", "[[0, 0, 0], [0, 1, 1], [0, 1, 2]]")


# -- GoogLeNet: "only 5 million parameters, 12x less than AlexNet" ------------------------------
# Szegedy et al. 2014, Table 1, the params column (K): conv, conv, 3a, 3b, 4a-4e, 5a, 5b, linear.
TABLE1_PARAMS_K = [2.7, 112, 159, 380, 364, 437, 463, 580, 840, 1072, 1388, 1000]


def test_googlenet_parameters_against_alexnet() -> None:
    assert round(sum(TABLE1_PARAMS_K) / 1000, 1) == 6.8  # the paper's own table: not 5M
    tv = cnnzoo.profile("googlenet")
    paper = cnnzoo.profile("googlenet_paper")
    alexnet, alexnet_paper = cnnzoo.profile("alexnet"), cnnzoo.profile("alexnet_paper")
    assert (tv.total_params, tv.unused_params) == (6_624_904, 6_379_984)  # auxiliary heads unused
    assert (paper.total_params, alexnet.total_params) == (6_998_552, 61_100_840)
    assert round(alexnet.total_params / tv.total_params, 1) == 9.2
    assert round(alexnet_paper.total_params / paper.total_params, 1) == 8.9
    assert round(60 / 6.8, 1) == 8.8 and 60 / 5 == 12  # the slide's 12x is 60M / 5M
    fc = {r.name: r for r in tv.layers}["fc"]
    assert fc.params == 1_025_000
    in_doc("6,998,552", "6,624,904", "6,379,984", "61,100,840", "**9.2x**", "**8.9x**", "8.8x", "1,025,000")


# -- the VGG-16 vs GoogLeNet stem comparison -----------------------------------------------------
def _stem(name: str, last: str) -> dict[str, float]:
    """Memory (KB), parameters and MACs of every shown row up to and including `last`."""
    rows = []
    for r in cnnzoo.profile(name).visible_layers():
        rows.append(r)
        if r.name == last:
            break
    return {
        "memory_kb": sum(r.memory_bytes for r in rows) / 1024,
        "params": sum(r.params for r in rows),
        "macs": sum(r.macs for r in rows),
        "rows": len(rows),
    }


def test_vgg16_against_the_googlenet_stem() -> None:
    google = _stem("googlenet_paper", "maxpool2")  # 224 -> 28, the slide's five rows (and two LRNs)
    assert google["memory_kb"] == 7_644 and google["params"] == 124_416
    assert round(google["macs"] / 1e6, 1) == 477.7
    # The slide's "42.9 MB, 1.1M, 7485 MFlops": VGG-16's first six convs, pools left out.
    vgg = cnnzoo.profile("vgg16")
    six = [r for r in vgg.layers if r.kind == "Conv2d"][:6]
    assert six[-1].name == "features.12" and six[-1].output_shape == (256, 56, 56)  # not 28
    memory_kb = sum(r.memory_bytes for r in six) / 1024
    params, macs = sum(r.params for r in six), sum(r.macs for r in six)
    assert memory_kb == 43_904 and round(memory_kb / 1024, 1) == 42.9
    assert params == 1_145_408 and round(macs / 1e6) == 7_485
    assert round(memory_kb / google["memory_kb"], 1) == 5.7  # the slide's 5.7x holds
    assert round(params / google["params"], 1) == 9.2  # the slide: 8.9x (1.1M / 124K)
    assert round(macs / google["macs"], 1) == 15.7  # the slide: 17.8x
    # VGG-16 from 224 to 28: seven convs and three pools (features.16 is pool3, 256 x 28 x 28).
    to28 = _stem("vgg16", "features.16")
    assert to28["memory_kb"] == 52_528 and to28["params"] == 1_735_488 and round(to28["macs"] / 1e6) == 9_335
    ratios = [to28[k] / google[k] for k in ("memory_kb", "params", "macs")]
    assert [round(r, 1) for r in ratios] == [6.9, 13.9, 19.5]
    in_doc("43,904", "1,145,408", "7,485", "52,528", "1,735,488", "9,335", "477.7", "**6.9x**", "**13.9x**")
    in_doc("**19.5x**", "15.7x", "124,416", "7,644")


# -- ILSVRC top-5 error against torchvision's single-model weights -------------------------------
def test_compare_puts_ilsvrc_beside_torchvision() -> None:
    rows = {r["name"]: r for r in compare(["alexnet", "zfnet", "vgg16", "googlenet", "resnet18", "resnet34"])}
    # The competition's results (Russakovsky et al. 2015; the papers' tables): ensembles.
    ilsvrc = {n: r["ilsvrc_top5_error"] for n, r in rows.items()}
    assert ilsvrc == {
        "alexnet": 16.4,
        "zfnet": 11.7,
        "vgg16": 7.3,
        "googlenet": 6.7,
        "resnet18": 3.57,
        "resnet34": 3.57,
    }
    top5_error = {n: None if r["top5"] is None else round(100 - r["top5"], 2) for n, r in rows.items()}
    # The lecture's single-network numbers: "ResNet-18 ... Top-5 error: 10.92", "ResNet-34 ...
    # 8.58 (VGG: 9.6 ...)": torchvision's weights, one crop.
    assert top5_error["resnet18"] == 10.92 and top5_error["resnet34"] == 8.58
    assert round(top5_error["vgg16"], 1) == 9.6
    assert top5_error["zfnet"] is None and rows["zfnet"]["top1"] is None  # no torchvision twin
    # Every single network misses more than its family's ensemble did.
    assert all(top5_error[n] > ilsvrc[n] for n in rows if top5_error[n] is not None)
    in_doc(
        *(f"| {ilsvrc[n]} | {rows[n]['top1']:.2f} | {top5_error[n]:.2f} |" for n in rows if rows[n]["top1"])
    )


# -- receptive fields after a global operation ---------------------------------------------------
def _without_se(name: str) -> nn.Module:
    """`name` with every squeeze-and-excitation gate replaced by the identity: its kernels alone."""
    from cnnzoo.layers import SqueezeExcite

    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    gates = [n for n, m in model.named_modules() if isinstance(m, SqueezeExcite)]
    assert gates
    for n in gates:
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Identity())
    return model


@pytest.mark.parametrize(("name", "arithmetic"), [("efficientnet_b0", 851), ("se_resnet50", 427)])
def test_the_kernel_arithmetic_the_se_gates_override(name, arithmetic) -> None:
    assert cnnzoo.profile(_without_se(name), (3, 224, 224)).receptive_field == arithmetic
    assert cnnzoo.profile(name).receptive_field == "whole input"
    # resnet50 has se_resnet50's kernels without the gates: the same field.
    assert name != "se_resnet50" or cnnzoo.profile("resnet50").receptive_field == arithmetic
    in_doc(f"| {arithmetic} | whole input |")
