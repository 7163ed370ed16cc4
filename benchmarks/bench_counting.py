"""Crowd counting speed (issue 6), two tables, each contender against its anchor in the same run.

1. Density maps for one 1024 x 768 image with 500 heads: `cnnzoo.counting.density_map`
   (separable truncated kernels, renormalised at the border), for adaptive and fixed kernels,
   against two baselines (geometry-adaptive sigma from a KD-tree with k = 3, beta = 0.3):
   - one filter per sigma (the strong baseline, what a competent user writes): every head's
     delta added into one image and the image filtered once by
     `scipy.ndimage.gaussian_filter(..., mode="constant")` per distinct sigma (the filter is
     linear); adaptive sigmas are rounded to 0.25 px to share filters;
   - the per-head filter of CSRNet's make_dataset (the naive baseline): a delta image per head,
     each filtered over the whole image (`--skip-per-head` leaves it out: a minute per map).
   The maps' sums are printed: ours keeps all 500 heads, the full-image filters lose the mass
   that falls off the image.
2. Counter inference at 768 x 1024, batch 1, eval mode, no grad: images/s of cnnzoo's
   resnet50_counter and csrnet against the same networks assembled from torchvision's modules
   (resnet50(replace_stride_with_dilation=[False, True, True]) up to layer3; vgg16().features[:23])
   with the same heads and the same weights: eager against eager, the counters' own use.

Contenders alternate round by round; the tables give medians.

    python benchmarks/bench_counting.py                 # both tables (a few minutes on 2 cores)
    python benchmarks/bench_counting.py --skip-models --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

from cnnzoo.counting import create_counter, density_map


# -- 1. density maps -----------------------------------------------------------------------------
def per_head_filter(points: np.ndarray, shape: tuple[int, int], method: str, sigma: float) -> np.ndarray:
    """CSRNet's gaussian_filter_density: one full-image Gaussian filter per head."""
    from scipy.ndimage import gaussian_filter
    from scipy.spatial import cKDTree

    h, w = shape
    pix = np.floor(points + 0.5).astype(int)
    out = np.zeros(shape, dtype=np.float32)
    if method == "adaptive":
        dist, _ = cKDTree(pix).query(pix, k=4)
        sigmas = (dist[:, 1] + dist[:, 2] + dist[:, 3]) * 0.1  # beta 0.3 x mean of 3 neighbours
    else:
        sigmas = np.full(len(pix), sigma)
    for (x, y), s in zip(pix, sigmas, strict=True):
        delta = np.zeros(shape, dtype=np.float32)
        delta[min(y, h - 1), min(x, w - 1)] = 1.0
        out += gaussian_filter(delta, s, mode="constant")
    return out


def one_filter_per_sigma(points: np.ndarray, shape: tuple[int, int], method: str, sigma: float) -> np.ndarray:
    """The deltas of all heads with the same sigma in one image, one full-image filter per sigma."""
    from scipy.ndimage import gaussian_filter
    from scipy.spatial import cKDTree

    h, w = shape
    pix = np.floor(points + 0.5).astype(int)
    ys, xs = np.minimum(pix[:, 1], h - 1), np.minimum(pix[:, 0], w - 1)
    if method == "adaptive":
        dist, _ = cKDTree(pix).query(pix, k=4)
        sigmas = np.round((dist[:, 1] + dist[:, 2] + dist[:, 3]) * 0.1 * 4) / 4
    else:
        sigmas = np.full(len(pix), sigma)
    out = np.zeros(shape, dtype=np.float32)
    for s in np.unique(sigmas):
        delta = np.zeros(shape, dtype=np.float32)
        pick = sigmas == s
        np.add.at(delta, (ys[pick], xs[pick]), 1.0)
        out += gaussian_filter(delta, s, mode="constant")
    return out


def crowd(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> np.ndarray:
    """Heads in a few dense groups plus a uniform spread, like a street scene."""
    h, w = shape
    centres = rng.uniform([0.1 * w, 0.3 * h], [0.9 * w, 0.9 * h], size=(5, 2))
    grouped = centres[rng.integers(5, size=4 * n)] + rng.normal(0, 40, (4 * n, 2))
    inside = (grouped >= 0).all(1) & (grouped[:, 0] <= w - 1) & (grouped[:, 1] <= h - 1)
    grouped = grouped[inside][: n // 2]  # heads off the image are redrawn, not piled on the border
    spread = rng.uniform([0, 0.2 * h], [w - 1, h - 1], size=(n - len(grouped), 2))
    return np.concatenate([grouped, spread])


def bench_density(rounds: int, heads: int, per_head: bool = True) -> list[dict]:
    shape = (768, 1024)
    pts = crowd(np.random.default_rng(0), heads, shape)
    rows = []
    for method, sigma in (("adaptive", 4.0), ("fixed", 4.0), ("fixed", 15.0)):
        density_map(pts, shape, method=method, sigma=sigma)  # warm-up: imports, kernel cache
        fns = {
            "cnnzoo": lambda m=method, s=sigma: density_map(pts, shape, method=m, sigma=s),
            "per_sigma": lambda m=method, s=sigma: one_filter_per_sigma(pts, shape, m, s),
        }
        if per_head:
            fns["per_head"] = lambda m=method, s=sigma: per_head_filter(pts, shape, m, s)
        times: dict[str, list[float]] = {k: [] for k in fns}
        maps = {}
        for r in range(rounds):  # alternating order: a load change hits every contender alike
            for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
                t0 = time.perf_counter()
                maps[k] = fns[k]()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        o = med["cnnzoo"]
        label = method if method == "adaptive" else f"fixed, sigma {sigma:g}"
        row = {
            "kernels": label,
            "cnnzoo (ms)": f"{1000 * o:.1f}",
            "one filter per sigma (ms)": f"{1000 * med['per_sigma']:.0f}",
            "speed-up": f"**{med['per_sigma'] / o:.1f}x**",
        }
        if per_head:
            row["per-head filter (ms)"] = f"{1000 * med['per_head']:.0f}"
            row["speed-up "] = f"{med['per_head'] / o:.0f}x"
        row["cnnzoo sum"] = f"{maps['cnnzoo'].sum(dtype=np.float64):.4f}"
        row["per-sigma sum"] = f"{maps['per_sigma'].sum(dtype=np.float64):.4f}"
        rows.append(row)
        print(f"  {label}: {rows[-1]}", flush=True)
    return rows


# -- 2. counters ---------------------------------------------------------------------------------
def torchvision_twin(name: str, ours: nn.Module) -> nn.Module:
    import torchvision

    if name == "resnet50_counter":
        r = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
        trunk = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)
    else:
        trunk = torchvision.models.vgg16().features[:23]
    twin = nn.Sequential(trunk, copy.deepcopy(ours.head))
    # Same weights: the modules are declared in the same order, so the tensors pair up one to one.
    src, dst = list(ours.state_dict().values()), twin.state_dict()
    assert len(src) == len(dst) and all(a.shape == b.shape for a, b in zip(src, dst.values(), strict=True))
    twin.load_state_dict({k: v.clone() for k, v in zip(dst, src, strict=True)})
    return twin.eval()


@torch.no_grad()
def bench_models(rounds: int) -> list[dict]:
    x = torch.randn(1, 3, 768, 1024)
    rows = []
    for name in ("resnet50_counter", "csrnet"):
        ours = create_counter(name).eval()
        twin = torchvision_twin(name, ours)
        a, b = ours(x), twin(x)
        err = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
        ours(x), twin(x)  # warm-up
        ours_t, twin_t = [], []
        for r in range(rounds):  # alternating who goes first, so neither always runs on a warmer cache
            pair = [(ours, ours_t), (twin, twin_t)]
            for model, times in pair if r % 2 == 0 else pair[::-1]:
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        o, t = statistics.median(ours_t), statistics.median(twin_t)
        rows.append(
            {
                "counter": name,
                "cnnzoo img/s": f"{1 / o:.3f}",
                "torchvision-built img/s": f"{1 / t:.3f}",
                "ratio": f"{t / o:.3f}",
                "max rel. diff": f"{err:.1e}",
            }
        )
        print(f"  {rows[-1]}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--heads", type=int, default=500)
    ap.add_argument("--skip-density", action="store_true")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-per-head", action="store_true", help="leave out the naive per-head filter")
    args = ap.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    if not args.skip_density:
        print(f"density maps, 1024x768, {args.heads} heads, median of {args.rounds} rounds:", flush=True)
        print(table(bench_density(args.rounds, args.heads, per_head=not args.skip_per_head)))
    if not args.skip_models:
        print(f"counters at 768x1024, batch 1, eval, median of {args.rounds} rounds:", flush=True)
        print(table(bench_models(args.rounds)))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
