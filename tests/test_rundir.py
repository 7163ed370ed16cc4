"""Files written atomically take the user's umask, as `open()` and `mkdir` would give them."""

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
from cnnzoo.train.checkpoint import save_checkpoint, write_json_atomic
from cnnzoo.weights import save_weights


def tiny() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(2, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def save(folder: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, **kw) -> Path:
    return save_checkpoint(folder, model=model, optimizer=opt, state={"epoch": epoch}, metadata={}, **kw)


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
    ckpt = save(tmp_path / "run", model, opt, 1)
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
