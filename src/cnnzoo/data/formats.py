"""The datasets' own on-disk formats: MNIST's idx files and CIFAR's python batches.

Raw files sit where torchvision's dataset classes look for them under ``<root>/<name>``, so
``torchvision.datasets.FashionMNIST("<root>/fashion-mnist")`` or
``torchvision.datasets.CIFAR10("<root>/cifar10")`` reads a cnnzoo copy without downloading:

- MNIST-like: ``<name>/<TorchvisionClass>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
  (read with torchvision's own idx readers);
- CIFAR: ``cifar10/cifar-10-batches-py/``, ``cifar100/cifar-100-python/``.

CIFAR's python batches are pickled dicts of numpy arrays (the dataset's standard format;
torchvision reads them with plain ``pickle``). We unpickle them with an allow-list of numpy's
array-rebuilding functions, so a tampered batch file cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.atomic import atomic_write_bytes
from cnnzoo.data.catalog import DataError, DatasetInfo

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# -- MNIST's idx ---------------------------------------------------------------------------------
def idx_dir(folder: Path, info: DatasetInfo) -> Path:
    return folder / str(info.torchvision) / "raw"


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array: magic (0, 0, type 0x08, ndim), big-endian dims, data."""
    if array.dtype != np.uint8:
        raise ValueError(f"idx files written here hold uint8, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(raw: Path, stem: str, array: np.ndarray) -> list[Path]:
    """Write ``stem.gz`` (the canonical download) and ``stem`` (what torchvision reads)."""
    data = idx_bytes(array)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:  # mtime=0: same bytes every run
        gz.write(data)
    return [atomic_write_bytes(raw / f"{stem}.gz", buf.getvalue()), atomic_write_bytes(raw / stem, data)]


def has_idx(folder: Path, info: DatasetInfo) -> bool:
    raw = idx_dir(folder, info)
    return all(
        (raw / s).is_file() or (raw / f"{s}.gz").is_file() for pair in IDX_FILES.values() for s in pair
    )


def read_idx_split(
    folder: Path, info: DatasetInfo, split: str, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 through torchvision's idx readers."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = idx_dir(folder, info)
    out = []
    for stem, reader in zip(IDX_FILES[split], (read_image_file, read_label_file), strict=True):
        path = raw / stem
        if not path.is_file() and (raw / f"{stem}.gz").is_file():
            _gunzip(raw / f"{stem}.gz", path, name)
        if not path.is_file():
            raise DataError(f"{path} is missing; run `cnnzoo data fetch {name}`")
        try:
            out.append(reader(str(path)))
        except Exception as e:  # torchvision's readers assert on malformed headers
            raise DataError(
                f"{path} is not a valid idx file ({type(e).__name__}: {e}); "
                f"delete it and run `cnnzoo data fetch {name}`"
            ) from e
    images, labels = out
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{raw} holds {images.shape[0]} {split} images but {labels.shape[0]} labels; "
            f"delete the folder and run `cnnzoo data fetch {name}`"
        )
    return images.unsqueeze(1).contiguous(), labels.to(torch.int64)


def _gunzip(src: Path, dst: Path, name: str) -> None:
    try:
        data = gzip.decompress(src.read_bytes())
    except (OSError, EOFError) as e:
        raise DataError(
            f"{src} is not a valid gzip file ({e}); delete it and run `cnnzoo data fetch {name}`"
        ) from e
    atomic_write_bytes(dst, data)


# -- CIFAR's python batches ----------------------------------------------------------------------
def _numpy_globals() -> dict[tuple[str, str], Any]:
    import codecs

    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, wherever it lives
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
    allowed[("_codecs", "encode")] = codecs.encode  # protocol-2 pickles of bytes written by Python 3
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a numpy array") from None


def unpickle_arrays(path: Path) -> Any:
    with open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="latin1").load()


def cifar_dir(folder: Path, info: DatasetInfo) -> Path:
    import torchvision.datasets as tvd

    return folder / getattr(tvd, str(info.torchvision)).base_folder


def has_cifar(folder: Path, info: DatasetInfo) -> bool:
    import torchvision.datasets as tvd

    cls = getattr(tvd, str(info.torchvision))
    base = folder / cls.base_folder
    return all((base / f).is_file() for f, _ in [*cls.train_list, *cls.test_list])


def read_cifar_split(
    folder: Path, info: DatasetInfo, split: str, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from CIFAR's python batches."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, str(info.torchvision))
    base = folder / cls.base_folder
    images, labels = [], []
    for fname, _md5 in cls.train_list if split == "train" else cls.test_list:
        path = base / fname
        fix = f"delete {base} and run `cnnzoo data fetch {name}`"
        if not path.is_file():
            raise DataError(f"{path} is missing; run `cnnzoo data fetch {name}`")
        try:
            entry = unpickle_arrays(path)
            data = np.asarray(entry["data"], dtype=np.uint8)
            target = np.asarray(
                entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64
            )
        except Exception as e:  # truncated files raise EOFError, UnpicklingError, KeyError, ...
            raise DataError(f"{path} is not a valid CIFAR batch ({type(e).__name__}: {e}); {fix}") from e
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != target.shape[0]:
            raise DataError(f"{path} holds arrays of shape {data.shape} and {target.shape}; {fix}")
        if target.size and (target.min() < 0 or target.max() >= info.num_classes):
            raise DataError(f"{path} has labels outside 0..{info.num_classes - 1}; {fix}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(target)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def read_cifar_classes(folder: Path, info: DatasetInfo) -> tuple[str, ...]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, str(info.torchvision))
    path = folder / cls.base_folder / cls.meta["filename"]
    try:
        return tuple(str(c) for c in unpickle_arrays(path)[cls.meta["key"]])
    except Exception:  # the meta file only names the classes; fall back to the catalogue's names
        return info.classes
