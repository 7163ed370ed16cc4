"""`cnnzoo summary` and `cnnzoo compare`: the lecture's columns, scripts' formats, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
from torch import nn

from cnnzoo.analysis.compare import PUBLISHED_TOP1, published_top1
from cnnzoo.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_table_has_the_lecture_columns(capsys) -> None:
    code, out, err = run(capsys, "summary", "alexnet_paper")
    assert code == 0 and err == ""
    lines = out.splitlines()
    for column in ("C", "H/W", "filters", "kernel", "stride", "pad", "out C", "memory (KB)", "params (K)"):
        assert column in lines[0]
    assert "MACs (M)" in lines[0] and "RF" in lines[0]
    conv1 = next(line for line in lines if line.startswith("features.0 "))
    # The lecture: 227 -> 55x55x96, 11x11/4 pad 0, 34,944 parameters, 1,134 KB of activations.
    assert conv1.split()[2:] == ["3", "227", "96", "11", "4", "0", "96", "55", "1,134", "35", "105", "11"]
    total = next(line for line in lines if line.startswith("total"))
    assert "62,378" in total.split() and total.split()[-1] == "195"
    assert "62,378,344 parameters" in out
    assert not any(line.split()[1] in ("ReLU", "LocalResponseNorm") for line in lines[2:-3] if line)


def test_summary_all_rows_and_depth(capsys) -> None:
    _, out, _ = run(capsys, "summary", "resnet18", "--all")
    assert any(" BatchNorm2d " in line for line in out.splitlines())
    _, out, _ = run(capsys, "summary", "resnet18", "--depth", "1")
    names = [line.split()[0] for line in out.splitlines()[2:] if line.strip()][:-1]
    assert names[:6] == ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def test_summary_json_csv_md(capsys) -> None:
    code, out, _ = run(capsys, "summary", "lenet5", "--format", "json")
    d = json.loads(out)
    assert code == 0 and d["total_params"] == 61_706 and d["receptive_field"] == 16
    assert d["total_macs"] == sum(r["macs"] for r in d["layers"])
    code, out, _ = run(capsys, "summary", "lenet5", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[-1]["name"] == "total" and int(rows[-1]["params"]) == 61_706
    assert sum(int(r["params"]) for r in rows[:-1]) == 61_706
    assert rows[0]["kernel"] == "5" and rows[0]["out_h"] == "28"
    code, out, _ = run(capsys, "summary", "lenet5", "--format", "md")
    assert out.startswith("| layer | kind |") and out.splitlines()[1].startswith("| --- |")


def test_summary_input_option(capsys) -> None:
    code, out, _ = run(capsys, "summary", "resnet18", "--input", "3x64x64", "--format", "json")
    assert code == 0 and json.loads(out)["input_size"] == [3, 64, 64]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["summary", "vgg16", "--input", "3x16x16"], "features.30 (MaxPool2d)"),
        (["summary", "vgg16", "--input", "3xbig"], "--input takes CxHxW"),
        (["summary", "vgg16", "--input", "224x224"], "3x224x224"),
        (["summary", "vgg16", "--depth", "0"], "--depth"),
        (["summary", "vgg61"], "unknown model"),
        (["compare", "resnet18", "vgg61"], "unknown model"),
    ],
)
def test_errors_are_one_line(capsys, argv: list[str], needle: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("cnnzoo: error: ") and needle in err


def test_compare_table_and_json(capsys) -> None:
    code, out, _ = run(capsys, "compare", "resnet50", "lenet5", "--format", "json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["resnet50"]["top1"] == 76.13 and rows["lenet5"]["top1"] is None
    assert rows["resnet50"]["params"] == 25_557_032 and rows["resnet50"]["macs"] == 4_089_184_256
    assert rows["resnet50"]["receptive_field"] == 427 and rows["lenet5"]["input"] == "1x28x28"
    # torchvision's acc@5 for the same weights; ResNet's ILSVRC 2015 ensemble (He et al. 2015, Table 5).
    assert rows["resnet50"]["top5"] == 92.862 and rows["resnet50"]["ilsvrc_top5_error"] == 3.57
    assert rows["lenet5"]["top5"] is None and rows["lenet5"]["ilsvrc_top5_error"] is None
    code, out, _ = run(capsys, "compare", "alexnet", "vgg16")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["name", "input"] and "top-1" in lines[0]
    assert lines[0].endswith("top-5 err (%)  ILSVRC top-5 err (%)")
    # AlexNet: torchvision's 56.52 / 100 - 79.066; the ILSVRC 2012 entry's 16.4 (Krizhevsky et al. 2012).
    assert lines[2].split() == [
        "alexnet",
        "3x224x224",
        "61.10",
        "0.714",
        "2.3",
        "195",
        "56.52",
        "20.93",
        "16.4",
    ]


def test_compare_plot_is_written_atomically(capsys, tmp_path) -> None:
    target = tmp_path / "acc.png"
    code, _, err = run(capsys, "compare", "alexnet", "resnet18", "vgg16", "--plot", str(target))
    assert code == 0 and "wrote" in err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["acc.png"]  # no temporary file left


def test_compare_plot_without_matplotlib(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, out, err = run(capsys, "compare", "resnet18", "--plot", str(tmp_path / "x.png"))
    assert code == 2 and out == "" and "pip install 'cnnzoo[plot]'" in err
    assert not (tmp_path / "x.png").exists()


def test_published_top1_is_torchvision_s() -> None:
    from torchvision.models import get_model_weights

    for name, top1 in PUBLISHED_TOP1.items():
        meta = get_model_weights(name).IMAGENET1K_V1.meta
        assert meta["_metrics"]["ImageNet-1K"]["acc@1"] == top1, name
    assert published_top1("resnet18") == 69.758 and published_top1("resnet20") is None


def test_summary_builds_lenet_for_the_input_size(capsys) -> None:
    # LeNet-5's flatten ties fc1 to the input: at 32x32 (conv1 keeps the size, padding 2) conv2 gives 16x6x6,
    # so fc1 has 576*120 + 120 weights instead of 400*120 + 120: 61,706 + 176*120 = 82,826 (by hand).
    code, out, err = run(capsys, "summary", "lenet5", "--input", "1x32x32")
    assert code == 0 and "lenet5 at 1x32x32: 82,826 parameters" in out
    code, out, err = run(capsys, "summary", "lenet5", "--input", "1x32x28")
    assert code == 2 and "square inputs only" in err and "--input CxNxN" in err


def test_compare_plot_says_what_it_could_not_place(capsys, tmp_path) -> None:
    code, out, err = run(capsys, "compare", "alexnet", "alexnet_paper", "--plot", str(tmp_path / "a.png"))
    assert code == 0 and "named under the plot: alexnet_paper" in err
    assert "memory (MiB)" in out.splitlines()[0]  # the unit `summary` prints
    code, _, err = run(capsys, "compare", "resnet20", "resnet56", "--plot", str(tmp_path / "c.png"))
    assert code == 0 and "plotted parameters against MACs" in err
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_shows_groups_where_the_efficient_nets_use_them(capsys):
    """Issue 17: depthwise and grouped convolutions looked like ordinary ones in the table.
    Oracle: torchvision's own modules (a depthwise conv has groups == its input channels)."""
    import torchvision

    def column(name: str) -> list[str]:
        assert main(["summary", name]) == 0
        lines = capsys.readouterr().out.splitlines()
        header = lines[0].split()
        if "groups" not in header:
            return []
        start = lines[0].index("groups")
        return [line[start : start + len("groups")].strip() for line in lines[2:] if line.strip()]

    tv = torchvision.models.mobilenet_v2()
    depthwise = [m for m in tv.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert column("mobilenet_v2").count("dw") == len(depthwise) == 17
    tv = torchvision.models.resnext50_32x4d()
    grouped = [m for m in tv.modules() if isinstance(m, nn.Conv2d) and m.groups == 32]
    assert column("resnext50_32x4d").count("32") == len(grouped) == 16
    assert column("vgg16") == []  # a dense net keeps the lecture's columns


def test_summary_takes_a_batch_inclusive_input_as_torchinfo_users_type_it(capsys):
    assert main(["summary", "resnet18", "--input", "3x224x224", "--format", "json"]) == 0
    per_image = json.loads(capsys.readouterr().out)
    assert main(["summary", "resnet18", "--input", "1x3x224x224", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == per_image
    assert main(["summary", "resnet18", "--input", "8x3x224x224", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == per_image and "figures are per image" in err


USER_NET = """
import torch.nn as nn

class TinyNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width * 28 * 28, 10)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))
"""


def _summary_json(capsys, *argv: str) -> dict:
    assert main(["summary", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_summary_of_your_own_model_a_run_and_builder_options(tmp_path, capsys):
    """Issue 17: summary took registered names only."""
    (tmp_path / "net.py").write_text(USER_NET)
    # Hand count: conv 4 x 1 x 3 x 3 + 4 = 40; fc 4 x 28 x 28 x 10 + 10 = 31,370.
    p = _summary_json(
        capsys, f"{tmp_path / 'net.py'}:TinyNet", "--input", "1x28x28", "--model-arg", "width=4"
    )
    assert p["total_params"] == 40 + 31_370
    # package.module:function, called: torchvision's own builder (its documented 11,689,512).
    assert _summary_json(capsys, "torchvision.models:resnet18")["total_params"] == 11_689_512
    # LeNet-5 built for 32 x 32 (fc1 takes 16 x 6 x 6): 61,706 + 16 x 11 x 120 = 82,826.
    p = _summary_json(capsys, "lenet5", "--model-arg", "img_size=32")
    assert p["total_params"] == 82_826 and p["input_size"] == [1, 32, 32]

    import train_fakes
    from cnnzoo.train import train

    train(train_fakes.config(tmp_path, epochs=1), data=train_fakes.make_loaders, log=lambda *_: None)
    p = _summary_json(capsys, str(tmp_path / "run"))
    assert p["input_size"] == [1, 12, 12]  # the run's own input size, from its header
    assert main(["summary", f"{tmp_path / 'net.py'}:Nope"]) == 2
    assert "has no attribute 'Nope'" in capsys.readouterr().err


def test_summary_says_where_the_field_becomes_the_whole_input(capsys) -> None:
    """Issue 17: EfficientNet-B0 reported 851 pixels, but its squeeze-and-excitation gates (Tan &
    Le 2019; Hu et al. 2017) multiply a global average back into the map: from the first one on,
    every unit sees every pixel. Every format says so; the text table adds a note line why."""
    code, out, _ = run(capsys, "summary", "efficientnet_b0", "--format", "json")
    d = json.loads(out)
    assert code == 0 and d["receptive_field"] == "whole input"
    assert d["notes"][0].startswith("the receptive field is the whole input from features.1.0.block.1.mul")
    fields = [r["receptive_field"] for r in d["layers"] if r["receptive_field"] is not None]
    assert fields[:2] == [3, 7] and set(fields[2:]) == {"whole input"}  # stem, depthwise, then the gate
    code, out, _ = run(capsys, "summary", "efficientnet_b0", "--format", "csv")
    assert out.strip().splitlines()[-1].split(",")[-2] == "whole input"  # the totals row
    code, out, _ = run(capsys, "summary", "efficientnet_b0")
    lines = out.strip().splitlines()
    assert lines[-2].startswith("note: the receptive field is the whole input from features.1.0.block.1.mul")
    assert "receptive field whole input" in lines[-1]
    code, out, _ = run(capsys, "summary", "resnet18")  # no global operation: a number, no note
    assert "note:" not in out and "receptive field 435" in out.strip().splitlines()[-1]
