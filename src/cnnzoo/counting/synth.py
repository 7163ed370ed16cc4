"""Synthetic crowds in ShanghaiTech's on-disk format, so the whole pipeline runs offline.

A scene is a sky and a ground plane meeting at a horizon, clutter (buildings, poles, benches,
paving noise), and people drawn far to near: a body and a head whose size grows linearly with
the distance below the horizon (a ground-plane perspective, as in ShanghaiTech's street views),
half of them in groups. The annotation is the centre of each head, written like the release's
``GT_IMG_n.mat`` (``image_info[0, 0][0, 0]`` with ``location`` in 1-based MATLAB pixel
coordinates and ``number``). Counts are drawn uniformly from 0 to `max_people`, so a model that
predicts the mean count does badly and one that counts heads does well.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cnnzoo.counting.shanghaitech import PARTS, SYNTHETIC_MARKER

__all__ = ["render_scene", "write_annotation", "write_synthetic"]

_SKIN = ((224, 172, 140), (198, 134, 96), (141, 85, 54), (241, 194, 160), (110, 70, 45))
_HAIR = ((20, 15, 12), (60, 40, 25), (95, 70, 40), (35, 30, 30), (150, 120, 80))


def render_scene(
    rng: np.random.Generator, size: tuple[int, int], count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 image, count x 2 head centres, 0-based x then y) of one synthetic street."""
    from PIL import Image, ImageDraw, ImageFilter

    h, w = size
    horizon = rng.uniform(0.12, 0.35) * h
    rows = np.arange(h, dtype=np.float64)[:, None, None]
    sky = np.array(rng.uniform(150, 230, 3))
    ground = np.array(rng.uniform(60, 150, 3))
    t = np.clip((rows - horizon) / max(1.0, h - horizon), 0, 1)
    base = np.where(rows < horizon, sky - 40 * rows / max(horizon, 1), ground * (0.8 + 0.4 * t))
    base = np.broadcast_to(base, (h, w, 3)) + rng.normal(0, 7, (h, w, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)

    scale = min(h, w)
    r_min, r_max = max(1.5, 0.012 * scale), max(2.5, 0.05 * scale)

    def colour(lo: int = 30, hi: int = 230) -> tuple[int, ...]:
        return tuple(int(v) for v in rng.integers(lo, hi, 3))

    # Clutter: buildings on the horizon, poles, benches and paving stones below it.
    for _ in range(int(rng.integers(2, 6))):
        x0 = rng.uniform(-0.1, 0.9) * w
        bw, bh = rng.uniform(0.08, 0.3) * w, rng.uniform(0.05, 0.6) * horizon + 2
        draw.rectangle([x0, horizon - bh, x0 + bw, horizon + 1], fill=colour(60, 200))
    for _ in range(int(rng.integers(3, 9))):
        y = rng.uniform(horizon, h)
        tt = (y - horizon) / max(1.0, h - horizon)
        x = rng.uniform(0, w)
        s = r_min + (r_max - r_min) * tt
        kind = rng.integers(3)
        if kind == 0:  # pole
            draw.rectangle([x, y - 14 * s, x + max(1, 0.5 * s), y], fill=colour(20, 120))
        elif kind == 1:  # bench or car-like box
            draw.rectangle([x, y - 2.5 * s, x + 8 * s, y], fill=colour())
        else:  # paving stone
            draw.ellipse([x - 3 * s, y - s, x + 3 * s, y + s], fill=colour(70, 180))

    # People: half uniformly spread, half in up to three groups.
    n_group = int(rng.binomial(count, 0.5)) if count else 0
    ys = rng.uniform(horizon + 1, h - 1, count - n_group)
    xs = rng.uniform(0, w - 1, count - n_group)
    if n_group:
        centres = rng.uniform([0, horizon + 1], [w - 1, h - 1], size=(int(rng.integers(1, 4)), 2))
        pick = centres[rng.integers(len(centres), size=n_group)]
        spread = rng.uniform(0.04, 0.12) * np.array([w, h])
        grouped = pick + rng.normal(0, 1, (n_group, 2)) * spread
        xs = np.concatenate([xs, np.clip(grouped[:, 0], 0, w - 1)])
        ys = np.concatenate([ys, np.clip(grouped[:, 1], horizon + 1, h - 1)])
    order = np.argsort(ys)  # far first, so the near ones occlude them
    xs, ys = xs[order], ys[order]
    for x, y in zip(xs, ys, strict=True):
        tt = (y - horizon) / max(1.0, h - horizon)
        r = r_min + (r_max - r_min) * tt
        bx, by = 1.5 * r, 2.8 * r
        draw.ellipse([x - bx, y + r, x + bx, y + r + 2 * by], fill=colour())
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_SKIN[int(rng.integers(len(_SKIN)))])
        draw.chord([x - r, y - r, x + r, y + r], 180, 360, fill=_HAIR[int(rng.integers(len(_HAIR)))])
    img = img.filter(ImageFilter.GaussianBlur(0.5))
    # Head centres in 0-based pixel-centre coordinates: PIL's ellipse box [x - r, x + r] is
    # centred on x in the same convention.
    return np.asarray(img), np.stack([xs, ys], axis=1).reshape(-1, 2)


def write_annotation(path: str | os.PathLike, points: np.ndarray) -> Path:
    """Write 0-based head points as a ShanghaiTech GT_IMG_n.mat (1-based, nested struct), atomically."""
    import scipy.io

    from cnnzoo.atomic import atomic_write

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) + 1.0
    record = np.empty((1, 1), dtype=[("location", "O"), ("number", "O")])
    record[0, 0]["location"] = pts
    record[0, 0]["number"] = np.array([[len(pts)]], dtype=np.float64)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = record
    return atomic_write(Path(path), lambda tmp: scipy.io.savemat(tmp, {"image_info": cell}, appendmat=False))


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    from cnnzoo.atomic import atomic_write

    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="JPEG", quality=92))


def write_synthetic(
    root: str | os.PathLike,
    *,
    parts: tuple[str, ...] = PARTS,
    train: int = 40,
    test: int = 20,
    size: tuple[int, int] = (192, 256),
    max_people: int = 60,
    seed: int = 0,
    layout: str = "final",
) -> dict[str, Any]:
    """Write synthetic ShanghaiTech parts under `root`; returns what was written.

    Part B images all have `size` (H, W), as the release's 768 x 1024; Part A sizes vary by up to
    25% around it, as the release's web images do. `layout="final"` writes part_X_final/ with
    ground_truth/ (the common release), `"plain"` part_X/ with ground-truth/ (the other one).
    """
    if layout not in ("final", "plain"):
        raise ValueError(f"layout must be 'final' or 'plain', got {layout!r}")
    for p in parts:
        if p not in PARTS:
            raise ValueError(f"parts must be among A, B, got {p!r}")
    h, w = size
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least 16x16, got {h}x{w}")
    if train < 2 or test < 1 or max_people < 0:
        raise ValueError("need train >= 2, test >= 1 and max_people >= 0")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, Any] = {"root": str(root), "layout": layout, "parts": {}}
    for part in parts:
        part_dir = root / (f"part_{part}_final" if layout == "final" else f"part_{part}")
        gt_name = "ground_truth" if layout == "final" else "ground-truth"
        counts: dict[str, list[int]] = {}
        for split, n in (("train_data", train), ("test_data", test)):
            images_dir, gt_dir = part_dir / split / "images", part_dir / split / gt_name
            counts[split] = []
            for i in range(1, n + 1):
                if part == "A":
                    f = rng.uniform(0.75, 1.25, 2)
                    shape = (max(16, int(h * f[0]) // 2 * 2), max(16, int(w * f[1]) // 2 * 2))
                else:
                    shape = (h, w)
                count = int(rng.integers(0, max_people + 1))
                image, points = render_scene(rng, shape, count)
                _write_jpeg(images_dir / f"IMG_{i}.jpg", image)
                write_annotation(gt_dir / f"GT_IMG_{i}.mat", points)
                counts[split].append(count)
        written["parts"][part] = {"folder": str(part_dir), **{k: len(v) for k, v in counts.items()}}
    meta = {
        "generator": "cnnzoo count synth",
        "seed": seed,
        "size": list(size),
        "max_people": max_people,
        "train": train,
        "test": test,
        "layout": layout,
        "parts": list(parts),
    }
    from cnnzoo.atomic import atomic_write_bytes

    atomic_write_bytes(root / SYNTHETIC_MARKER, (json.dumps(meta, indent=2) + "\n").encode())
    return written
