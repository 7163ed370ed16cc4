"""A tiny, learnable stand-in for Fashion-MNIST, MNIST and CIFAR-10 in a data root (for the
experiments' tests).

Written as the canonical idx files under torchvision's raw layout, so `cnnzoo.data.load_arrays`
reads them exactly as it reads the real ones (no network). Each class is a bright 6x6 square in
its own place on a dark noisy background, so a few steps of training already separate them.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

FOLDERS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}


def _idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def fake_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28))
    for i, k in enumerate(labels):
        r, c = 3 + 8 * (k // 4), 3 + 6 * (k % 4)  # ten places on a 3 x 4 grid
        images[i, r : r + 6, c : c + 6] = rng.integers(180, 256, size=(6, 6))
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_fake_root(root: Path, n_train: int = 400, n_test: int = 200) -> Path:
    for k, (name, tv_class) in enumerate(FOLDERS.items()):
        raw = root / name / tv_class / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n, seed in (("train", n_train, 10 * k), ("t10k", n_test, 10 * k + 1)):
            images, labels = fake_images(n, seed)
            (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx_gz(images))
            (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx_gz(labels))
    return root


def write_fake_cifar10(root: Path, per_batch: int = 24, n_test: int = 60) -> Path:
    """CIFAR-10's python batches (data_batch_1..5, test_batch, batches.meta) under torchvision's
    folder, as pickled dicts of numpy arrays like the real ones: the same squares, in colour."""
    base = root / "cifar10" / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for k, (fname, n) in enumerate(
        [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]
    ):
        grey, labels = fake_images(n, 100 + k)
        images = np.zeros((n, 3, 32, 32), dtype=np.uint8)
        images[:, :, 2:30, 2:30] = grey[:, None]
        images[:, k % 3] //= 2  # a colour cast, so the three channels differ
        entry = {"batch_label": fname, "data": images.reshape(n, -1), "labels": labels.tolist()}
        (base / fname).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
    }
    (base / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root
