"""Density maps: every annotated head becomes a Gaussian of unit mass, so the map sums to the count.

Two ways to choose each Gaussian's width (Zhang, Zhou, Chen, Gao, Ma 2016, "Single-Image Crowd
Counting via Multi-Column CNN", CVPR, sec. 2.2 - the paper that introduced ShanghaiTech):

    fixed     the same sigma for every head (C-3 Framework's Part B maps: sigma 4, 15x15 window)
    adaptive  sigma_i = beta * mean distance from head i to its k nearest heads ("geometry-adaptive
              kernels", beta = 0.3, k = 3), found with a KD-tree; heads far apart get wide kernels

Each kernel is the separable, truncated Gaussian that ``scipy.ndimage.gaussian_filter(delta,
sigma, truncate)`` spreads from the head's pixel (radius ``int(truncate * sigma + 0.5)``), built
from two 1-D factors: truncate 4 (scipy's default, CSRNet's maps) for adaptive kernels, and for
fixed ones the C-3 Framework's 15 x 15 window (MATLAB's ``fspecial('gaussian', 15, 4)``). Where a kernel crosses the image border, each 1-D factor is
renormalised over the pixels inside the image, so every head keeps exactly unit mass. The
per-head full-image filter of the CSRNet code loses the mass outside the image instead (a head
at a corner keeps a quarter of it) and costs a whole-image convolution per head.

Heads lie at 0-based pixel-centre coordinates (x, y): pixel (i, j) covers [i - 0.5, i + 0.5) x
[j - 0.5, j + 0.5), so a head belongs to pixel ``floor(x + 0.5)``.

`sum_pool` reduces a map to a model's output stride by summing s x s blocks (zero-padding the
ragged edge), which keeps the count exact, unlike resizing (CSRNet's ``cv2.resize(...) * 64``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METHODS",
    "DensityCache",
    "adaptive_sigmas",
    "density_map",
    "gaussian_kernel1d",
    "head_pixels",
    "inside_image",
    "sum_pool",
]

METHODS = ("adaptive", "fixed")
C3_RADIUS = 7  # the C-3 Framework's fixed kernels are 15 x 15 (fspecial('gaussian', 15, 4) for Part B)


def inside_image(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the points (N x 2, x then y, 0-based) that fall on a pixel of an H x W image."""
    pts = _as_points(points)
    h, w = shape
    x, y = pts[:, 0], pts[:, 1]
    return (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)


def head_pixels(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(column, row) of the pixel each head falls on, int64 N x 2; ValueError for heads off the image."""
    pts = _as_points(points)
    inside = inside_image(pts, shape)
    if not inside.all():
        bad = int((~inside).sum())
        raise ValueError(
            f"{bad} of {len(pts)} head points lie outside the {shape[0]}x{shape[1]} image "
            "(0-based x, y in [-0.5, W - 0.5) x [-0.5, H - 0.5)); drop them first, as ShanghaiTech's loader does"
        )
    pix = np.floor(pts + 0.5).astype(np.int64)
    # x = W - 0.5 - tiny rounds to W - 1 already; the clip only guards float noise at the edge.
    pix[:, 0] = np.clip(pix[:, 0], 0, shape[1] - 1)
    pix[:, 1] = np.clip(pix[:, 1], 0, shape[0] - 1)
    return pix


def _as_points(points: Any) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be an N x 2 array of (x, y), got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points hold NaN or infinite coordinates")
    return pts


def adaptive_sigmas(
    points: np.ndarray, *, k: int = 3, beta: float = 0.3, fallback: float = 4.0
) -> np.ndarray:
    """Geometry-adaptive widths: beta x the mean distance of each head to its k nearest other heads.

    With fewer than k other heads the mean runs over those there are; a lone head gets
    `fallback` (CSRNet's code uses a quarter of the image's mean side there; a fixed width
    keeps one head from spreading over the whole image).
    """
    from scipy.spatial import cKDTree

    pts = _as_points(points)
    n = len(pts)
    if k < 1 or beta <= 0 or fallback <= 0:
        raise ValueError(
            f"k must be >= 1 and beta, fallback > 0, got k={k}, beta={beta}, fallback={fallback}"
        )
    if n <= 1:
        return np.full(n, float(fallback))
    # A head annotated twice at one place is one head: neighbours are other *places*, or two
    # copies would give each other sigma 0 (a one-pixel spike of mass 2).
    places, where = np.unique(pts, axis=0, return_inverse=True)
    where = where.reshape(-1)
    m = len(places)
    if m <= 1:
        return np.full(n, float(fallback))
    kk = min(k, m - 1)
    # k + 1 neighbours: the nearest "neighbour" of a place is itself, at distance 0.
    dist, _ = cKDTree(places).query(places, k=kk + 1)
    return (beta * dist[:, 1:].mean(axis=1))[where]


def _kernel(sigma: float, truncate: float) -> np.ndarray:
    # The same samples and normalisation as scipy.ndimage's _gaussian_kernel1d.
    radius = int(truncate * sigma + 0.5)
    if radius == 0 or sigma <= 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x * x)
    return phi / phi.sum()


@lru_cache(maxsize=64)
def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian on [-r, r], r = int(truncate * sigma + 0.5); precomputed per sigma."""
    k = _kernel(float(sigma), float(truncate))
    k.flags.writeable = False  # shared between calls through the cache
    return k


def _window(kernel: np.ndarray, centre: int, size: int) -> tuple[np.ndarray, int, int]:
    """The part of a kernel centred on `centre` that lies in [0, size), renormalised to sum 1."""
    r = len(kernel) // 2
    lo, hi = centre - r, centre + r + 1
    part = kernel[max(0, -lo) : len(kernel) - max(0, hi - size)]
    if lo < 0 or hi > size:
        part = part / part.sum()
    return part, max(lo, 0), min(hi, size)


def density_map(
    points: np.ndarray,
    shape: tuple[int, int],
    *,
    method: str = "adaptive",
    sigma: float = 4.0,
    k: int = 3,
    beta: float = 0.3,
    truncate: float | None = None,
) -> np.ndarray:
    """H x W float32 density map of head `points` (N x 2, 0-based x then y) that sums to N.

    Args:
        points: head positions; every point must lie on the image (see `inside_image`).
        shape: (H, W) of the image.
        method: "fixed" (every head gets `sigma`) or "adaptive" (beta x mean distance to the k
            nearest heads, Zhang et al. 2016; `sigma` is the width of a lone head).
        truncate: kernel radius in sigmas, as scipy's gaussian_filter. None: for "fixed" the
            C-3 Framework's 15 x 15 window (MATLAB's ``fspecial('gaussian', 15, sigma)``, radius
            7 whatever sigma), for "adaptive" scipy's default 4 (CSRNet's maps).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    h, w = (int(v) for v in shape)
    if h < 1 or w < 1:
        raise ValueError(f"shape must be (H, W) with H, W >= 1, got {tuple(shape)}")
    if not sigma > 0 or (truncate is not None and not truncate > 0):
        raise ValueError(f"sigma and truncate must be > 0, got sigma={sigma}, truncate={truncate}")
    pts = _as_points(points)
    pix = head_pixels(pts, (h, w))
    out = np.zeros((h, w), dtype=np.float64)
    if method == "fixed":
        # C-3's window: radius 7, i.e. truncate = 7 / sigma in scipy's terms (int(7 + 0.5) = 7).
        kernel = gaussian_kernel1d(
            float(sigma), float(truncate) if truncate is not None else C3_RADIUS / sigma
        )
        kernels = (kernel for _ in range(len(pix)))
    else:
        t = 4.0 if truncate is None else float(truncate)
        kernels = (_kernel(float(s), t) for s in adaptive_sigmas(pts, k=k, beta=beta, fallback=sigma))
    for (cx, cy), kern in zip(pix, kernels, strict=True):
        kx, x0, x1 = _window(kern, int(cx), w)
        ky, y0, y1 = _window(kern, int(cy), h)
        out[y0:y1, x0:x1] += np.outer(ky, kx)
    return out.astype(np.float32)


def sum_pool(density: np.ndarray, stride: int) -> np.ndarray:
    """Sum over stride x stride blocks: (H, W) -> (ceil(H/s), ceil(W/s)), float32, same total."""
    d = np.asarray(density)
    if d.ndim != 2:
        raise ValueError(f"density must be a 2-D H x W array, got shape {d.shape}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    h, w = d.shape
    ph, pw = -(-h // stride), -(-w // stride)
    padded = np.zeros((ph * stride, pw * stride), dtype=np.float64)
    padded[:h, :w] = d
    return padded.reshape(ph, stride, pw, stride).sum(axis=(1, 3)).astype(np.float32)


class DensityCache:
    """Density maps by key, kept in memory and, with `directory`, as `.npy` files (written atomically).

    The key names everything the map depends on: the head positions themselves (their bytes, so
    an edited annotation can never hit an old map), the image size, the method's parameters and
    the pooling stride (`DensityCache.key`). A map read from disk is checked before use: its shape
    and its sum (a density map sums to its head count) must be what the caller expects, and every
    value finite; a file that fails is recomputed and replaced, and counted in `repaired`.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self._memory: dict[str, np.ndarray] = {}
        self.hits = self.misses = self.repaired = 0

    @staticmethod
    def key(points: np.ndarray | str | os.PathLike, **params: Any) -> str:
        """The cache key of a map: the heads (an N x 2 array) or an annotation file, and the settings."""
        if isinstance(points, np.ndarray):
            stamp: list[Any] = [
                "points",
                list(points.shape),
                hashlib.sha256(np.ascontiguousarray(points, dtype=np.float64).tobytes()).hexdigest(),
            ]
        else:
            p = Path(points)
            try:
                st = p.stat()
                stamp = [str(p.resolve()), st.st_size, st.st_mtime_ns]
            except OSError:
                stamp = [str(p)]
        text = json.dumps(["cnnzoo-density-v2", stamp, sorted(params.items())], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @staticmethod
    def _usable(arr: np.ndarray, shape: tuple[int, ...] | None, total: float | None) -> bool:
        if arr.dtype.kind != "f" or (shape is not None and tuple(arr.shape) != tuple(shape)):
            return False
        if not np.isfinite(arr).all() or (arr.size and float(arr.min()) < -1e-6):
            return False
        return total is None or abs(float(arr.sum(dtype=np.float64)) - total) <= 1e-3 * max(1.0, total)

    def get(
        self,
        key: str,
        make: Callable[[], np.ndarray],
        *,
        shape: tuple[int, ...] | None = None,
        total: float | None = None,
    ) -> np.ndarray:
        """The map of `key`: from memory, from disk when it passes the checks, else `make()`.

        shape, total: what the map must be (its shape, its sum); None skips that check.
        """
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        arr = None
        path = self.directory / f"{key}.npy" if self.directory else None
        if path is not None and path.is_file():
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                arr = None  # a damaged cache file is recomputed and replaced
            if arr is not None and not self._usable(arr, shape, total):
                arr = None
            if arr is None:
                self.repaired += 1
        if arr is None:
            self.misses += 1
            arr = np.ascontiguousarray(make(), dtype=np.float32)
            if path is not None:
                from cnnzoo.atomic import atomic_write

                def write(tmp: str) -> None:
                    with open(tmp, "wb") as f:
                        np.save(f, arr, allow_pickle=False)

                atomic_write(path, write)
        else:
            self.hits += 1
        self._memory[key] = arr
        return arr
