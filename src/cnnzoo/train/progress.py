"""Console output of long work: a one-line progress bar on stderr (no dependency), shown on a
terminal or when asked for, and the warning that the machine is too busy for the threads asked."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

__all__ = ["ProgressBar", "busy_load", "warn_if_busy"]


class ProgressBar:
    """`bar.update(n, loss=...)` redraws at most ten times a second; `close()` ends the line."""

    def __init__(
        self, total: int, *, desc: str = "", enabled: bool | None = None, stream: TextIO | None = None
    ):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.desc, self.n = total, desc, 0
        self.start = self._last = time.perf_counter()
        self.postfix = ""

    def update(self, n: int = 1, **postfix: float) -> None:
        self.n += n
        if postfix:
            self.postfix = " ".join(f"{k}={v:.4g}" for k, v in postfix.items())
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.n >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.n / self.total if self.total else 1.0
        width = 24
        filled = int(frac * width)
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        bar = "#" * filled + "." * (width - filled)
        line = f"\r{self.desc} [{bar}] {self.n}/{self.total} {elapsed:.0f}s<{eta:.0f}s {self.postfix}"
        self.stream.write(line.ljust(100)[:160])
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()


_warned = False


def busy_load(threads: int) -> tuple[float, int] | None:
    """(load average, cores) when the machine has fewer free cores than `threads`, else None."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    cores = os.cpu_count() or 1
    # One core of slack: the 1-minute average still holds the last minute's jobs as they decay,
    # and this process's own start (reading data, building the model) - an idle machine asked
    # for every core read 0.5 here and warned. A second job that keeps a core busy reads above 1
    # once this process's start is added to it, and warns.
    return (load, cores) if load + threads > cores + 1 else None


def warn_if_busy(threads: int, consequence: str) -> None:
    """Warn on stderr when the machine has fewer free cores than `threads`.

    With fewer free cores than threads, PyTorch's OpenMP threads spin at every operator's barrier
    while their partner waits for a core: eager steps slow down by up to hundreds of times.
    """
    global _warned
    if _warned:  # once per process: later runs of the same process (experiments) see its own load
        return
    busy = busy_load(threads)
    if busy is not None:
        load, cores = busy
        print(
            f"cnnzoo: warning: the machine is busy (load {load:.1f} on {cores} cores) for {threads} "
            f"threads; {consequence}. Use --threads N with N <= the free cores, or set OMP_WAIT_POLICY=PASSIVE",
            file=sys.stderr,
            flush=True,
        )
        _warned = True
