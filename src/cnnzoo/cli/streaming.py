"""Results written as they are produced: a table, CSV or JSON lines, to stdout or to a file.

The inference verbs (`predict`, `count predict`) handle thousands of images; their rows go out one
by one, so neither memory nor the wait for the first line grows with the number of files.

- "table": aligned columns whose widths are fixed up front (from the known file names and
  classes), so that the first row needs no knowledge of the last;
- "csv": RFC 4180 via the csv module; a text cell that a spreadsheet would run as a formula
  (beginning with = + - @, tab or carriage return) gets a leading apostrophe, as OWASP's
  "CSV Injection" page recommends; numbers are left alone;
- "json": JSON lines, one object per image, flushed as written (`jq`, pandas' `lines=True`).

`open_output(path, overwrite=...)` gives stdout for no path; otherwise a temporary file beside
`path` that is renamed over it when the verb ends well and deleted when it fails, so a file named
by `--out` is never left half-written (and an existing one is refused without `--overwrite`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from cnnzoo.atomic import file_mode
from cnnzoo.cli.main import check_output_file

__all__ = ["RowWriter", "check_output", "csv_safe", "open_output"]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """`value`, with a leading apostrophe when it is text that a spreadsheet would evaluate."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


class RowWriter:
    """Writes dict rows to `stream` in `fmt` ("table", "csv" or "json"), flushing each one.

    `columns` are the table's and the CSV's; `widths` the table's column widths (a longer
    value just pushes its line out), `numeric` the columns right-aligned in the table. JSON lines
    carry each row as given, nested values included.
    """

    def __init__(
        self,
        stream: TextIO,
        fmt: str,
        columns: Sequence[str],
        *,
        widths: dict[str, int] | None = None,
        numeric: Sequence[str] = (),
    ) -> None:
        if fmt not in ("table", "csv", "json"):
            raise ValueError(f"unknown output format {fmt!r}; choose table, csv or json")
        self.stream, self.fmt, self.columns = stream, fmt, list(columns)
        self.widths = {c: max(len(c), (widths or {}).get(c, 0)) for c in self.columns}
        self.numeric = set(numeric)
        self.rows = 0
        self._csv = csv.DictWriter(
            stream, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n"
        )

    def _line(self, values: dict[str, str]) -> str:
        cells = []
        for c in self.columns:
            v, w = values.get(c, ""), self.widths[c]
            cells.append(v.rjust(w) if c in self.numeric else v.ljust(w))
        return "  ".join(cells).rstrip()

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "json":
            self.stream.write(json.dumps(row) + "\n")
        elif self.fmt == "csv":
            if self.rows == 0:
                self._csv.writeheader()
            self._csv.writerow({c: csv_safe(row.get(c, "")) for c in self.columns})
        else:
            if self.rows == 0:
                self.stream.write(self._line({c: c for c in self.columns}) + "\n")
                self.stream.write(self._line({c: "-" * self.widths[c] for c in self.columns}) + "\n")
            self.stream.write(
                self._line({c: "" if row.get(c) is None else str(row[c]) for c in self.columns}) + "\n"
            )
        self.rows += 1
        self.stream.flush()


def check_output(path: str | None, *, overwrite: bool) -> None:
    """Refuse, before any work, an `--out` that exists (without `overwrite`), is a folder or cannot
    be written (`cnnzoo.cli.main.check_output_file`; missing folders are made by `open_output`)."""
    if path is not None:
        check_output_file(path, "--out", overwrite=overwrite, make_folders=True)


@contextlib.contextmanager
def open_output(path: str | None, *, overwrite: bool = False) -> Iterator[TextIO]:
    """stdout for None; else a temporary file beside `path`, renamed over it on success."""
    if path is None:
        yield sys.stdout
        return
    check_output(path, overwrite=overwrite)
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would otherwise survive the rename
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
