"""Streaming inference: `cnnzoo predict` / `count predict` over files, folders and globs, the one
image decoder (draft mode, decompression bombs, corrupt files), the output formats (JSON lines,
CSV without formula injection, `--out` written atomically) and `cnnzoo eval --tta`."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import cnnzoo
import train_fakes
from cnnzoo.cli.main import main
from cnnzoo.cli.streaming import csv_safe
from cnnzoo.data.decode import ImageDecodeError, decode_image, expand_images
from cnnzoo.train.evaluate import load_model, predict, predict_stream, tta_log_probs, tta_views

CLASSES = ["cat", "=dog", "owl"]  # "=dog": a class name a spreadsheet would run as a formula
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A ResNet-20 (32-px input, 3 classes) saved with the trainer's run metadata."""
    tmp = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet20", num_classes=3)
    run = {
        "model": "resnet20",
        "num_classes": 3,
        "in_chans": 3,
        "input_size": [3, 32, 32],
        "classes": CLASSES,
        "mean": MEAN,
        "std": STD,
    }
    cnnzoo.save_weights(model, tmp / "model.safetensors", metadata={"cnnzoo_run": run})
    return tmp


def write_images(folder: Path, n: int, *, size: int = 40, seed: int = 1, ext: str = "png") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(n):
        pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
        paths.append(str(folder / f"img{i:03d}.{ext}"))
        Image.fromarray(pixels).save(paths[-1])
    return paths


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# -- the decoder ---------------------------------------------------------------------------------
def old_predict_probs(run_dir: Path, paths: list[str]) -> torch.Tensor:
    """The whole-batch path `predict` had before streaming, restated: PIL to RGB, antialiased
    bilinear resize to the input size, the run's normalisation, one eager forward of all images."""
    loaded = load_model(run_dir)
    mean, std = torch.tensor(MEAN).view(-1, 1, 1), torch.tensor(STD).view(-1, 1, 1)
    batch = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            img = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, 3)
        x = img.permute(2, 0, 1).float().div(255)
        x = F.interpolate(x[None], size=(32, 32), mode="bilinear", antialias=True, align_corners=False)[0]
        batch.append((x - mean) / std)
    with torch.no_grad():
        return loaded.model(torch.stack(batch)).softmax(1)


def test_streaming_predictions_equal_the_old_whole_batch_ones(run_dir, tmp_path):
    paths = write_images(tmp_path / "a", 3, size=40)
    paths += write_images(tmp_path / "b", 2, size=300, seed=2, ext="jpg")  # under 4x: no draft mode
    grey = tmp_path / "grey.png"
    Image.fromarray(torch.randint(0, 256, (20, 50), dtype=torch.uint8).numpy()).save(grey)  # "L", wide
    paths.append(str(grey))
    expected = old_predict_probs(run_dir, paths)
    # Batches of 2 (three forward passes, the last one smaller) give the same numbers.
    got = predict(run_dir, paths, top_k=3, fast=False, batch_size=2)
    assert [r["image"] for r in got] == paths
    for record, probs in zip(got, expected, strict=True):
        by_index = {t["index"]: t["prob"] for t in record["top"]}
        assert [by_index[i] for i in range(3)] == pytest.approx(probs.tolist(), abs=1e-6)
        assert record["top"][0]["class"] == CLASSES[int(probs.argmax())]


def test_jpeg_draft_mode_decodes_huge_images_small_and_normal_ones_exactly(tmp_path):
    big, normal = tmp_path / "big.jpg", tmp_path / "normal.jpg"
    Image.new("RGB", (2048, 1600), (200, 30, 90)).save(big)
    Image.fromarray(torch.randint(0, 256, (600, 500, 3), dtype=torch.uint8).numpy()).save(normal)
    full, _ = decode_image(big)
    small, mode = decode_image(big, min_size=(128, 128))
    # Draft keeps at least twice min_size (256): 1/4 scale (400 x 512) is the smallest that does.
    assert tuple(full.shape) == (3, 1600, 2048) and tuple(small.shape) == (3, 400, 512) and mode == "RGB"
    assert (small.float().mean((1, 2)) - torch.tensor([200.0, 30.0, 90.0])).abs().max() < 3
    a, _ = decode_image(normal)
    b, _ = decode_image(normal, min_size=(256, 256))  # 600 px < 4 x 256: decoded in full
    assert torch.equal(a, b)
    grey, mode = decode_image(normal, channels=1)
    assert grey.shape == (1, 600, 500) and mode == "RGB"


def test_decompression_bombs_are_one_line_errors_naming_the_file(tmp_path, monkeypatch, capsys, run_dir):
    warned, refused = tmp_path / "warned.png", tmp_path / "refused.png"
    Image.new("RGB", (40, 40)).save(warned)  # 1,600 pixels: Pillow warns past the limit...
    Image.new("RGB", (64, 64)).save(refused)  # 4,096: ...and raises past twice the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for path in (warned, refused):
        with pytest.raises(ImageDecodeError, match="decompression-bomb limit of 1,000"):
            decode_image(path)
        code, out, err = cli(capsys, "predict", str(run_dir), str(path))
        assert code == 2 and out == ""
        assert err.startswith("cnnzoo: error: ") and err.count("\n") == 1 and str(path) in err


def test_corrupt_and_missing_files(tmp_path, capsys, run_dir):
    good = write_images(tmp_path, 2)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    for path in (bad, truncated):
        code, out, err = cli(capsys, "predict", str(run_dir), good[0], str(path))
        assert code == 2 and err.count("\n") == 1 and f"image '{path}' cannot be decoded" in err
    code, _, err = cli(capsys, "predict", str(run_dir), str(tmp_path / "nope.png"))
    assert code == 2 and "nope.png' does not exist" in err
    # With --skip-unreadable the run goes on: an "error" record in place, a count on stderr.
    argv = ["predict", str(run_dir), good[0], str(bad), good[1], "--format", "json", "--skip-unreadable"]
    code, out, err = cli(capsys, *argv)
    records = json_lines(out)
    assert code == 0 and [r["image"] for r in records] == [good[0], str(bad), good[1]]
    assert "top" in records[0] and "cannot be decoded" in records[1]["error"] and "top" in records[2]
    assert "skipped 1 of 3 images that could not be read" in err


# -- inputs and outputs --------------------------------------------------------------------------
def test_folders_and_globs_expand_to_sorted_image_files(tmp_path):
    write_images(tmp_path / "shots" / "b", 2)
    write_images(tmp_path / "shots" / "a", 2, ext="jpg")
    (tmp_path / "shots" / "readme.txt").write_text("not an image")
    folder = [Path(p).relative_to(tmp_path).as_posix() for p in expand_images([tmp_path / "shots"])]
    assert folder == ["shots/a/img000.jpg", "shots/a/img001.jpg", "shots/b/img000.png", "shots/b/img001.png"]
    found = expand_images([str(tmp_path / "shots" / "**" / "*.png"), str(tmp_path / "shots/a/img001.jpg")])
    assert [Path(p).name for p in found] == ["img000.png", "img001.png", "img001.jpg"]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_images([str(tmp_path / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        expand_images([tmp_path / "empty"])


def test_many_files_stream_in_batches_as_json_lines(tmp_path, capsys, run_dir):
    paths = write_images(tmp_path / "many", 150, size=12)
    stream = predict_stream(run_dir, [str(tmp_path / "many")], top_k=2, batch_size=16, fast=False)
    it = iter(stream)
    first = next(it)  # the first result comes after one batch of 16, not after all 150
    assert first["image"] == paths[0] and stream.runtime is not None
    assert len(list(it)) == 149
    code, out, err = cli(
        capsys, "predict", str(run_dir), str(tmp_path / "many" / "*.png"), "--format", "json", "--top-k", "2"
    )
    records = json_lines(out)
    assert code == 0 and [r["image"] for r in records] == paths
    assert all(len(r["top"]) == 2 and r["top"][0]["prob"] >= r["top"][1]["prob"] for r in records)
    assert "predict ran on" in err and "150/150" not in err  # no bar: not a terminal, under 1000
    code, _, err = cli(
        capsys, "predict", str(run_dir), str(tmp_path / "many"), "--progress", "--format", "csv", "--no-fast"
    )
    assert code == 0 and "predict [########################] 150/150" in err
    assert "predict ran on eager PyTorch (fast=False)" in err


def test_csv_quotes_formula_like_cells(tmp_path, capsys, run_dir):
    paths = []
    for name in ("=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM.png", "plain.png"):
        Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    code, out, _ = cli(capsys, "predict", str(run_dir), *paths, "--format", "csv", "--top-k", "3")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 15 and list(rows[0]) == ["image", "rank", "class", "prob"]
    assert {r["class"] for r in rows} == {"cat", "'=dog", "owl"}
    # Image names are the paths given: absolute here, so harmless; relative ones are tested below.
    assert {r["image"] for r in rows} == set(paths)
    names = [Path(p).name for p in paths]
    assert [csv_safe(n) for n in names] == [
        "'=HYPERLINK(1).png",
        "'+1.png",
        "'-2.png",
        "'@SUM.png",
        "plain.png",
    ]
    assert csv_safe(-1.5) == -1.5  # numbers are not text


def test_csv_escapes_relative_file_names(tmp_path, capsys, run_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save("=cmd.png")
    Image.new("RGB", (8, 8)).save("@x.png")
    Image.new("RGB", (8, 8)).save("+1.png")
    argv = ["predict", str(run_dir), "=cmd.png", "@x.png", "+1.png", "--format", "csv", "--top-k", "1"]
    code, out, _ = cli(capsys, *argv)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["image"] for r in rows] == ["'=cmd.png", "'@x.png", "'+1.png"]


def test_out_file_is_written_atomically_and_never_overwritten_silently(tmp_path, capsys, run_dir):
    paths = write_images(tmp_path / "imgs", 3)
    target = tmp_path / "results.jsonl"
    code, out, err = cli(capsys, "predict", str(run_dir), *paths, "--out", str(target))
    assert code == 0 and out == "" and f"wrote {target}" in err
    records = json_lines(target.read_text())  # .jsonl: JSON lines without --format
    assert [r["image"] for r in records] == paths
    code, _, err = cli(capsys, "predict", str(run_dir), *paths, "--out", str(target))
    assert code == 2 and "already exists; pass --overwrite" in err
    # A failure half-way leaves the old file as it was and no temporary file behind.
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    before = target.read_bytes()
    code, _, err = cli(capsys, "predict", str(run_dir), *paths, str(bad), "--out", str(target), "--overwrite")
    assert code == 2 and target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "imgs", "results.jsonl"]
    code, _, _ = cli(
        capsys, "predict", str(run_dir), *paths, "--out", str(target), "--overwrite", "--format", "csv"
    )
    assert code == 0 and target.read_text().startswith("image,rank,class,prob\n")


def test_workers_give_the_same_results(tmp_path, run_dir):
    paths = write_images(tmp_path, 10)
    one = list(predict_stream(run_dir, paths, fast=False, batch_size=4))
    two = list(predict_stream(run_dir, paths, fast=False, batch_size=4, workers=2))
    assert one == two


# -- count predict -------------------------------------------------------------------------------
def test_count_predict_streams_json_lines_over_a_folder(tmp_path, capsys):
    from cnnzoo.counting import create_counter

    model = create_counter("resnet18_counter")
    cnnzoo.save_weights(
        model, tmp_path / "run" / "model.safetensors", metadata={"cnnzoo_counter": model.metadata()}
    )
    paths = write_images(tmp_path / "crowd", 3, size=32, ext="jpg")
    bad = tmp_path / "crowd" / "zz.jpg"
    bad.write_bytes(b"junk")
    argv = [
        "count",
        "predict",
        str(tmp_path / "run"),
        str(tmp_path / "crowd"),
        "--out",
        "",
        "--format",
        "json",
    ]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and "zz.jpg' cannot be decoded" in err and err.count("\n") == 1
    code, out, err = cli(capsys, *argv, "--skip-unreadable")
    records = json_lines(out)
    assert code == 0 and [r["image"] for r in records] == [*paths, str(bad)]
    assert all(isinstance(r["count"], float) for r in records[:3]) and "error" in records[3]
    code, out, _ = cli(capsys, *argv[:-1], "csv", "--skip-unreadable")
    assert code == 0 and out.splitlines()[0] == "image,count,picture,error" and len(out.splitlines()) == 5


# -- eval --tta ----------------------------------------------------------------------------------
class TopLeft(nn.Module):
    """Two-class logits (v / 10, 0) from the top-left pixel v of each view: softmax p0 = sigmoid(v / 10)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 0, 0] / 10
        return torch.stack([v, torch.zeros_like(v)], 1)


def hand_p0(values: list[float]) -> float:
    return sum(1 / (1 + math.exp(-v / 10)) for v in values) / len(values)


@pytest.mark.parametrize(
    ("protocol", "top_left_values"),
    [
        # A 16 x 16 image holding 16 * row + column; crops of 14 (16 = 14 * 256/224: no resize).
        ("center", [0]),
        ("flip", [0, 15]),  # the mirror's top-left is the image's top-right
        # Corners (0, 0), (0, 2), (2, 0), (2, 2) and the centre (1, 1): top-left 0, 2, 32, 34, 17.
        ("5crop", [0, 2, 32, 34, 17]),
        # ...and their mirrors, whose top-left is each crop's top-right (column + 13).
        ("10crop", [0, 2, 32, 34, 17, 13, 15, 45, 47, 30]),
    ],
)
def test_tta_averages_the_softmax_of_the_protocols_views(protocol, top_left_values):
    x = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16)
    crop = None if protocol in ("center", "flip") else (14, 14)
    log_probs = tta_log_probs(TopLeft(), x, protocol=protocol, crop_size=crop)
    assert float(log_probs.exp()[0, 0]) == pytest.approx(hand_p0(top_left_values), rel=1e-6)
    assert float(log_probs.exp().sum()) == pytest.approx(1.0, rel=1e-6)


def test_tta_crops_match_torchvision_ten_crop_at_the_models_input_size():
    from torchvision.transforms.v2 import functional as TF

    x = torch.randn(2, 3, 28, 28)
    views = list(tta_views(x, protocol="10crop"))
    # 28 px (Fashion-MNIST) upsampled by 256/224 is 32 px; torchvision's ten_crop of it is the oracle.
    # Its mirrors are the five crops of the mirrored image (tr, tl, br, bl, centre): the same set
    # when the margin is even, as here (with an odd one its mirrored centre is one pixel off).
    big = TF.resize(x, [32, 32], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    expected = TF.ten_crop(big, [28, 28])
    assert len(views) == 10
    for ours in views:
        assert sum(torch.allclose(ours, theirs, atol=1e-5) for theirs in expected) == 1
    x = torch.randn(2, 3, 32, 32)  # CIFAR: 36.57 px, rounded to 37
    assert [v.shape for v in tta_views(x, protocol="5crop")] == [torch.Size([2, 3, 32, 32])] * 5
    with pytest.raises(ValueError, match="unknown test-time protocol"):
        list(tta_views(x, protocol="12crop"))


def test_eval_tta_records_the_protocol_and_matches_a_manual_ten_crop(tmp_path, capsys, monkeypatch):
    from torchvision.transforms.v2 import functional as TF

    fake = types.ModuleType("cnnzoo.data")
    fake.make_loaders = train_fakes.make_loaders
    monkeypatch.setitem(sys.modules, "cnnzoo.data", fake)
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet20", num_classes=4, in_chans=1).eval()
    run = {"model": "resnet20", "num_classes": 4, "in_chans": 1, "classes": train_fakes.Info().classes}
    cnnzoo.save_weights(model, tmp_path / "m.safetensors", metadata={"cnnzoo_run": run})
    argv = ["eval", str(tmp_path / "m.safetensors"), "--data", "fake", "--confusion", "", "--format", "json"]
    results = {}
    for tta in ("center", "10crop"):
        code, out, err = cli(capsys, *argv, "--tta", tta, "--progress")
        results[tta] = json.loads(out)
        assert code == 0 and results[tta]["tta"] == tta and f"eval ({tta}) [" in err
    # The oracle: torchvision's ten_crop of each test image resized to 12 * 256/224 = 14 px.
    *_, test, _ = train_fakes.make_loaders("fake", batch_size=1000, val_fraction=0.0)
    x, y = next(iter(test))
    with torch.no_grad():
        crops = TF.ten_crop(TF.resize(x, [14, 14], antialias=False), [12, 12])
        probs = torch.stack([model(c).softmax(1) for c in crops]).mean(0)
    assert results["10crop"]["test_top1"] == pytest.approx(float((probs.argmax(1) == y).float().mean()))
    assert results["10crop"]["test_loss"] == pytest.approx(float(F.nll_loss(probs.log(), y)), rel=1e-5)
    with torch.no_grad():
        plain = model(x)
    assert results["center"]["test_loss"] == pytest.approx(float(F.cross_entropy(plain, y)), rel=1e-5)
    assert results["center"]["test_top1"] == pytest.approx(float((plain.argmax(1) == y).float().mean()))


def test_predict_says_what_it_does_to_a_photo(tmp_path, capsys):
    """Issue 19: a colour photo became a squashed 28x28 grey image without a word."""
    from PIL import Image

    from cnnzoo.cli.main import main
    from cnnzoo.registry import create_model
    from cnnzoo.weights import save_weights

    save_weights(create_model("lenet5"), tmp_path / "lenet5.safetensors")
    Image.new("RGB", (640, 480), (200, 30, 30)).save(tmp_path / "photo.jpg")
    assert (
        main(["predict", str(tmp_path / "lenet5.safetensors"), str(tmp_path / "photo.jpg"), "--no-fast"]) == 0
    )
    err = capsys.readouterr().err
    assert "read as grey and resized to 28x28" in err and "aspect ratio is not kept" in err


def test_eval_reads_the_test_split_with_the_runs_own_augmentation_setting(tmp_path):
    """An image folder trained with the ILSVRC crops is evaluated as it was validated; eval must
    hand the run's augmentation to the loaders (only the training loader augments)."""
    import train_fakes
    from cnnzoo.train import train
    from cnnzoo.train.evaluate import evaluate

    train(train_fakes.config(tmp_path, epochs=1, augment="flip"), data=train_fakes.make_loaders)
    seen = {}

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return train_fakes.make_loaders(*args, **kwargs)

    evaluate(tmp_path / "run", loaders=recording)
    assert seen["augment"] == "flip"
