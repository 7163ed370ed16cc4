"""WebDataset shards: `cnnzoo data shard` round-trips a folder, readers split the work exactly.

The images are generated here (PNG and JPEG). The multi-machine test runs torchrun as two
"nodes" of two gloo processes on localhost and compares the weights with one process reading the
same four shard streams: the global batches, so the weights, must be the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import shapes
from cnnzoo.cli.main import main as cnnzoo_main
from cnnzoo.data import DataError, dataset_info, make_loaders
from cnnzoo.data.shards import read_index, shard_loaders, write_shards
from cnnzoo.weights import read_state_dict


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return shapes.write_folder(tmp_path_factory.mktemp("shapes"), jpeg_every_other=True)


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(f"imagefolder:{folder}", out, shard_samples=10)
    return out


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_shards_hold_every_file_unchanged_with_its_label(folder, shards):
    index = read_index(shards)
    assert index["classes"] == list(shapes.CLASSES)
    stored: dict[str, list[tuple[bytes, int]]] = {}
    for split, entries in index["splits"].items():
        for entry in entries:
            path = shards / entry["file"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
            members = _members(path)
            assert len(members) == 2 * entry["samples"]
            # WebDataset's convention: a sample's files are adjacent and share the key.
            for (image_name, data), (cls_name, label) in zip(members[::2], members[1::2], strict=True):
                assert image_name.split(".")[0] == cls_name.split(".")[0]
                assert cls_name.endswith(".cls")
                stored.setdefault(split, []).append((data, int(label)))

    # train + val together are exactly train/'s files (12 of them held out), test is test/'s.
    def originals(split: str) -> list[tuple[bytes, int]]:
        return sorted(
            (f.read_bytes(), shapes.CLASSES.index(f.parent.name)) for f in (folder / split).rglob("*.*")
        )

    assert sorted(stored["train"] + stored["val"]) == originals("train")
    assert sorted(stored["test"]) == originals("test")
    assert (
        len(stored["val"]) == 12
        and sorted(label for _, label in stored["val"]) == [0] * 4 + [1] * 4 + [2] * 4
    )
    # The writer mixes the classes: the first training shard is not one class.
    assert len({label for _, label in stored["train"][:10]}) > 1


def test_shards_are_reproducible_and_refuse_overwrite(folder, shards, tmp_path):
    again = write_shards(f"imagefolder:{folder}", tmp_path / "again", shard_samples=10)
    assert again["splits"] == read_index(shards)["splits"]  # byte-identical shards, same sha256
    with pytest.raises(DataError, match="--overwrite"):
        write_shards(f"imagefolder:{folder}", tmp_path / "again", shard_samples=10)


def test_dataset_info_reads_the_index(shards):
    info = dataset_info(f"shards:{shards}")
    assert (info.train_size, info.val_size, info.test_size) == (108, 12, 36)
    assert info.in_chans == 1 and info.image_size == (16, 16) and info.own_val


def _keys_per_batch(loader, epoch: int) -> list[list[str]]:
    return [[key for _, _, key in batch] for batch in loader._plan(epoch)]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_global_batches_do_not_depend_on_the_number_of_processes(shards, world):
    """With 4 streams, the union of the ranks' k-th batches is the single process's k-th batch."""
    single = shard_loaders(shards, batch_size=8, streams=4, seed=5)[0]
    ranks = [
        shard_loaders(shards, batch_size=8 // world, streams=4, rank=r, world_size=world, seed=5)[0]
        for r in range(world)
    ]
    assert {len(r) for r in ranks} == {len(single)}  # every process takes the same steps
    for epoch in (0, 1):
        one = _keys_per_batch(single, epoch)
        many = [_keys_per_batch(r, epoch) for r in ranks]
        assert [sorted(b) for b in one] == [
            sorted(key for m in many for key in m[k]) for k in range(len(one))
        ]
        seen = {key for batch in one for key in batch}
        assert len(seen) == 108  # every training sample at least once an epoch
    assert _keys_per_batch(single, 0) != _keys_per_batch(single, 1)  # reshuffled each epoch


def test_batches_and_augmentation_replay_exactly(shards):
    a = shard_loaders(shards, batch_size=8, streams=2, seed=1, augment="crop-flip", resize_to=12)[0]
    b = shard_loaders(shards, batch_size=8, streams=2, seed=1, augment="crop-flip", resize_to=12, workers=2)[
        0
    ]
    a.set_epoch(3)
    b.set_epoch(3)
    xa = list(a)
    xb = list(b)
    assert len(xa) == len(xb) == len(a)
    for (x1, y1), (x2, y2) in zip(xa, xb, strict=True):
        assert x1.shape == (8, 1, 12, 12)
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_evaluation_ranks_cover_each_sample_once(shards):
    single = shard_loaders(shards, batch_size=5)[2]
    labels = torch.cat([y for _, y in single])
    assert labels.numel() == 36 == single.num_samples
    parts = [shard_loaders(shards, batch_size=5, rank=r, world_size=3)[2] for r in range(3)]
    keys = sorted(k for p in parts for b in p._plan(0) for _, _, k in b)
    assert keys == sorted(k for b in single._plan(0) for _, _, k in b)
    assert len(set(keys)) == 36


def test_damaged_shard_is_refused_before_use(folder, tmp_path):
    out = tmp_path / "s"
    write_shards(f"imagefolder:{folder}", out, shard_samples=50)
    first = sorted(out.glob("test-*.tar"))[0]
    data = bytearray(first.read_bytes())
    data[600] ^= 0xFF  # inside the first image's bytes; the size is unchanged
    first.write_bytes(bytes(data))
    test = shard_loaders(out, batch_size=8)[2]
    with pytest.raises(DataError, match=rf"{first.name} fails its sha256 check"):
        next(iter(test))
    first.write_bytes(bytes(data[:-512]))  # truncated: caught by the index's sizes at once
    with pytest.raises(DataError, match="damaged or was replaced"):
        read_index(out)


def test_make_loaders_and_too_few_shards(shards):
    train, val, _test, info = make_loaders(f"shards:{shards}", batch_size=8)
    assert info.name.startswith("shards:") and val is not None
    x, y = next(iter(train))
    assert x.dtype == torch.float32 and x.shape == (8, 1, 16, 16) and y.shape == (8,)
    with pytest.raises(DataError, match="cannot feed 16 streams"):
        make_loaders(f"shards:{shards}", batch_size=16, streams=16)


def test_cli_errors_are_one_line(folder, shards, tmp_path, capsys):
    assert cnnzoo_main(["data", "shard", "fashion-mnist", "--out", str(tmp_path / "x")]) == 2
    assert "imagefolder:PATH" in capsys.readouterr().err
    assert cnnzoo_main(["data", "shard", f"imagefolder:{folder}", "--out", str(shards)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cnnzoo_main(["train", "lenet5", "--data", f"shards:{tmp_path}", "--no-progress"]) == 2
    assert "cnnzoo data shard" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_two_processes_match_one_process(shards, tmp_path):
    """torchrun --nnodes 2 --nproc-per-node 2 on localhost (gloo) = one process, same 4 streams."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", CNNZOO_DATA=str(tmp_path / "cache"))

    def args(out: Path) -> list[str]:
        return [
            "train", "lenet5", "--data", f"shards:{shards}", "--epochs", "2", "--batch-size", "16",
            "--optimizer", "sgd", "--lr", "0.05", "--schedule", "cosine", "--model-arg", "act=relu",
            "--model-arg", "img_size=16", "--seed", "3", "--shard-streams", "4", "--out", str(out),
            "--no-summary", "--no-progress", "--augment", "crop-flip",
        ]  # fmt: skip

    single = subprocess.run(
        [sys.executable, "-m", "cnnzoo", *args(tmp_path / "single")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "2",
                "--node-rank",
                str(node),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "cnnzoo",
                *args(tmp_path / "ddp"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [p.communicate(timeout=300) for p in nodes]
    for p, (out, err) in zip(nodes, outputs, strict=True):
        assert p.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    a = read_state_dict(tmp_path / "single" / "last.safetensors")
    b = read_state_dict(tmp_path / "ddp" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["shard_streams"] == 4


def test_shards_decode_and_normalise_as_the_image_folder_does(folder, shards):
    """Shards are the folder's images in another container: the same decoder, transforms and
    mean/std, so the test split comes out bit for bit as from the folder itself (in order)."""
    from_folder = make_loaders(f"imagefolder:{folder}", batch_size=36)
    from_shards = make_loaders(f"shards:{shards}", batch_size=36)
    assert from_shards.info.mean == from_folder.info.mean and from_shards.info.std == from_folder.info.std
    (xf, yf), (xs, ys) = next(iter(from_folder.test)), next(iter(from_shards.test))
    assert torch.equal(ys, yf) and torch.equal(xs, xf)
