"""`cnnzoo train` as a user launches it: real files on disk, the console script, torchrun, TensorBoard.

test_train.py drives the Trainer in-process on synthetic loaders; here the whole path runs in
subprocesses, as from a shell: an image folder of PNG files, `python -m cnnzoo`, and
`torchrun --nproc_per_node 2` with gloo on this CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import shapes
from cnnzoo.weights import read_state_dict


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    # 40 a class: 4 are held out for validation, and the 108 left split evenly over two ranks.
    return shapes.write_folder(tmp_path_factory.mktemp("shapes"))


def _env(tmp: Path) -> dict[str, str]:
    # Own cache root, one thread per process (two processes share the two cores), and no
    # torch.distributed hints inherited from the caller.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(CNNZOO_DATA=str(tmp / "cache"), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def _train_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "lenet5", "--data", f"imagefolder:{folder}", "--epochs", "2", "--batch-size", "16",
        "--optimizer", "sgd", "--lr", "0.05", "--schedule", "cosine", "--model-arg", "act=relu",
        "--model-arg", "img_size=16", "--seed", "3", "--out", str(out), "--no-summary", "--no-progress",
        *extra,
    ]  # fmt: skip


def _run(cmd: list[str], env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_torchrun_two_gloo_processes_match_one_process(folder, tmp_path):
    env = _env(tmp_path)
    single = tmp_path / "single"
    _run([sys.executable, "-m", "cnnzoo", *_train_args(folder, single)], env)
    ddp = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = _run([*torchrun, "-m", "cnnzoo", *_train_args(folder, ddp)], env)

    # Same global batch (16 = 2 x 8), same seed, same data order: the same weights and metrics.
    a = read_state_dict(single / "model.safetensors")
    b = read_state_dict(ddp / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4, msg=k)
    ra = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_top1"] for r in rb] == [r["val_top1"] for r in ra]
    assert rb[-1]["train_loss"] == pytest.approx(ra[-1]["train_loss"], rel=1e-4)
    # Rank 0 alone reports and writes: one final line, one metrics row per epoch.
    assert proc.stdout.count("test top-1") == 1, proc.stdout
    assert len(rb) == 2
    assert json.loads((ddp / "final.json").read_text())["world_size"] == 2
    assert "Grad strides do not match" not in proc.stderr  # see Trainer._build_model


def test_tensorboard_logs_every_epoch_scalar(folder, tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is in the dev extra; install with pip install -e '.[dev]'",
    )
    out = tmp_path / "tb-run"
    _run([sys.executable, "-m", "cnnzoo", *_train_args(folder, out)], _env(tmp_path))
    acc = event_accumulator.EventAccumulator(str(out / "tb"))
    acc.Reload()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "val_top1", "lr"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2], key
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6), key


@pytest.mark.slow  # inductor compiles C++ for the CPU: ~30-60 s on 2 cores; run with -m slow
def test_compile_trains_like_eager(folder, tmp_path):
    env = _env(tmp_path)
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    _run([sys.executable, "-m", "cnnzoo", *_train_args(folder, eager)], env)
    _run([sys.executable, "-m", "cnnzoo", *_train_args(folder, compiled, "--compile")], env, timeout=600)
    a = read_state_dict(eager / "model.safetensors")
    b = read_state_dict(compiled / "model.safetensors")
    # The checkpoint holds the plain module's keys (no _orig_mod. prefix) and, fused kernels
    # aside, the same numbers.
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-3, msg=k)
