"""Datasets for training: fetch them once, load them as uint8 tensors, batch them on the device.

Layout under the data root (``$CNNZOO_DATA``, default ``~/.cache/cnnzoo``)::

    <root>/<name>/                       one folder per dataset
        <raw files>                      where torchvision's dataset class looks (cnnzoo.data.formats)
        cnnzoo-train.safetensors         uint8 images (N, C, H, W) + int64 labels
        cnnzoo-test.safetensors
        cnnzoo-manifest.json             source, split rule, counts, sha256 of every file

    >>> from cnnzoo.data import fetch, make_loaders
    >>> fetch("fashion-mnist")                                  # or: cnnzoo data fetch fashion-mnist
    >>> train, val, test, info = make_loaders("fashion-mnist", batch_size=128, augment="crop-flip")
    >>> for epoch in range(5):
    ...     train.set_epoch(epoch)
    ...     for x, y in train: ...
"""

from cnnzoo.data.catalog import (
    DATA_ENV,
    DEFAULT_DATA_ROOT,
    DataError,
    DatasetInfo,
    DatasetNotFoundError,
    UnknownDatasetError,
    data_root,
    dataset_info,
    list_datasets,
)
from cnnzoo.data.loader import AUGMENTS, Loaders, TensorLoader, make_loaders, split_validation
from cnnzoo.data.sources import SOURCES, fetch, load_arrays
from cnnzoo.data.stream import ImageFileDataset, StreamLoader

__all__ = [
    "AUGMENTS",
    "DATA_ENV",
    "DEFAULT_DATA_ROOT",
    "SOURCES",
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageFileDataset",
    "Loaders",
    "StreamLoader",
    "TensorLoader",
    "UnknownDatasetError",
    "data_root",
    "dataset_info",
    "fetch",
    "list_datasets",
    "load_arrays",
    "make_loaders",
    "split_validation",
]
