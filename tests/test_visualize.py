"""`cnnzoo visualize`: each map against an independent oracle, then every KIND through the CLI.

Oracles: a deconvnet written out by hand (Zeiler & Fergus 2013, Sec. 2.1: unpool with the
switches, rectify, transposed filters) and Captum's own `NeuronDeconvolution` on a ReLU net;
Grad-CAM's Eq. 1-2 (Selvaraju et al. 2017) and occlusion (Zeiler & Fergus 2013, Sec. 4.2)
computed by hand on a net that only looks at one known region; brute-force top-k.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.cli.main import main
from cnnzoo.visualize import maps
from cnnzoo.visualize.maps import deconv_project, filter_images, tile, top_activations

sys.path.insert(0, str(Path(__file__).parent))
import train_fakes

pytestmark = pytest.mark.usefixtures("one_thread")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- the deconvnet ----------------------------------------------------------------------------------
def two_layer_net(act: type[nn.Module]) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),  # 12 -> 10
        act(),
        nn.MaxPool2d(2),  # 10 -> 5
        nn.Conv2d(3, 4, 3),  # 5 -> 3
        act(),
    ).eval()


def hand_deconvnet(net: nn.Sequential, x: torch.Tensor, channel: int) -> torch.Tensor:
    """Zeiler & Fergus's deconvnet for this net, layer by layer, from conv2's strongest unit."""
    with torch.no_grad():
        a1 = net[1](net[0](x))
        pooled, switches = F.max_pool2d(a1, 2, return_indices=True)
        a2 = net[3](pooled)
        signal = torch.zeros_like(a2)
        for i in range(x.shape[0]):  # keep each image's strongest activation of the channel only
            flat = a2[i, channel].flatten().argmax()
            signal[i, channel].view(-1)[flat] = 1.0
        r = F.conv_transpose2d(signal, net[3].weight)  # transposed filters, no bias
        r = F.max_unpool2d(r, switches, 2, output_size=a1.shape[-2:])  # unpooling with switches
        r = F.relu(r)  # rectification
        return F.conv_transpose2d(r, net[0].weight)


# A tanh net gets the same projection: the deconvnet rectifies, it does not take derivatives.
@pytest.mark.parametrize("act", [lambda: nn.ReLU(inplace=True), nn.Tanh], ids=["relu-inplace", "tanh"])
def test_deconv_projection_equals_a_hand_written_deconvnet(act):
    net = two_layer_net(act)
    x = torch.randn(5, 1, 12, 12)
    for channel in range(4):
        got = deconv_project(net, net[3], x, channel)
        assert got.shape == x.shape
        assert got.abs().max() > 0
        torch.testing.assert_close(got, hand_deconvnet(net, x, channel), rtol=1e-5, atol=1e-6)
    assert net[1].inplace if isinstance(net[1], nn.ReLU) else True  # restored after the projection


def test_deconv_projection_equals_captums_deconvolution_on_a_relu_net():
    from captum.attr import NeuronDeconvolution

    net = two_layer_net(nn.ReLU)
    x = torch.randn(3, 1, 12, 12)
    ours = deconv_project(net, net[4], x, 2)
    with torch.no_grad():
        fmap = net(x)[:, 2]
    for i in range(3):
        h, w = divmod(int(fmap[i].flatten().argmax()), fmap.shape[-1])
        with pytest.warns(UserWarning):  # Captum announces its hooks
            theirs = NeuronDeconvolution(net, net[4]).attribute(x[i : i + 1], neuron_selector=(2, h, w))
        torch.testing.assert_close(ours[i : i + 1], theirs, rtol=1e-5, atol=1e-7)


def test_top_activations_keep_the_k_strongest_images_of_a_stream():
    net = two_layer_net(nn.ReLU)
    x = torch.randn(23, 1, 12, 12)
    y = torch.arange(23)
    batches = [(x[i : i + 5], y[i : i + 5]) for i in range(0, 23, 5)]
    top = top_activations(net, net[3], batches, [0, 3], k=4)
    with torch.no_grad():
        scores = net[:4](x)[:, [0, 3]].flatten(2).amax(2).T  # brute force over the whole set
    expected = scores.topk(4, dim=1)
    assert top.seen == 23
    torch.testing.assert_close(top.values, expected.values)
    assert torch.equal(top.index, expected.indices)
    assert torch.equal(top.labels, y[expected.indices])
    assert torch.equal(top.images[1, 0], x[expected.indices[1, 0]])


def test_support_box_is_the_receptive_field_of_the_projected_unit():
    net = two_layer_net(nn.ReLU)
    net[0].weight.data.abs_()  # positive weights: no accidental zero inside the field
    net[3].weight.data.abs_()
    x = torch.rand(1, 1, 12, 12)
    proj = deconv_project(net, net[3], x, 0)
    with torch.no_grad():
        h, w = divmod(int(net[:4](x)[0, 0].flatten().argmax()), 3)
    t, b, l_, r = maps.support_box(proj[0])
    # conv2's unit (h, w) sees pooled rows h..h+2, i.e. a1 rows 2h..2h+5, i.e. input rows 2h..2h+7.
    assert b - t <= 8 and r - l_ <= 8
    assert t >= 2 * h and b <= 2 * h + 8 and l_ >= 2 * w and r <= 2 * w + 8


# -- filter mosaics ---------------------------------------------------------------------------------
def test_filter_images_normalise_each_filter_to_0_1():
    w = torch.randn(5, 3, 4, 4) * torch.arange(1, 6).view(-1, 1, 1, 1)  # very different scales
    img = filter_images(w)
    assert img.shape == (5, 3, 4, 4)
    assert torch.allclose(img.flatten(1).amin(1), torch.zeros(5))
    assert torch.allclose(img.flatten(1).amax(1), torch.ones(5))
    deep = filter_images(torch.randn(6, 8, 3, 3), mean_over_inputs=True)
    assert deep.shape == (6, 1, 3, 3)


def test_filter_images_of_a_deeper_layer_are_each_filters_mean_kernel():
    w = torch.randn(4, 8, 3, 3)
    mean = w.mean(1, keepdim=True)
    lo, hi = mean.flatten(1).amin(1).view(-1, 1, 1, 1), mean.flatten(1).amax(1).view(-1, 1, 1, 1)
    torch.testing.assert_close(filter_images(w, mean_over_inputs=True), (mean - lo) / (hi - lo))


def test_tile_lays_filters_out_row_by_row():
    images = torch.arange(7).float().view(7, 1, 1, 1).expand(7, 3, 2, 2)
    mosaic = tile(images, ncols=3, pad=1, fill=-1.0)
    assert mosaic.shape == (3, 1 + 3 * 3, 1 + 3 * 3)  # ceil(7 / 3) = 3 rows of 3
    for i in range(7):
        r, c = divmod(i, 3)
        top, left = 1 + 3 * r, 1 + 3 * c
        assert torch.all(mosaic[:, top : top + 2, left : left + 2] == i)
    assert torch.all(mosaic[:, 0] == -1) and torch.all(mosaic[:, :, 3] == -1)  # gaps between tiles
    assert torch.all(mosaic[:, 7:9, 4:9] == -1)  # the two empty places after image 6
    assert tile(torch.zeros(16, 1, 5, 5)).shape == (1, 1 + 4 * 6, 1 + 4 * 6)  # 4 x 4 by default


# -- attributions on a net that looks at one known region -------------------------------------------
SIDE = 8
REGION = (slice(1, 4), slice(2, 5))  # rows 1-3, columns 2-4


class RegionNet(nn.Module):
    """Class 0's score reads only the region; class 1's only the rest (fixed weights)."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, SIDE, SIDE)
        mask[0, 0][REGION] = 1.0
        self.register_buffer("mask", mask)
        self.features = nn.ReLU()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(torch.cat([x * self.mask, x * (1 - self.mask)], 1))  # (N, 2, H, W)
        return self.fc(a.mean((2, 3)))


def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 1, SIDE, SIDE) + 0.1


def test_gradcam_is_selvarajus_equation_and_lights_only_the_region():
    net, x = RegionNet().eval(), image()
    cam = maps.gradcam(net, net.features, x, 0)
    # Eq. 1: alpha_k = mean over (i, j) of d y_0 / d A^k_ij = fc.weight[0, k] / (H W);
    # Eq. 2: ReLU(sum_k alpha_k A^k).
    a = torch.cat([x * net.mask, x * (1 - net.mask)], 1).relu()
    alpha = net.fc.weight[0] / SIDE**2
    hand = (alpha.view(1, 2, 1, 1) * a).sum(1, keepdim=True).relu()
    torch.testing.assert_close(cam, hand.detach())
    outside = torch.ones(SIDE, SIDE, dtype=torch.bool)
    outside[REGION] = False
    assert cam[0, 0][REGION].min() > 0 and cam[0, 0][outside].abs().max() == 0


def test_gradcam_at_a_coarse_layer_is_upsampled_to_the_input():
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(8, 3)
    )
    cam = maps.gradcam(net.eval(), net[2], torch.rand(2, 1, 8, 8), [0, 2])
    assert cam.shape == (2, 1, 8, 8) and (cam >= 0).all()


@pytest.mark.parametrize("fill", [0.0, -0.8])  # the mean colour; black for mean 0.4, std 0.5
def test_occlusion_equals_the_drop_in_probability_computed_by_hand(fill):
    net, x = RegionNet().eval(), image()
    window, stride = 3, 1
    got = maps.occlusion(net, x, 0, window=window, stride=stride, fill=[fill], batch=7)
    # By hand: slide a `fill` square, record p0(x) - p0(occluded), average over covering squares.
    with torch.no_grad():
        p = net(x).softmax(1)[0, 0]
        total = torch.zeros(SIDE, SIDE)
        count = torch.zeros(SIDE, SIDE)
        for top in range(0, SIDE - window + 1, stride):
            for left in range(0, SIDE - window + 1, stride):
                hidden = x.clone()
                hidden[..., top : top + window, left : left + window] = fill
                total[top : top + window, left : left + window] += p - net(hidden).softmax(1)[0, 0]
                count[top : top + window, left : left + window] += 1
    torch.testing.assert_close(got[0, 0], total / count)
    peak = divmod(int(got[0, 0].flatten().argmax()), SIDE)
    assert 1 <= peak[0] <= 3 and 2 <= peak[1] <= 4  # hiding the region hurts class 0 most


def test_default_layer_is_the_last_feature_map_before_the_head():
    from cnnzoo.registry import create_model
    from cnnzoo.visualize.subject import default_layer

    # Grad-CAM's choice; resnet20's empty final norm (nn.Identity) is no layer of its own.
    assert default_layer(create_model("lenet5").eval(), (1, 28, 28)) == "pool2"
    assert default_layer(create_model("resnet20").eval(), (3, 32, 32)) == "layer3.2.act_out"


def test_saliency_is_the_input_gradients_magnitude():
    net, x = RegionNet().eval(), image()
    sal = maps.saliency(net, x, 0)
    # d y_0 / d x = 2 / (H W) inside the region (x > 0 there), 0 outside.
    torch.testing.assert_close(sal[0, 0], 2.0 * net.mask[0, 0] / SIDE**2)


# -- the CLI on a zoo model and on a trained run ----------------------------------------------------
@pytest.fixture
def inputs(tmp_path):
    from PIL import Image

    paths = []
    imgs, _ = train_fakes.make_images(2, seed=3)
    for i, img in enumerate(imgs):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(img[0].numpy()).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def fake_data(monkeypatch):
    """`--data fake` (and a run trained on it) streams train_fakes' images instead of a download."""
    from cnnzoo.data import sources

    def load_arrays(name, split="train", root=None, *, download=False):
        return train_fakes.make_images(40, seed=5)

    monkeypatch.setattr(sources, "load_arrays", load_arrays)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from cnnzoo.train import train

    tmp = tmp_path_factory.mktemp("run")
    before = torch.get_num_threads()
    train(train_fakes.config(tmp, epochs=1), data=train_fakes.make_loaders, log=lambda *_: None)
    torch.set_num_threads(before)
    return str(tmp / "run")


KIND_ARGS = {
    "filters": [],
    "activations": ["IMAGES"],
    "deconv": ["--data", "fake", "--channels", "0,2", "--top", "4", "--batch-size", "16"],
    "gradcam": ["IMAGES", "--class", "1"],
    "saliency": ["IMAGES"],
    "occlusion": ["IMAGES", "--window", "7", "--stride", "7", "--fill", "black"],
}


# resnet20 takes RGB and the fake data is grey: its deconv is the refusal tested further down.
CASES = [
    (k, s)
    for s in ("lenet5", "resnet20", "trained-run")
    for k in KIND_ARGS
    if (k, s) != ("deconv", "resnet20")
]


@pytest.mark.parametrize("kind, source", CASES)
def test_every_kind_writes_pngs(kind, source, tmp_path, inputs, fake_data, trained_run, capsys):
    src = trained_run if source == "trained-run" else source
    args = []
    for a in KIND_ARGS[kind]:
        args += inputs if a == "IMAGES" else [a]
    out = tmp_path / "out"
    assert main(["visualize", kind, src, *args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed and all(Path(p).parent == out for p in printed)
    for p in printed:
        assert Path(p).read_bytes()[:8] == PNG_MAGIC
    expected = {"filters": 1, "deconv": 1}.get(kind, len(inputs))
    assert len(printed) == expected


def test_an_existing_png_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["visualize", "filters", "lenet5", "--out", str(out)]) == 0
    before = (out / "filters-conv1.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["visualize", "filters", "lenet5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "filters-conv1.png").stat().st_mtime_ns == before
    assert main(["visualize", "filters", "lenet5", "--out", str(out), "--overwrite"]) == 0


def test_an_unknown_layer_is_one_line_listing_valid_names(tmp_path, capsys):
    assert main(["visualize", "filters", "lenet5", "--layer", "conv9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "conv9" in err and "conv1" in err and "cnnzoo summary lenet5" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["filters", "lenet5", "--layer", "fc1"], "not a Conv2d"),
        (["activations", "lenet5"], "needs image files"),
        (["deconv", "lenet5"], "--data"),
        (["deconv", "resnet20", "--data", "fake"], "1-channel images"),
        (["deconv", "lenet5", "--data", "fake", "--channels", "16"], "conv2 has 16 channels"),
        (["gradcam", "lenet5", "IMG", "--class", "Sneaker"], "not one of the model's classes"),
        (["saliency", "nonsense-model", "IMG"], "neither a run folder"),
    ],
)
def test_mistakes_are_one_line(argv, message, tmp_path, inputs, fake_data, capsys):
    argv = [inputs[0] if a == "IMG" else a for a in argv]
    assert main(["visualize", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_attribution_kinds_without_captum_name_the_extra(tmp_path, inputs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "captum", None)  # import captum now raises ImportError
    assert main(["visualize", "gradcam", "lenet5", inputs[0], "--out", str(tmp_path)]) == 2
    assert "pip install 'cnnzoo[viz]'" in capsys.readouterr().err


def test_titles_say_when_weights_are_random(trained_run):
    from cnnzoo.visualize.figures import filters_figure
    from cnnzoo.visualize.subject import load_subject

    for source, random in (("lenet5", True), (trained_run, False)):
        subject = load_subject(source)
        w = subject.model.conv1.weight
        fig = filters_figure(subject, "conv1", filter_images(w), mean_over_inputs=False, in_chans=1)
        title = fig.axes[0].get_title()
        assert ("RANDOM weights" in title) is random
        assert "conv1: 6 filters of 5x5" in title
        assert fig.axes[1].get_ylabel().startswith("weight, scaled per filter")  # the colour bar
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert load_subject(trained_run).data == "fake"


def test_default_out_is_beside_the_run_or_named_after_the_model(tmp_path, trained_run, monkeypatch, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    monkeypatch.chdir(tmp_path)
    assert main(["visualize", "filters", str(run)]) == 0
    assert sorted(p.name for p in (run / "visualize").iterdir()) == ["filters-conv1.png"]
    assert main(["visualize", "filters", "lenet5"]) == 0
    assert (tmp_path / "visualize-lenet5" / "filters-conv1.png").is_file()
