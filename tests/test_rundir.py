"""Run folders that never lose work: numbered defaults, refusing a finished run, the lifetime lock
(against a real second process), pruning that keeps to its own run, and file modes from the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
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
from cnnzoo.train.rundir import LOCK_FILE, RunDirBusy, RunDirError, holds_run, open_run_dir
from cnnzoo.weights import save_weights

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A second process that opens a run folder, says so, and holds it until its stdin closes or it dies.
HOLDER = """
import sys
from cnnzoo.train.rundir import open_run_dir
path = None if sys.argv[1] == "-" else sys.argv[1]
run = open_run_dir(path, default=sys.argv[2] if len(sys.argv) > 2 else None)
(run.path / "config.json").write_text("{}")
print(run.path, flush=True)
sys.stdin.read()
"""


def start_holder(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def held_path(proc: subprocess.Popen) -> Path:
    line = proc.stdout.readline().strip()
    assert line, proc.stderr.read()
    return Path(line)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=60)


def write_run(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")


# -- choosing and refusing folders ---------------------------------------------------------------
def test_default_folders_are_numbered_and_created(tmp_path):
    base = tmp_path / "runs" / "lenet5-fashion-mnist"
    with open_run_dir(None, default=base) as a, open_run_dir(None, default=base) as b:
        assert (a.path, b.path) == (base, base.with_name("lenet5-fashion-mnist-2"))
        assert a.path.is_dir() and b.path.is_dir() and a.run_id != b.run_id
        (a.path / "config.json").write_text("{}")
    assert a.path.is_dir()  # it holds a run's file
    assert not b.path.exists()  # created, left empty: removed again, as if the run never started
    with open_run_dir("", default=base) as c:
        assert c.path == base.with_name("lenet5-fashion-mnist-2")


def test_two_processes_started_at_once_get_two_default_folders(tmp_path):
    base = str(tmp_path / "runs" / "lenet5-mnist")
    procs = [start_holder("-", base) for _ in range(2)]
    try:
        paths = {held_path(p) for p in procs}
    finally:
        for p in procs:
            stop(p)
    assert paths == {Path(base), Path(f"{base}-2")}


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path):
    for marker in ("config.json", "final.json", "metrics.jsonl", "model.safetensors", "checkpoints"):
        folder = tmp_path / marker.replace(".", "_")
        folder.mkdir()
        (folder / marker).mkdir() if marker == "checkpoints" else (folder / marker).write_text("")
        with pytest.raises(RunDirError) as info:
            open_run_dir(folder, default=tmp_path / "unused")
        message = str(info.value)
        assert isinstance(info.value, ValueError) and "\n" not in message
        assert str(folder) in message and "--resume to continue it or --overwrite to replace it" in message
        assert not (folder / LOCK_FILE).exists()  # the refusal released the lock


def test_empty_or_missing_folders_are_fine_and_a_file_is_not(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    with open_run_dir(tmp_path / "empty") as run:
        assert run.path == tmp_path / "empty" and not run.created and run.run_id
        assert (run.path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["notes.txt"]  # lock file gone
    with open_run_dir(tmp_path / "new" / "deeper") as run:
        assert run.path.is_dir() and run.created
    assert not (tmp_path / "new" / "deeper").exists()  # nothing written: nothing left
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunDirError, match=r"'.*afile' is a file; a run needs a folder"):
        open_run_dir(tmp_path / "afile")


def test_resume_needs_a_run_and_a_folder(tmp_path):
    with pytest.raises(RunDirError, match="holds no run to continue") as info:
        open_run_dir(tmp_path / "nothing", resume=True)
    assert str(tmp_path / "nothing") in str(info.value) and not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="holds no run to continue"):
        open_run_dir(tmp_path / "empty", resume=True)
    with pytest.raises(RunDirError, match="--resume needs the run's folder"):
        open_run_dir(None, default=tmp_path / "runs" / "x", resume=True)
    write_run(tmp_path / "run")
    with pytest.raises(RunDirError, match="choose one"):
        open_run_dir(tmp_path / "run", resume=True, overwrite=True)


def test_resume_keeps_the_run_id_of_the_checkpoint_it_continues(tmp_path):
    write_run(tmp_path / "run")
    with open_run_dir(tmp_path / "run", resume=True) as run:
        assert run.resumed and run.run_id  # a run that crashed before its first checkpoint
    model, opt = tiny()
    save(tmp_path / "run", model, opt, 1, run_id="abc123")
    with open_run_dir(tmp_path / "run", resume=True) as run:
        assert run.run_id == "abc123"


def test_overwrite_removes_the_runs_files_and_nothing_else(tmp_path):
    folder = tmp_path / "run"
    write_run(folder)
    for name in ("final.json", "metrics.jsonl", "model.safetensors", "last.safetensors", "curves.png"):
        (folder / name).write_text("old")
    for name in ("test_predictions.csv", "test_scatter.png", "confusion.png", "report.md", "report.html"):
        (folder / name).write_text("old")
    for sub in ("checkpoints/epoch-0001", "tb"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "f").write_text("old")
    (folder / "notes.txt").write_text("mine")
    (folder / "data").mkdir()
    with open_run_dir(folder, overwrite=True) as run:
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE, "data", "notes.txt"]
        assert not holds_run(run.path) and run.run_id
    with open_run_dir(tmp_path / "fresh", overwrite=True) as run:  # nothing to replace: fine
        assert run.path.is_dir()


# -- the lock --------------------------------------------------------------------------------------
def test_a_second_process_is_refused_at_once_until_the_holder_dies(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(str(folder))
    try:
        assert held_path(holder) == folder
        # The holder wrote config.json: without the lock this would be "already holds a run".
        with pytest.raises(RunDirBusy) as info:
            open_run_dir(folder, resume=True)
        assert isinstance(info.value, RunDirError)
        assert str(info.value) == (
            f"{str(folder)!r} is in use by another cnnzoo run (pid {holder.pid}); "
            "wait for it or choose another --out"
        )
        with pytest.raises(RunDirBusy):
            open_run_dir(folder, overwrite=True)
        assert (folder / "config.json").is_file()  # the refused overwrite removed nothing
    finally:
        holder.kill()  # no close(): the kernel releases the lock of a dead process
        holder.communicate(timeout=60)
    with open_run_dir(folder, resume=True) as run:
        assert (run.path / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_the_lock_is_held_until_close(tmp_path):
    run = open_run_dir(tmp_path / "run")
    with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
        open_run_dir(tmp_path / "run")  # flock: a second open file conflicts even in one process
    run.close()
    run.close()  # idempotent
    assert run.closed
    with open_run_dir(tmp_path / "run") as again:
        assert not again.closed


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
