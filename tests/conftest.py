"""Fixtures shared by several test files."""

from __future__ import annotations

from typing import Any

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one thread: for many small models thread start-up costs more than it saves,
    and under `pytest -n 2` two workers with two threads each would oversubscribe two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache of the test's own, and no downloads: the `checkpoints` folder
    where `pretrained=True` looks for torchvision's ImageNet files. Tests put files there."""
    import urllib.error

    from cnnzoo import pretrained

    def offline(url, dest, timeout):
        raise urllib.error.URLError("offline in tests")

    monkeypatch.setattr(pretrained, "_download", offline)
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(before)


@pytest.fixture
def checked_figures(monkeypatch) -> list[Any]:
    """Every figure cnnzoo saves during the test passes `check_figure` first (pictures with their
    axes off skip the axis-label part); yields the list of figures checked, saved as usual."""
    import cnnzoo.analysis.compare
    import cnnzoo.counting.plots
    import cnnzoo.experiments.plots
    import cnnzoo.train.plots
    from figure_checks import check_figure

    original = cnnzoo.train.plots.save_png
    seen: list[Any] = []

    def save(fig: Any, path: Any, **kwargs: Any) -> Any:
        check_figure(fig, axes_labels=any(ax.axison for ax in fig.axes))
        seen.append(fig)
        return original(fig, path, **kwargs)

    for module in (
        cnnzoo.train.plots,
        cnnzoo.counting.plots,
        cnnzoo.experiments.plots,
        cnnzoo.analysis.compare,
    ):
        monkeypatch.setattr(module, "save_png", save, raising=False)
    return seen
