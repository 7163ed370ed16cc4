"""The experiments' figures: the trainer's matplotlib helpers (atomic PNGs) and the Pareto frontier."""

from __future__ import annotations

from collections.abc import Sequence

from cnnzoo.train.plots import label_points, log_axis, pyplot, save_png

__all__ = ["label_points", "log_axis", "pareto_front", "pyplot", "save_png"]


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
