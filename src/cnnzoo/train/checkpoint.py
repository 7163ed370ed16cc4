"""Training checkpoints without pickle, written so that a crash never leaves a half-written one.

Layout of a run directory:

    OUT/checkpoints/epoch-0003/model.safetensors     weights (cnnzoo.save_weights, with the run config)
    OUT/checkpoints/epoch-0003/optimizer.safetensors optimizer state tensors, RNG states
    OUT/checkpoints/epoch-0003/state.json            epoch, step, schedule, param groups, metrics
    OUT/checkpoints/latest                           the name of the newest complete checkpoint

A checkpoint is written into a hidden temporary directory and renamed into place only when every
file is complete; then `latest` is replaced atomically (temp file, `os.replace`). A crash at any
point leaves `latest` naming the previous complete checkpoint.

Each checkpoint records the id of the run that wrote it (`run_id` in state.json; see
`cnnzoo.train.rundir`). Old checkpoints are pruned among the writing run's own only: the newest
`KEEP` by epoch stay, and so does the one `latest` names, so a shorter rerun into a folder that
holds an older run's checkpoints neither deletes them nor leaves `latest` naming a deleted one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.atomic import atomic_write_text, file_mode, make_temp_dir
from cnnzoo.weights import CheckpointError, save_weights

__all__ = [
    "checkpoint_run_id",
    "latest_checkpoint",
    "load_checkpoint",
    "read_state",
    "resolve_weights",
    "save_checkpoint",
    "write_json_atomic",
]

MODEL_FILE = "model.safetensors"
STATE_TENSORS = "optimizer.safetensors"
STATE_JSON = "state.json"
LATEST = "latest"
KEEP = 2  # complete checkpoints of a run kept on disk
# epoch-0003, or epoch-0003.2 when epoch-0003 is another run's (or the one `latest` names).
_NAME = re.compile(r"epoch-(\d+)(?:\.(\d+))?")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]+")
_UNREADABLE = "?"  # the owner of a checkpoint whose state.json cannot be read: never one's own


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """`obj` as indented JSON, atomically and synced to disk (a pointer must survive a power cut)."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n", fsync=True)


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state_dict -> (tensors for safetensors, the rest as JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        plain[str(idx)] = {}
        for k, v in per_param.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                plain[str(idx)][k] = v
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in plain["state"].items()}
    for key, t in tensors.items():
        if not key.startswith("optim."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = t
    return {"state": state, "param_groups": plain["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def _set_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The training state (state.json) of a checkpoint directory, without its tensors."""
    try:
        state = json.loads((Path(path) / STATE_JSON).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} could not be read ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} has no training state in {STATE_JSON}")
    return state


def checkpoint_run_id(path: str | os.PathLike) -> str | None:
    """The id of the run that wrote a checkpoint directory (None before run ids were recorded)."""
    state = read_state(path)
    run_id = state.get("run_id")
    return run_id if isinstance(run_id, str) else None


def _owner(path: Path) -> str | None:
    try:
        return checkpoint_run_id(path)
    except CheckpointError:
        return _UNREADABLE


def _latest_name(ckpt_root: Path) -> str | None:
    try:
        return str(json.loads((ckpt_root / LATEST).read_text())["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sort_key(name: str) -> tuple[int, int]:
    m = _NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2) or 1)) if m else (-1, -1)


def _free_name(ckpt_root: Path, epoch: int, run_id: str | None) -> str:
    """epoch-NNNN, unless that holds a checkpoint this run must not replace: then epoch-NNNN.2, ..."""
    base, n = f"epoch-{epoch:04d}", 1
    latest = _latest_name(ckpt_root)
    while True:
        name = base if n == 1 else f"{base}.{n}"
        path = ckpt_root / name
        # This run's own, unnamed by `latest`: a rerun of the epoch after a crash replaces it.
        if not path.exists() or (name != latest and path.is_dir() and _owner(path) == run_id):
            return name
        n += 1


def _temp_tag(run_id: str | None) -> str:
    return f"run-{run_id}." if run_id else ""


def _prune(ckpt_root: Path, run_id: str | None, latest: str) -> None:
    mine = [
        p for p in ckpt_root.glob("epoch-*") if p.is_dir() and _NAME.fullmatch(p.name) and _owner(p) == run_id
    ]
    mine.sort(key=lambda p: _sort_key(p.name))
    for old in mine[:-KEEP]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)
    # Leftovers of this run's crashed writes (a hidden directory that never got its rename).
    for leftover in ckpt_root.glob(".epoch-*"):
        tagged = re.search(r"\.run-([A-Za-z0-9_-]+)\.", leftover.name)
        if leftover.is_dir() and (tagged.group(1) if tagged else None) == run_id:
            shutil.rmtree(leftover, ignore_errors=True)
    # A pointer's temporary file left by a crash between its write and its rename. Only the run
    # holding the folder's lock writes the pointer, and it has just renamed its own: any left is
    # a dead process's.
    for leftover in ckpt_root.glob(f".{LATEST}.*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def save_checkpoint(
    run_dir: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    metadata: dict[str, Any],
    run_id: str | None = None,
) -> Path:
    """Write checkpoint `epoch-NNNN` for `state["epoch"]` atomically and point `latest` at it.

    `run_id` (`RunDir.run_id`) marks the checkpoint as this run's; pruning then touches only
    this run's checkpoints. Without one the checkpoint joins the unmarked ones (older cnnzoo).
    """
    from safetensors.torch import save_file

    if run_id is not None and not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id must be letters, digits, '-' or '_', not {run_id!r}")
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = _free_name(ckpt_root, int(state["epoch"]), run_id)
    final = ckpt_root / name
    tmp = make_temp_dir(ckpt_root, prefix=f".{name}.{_temp_tag(run_id)}")
    try:
        save_weights(model, tmp / MODEL_FILE, metadata=metadata)
        tensors, plain = _split_optimizer_state(optimizer.state_dict())
        tensors.update(_rng_tensors())
        save_file(tensors, str(tmp / STATE_TENSORS), metadata={"format": "pt"})
        os.chmod(tmp / STATE_TENSORS, file_mode())  # safetensors creates its files 0600
        owner = {"run_id": run_id} if run_id is not None else {}
        write_json_atomic(tmp / STATE_JSON, {**state, "optimizer": plain, **owner})
        if final.exists():  # _free_name allows only this run's own, which `latest` does not name
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(ckpt_root / LATEST, {"checkpoint": name})
    # Older checkpoints and leftovers of crashed writes go only after `latest` moved on.
    _prune(ckpt_root, run_id, latest=name)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{str(pointer)!r} is not a checkpoint pointer ({e})") from e
    # The pointer is data on disk: it may name only a checkpoint folder beside it.
    if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
        raise CheckpointError(
            f"{str(pointer)!r} names {name!r}, not a checkpoint folder inside {str(pointer.parent)!r}"
        )
    path = pointer.parent / name
    if path.is_symlink() or not path.resolve().is_relative_to(pointer.parent.resolve()):
        raise CheckpointError(f"{str(pointer)!r} names {name!r}, which leads outside {str(pointer.parent)!r}")
    if not (path / STATE_JSON).is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} named by {str(pointer)!r} is incomplete or missing")
    return path


def load_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model tensors, optimizer state_dict, training state) of a checkpoint directory; restores the RNG."""
    from safetensors.torch import load_file

    from cnnzoo.weights import read_state_dict

    path = Path(path)
    state = read_state(path)
    try:
        tensors = load_file(str(path / STATE_TENSORS))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} could not be read ({e})") from e
    weights = read_state_dict(path / MODEL_FILE)
    missing = [k for k in ("epoch", "optimizer") if k not in state]
    if missing or not isinstance(state.get("optimizer"), dict) or not isinstance(state.get("epoch"), int):
        what = (
            f"lacks {', '.join(map(repr, missing))}" if missing else "has a malformed 'epoch' or 'optimizer'"
        )
        raise CheckpointError(
            f"checkpoint {str(path)!r}: {STATE_JSON} {what}, so it cannot be resumed; resume from an "
            "earlier checkpoint (point checkpoints/latest at it) or start again with --overwrite"
        )
    optim = _join_optimizer_state(tensors, state.pop("optimizer"))
    _set_rng(tensors)
    return weights, optim, state


def resolve_weights(path: str | os.PathLike) -> Path:
    """A weights file from a run directory, a checkpoint directory or a file path."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / MODEL_FILE, p / "final.safetensors"):
            if candidate.is_file():
                return candidate
        ckpt = latest_checkpoint(p)
        if ckpt is not None:
            return ckpt / MODEL_FILE
        raise FileNotFoundError(
            f"{str(p)!r} holds no checkpoint; pass a run directory or a .safetensors file"
        )
    if not p.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(p)!r} does not exist; pass a run directory or a .safetensors file"
        )
    return p
