"""Checkpoints that keep to their own run, and files that take the user's umask."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnzoo.atomic
from cnnzoo.atomic import atomic_write_bytes, atomic_write_text
from cnnzoo.train.checkpoint import (
    checkpoint_run_id,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_json_atomic,
)
from cnnzoo.weights import save_weights


# -- checkpoints keep to their own run ----------------------------------------------------------
def tiny() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(2, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def save(folder: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, **kw) -> Path:
    return save_checkpoint(folder, model=model, optimizer=opt, state={"epoch": epoch}, metadata={}, **kw)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "checkpoints").iterdir())


def test_a_shorter_rerun_never_touches_the_old_runs_checkpoints(tmp_path):
    model, opt = tiny()
    for epoch in (1, 2, 3):
        save(tmp_path, model, opt, epoch, run_id="old")
    assert names(tmp_path) == ["epoch-0002", "epoch-0003", "latest"]
    for epoch in (1, 2):
        new = save(tmp_path, model, opt, epoch, run_id="new")
    # epoch-0002 is the old run's: the new run's takes the next free name instead of replacing it.
    assert names(tmp_path) == ["epoch-0001", "epoch-0002", "epoch-0002.2", "epoch-0003", "latest"]
    assert latest_checkpoint(tmp_path) == new == tmp_path / "checkpoints" / "epoch-0002.2"
    assert checkpoint_run_id(new) == "new" and load_checkpoint(new)[2]["run_id"] == "new"
    assert checkpoint_run_id(tmp_path / "checkpoints" / "epoch-0003") == "old"
    save(tmp_path, model, opt, 3, run_id="new")
    assert names(tmp_path) == ["epoch-0002", "epoch-0002.2", "epoch-0003", "epoch-0003.2", "latest"]


def test_latest_never_dangles_without_run_ids(tmp_path):
    # The old bug: names sorted, KEEP newest; a rerun's epoch 1 was pruned while `latest` named it.
    model, opt = tiny()
    for epoch in range(1, 6):
        save(tmp_path, model, opt, epoch)
    first = save(tmp_path, model, opt, 1)
    assert latest_checkpoint(tmp_path) == first
    assert names(tmp_path) == ["epoch-0001", "epoch-0004", "epoch-0005", "latest"]
    assert checkpoint_run_id(first) is None and "run_id" not in load_checkpoint(first)[2]


def test_pruning_orders_by_epoch_and_clears_only_its_own_leftovers(tmp_path):
    model, opt = tiny()
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    mine, theirs = ckpts / ".epoch-0009.run-me.ab12cd34", ckpts / ".epoch-0009.run-other.ab12cd34"
    mine.mkdir(), theirs.mkdir()
    for epoch in (9998, 9999, 10000):  # "epoch-10000" sorts before "epoch-9999" by name
        save(tmp_path, model, opt, epoch, run_id="me")
    assert names(tmp_path) == [theirs.name, "epoch-10000", "epoch-9999", "latest"]
    with pytest.raises(ValueError, match="run_id must be"):
        save(tmp_path, model, opt, 1, run_id="../x")


# -- modes from the umask -----------------------------------------------------------------------
@pytest.fixture
def umask():
    """Set the process umask for a test (and forget the cached one before and after)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)
        cnnzoo.atomic._umask.cache_clear()

    yield set_mask
    os.umask(old)
    cnnzoo.atomic._umask.cache_clear()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
@pytest.mark.parametrize(("mask", "file", "folder"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_written_files_take_the_umask(tmp_path, umask, mask, file, folder):
    umask(mask)
    model, opt = tiny()
    ckpt = save(tmp_path / "run", model, opt, 1, run_id="r")
    assert mode(ckpt) == folder
    assert {mode(p) for p in ckpt.iterdir()} == {file}
    assert mode(tmp_path / "run" / "checkpoints" / "latest") == file
    written = [
        save_weights(model, tmp_path / "w.safetensors"),
        write_json_atomic(tmp_path / "a.json", {}),
        atomic_write_bytes(tmp_path / "b.bin", b"x"),
        atomic_write_text(tmp_path / "c.txt", "x"),
    ]
    assert {p.name: mode(p) for p in written} == {p.name: file for p in written}
    assert json.loads((tmp_path / "a.json").read_text()) == {}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_plots_take_the_umask(tmp_path, umask):
    plots = pytest.importorskip("cnnzoo.train.plots")
    pytest.importorskip("matplotlib")
    umask(0o022)
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = plots.save_png(fig, tmp_path / "curve.png")
    assert mode(path) == 0o644 and path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
