"""The folder a training run writes into, held for the run's lifetime so that no work is lost.

    with open_run_dir(config.out or None, default=Path("runs/lenet5-fashion-mnist"),
                      resume=config.resume, overwrite=overwrite) as run:
        ...  # write into run.path; pass run.run_id to save_checkpoint

What it guarantees:

- Without a folder named, each run gets a new numbered one (runs/NAME, runs/NAME-2, -3, ...),
  made with an atomic `mkdir`, so two runs started at once never share one.
- A named folder that already holds a run is neither continued nor replaced unless asked:
  `resume=True` continues it, `overwrite=True` removes that run's files (and only those; whatever
  else the folder holds stays) before the new run starts.
- While the run lasts it holds an exclusive lock on OUT/.lock (`flock`): a second run opening the
  same folder fails at once with `RunDirBusy`, naming the holder's pid. The kernel drops the lock
  when the process dies, however it dies, so a crashed run never leaves a folder locked.
- `run_id` identifies the run; checkpoints record it, and pruning touches only the run's own
  (`cnnzoo.train.checkpoint`). A resumed run keeps the id of the checkpoint it continues.

Under DistributedDataParallel only rank 0 opens the folder; the other ranks take its path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
import warnings
from pathlib import Path
from types import TracebackType

from cnnzoo.train.checkpoint import checkpoint_run_id, latest_checkpoint

__all__ = [
    "LOCK_FILE",
    "RUN_FILES",
    "RUN_MARKERS",
    "RunDir",
    "RunDirBusy",
    "RunDirError",
    "holds_run",
    "open_run_dir",
]

LOCK_FILE = ".lock"
# Any of these in a folder means a run has written there.
RUN_MARKERS = ("config.json", "final.json", "metrics.jsonl", "checkpoints", "model.safetensors")
# What a run (classification, counting or an experiment's report) writes; --overwrite removes
# these and nothing else, so files the user keeps beside a run survive.
RUN_FILES = (
    *RUN_MARKERS,
    "last.safetensors",
    "curves.png",
    "tb",
    "test_predictions.csv",
    "test_scatter.png",
    "confusion.png",
    "report.*",
    "report",  # `cnnzoo report RUN`'s folder: a report of the replaced run would describe another
)


class RunDirError(ValueError):
    """A run folder that cannot be used as asked; the message is one line saying what to do."""


class RunDirBusy(RunDirError):
    """Another live process holds the folder's lock."""


def holds_run(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder a run has written into (config, metrics, checkpoints, weights)."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in RUN_MARKERS)


# -- the lock -------------------------------------------------------------------------------------
if sys.platform == "win32":  # pragma: no cover - CI runs on Linux and macOS
    import msvcrt

    def _try_lock(fd: int) -> bool:
        # msvcrt locks a byte range, mandatory rather than advisory; byte 0 stands for the file.
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as e:
            # A file system without flock (some network mounts): run unlocked rather than not at all.
            warnings.warn(
                f"cannot lock the run folder ({e}); two runs could write into it at once", stacklevel=4
            )
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:  # Windows: the holder's lock keeps others from reading the byte
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


def _acquire(folder: Path) -> int:
    """An open descriptor of folder/.lock holding an exclusive lock, or RunDirBusy."""
    lock = folder / LOCK_FILE
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise RunDirBusy(
                f"{str(folder)!r} is in use by another cnnzoo run ({_holder(lock)}); "
                "wait for it or choose another --out"
            )
        # A run that closes removes the lock file while still holding it; whoever opened the file
        # before that now holds a lock on a name nobody else will see: try again on the new file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same or sys.platform == "win32":
            break
        _unlock(fd)
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# -- the folder -----------------------------------------------------------------------------------
class RunDir:
    """A run folder held (locked) from `open_run_dir` until `close()` or the end of a `with`."""

    def __init__(self, path: Path, *, run_id: str | None, created: bool, resumed: bool, fd: int) -> None:
        self.path = path
        self.run_id = run_id  # for save_checkpoint(run_id=...); None: a resumed run from older cnnzoo
        self.created = created  # the folder did not exist before this run
        self.resumed = resumed
        self._fd: int | None = fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        """Release the lock; a folder this run created and left empty is removed again."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if sys.platform != "win32":  # removed while still held: see _acquire
                (self.path / LOCK_FILE).unlink(missing_ok=True)
            _unlock(fd)
        finally:
            os.close(fd)
        if sys.platform == "win32":  # Windows cannot remove a file that is open
            with contextlib.suppress(OSError):
                (self.path / LOCK_FILE).unlink(missing_ok=True)
        if self.created:  # a run that failed before writing anything leaves nothing behind
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only when empty

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten close: the descriptor (and with it the lock) goes with the object.
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        state = "closed" if self.closed else "held"
        return f"RunDir({str(self.path)!r}, run_id={self.run_id!r}, {state})"


def _numbered(default: Path) -> Path:
    """Create and return default, default-2, default-3, ...: the first that did not exist."""
    default.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = default if n == 1 else default.with_name(f"{default.name}-{n}")
        try:
            os.mkdir(path)  # atomic: of two runs racing for a name, exactly one gets it
        except FileExistsError:
            n += 1
            continue
        return path


def _remove_run(folder: Path) -> None:
    for pattern in RUN_FILES:
        for path in folder.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def open_run_dir(
    path: str | os.PathLike | None,
    *,
    default: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> RunDir:
    """Create or open a run folder and lock it for this run; use the result as a context manager.

    Args:
        path: the folder asked for (`--out`); None picks a new numbered folder from `default`.
        default: runs/MODEL-DATA, numbered -2, -3, ... when taken (needed when `path` is None).
        resume: continue the run in `path`, which must hold one.
        overwrite: replace the run in `path`, if any: its files are removed once the lock is held.

    Raises:
        RunDirBusy: another live run holds the folder.
        RunDirError: the folder holds a run and neither `resume` nor `overwrite` was given;
            `resume` without a run to continue; `path` is a file; contradictory options.
    """
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite replaces it; choose one")
    if path is None or str(path) == "":
        if resume:
            raise RunDirError("--resume needs the run's folder: --resume DIR (or --out DIR --resume)")
        if default is None:
            raise ValueError("open_run_dir needs a path or a default")
        folder = _numbered(Path(default))
        return RunDir(folder, run_id=uuid.uuid4().hex, created=True, resumed=False, fd=_acquire(folder))

    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"{str(folder)!r} is a file; a run needs a folder")
    if resume and not holds_run(folder):
        raise RunDirError(f"--resume: {str(folder)!r} holds no run to continue")
    created = False
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(folder)
            created = True
        except FileExistsError:  # made by someone else just now: the lock decides below
            pass
    run = RunDir(folder, run_id=None, created=created, resumed=resume, fd=_acquire(folder))
    try:
        # Checked again under the lock: the run we saw may have been replaced in the meantime.
        has_run = holds_run(folder)
        if resume:
            if not has_run:
                raise RunDirError(f"--resume: {str(folder)!r} holds no run to continue")
            ckpt = latest_checkpoint(folder)
            run.run_id = checkpoint_run_id(ckpt) if ckpt is not None else uuid.uuid4().hex
            return run
        if has_run:
            if not overwrite:
                raise RunDirError(
                    f"{str(folder)!r} already holds a run; pass --resume to continue it "
                    "or --overwrite to replace it"
                )
            _remove_run(folder)
        run.run_id = uuid.uuid4().hex
        return run
    except BaseException:
        run.close()
        raise
