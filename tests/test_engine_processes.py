"""The engine against real processes: SIGKILL in the middle of a run and `--resume` ends bit for bit
where an uninterrupted run ends (classification and counting), a second run on a folder in use
is refused at once without harming the first, concurrent default runs get folders of their own,
and a finished run is neither replaced nor continued unless asked.

Every run is `python -m cnnzoo` in a subprocess with one thread, as from a shell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.train.checkpoint import checkpoint_run_id
from cnnzoo.weights import read_state_dict

SRC = str(Path(__file__).resolve().parents[1] / "src")
CNNZOO = [sys.executable, "-m", "cnnzoo"]
CLASSES = ("circle", "square", "stripes")


def _draw(kind: int, rng: np.random.Generator, side: int = 32) -> np.ndarray:
    """A grey image of one of three shapes, jittered and noisy."""
    img = rng.integers(0, 40, (side, side)).astype(np.uint8)
    cy, cx = rng.integers(side // 3, 2 * side // 3, 2)
    yy, xx = np.mgrid[:side, :side]
    if kind == 0:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= (side // 5) ** 2] = 220
    elif kind == 1:
        img[cy - side // 6 : cy + side // 6, cx - side // 6 : cx + side // 6] = 220
    else:
        img[::3] = 220
    return img


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    # 210 training PNGs of 32x32: an epoch of resnet20 takes ~1 s on one thread, long enough
    # that a kill sent within ~20 ms of epoch 1's checkpoint lands inside epoch 2.
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for split, n in (("train", 70), ("test", 20)):
        for c, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_draw(c, rng), mode="L").save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env(tmp: Path) -> dict[str, str]:
    # This tree's code in the child, one thread per process, its own data cache, and no
    # torch.distributed hints inherited from the caller.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        PYTHONPATH=SRC + os.pathsep + env.get("PYTHONPATH", ""),
        CNNZOO_DATA=str(tmp / "cache"),
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
    )
    return env


def _train(data: Path, *extra: str, epochs: int = 3) -> list[str]:
    return [
        "train", "resnet20", "--data", f"imagefolder:{data}", "--recipe", "lenet-fast",
        "--epochs", str(epochs), "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.05",
        "--schedule", "cosine", "--seed", "3", "--threads", "1", "--no-summary", "--no-progress",
        *extra,
    ]  # fmt: skip


def _start(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    # A run prints a few lines only: pipes read at the end cannot fill up.
    return subprocess.Popen(
        [*CNNZOO, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, code: int = 0, timeout: int = 180) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == code, (
        f"{proc.args[3:5]} exited {proc.returncode}:\n{out[-2000:]}\n{err[-3000:]}"
    )
    return out, err


def _run(args: list[str], env: dict[str, str], code: int = 0, cwd: Path | None = None) -> tuple[str, str]:
    return _finish(_start(args, env, cwd), code)


def _latest(out: Path) -> str | None:
    try:
        return json.loads((out / "checkpoints" / "latest").read_text())["checkpoint"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"the run ended (exit {proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-2000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.02)


def _kill_after_epoch_1(proc: subprocess.Popen, out: Path) -> None:
    """SIGKILL `proc` as soon as epoch 1's checkpoint is complete; check it died by the signal."""
    _wait_for(lambda: _latest(out) == "epoch-0001", proc, "epoch 1's checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}: the run was not killed"
    # Killed inside epoch 2: nothing after epoch 1 was written, and the dead run's lock file stays
    # behind (nobody removed it), holding nothing.
    assert _latest(out) == "epoch-0001"
    assert not (out / "final.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / ".lock").read_text().strip() == str(proc.pid)


def _assert_same_weights(a: Path, b: Path) -> None:
    x, y = read_state_dict(a), read_state_dict(b)
    assert x.keys() == y.keys() and x, (a, b)
    for k in x:
        assert torch.equal(x[k], y[k]), f"{b.name}: {k} differs"


def _timeless(row: dict) -> dict:
    return {k: v for k, v in row.items() if "seconds" not in k}


def _rows(out: Path) -> list[dict]:
    return [_timeless(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- kill -9, then --resume ----------------------------------------------------------------------
def test_sigkill_then_resume_is_bit_exact_classification(shapes, tmp_path):
    env = _env(tmp_path)
    ref, out = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = _start(_train(shapes, "--out", str(ref)), env)  # alongside, one thread each
    killed = _start(_train(shapes, "--out", str(out)), env)
    _kill_after_epoch_1(killed, out)
    run_id = checkpoint_run_id(out / "checkpoints" / "epoch-0001")

    # The dead run's lock went with it: the resume opens the folder and finishes the run.
    stdout, _ = _run(["train", "--resume", str(out), "--no-progress"], env)
    assert "resumed from" in stdout and "at epoch 1" in stdout, stdout
    _finish(reference)

    for name in ("model.safetensors", "last.safetensors"):
        _assert_same_weights(ref / name, out / name)
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows == _rows(ref)
    drop = ("out", "train_seconds", "seconds")
    a, b = _json(ref / "final.json"), _json(out / "final.json")
    assert {k: v for k, v in b.items() if k not in drop} == {k: v for k, v in a.items() if k not in drop}
    assert b["out"] == str(out) and b["epochs"] == 3
    # Nothing changed on resume, so none is recorded, and the run keeps its id; config.json
    # records settings only (not how a command opened the folder) and differs only in the folder.
    a, b = _json(ref / "config.json"), _json(out / "config.json")
    assert "resumes" not in b and "resume" not in b and "overwrite" not in b
    drop = ("out",)
    assert {k: v for k, v in b.items() if k not in drop} == {k: v for k, v in a.items() if k not in drop}
    assert checkpoint_run_id(out / "checkpoints" / _latest(out)) == run_id
    assert not (out / ".lock").exists()  # the resumed run closed the folder


@pytest.fixture(scope="module")
def crowds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crowds")
    args = ["count", "synth", str(root), "--parts", "B", "--train", "48", "--test", "6", "--size", "96x96"]
    _run([*args, "--max-people", "20"], _env(root))
    return root


def test_sigkill_then_resume_is_bit_exact_counting(crowds, tmp_path):
    env = _env(tmp_path)
    # ~0.6 s an epoch on one thread; no pretrained trunk (the default), so nothing is downloaded.
    args = ["count", "train", "--root", str(crowds), "--part", "B", "--model", "resnet18_counter"]
    args += ["--crop", "64x64", "--batch-size", "4", "--lr", "1e-3", "--epochs", "3", "--threads", "1"]
    args += ["--no-progress"]
    ref, out = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = _start([*args, "--out", str(ref)], env)
    killed = _start([*args, "--out", str(out)], env)
    _kill_after_epoch_1(killed, out)

    stdout, _ = _run(["count", "train", "--resume", str(out), "--no-progress"], env)
    assert "resumed from" in stdout and "at epoch 1" in stdout, stdout
    _finish(reference)

    for name in ("model.safetensors", "last.safetensors"):
        _assert_same_weights(ref / name, out / name)
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows == _rows(ref)
    a, b = _json(ref / "final.json"), _json(out / "final.json")
    for key in ("test_mae", "test_rmse", "val_mae", "best_epoch", "epochs"):
        assert b[key] == a[key], key
    assert (out / "test_predictions.csv").read_text() == (ref / "test_predictions.csv").read_text()


def test_counting_trains_under_torchrun_with_two_processes(crowds, tmp_path):
    # Counting runs on the engine, so DDP holds for it too: two gloo processes each take half of
    # every global batch; rank 0 alone prints and writes.
    env = _env(tmp_path)
    out = tmp_path / "ddp"
    args = ["count", "train", "--root", str(crowds), "--part", "B", "--model", "resnet18_counter"]
    args += ["--crop", "64x64", "--batch-size", "4", "--lr", "1e-3", "--epochs", "2", "--threads", "1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*torchrun, "-m", "cnnzoo", *args, "--no-progress", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.count("predicting the training mean count") == 1, proc.stdout
    final = _json(out / "final.json")
    assert final["world_size"] == 2 and final["epochs"] == 2
    assert final["test_mae"] < final["mean_baseline_test_mae"] * 3  # finite, sane counts
    assert [r["epoch"] for r in _rows(out)] == [1, 2]


# -- two runs, one folder ------------------------------------------------------------------------
def test_a_second_run_on_a_folder_in_use_is_refused_at_once(shapes, tmp_path, one_thread):
    from cnnzoo.train.evaluate import evaluate

    env = _env(tmp_path)
    out = tmp_path / "x"
    first = _start(_train(shapes, "--out", str(out), epochs=10), env)
    _wait_for(lambda: (out / "config.json").is_file(), first, "config.json")
    # The same folder, plainly and with --overwrite (which must not remove a live run's files):
    # both refused before the first run gets far, naming it.
    seconds = time.monotonic()
    second = [_start(_train(shapes, "--out", str(out), *extra), env) for extra in ((), ("--overwrite",))]
    for proc in second:
        _, err = _finish(proc, code=2, timeout=60)
        assert err.count("\n") == 1 and err.startswith("cnnzoo: error: "), err
        assert repr(str(out)) in err and f"in use by another cnnzoo run (pid {first.pid})" in err, err
    seconds = time.monotonic() - seconds
    assert first.poll() is None, f"the first run ended before the second was refused ({seconds:.1f} s)"
    assert not (out / "final.json").exists()

    stdout, _ = _finish(first)
    final = _json(out / "final.json")
    assert final["epochs"] == 10 and [r["epoch"] for r in _rows(out)] == list(range(1, 11))
    assert "test top-1" in stdout
    # The run's weights load, and score on test what the run reported.
    result = evaluate(out, batch_size=64, root=str(tmp_path / "cache"))
    assert result["test_top1"] == pytest.approx(final["test_top1"], abs=1e-6)
    assert (
        read_state_dict(out / "last.safetensors").keys() == read_state_dict(out / "model.safetensors").keys()
    )


def test_concurrent_default_runs_get_numbered_folders(shapes, tmp_path):
    env = _env(tmp_path)
    procs = [_start(_train(shapes, epochs=1), env, cwd=tmp_path) for _ in range(2)]
    outs = [_finish(p)[0] for p in procs]
    folders = sorted(p for p in (tmp_path / "runs").iterdir())
    base = folders[0].name
    assert base.startswith("resnet20-") and base.endswith(shapes.name), base
    assert [f.name for f in folders] == [base, f"{base}-2"]
    # Each run wrote its own folder, and said which.
    said = sorted(out.strip().rsplit("run in ", 1)[1] for out in outs)
    assert said == [str(Path("runs") / f.name) for f in folders]
    for f in folders:
        assert _json(f / "final.json")["out"] == str(Path("runs") / f.name)
        assert len(_rows(f)) == 1
    # Same settings and seed: the same weights, so neither run read or wrote the other's files.
    _assert_same_weights(folders[0] / "model.safetensors", folders[1] / "model.safetensors")


def test_a_finished_run_is_replaced_only_with_overwrite(shapes, tmp_path):
    env = _env(tmp_path)
    out = tmp_path / "x"
    _run(_train(shapes, "--out", str(out), epochs=1), env)
    (out / "notes.txt").write_text("mine")
    kept = {name: (out / name).read_bytes() for name in ("final.json", "model.safetensors", "metrics.jsonl")}
    first_id = checkpoint_run_id(out / "checkpoints" / _latest(out))

    _, err = _run(_train(shapes, "--out", str(out), "--seed", "4", epochs=2), env, code=2)
    assert err.count("\n") == 1 and err.startswith("cnnzoo: error: "), err
    assert repr(str(out)) in err and "--resume" in err and "--overwrite" in err, err
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert _latest(out) == "epoch-0001" and not (out / ".lock").exists()

    _run(_train(shapes, "--out", str(out), "--seed", "4", "--overwrite", epochs=2), env)
    assert _json(out / "final.json")["epochs"] == 2 and len(_rows(out)) == 2
    for name in ("final.json", "model.safetensors", "metrics.jsonl"):
        assert (out / name).read_bytes() != kept[name], name
    # The old run's checkpoints went with it; the user's own file beside the run stayed.
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("epoch-*"))
    assert ckpts == ["epoch-0001", "epoch-0002"]
    ids = {checkpoint_run_id(out / "checkpoints" / c) for c in ckpts}
    assert len(ids) == 1 and first_id not in ids
    assert (out / "notes.txt").read_text() == "mine"
