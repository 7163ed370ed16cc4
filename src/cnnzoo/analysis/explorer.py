"""`cnnzoo explore`: the per-layer tables of the zoo on one self-contained page, to point at.

`cnnzoo summary` prints the lecture's table (Stanford CS231n's VGG walk-through: memory early,
parameters late) as text; the explorer shows the same rows as a table you can scroll, as bars of
parameters, MACs and activation memory per layer, as the receptive field's growth with depth
(Araujo, Norris, Sim 2019, Distill), and two models side by side, in the spirit of CNN Explainer
(Wang et al. 2020, arXiv:2004.15004) and Netron.

Every number on the page comes from `profile()`, and every table cell from the same function
that formats `cnnzoo summary`'s rows (`formats.lecture_row`), so the page and the terminal cannot
disagree. The data is embedded as JSON in the page, which is one HTML file with inline style and
script and a Content-Security-Policy that forbids every request (no network, fonts or images).

The charts are inline SVG drawn by about 400 lines of plain JavaScript in `explorer.html` (a
package data file beside this module). No chart library is vendored: bars and one line chart
need none, and a library would be the largest part of the page, a licence to track, and code a
student cannot read next to the data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from cnnzoo.analysis.compare import published_top1
from cnnzoo.analysis.formats import LECTURE_COLUMNS, lecture_row, lecture_total, select_rows, summary_line
from cnnzoo.analysis.profile import Layer, Profile, profile
from cnnzoo.atomic import atomic_write_text

__all__ = ["ROW_FIELDS", "explorer_data", "model_entry", "render_explorer", "write_explorer"]

# One row of the page: the summary's cells as it prints them, then raw numbers for the charts.
ROW_FIELDS = (*LECTURE_COLUMNS, "groups", "params", "macs", "memory_bytes", "effective_stride")
_PLACEHOLDER = "/*__CNNZOO_EXPLORER_DATA__*/"

ProgressCallback = Callable[[int, int, str], None]  # (models done, models in all, name)


def _row(r: Layer) -> list[Any]:
    cells = lecture_row(r)
    return [
        *(cells[c] for c in LECTURE_COLUMNS),
        r.groups,
        r.params,
        r.macs,
        r.memory_bytes,
        r.effective_stride,
    ]


def model_entry(name: str, *, p: Profile | None = None) -> dict[str, Any]:
    """Everything the page shows about one registered model at its default input size.

    `rows` are the rows `cnnzoo summary NAME` prints (elementwise rows hidden, as there), each a
    list in `ROW_FIELDS` order; `total` is the summary's totals row, `notes` its note lines (where
    the receptive field becomes the whole input, and why) and `summary` its last line.
    `p` reuses a profile of `name` made at its default input size.
    """
    from cnnzoo.registry import model_info

    info = model_info(name)
    p = profile(name) if p is None else p
    totals = lecture_total(p)
    return {
        "name": name,
        "family": info.family,
        "paper": info.paper,
        "year": info.year,
        "description": info.description,
        "torchvision": info.torchvision,
        "input_size": list(p.input_size),
        "top1": published_top1(name),
        "params": p.total_params,
        "unused_params": p.unused_params,
        "macs": p.total_macs,
        "memory_bytes": p.total_memory_bytes,
        "receptive_field": p.receptive_field,
        "effective_stride": p.effective_stride,
        "summary": summary_line(p),
        "notes": list(p.notes),
        "total": [totals[c] for c in LECTURE_COLUMNS],
        "rows": [_row(r) for r in select_rows(p)],
    }


def explorer_data(names: Sequence[str] | None = None, *, progress: ProgressCallback | None = None) -> dict:
    """The page's JSON: one entry per model (all registered ones when `names` is None).

    Each model is profiled on the meta device (`profile()`), so no weights or activations are
    allocated: the whole zoo takes about half a minute on one CPU thread.
    """
    from cnnzoo import __version__
    from cnnzoo.registry import list_models, model_info

    names = list_models() if names is None else list(dict.fromkeys(names))
    for name in names:
        model_info(name)  # an unknown name fails before any work, with a close match
    models = []
    for i, name in enumerate(names):
        models.append(model_entry(name))
        if progress is not None:
            progress(i + 1, len(names), name)
    return {"version": __version__, "columns": list(ROW_FIELDS), "models": models}


def render_explorer(data: dict) -> str:
    """The page: the template with `data` embedded as JSON in a non-executed script element."""
    template = resources.files("cnnzoo.analysis").joinpath("explorer.html").read_text(encoding="utf-8")
    # Compact JSON, and no "</" that could end the script element early (a name cannot hold one
    # today, a description might one day).
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    if template.count(_PLACEHOLDER) != 1:
        raise RuntimeError("explorer.html must hold the data placeholder exactly once")
    return template.replace(_PLACEHOLDER, payload)


def write_explorer(
    path: str | Path,
    names: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write the explorer page for `names` (default: the whole zoo) atomically to `path`.

    Returns the path and a few facts for the caller to report: models, bytes, seconds.
    Raises FileExistsError if `path` exists and `overwrite` is False (checked before profiling).
    """
    path = Path(path)
    if path.is_dir():  # even with overwrite: a folder is never replaced by a page
        raise IsADirectoryError(f"{str(path)!r} is a folder; --out takes a file name, e.g. explorer.html")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; pass --overwrite to replace it")
    start = time.perf_counter()
    data = explorer_data(names, progress=progress)
    page = render_explorer(data)
    atomic_write_text(path, page)
    facts = {
        "models": len(data["models"]),
        "bytes": len(page.encode("utf-8")),
        "seconds": time.perf_counter() - start,
    }
    return path, facts
