"""Matplotlib for the experiments' figures (the `plot` extra), PNGs written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["pareto_front", "pyplot", "save_png"]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or an ImportError saying how to install it."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(
            "the experiments draw their plots with matplotlib: pip install 'cnnzoo[plot]'"
        ) from e
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        pyplot().close(fig)
    return path


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point dominates (cost <= and score >=, one of them strictly),
    sorted by cost: the accuracy-vs-cost frontier."""
    if len(costs) != len(scores):
        raise ValueError(f"{len(costs)} costs but {len(scores)} scores")
    front = []
    for i, (c, s) in enumerate(zip(costs, scores, strict=True)):
        dominated = any(
            (c2 <= c and s2 >= s) and (c2 < c or s2 > s)
            for j, (c2, s2) in enumerate(zip(costs, scores, strict=True))
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (costs[i], -scores[i]))
