"""Counting runs on tiny synthetic ShanghaiTech data: exact targets under augmentation, a short run
that beats the predict-the-mean baseline, resume, and the `cnnzoo count` verbs end to end."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch

from cnnzoo.cli.main import main
from cnnzoo.counting import (
    CountConfig,
    CountingBatches,
    ShanghaiTech,
    density_map,
    sum_pool,
    train_counter,
    write_synthetic,
)
from cnnzoo.counting.train import _normalise, resolve_count_config
from cnnzoo.weights import save_weights

QUIET = lambda *_: None  # noqa: E731


@pytest.fixture
def one_thread():
    # Two pytest workers share two cores: more threads per process only spin against each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def crowds(tmp_path_factory):
    root = tmp_path_factory.mktemp("crowds")
    write_synthetic(root, parts=("B",), train=48, test=16, size=(96, 96), max_people=60, seed=1)
    return root


def test_targets_keep_the_count_under_scaling_and_flips(crowds):
    ds = ShanghaiTech(crowds, "B", "train")
    batches = CountingBatches(
        ds,
        batch_size=4,
        crop=None,
        scale=(0.7, 1.3),
        flip=True,
        density={"method": "adaptive", "sigma": 4.0},
        seed=3,
    )
    seen = 0
    for x, target, counts in batches.epoch(0):
        assert x.shape[0] == target.shape[0] == len(counts)
        assert (x.shape[2] // 8, x.shape[3] // 8) == target.shape[2:]
        np.testing.assert_allclose(target.sum((1, 2, 3)) / 100.0, counts, atol=1e-3)
        seen += len(counts)
    assert seen == len(ds)


def test_crops_are_stride_aligned_slices_of_the_image_and_its_pooled_map(crowds):
    ds = ShanghaiTech(crowds, "B", "train")
    density = {"method": "fixed", "sigma": 2.0}
    batches = CountingBatches(
        ds, batch_size=1, crop=(32, 40), scale=None, flip=False, density=density, seed=0
    )
    rng = np.random.default_rng(0)
    for i in range(4):
        x, target, _ = batches.sample(i, rng)
        full = 100.0 * sum_pool(density_map(ds.points(i), ds.image_size(i), **density), 8)
        image = _normalise(ds[i].image.permute(1, 2, 0).numpy())
        windows = [
            (r, c)
            for r in range(full.shape[0] - 3)
            for c in range(full.shape[1] - 4)
            if np.allclose(full[r : r + 4, c : c + 5], target[0].numpy(), atol=1e-5)
            and torch.equal(image[:, 8 * r : 8 * r + 32, 8 * c : 8 * c + 40], x)
        ]
        assert windows, f"crop {i} is not an aligned window of its image and density map"


def test_short_training_beats_the_predict_the_mean_baseline(crowds, tmp_path, one_thread):
    config = CountConfig(
        root=str(crowds),
        part="B",
        model="resnet18_counter",
        epochs=15,
        batch_size=8,
        lr=1e-3,
        crop=(64, 64),
        scale=(0.8, 1.2),
        density="fixed",
        sigma=2.0,
        val_fraction=0.15,
        out=str(tmp_path / "run"),
    )
    final = train_counter(config, log=QUIET)
    train_counts = ShanghaiTech(crowds, "B", "train", val_fraction=0.15).counts
    test_counts = ShanghaiTech(crowds, "B", "test").counts
    baseline = np.abs(test_counts - train_counts.mean()).mean()
    assert baseline > 10  # counts spread from 0 to 60: the mean is a weak guess
    assert final["test_mae"] < 0.6 * baseline, (final, baseline)

    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and all("val_mae" in r for r in rows)
    best = min(rows, key=lambda r: r["val_mae"])
    assert final["best_epoch"] == best["epoch"] and final["val_mae"] == best["val_mae"]
    with open(run / "test_predictions.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["true"]) for r in table] == test_counts.tolist()
    mae = np.mean([abs(float(r["estimate"]) - int(r["true"])) for r in table])
    assert abs(mae - final["test_mae"]) < 1e-3
    for name in (
        "model.safetensors",
        "last.safetensors",
        "final.json",
        "config.json",
        "curves.png",
        "test_scatter.png",
    ):
        assert (run / name).is_file(), name


def test_resume_continues_the_history(tmp_path, one_thread):
    root = tmp_path / "data"
    write_synthetic(root, parts=("B",), train=6, test=2, size=(32, 32), max_people=5, seed=2)
    base = dict(
        root=str(root),
        part="B",
        model="resnet18_counter",
        batch_size=4,
        lr=1e-3,
        crop=None,
        out=str(tmp_path / "r"),
    )
    train_counter(CountConfig(epochs=2, **base), log=QUIET)
    logs = []
    final = train_counter(CountConfig(epochs=3, resume=True, **base), log=logs.append)
    assert any("resumed" in line and "epoch 2" in line for line in logs)
    rows = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3] and final["epochs"] == 3


def test_recipes_and_config_checks():
    c = resolve_count_config("c3-res50", root="x", part="B", crop="none")
    assert (c.model, c.lr, c.batch_size, c.crop, c.density_method) == (
        "resnet50_counter",
        1e-5,
        6,
        None,
        "fixed",
    )
    assert CountConfig(root="x", part="A").density_method == "adaptive"
    with pytest.raises(ValueError, match="multiples of the output stride 8"):
        CountConfig(root="x", crop=(100, 100)).validate()
    with pytest.raises(ValueError, match="unknown counter"):
        CountConfig(root="x", model="resnet50").validate()
    with pytest.raises(ValueError, match="never on test"):
        CountConfig(root="x", val_fraction=0.0).validate()


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_synth_train_eval_predict(tmp_path, capsys, one_thread):
    data, run = tmp_path / "st", tmp_path / "run"
    assert (
        main(["count", "synth", str(data), "--parts", "B", "--train", "6", "--test", "3", "--size", "48x64"])
        == 0
    )
    argv = [
        "count",
        "train",
        "--root",
        str(data),
        "--part",
        "B",
        "--model",
        "resnet18_counter",
        "--epochs",
        "2",
    ]
    argv += ["--batch-size", "4", "--crop", "32x32", "--lr", "1e-3", "--out", str(run), "--format", "json"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out  # the epochs' log lines, then the final JSON object
    final = json.loads(out[out.index("{\n") :])
    assert final["test_images"] == 3

    assert main(["count", "eval", str(run), "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 3 and abs(result["mae"] - final["test_mae"]) < 1e-4
    assert (run / "eval-B-test.csv").is_file() and (run / "eval-B-test-scatter.png").is_file()

    image = data / "part_B_final" / "test_data" / "images" / "IMG_1.jpg"
    assert main(["count", "predict", str(run), str(image), "--out", str(tmp_path / "pic.png")]) == 0
    assert "people" in capsys.readouterr().out and (tmp_path / "pic.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["count", "train", "--part", "B"], "which dataset? pass --root DIR"),
        (["count", "train", "--root", "{data}", "--part", "A"], "no ShanghaiTech Part A under"),
        (
            ["count", "train", "--root", "{data}", "--part", "B", "--crop", "30x30"],
            "multiples of the output stride 8",
        ),
        (["count", "eval", "{lenet}"], "is not a crowd-counting checkpoint"),
        (["count", "predict", "{run}", "{data}/missing.jpg"], "missing.jpg' does not exist"),
        (["count", "synth", "{data}/x", "--size", "8x8"], "size must be at least 16x16"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    data = tmp_path / "st"
    write_synthetic(data, parts=("B",), train=2, test=1, size=(32, 32), max_people=3)
    lenet = tmp_path / "lenet.safetensors"
    import cnnzoo

    save_weights(cnnzoo.create_model("lenet5"), lenet)
    run = tmp_path / "run"
    if "predict" in argv:
        from cnnzoo.counting import create_counter

        model = create_counter("resnet18_counter")
        save_weights(model, run / "model.safetensors", metadata={"cnnzoo_counter": model.metadata()})
    argv = [a.format(data=data, lenet=lenet, run=run) for a in argv]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnzoo: error: ") and message in err and err.count("\n") == 1, err
