"""Atomic writes that leave files with the modes an ordinary `open()` would have given them.

Every file cnnzoo writes (weights, checkpoints, JSON, plots, exports, dataset caches) goes
through `atomic_write`: a temporary file beside the destination, filled, then renamed over it,
so a crash leaves the old file or none, never half of one. `tempfile.mkstemp` creates that
temporary file 0600 (and `mkdtemp` a folder 0700), which the rename would carry over: a run
folder or a shared dataset cache would be unreadable to the other users of a machine. So the
final file gets ``0o666 & ~umask`` and a folder ``0o777 & ~umask``, as `open()` and `mkdir` do.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "dir_mode",
    "file_mode",
    "make_temp_dir",
]


@functools.cache
def _umask() -> int:
    # Linux (4.7+) reports the umask without changing it.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way to read it is to set it and set it back. The umask is per process,
    # so a file another thread creates in between would get the temporary mask: hence once per
    # process (cached), and 0o077, which errs towards private, rather than 0.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the umask (0o644 with the usual 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode `mkdir` gives a new folder: 0o777 less the umask (0o755 with the usual 022)."""
    return 0o777 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, fsync: bool = False) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file over `path` (same folder, so atomic).

    `write` may reopen the temporary file by name (safetensors, matplotlib and numpy all do).
    `fsync` flushes the data to disk before the rename, for small files that must survive a
    power cut (a checkpoint's pointer); large files skip it, as they always have.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """`text` as UTF-8, whatever the platform's default encoding."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new hidden folder in `parent` with `dir_mode()`, to fill and then rename into place."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(tmp, dir_mode())
    return tmp


class NotEnoughSpace(OSError):
    """Less free disk space than a write is known to need; raised before anything is written."""

    def __init__(self, folder: Path, needed: int, free: int, what: str, fix: str) -> None:
        import errno

        super().__init__(errno.ENOSPC, "No space left on device", str(folder))
        self.message = (
            f"not enough free space in {str(folder)!r} for {what}: it needs about {needed / 1e6:,.0f} MB, "
            f"{free / 1e6:,.0f} MB are free; {fix}"
        )

    def __str__(self) -> str:
        return self.message


def ensure_free_space(folder: str | os.PathLike, needed: int, *, what: str, fix: str) -> None:
    """Raise NotEnoughSpace unless the file system of `folder` (or its nearest existing parent)
    has `needed` bytes free. Some writers cannot fail cleanly on a full disk (ONNX's C++ writer
    aborts the process), so the space is checked before they start."""
    import shutil

    folder = Path(folder).expanduser().absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise NotEnoughSpace(folder, needed, free, what, fix)
