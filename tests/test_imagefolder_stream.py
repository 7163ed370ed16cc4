"""Image folders: layouts, the target size, unreadable files, and the streamed pipeline.

Every folder is generated here with Pillow (JPEG and PNG). The oracles: torchvision's own
transforms for the evaluation resize/crop, hand computations for the PCA jitter and the budget
parser, and the in-memory TensorLoader for the streamed loader (same batches, same accuracy).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnzoo.data import DataError, dataset_info, load_arrays, make_loaders
from cnnzoo.data.imagefolder import scan_folder
from cnnzoo.data.stream import ImageFileDataset, StreamLoader, parse_memory_budget
from cnnzoo.data.transforms import pca_lighting, resize_cover_crop, sample_transform

torch.set_num_threads(1)


def write_image(path: Path, label: int, size: tuple[int, int], seed: int, fmt: str = "PNG") -> None:
    """A noisy image whose mean colour says its class (learnable by a tiny net)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array([[60, 190, 120], [190, 60, 120], [120, 120, 200]][label % 3], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-50, 50, (size[0], size[1], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def make_folder(root: Path, splits: dict[str, int], classes=("a", "b", "c"), sizes=((20, 24),)) -> Path:
    """root/<split>/<class>/i.png|jpg (split "" for flat class folders), alternating formats/sizes."""
    k = 0
    for split, n in splits.items():
        for c, name in enumerate(classes):
            for i in range(n):
                fmt = "JPEG" if i % 2 else "PNG"
                ext = ".jpg" if fmt == "JPEG" else ".png"
                write_image(root / split / name / f"{i:03d}{ext}", c, sizes[k % len(sizes)], k, fmt)
                k += 1
    return root


def spec(path: Path) -> str:
    return f"imagefolder:{path}"


# -- layouts ---------------------------------------------------------------------------------------


def test_imagenet_layout_val_is_the_test_set_and_validation_is_held_out(tmp_path):
    root = make_folder(tmp_path / "inet", {"train": 10, "val": 4})
    train, val, test, info = make_loaders(spec(root), batch_size=8, val_fraction=0.2)
    # val/ is what a run reports as test; the validation that selects is 20% of train per class.
    assert (info.train_size, info.val_size, info.test_size) == (24, 6, 12)
    assert (train.num_samples, val.num_samples, test.num_samples) == (24, 6, 12)
    assert info.val_split["fraction"] == 0.2 and not info.own_val
    assert "ImageNet layout: val/ is the test set" in info.source
    _, yt = load_arrays(spec(root), "test")
    assert torch.bincount(yt).tolist() == [4, 4, 4]
    with pytest.raises(DataError, match="has no val split"):
        load_arrays(spec(root), "val")


def test_train_val_test_layout_uses_val_as_validation(tmp_path):
    root = make_folder(tmp_path / "f", {"train": 4, "val": 2, "test": 3})
    _, val, _, info = make_loaders(spec(root), batch_size=8)
    assert (info.train_size, info.val_size, info.test_size) == (12, 6, 9) and info.own_val
    assert torch.equal(val.labels, torch.tensor([0, 0, 1, 1, 2, 2]))


def test_train_folder_alone_splits_off_test_by_hash(tmp_path):
    root = make_folder(tmp_path / "f", {"train": 10})
    info = dataset_info(spec(root))
    assert (info.train_size, info.test_size) == (24, 6)  # round(0.2 x 10) per class
    with pytest.raises(DataError, match="no train/"):
        dataset_info(spec(make_folder(tmp_path / "g", {"test": 2})))


def test_nested_subfolders_belong_to_their_class(tmp_path):
    root = make_folder(tmp_path / "f", {"": 5})
    for i in range(5):  # b/2024/summer/*.png: still class b
        write_image(root / "b" / "2024" / "summer" / f"n{i}.png", 1, (20, 24), 100 + i)
    (root / "b" / ".cache").mkdir()
    write_image(root / "b" / ".cache" / "hidden.png", 1, (20, 24), 999)  # hidden: not an image of b
    info = dataset_info(spec(root))
    assert info.classes == ("a", "b", "c")
    _, y = load_arrays(spec(root), "train")
    _, yt = load_arrays(spec(root), "test")
    assert torch.bincount(torch.cat([y, yt])).tolist() == [5, 10, 5]
    assert torch.bincount(yt).tolist() == [1, 2, 1]


def test_empty_class_folder_is_refused_by_name(tmp_path):
    root = make_folder(tmp_path / "f", {"": 3})
    (root / "d").mkdir()
    with pytest.raises(DataError, match=r"no images found in class folder .*/f/d\b"):
        dataset_info(spec(root))
    root = make_folder(tmp_path / "s", {"train": 3, "test": 1})
    (root / "test" / "a" / "000.png").unlink()
    with pytest.raises(DataError, match=r"class folder .*/s/test/a"):
        dataset_info(spec(root))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        dataset_info(spec(tmp_path / "none"))


@pytest.mark.parametrize("budget", ["auto", "0"])
def test_unreadable_files_are_refused_on_both_paths(tmp_path, budget):
    root = make_folder(tmp_path / "f", {"train": 4, "test": 2})
    bad = root / "train" / "b" / "zz.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"zz\.jpg is not a readable image .*refused, never skipped"):
        make_loaders(spec(root), batch_size=4, memory_budget=budget, workers=0)


@pytest.mark.parametrize("budget", ["auto", "0"])
def test_a_truncated_jpeg_is_refused_when_decoded(tmp_path, budget):
    root = make_folder(tmp_path / "f", {"train": 4, "test": 2})
    good = (root / "train" / "a" / "001.jpg").read_bytes()
    (root / "train" / "a" / "001.jpg").write_bytes(good[: len(good) // 2])  # header intact
    with pytest.raises(DataError, match=r"001\.jpg is not a readable image") as e:
        train, *_ = make_loaders(spec(root), batch_size=4, memory_budget=budget, workers=1)
        for _ in train:
            pass
    assert "\n" not in str(e.value)  # one line, also from a worker process


# -- the image size --------------------------------------------------------------------------------


def test_size_comes_from_the_folder_never_the_first_file(tmp_path):
    root = make_folder(tmp_path / "f", {"": 5}, sizes=((16, 16),))
    write_image(root / "a" / "000-thumb.png", 0, (1, 1), 7)  # sorts first: once it set the size
    info = dataset_info(spec(root))
    assert info.image_size == (16, 16) and info.uniform_size is False
    x, _ = load_arrays(spec(root), "train")
    assert x.shape[1:] == (3, 16, 16)
    from cnnzoo.data.imagefolder import load_imagefolder

    assert load_imagefolder(root, "test", size=(24, 24))[0].shape[1:] == (3, 24, 24)  # the run's size


def test_stats_are_the_train_images_mean_and_std(tmp_path):
    root = make_folder(tmp_path / "f", {"train": 3, "test": 1}, sizes=((12, 12),))
    info = dataset_info(spec(root))
    x = load_arrays(spec(root), "train")[0].double() / 255  # the oracle: numpy-style over every pixel
    assert info.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert info.std == pytest.approx(x.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-4)


def test_trainer_takes_the_models_size_for_mixed_folders(tmp_path):
    from cnnzoo.registry import model_info
    from cnnzoo.train import TrainConfig, train

    root = make_folder(tmp_path / "f", {"": 6}, sizes=((20, 24), (30, 18)))
    lines: list[str] = []
    cfg = TrainConfig(
        model="lenet5", data=spec(root), epochs=1, batch_size=8, threads=1, summary=False,
        out=str(tmp_path / "run"), progress=False, val_fraction=0,
    )  # fmt: skip
    final = train(cfg, log=lines.append)
    native = model_info("lenet5").input_size[1]
    assert f"images resized (their sizes differ) to {native}x{native} for lenet5" in "\n".join(lines)
    assert any(line.startswith("data: in memory:") for line in lines)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["cnnzoo_run"]["input_size"][1] == native
    assert record["data_pipeline"].startswith("in memory") and "class folders" in record["data_source"]
    assert 0 <= final["test_top1"] <= 1


# -- transforms ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(256, 320), (375, 500), (500, 333), (231, 260)])
def test_eval_transform_is_torchvisions_resize_centre_crop(hw):
    from torchvision.transforms import v2

    x = torch.randint(0, 256, (3, *hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ref = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])(x)  # the oracle
    assert torch.equal(resize_cover_crop(x, (224, 224), 0.875), ref)


def test_pca_lighting_by_hand():
    img = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    # alpha = (1, 0, 0): 255 x 0.2175 x (-0.5675, -0.5808, -0.5836) = (-31.47, -32.21, -32.37)
    out = pca_lighting(img, torch.tensor([1.0, 0.0, 0.0]))
    assert out[:, 0, 0].tolist() == [69, 68, 68]


def test_ilsvrc_augmentations_depend_on_the_seed_only():
    x = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for augment in ("rrc-flip", "rrc-flip-pca", "scale-flip", "alexnet"):
        torch.manual_seed(123)
        a = sample_transform(x, size=(64, 64), augment=augment, seed=5)
        state = torch.get_rng_state()
        b = sample_transform(x, size=(64, 64), augment=augment, seed=5)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
        c = sample_transform(x, size=(64, 64), augment=augment, seed=6)
        assert a.shape == (3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)


def test_ilsvrc_augmentations_need_an_image_folder():
    with pytest.raises(ValueError, match="needs --data imagefolder:PATH"):
        make_loaders("mnist", batch_size=8, augment="rrc-flip")


def test_parse_memory_budget():
    assert parse_memory_budget("2GB") == 2 * 10**9
    assert parse_memory_budget("512MiB") == 512 * 2**20
    assert parse_memory_budget("1.5g") == 1_500_000_000
    assert parse_memory_budget("0") == 0 and parse_memory_budget("auto") is None
    with pytest.raises(ValueError, match="--memory-budget takes a size"):
        parse_memory_budget("lots")


# -- streamed == in memory -------------------------------------------------------------------------


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize("augment", [None, "crop-flip"])
def test_streamed_batches_equal_the_in_memory_ones(tmp_path, augment):
    root = make_folder(tmp_path / "f", {"train": 7, "test": 3}, sizes=((20, 24), (33, 29)))
    kw = dict(batch_size=5, augment=augment, resize_to=16, seed=3, val_fraction=0.2)
    mem = make_loaders(spec(root), memory_budget="10GB", **kw)
    streamed = make_loaders(spec(root), memory_budget=0, workers=0, **kw)
    assert mem.info.pipeline.startswith("in memory") and streamed.info.pipeline.startswith("streamed")
    for a, b in zip(mem[:3], streamed[:3], strict=True):
        assert len(a) == len(b) and a.num_samples == b.num_samples
        for epoch in (0, 1):
            for (xa, ya), (xb, yb) in zip(_batches(a, epoch), _batches(b, epoch), strict=True):
                assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_streamed_and_in_memory_training_reach_the_same_accuracy(tmp_path):
    from cnnzoo.train import TrainConfig, train

    root = make_folder(tmp_path / "f", {"train": 12, "test": 4}, sizes=((20, 24), (28, 28)))
    results = []
    for budget in ("auto", "0"):
        cfg = TrainConfig(
            model="lenet5", data=spec(root), epochs=2, batch_size=8, lr=0.05, threads=1,
            summary=False, out=str(tmp_path / f"run-{budget}"), progress=False, resize_to=32,
            augment="crop-flip", memory_budget=budget, workers=0,
        )  # fmt: skip
        results.append(train(cfg, log=lambda _: None))
    mem, streamed = results
    assert mem["test_top1"] == streamed["test_top1"] and mem["val_top1"] == streamed["val_top1"]
    assert mem["train_loss"] == pytest.approx(streamed["train_loss"], rel=1e-6)


def test_workers_do_not_change_the_batches(tmp_path):
    root = make_folder(tmp_path / "f", {"train": 6, "test": 2}, sizes=((40, 50), (36, 36)))
    kw = dict(batch_size=4, augment="rrc-flip-pca", resize_to=24, seed=1, val_fraction=0)
    single = make_loaders(spec(root), memory_budget=0, workers=0, **kw).train
    multi = make_loaders(spec(root), memory_budget=0, workers=2, **kw).train
    assert "per-sample" in make_loaders(spec(root), memory_budget="auto", workers=0, **kw).info.pipeline
    e0, e0_again = _batches(single, 0), _batches(single, 0)
    for (xa, ya), (xb, yb), (xc, _) in zip(e0, _batches(multi, 0), e0_again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(xa, xc)
    assert not torch.equal(e0[0][0], _batches(single, 1)[0][0])  # another epoch, other crops


def test_ddp_shards_cover_every_sample_once_per_epoch(tmp_path):
    root = make_folder(tmp_path / "f", {"train": 4}, sizes=((8, 8),))
    files = [str(f) for f, _ in scan_folder(root).files["train"]]
    n, world = len(files), 4  # 9 train files: not a multiple of 4
    ds = lambda train: ImageFileDataset(files, [0] * n, channels=3, size=(8, 8), train=train)  # noqa: E731
    for epoch in (0, 3):
        evals = [
            StreamLoader(ds(False), batch_size=2, shuffle=False, pad_shards=False, rank=r, world_size=world)
            for r in range(world)
        ]
        seen = sorted(i for loader in evals for i, *_ in loader.plan_items(epoch))
        assert seen == list(range(n))  # evaluation: each sample exactly once, no padding
        trains = [
            StreamLoader(ds(True), batch_size=2, rank=r, world_size=world, seed=7) for r in range(world)
        ]
        shards = [[i for i, *_ in loader.plan_items(epoch)] for loader in trains]
        assert {len(s) for s in shards} == {3} and set().union(*map(set, shards)) == set(range(n))
        # 12 slots for 9 samples: exactly 3 repeat (the padded head, as DistributedSampler)
        assert sum(len(s) for s in shards) - n == 3
    assert sum(len(b[1]) for loader in evals for b in loader) == n


def test_cli_streams_with_workers(tmp_path, capsys):
    from cnnzoo.cli.main import main

    root = make_folder(tmp_path / "f", {"train": 4, "test": 2}, sizes=((20, 24),))  # LeNet-5 gets 28x28
    argv = ["train", "lenet5", "--data", spec(root), "--epochs", "1", "--batch-size", "8", "--threads", "1",
            "--memory-budget", "0", "--workers", "1", "--no-summary", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data: streamed from disk, 1 worker process:" in out
    assert "images resized from 20x24 to 28x28 for lenet5" in out  # a flatten takes square inputs only
    assert main([*argv[:-2], "--memory-budget", "lots", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "--memory-budget takes a size" in err and len(err.strip().splitlines()) == 1


def test_jpeg_bytes_decode_like_files(tmp_path):
    from cnnzoo.data.transforms import decode_bytes, read_image

    write_image(tmp_path / "x.jpg", 0, (10, 12), 0, "JPEG")
    data = (tmp_path / "x.jpg").read_bytes()
    assert torch.equal(decode_bytes(data, channels=3), read_image(tmp_path / "x.jpg", channels=3))
    with pytest.raises(DataError, match=r"shard\.tar:7 is not a readable image"):
        decode_bytes(io.BytesIO(b"junk").getvalue(), channels=3, name="shard.tar:7")


def test_streamed_resume_replays_the_ilsvrc_augmentation_exactly(tmp_path):
    from cnnzoo.train import TrainConfig, train

    root = make_folder(tmp_path / "f", {"train": 6, "test": 2}, sizes=((40, 50), (36, 36)))

    def cfg(out: str, epochs: int, **kw) -> TrainConfig:
        return TrainConfig(
            model="lenet5", data=spec(root), epochs=epochs, batch_size=6, lr=0.05, threads=1,
            summary=False, out=str(tmp_path / out), progress=False, resize_to=28, augment="rrc-flip-pca",
            schedule="constant",  # extending --epochs restarts any other schedule (a new phase)
            **{"workers": 0, **kw},
        )  # fmt: skip

    straight = train(cfg("straight", 2), log=lambda _: None)
    train(cfg("resumed", 1), log=lambda _: None)
    resumed = train(cfg("resumed", 2, resume=True, workers=1), log=lambda _: None)  # another worker count
    assert resumed["train_loss"] == straight["train_loss"] and resumed["test_top1"] == straight["test_top1"]
