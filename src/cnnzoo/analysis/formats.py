"""A `Profile` as the lecture's table: aligned text, Markdown, CSV or JSON.

The columns are the lecture's ("Input size | Layer | Output size"):

    layer  kind  C  H/W  filters  kernel  stride  pad  out C  out H/W  memory (KB)  params (K)  MACs (M)  RF

with a totals row. "memory (KB)" is the output activation at fp32 / 1024, "RF" the receptive
field in input pixels, or "whole input" after a global operation (an SE gate, attention; the
text table's note line names the first such layer and why). Text and Markdown round as the slides do (KB, thousands, millions); CSV and
JSON carry exact integers for scripts.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from cnnzoo.analysis.profile import Layer, Profile

__all__ = [
    "FORMATS",
    "LECTURE_COLUMNS",
    "csv_cell",
    "lecture_columns",
    "lecture_row",
    "lecture_total",
    "render_profile",
    "render_rows",
]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value safe to put in a CSV cell that a spreadsheet may open.

    Spreadsheets run a cell starting with = + - @ (or a tab or carriage return) as a formula, so
    a file or class name like ``=HYPERLINK(...)`` would become a live link or command (OWASP,
    "CSV Injection"). Such strings get a leading apostrophe, which the spreadsheet shows as text;
    numbers, and strings that are plain numbers (``-0.5``), stay as they are.
    """
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


FORMATS = ("table", "md", "csv", "json")

LECTURE_COLUMNS = (
    "layer",
    "kind",
    "C",
    "H/W",
    "filters",
    "kernel",
    "stride",
    "pad",
    "out C",
    "out H/W",
    "memory (KB)",
    "params (K)",
    "MACs (M)",
    "RF",
)

CSV_COLUMNS = (
    "name",
    "kind",
    "in_c",
    "in_h",
    "in_w",
    "filters",
    "kernel",
    "groups",
    "stride",
    "padding",
    "out_c",
    "out_h",
    "out_w",
    "memory_bytes",
    "params",
    "macs",
    "ops",
    "receptive_field",
    "effective_stride",
)


def _axes(v: Sequence[Any] | None) -> str:
    """3 for (3, 3); 1x7 for (1, 7); blank for None."""
    if v is None:
        return ""
    vals = [int(x) if float(x).is_integer() else round(float(x), 2) for x in v]
    return str(vals[0]) if len(set(vals)) == 1 else "x".join(map(str, vals))


def _split(shape: tuple[int, ...] | None) -> tuple[int | None, tuple[int, ...]]:
    if not shape:
        return None, ()
    return shape[0], tuple(shape[1:])


def number(x: float, unit: float = 1.0) -> str:
    """The slides' rounding: whole numbers from 10 up, two decimals below, 0 for nothing."""
    v = x / unit
    if v == 0:
        return "0"
    if abs(v) >= 10:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def _parts_cell(parts: Sequence[int]) -> str:
    """A concatenation's input channels: 64+128+32+32 (Inception); runs of three or more equal
    inputs counted, 64+5x32 (a DenseNet block's 6th layer: the block's 64 and 5 layers of growth 32)."""
    runs: list[list[int]] = []
    for c in parts:
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([c, 1])
    # Two equal inputs stay written out (Inception's 32+32 branches); three or more are counted.
    return "+".join("+".join([str(c)] * n) if n < 3 else f"{n}x{c}" for c, n in runs)


def _groups_cell(groups: int | None, c_in: int | None) -> Any:
    """A convolution's groups as the efficient-net lectures name them: "dw" when every input
    channel has its own filter (depthwise), the number when grouped (ResNeXt, ShuffleNet), blank
    when dense."""
    if not groups or groups == 1:
        return ""
    return "dw" if groups == c_in else groups


def lecture_columns(rows: Sequence[Layer]) -> tuple[str, ...]:
    """The table's columns: the lecture's, and "groups" after "kernel" when a row is grouped."""
    if not any(r.groups and r.groups > 1 for r in rows):
        return LECTURE_COLUMNS
    i = LECTURE_COLUMNS.index("kernel") + 1
    return (*LECTURE_COLUMNS[:i], "groups", *LECTURE_COLUMNS[i:])


def lecture_row(r: Layer) -> dict[str, Any]:
    """One row of the lecture's table as `cnnzoo summary` prints it (the explorer shows the same)."""
    c_in, sp_in = _split(r.input_shape)
    c_out, sp_out = _split(r.output_shape)
    return {
        "layer": r.name,
        "kind": r.kind,
        "C": _parts_cell(r.parts) if r.parts else ("" if c_in is None else c_in),
        "H/W": _axes(sp_in) if sp_in else "",
        "filters": "" if r.filters is None else r.filters,
        "kernel": _axes(r.kernel),
        "groups": _groups_cell(r.groups, c_in),
        "stride": _axes(r.stride),
        "pad": _axes(r.padding),
        "out C": "" if c_out is None else c_out,
        "out H/W": _axes(sp_out) if sp_out else "",
        "memory (KB)": number(r.memory_bytes, 1024),
        "params (K)": number(r.params, 1e3),
        "MACs (M)": number(r.macs, 1e6),
        "RF": "" if r.receptive_field is None else r.receptive_field,
    }


def lecture_total(p: Profile) -> dict[str, Any]:
    """The table's totals row: memory, parameters, MACs and the largest receptive field."""
    total: dict[str, Any] = {c: "" for c in LECTURE_COLUMNS}
    total.update(
        {
            "layer": "total",
            "memory (KB)": number(p.total_memory_bytes, 1024),
            "params (K)": number(p.total_params, 1e3),
            "MACs (M)": number(p.total_macs, 1e6),
            "RF": "" if p.receptive_field is None else p.receptive_field,
        }
    )
    return total


def _csv_row(r: Layer) -> dict[str, Any]:
    c_in, sp_in = _split(r.input_shape)
    c_out, sp_out = _split(r.output_shape)
    return {
        "name": r.name,
        "kind": r.kind,
        "in_c": c_in,
        "in_h": sp_in[0] if sp_in else None,
        "in_w": sp_in[-1] if sp_in else None,
        "filters": r.filters,
        "kernel": _axes(r.kernel),
        "groups": r.groups,
        "stride": _axes(r.stride),
        "padding": _axes(r.padding),
        "out_c": c_out,
        "out_h": sp_out[0] if sp_out else None,
        "out_w": sp_out[-1] if sp_out else None,
        "memory_bytes": r.memory_bytes,
        "params": r.params,
        "macs": r.macs,
        "ops": r.ops,
        "receptive_field": r.receptive_field,
        "effective_stride": r.effective_stride,
    }


def select_rows(p: Profile, *, depth: int | None = None, all_rows: bool = False) -> list[Layer]:
    rows = p.aggregate(depth) if depth is not None else p.layers
    return rows if all_rows else [r for r in rows if not r.elementwise]


def render_rows(rows: list[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Aligned text ("table"), Markdown ("md"), CSV or JSON of a list of dicts."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in r.items()} for r in rows)
        return buf.getvalue().rstrip("\n")
    cells = [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    if fmt == "md":
        numeric = [_numeric_column(cells, i) for i in range(len(columns))]
        out = ["| " + " | ".join(columns) + " |"]
        out.append("|" + "|".join(" ---: " if n else " --- " for n in numeric) + "|")
        out += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(out)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [_numeric_column(cells, i) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _numeric_column(cells: list[list[str]], i: int) -> bool:
    values = [row[i] for row in cells if row[i] != ""]
    return bool(values) and all(_is_number(v) for v in values)


def _is_number(v: str) -> bool:
    return v.replace(",", "").replace(".", "", 1).replace("x", "").lstrip("-").isdigit()


def render_profile(
    p: Profile, fmt: str = "table", *, depth: int | None = None, all_rows: bool = False
) -> str:
    """The lecture's table of a profile with a totals row (JSON: `Profile.to_dict`)."""
    if fmt == "json":
        d = p.to_dict(depth=depth)
        if not all_rows:
            d["layers"] = [r for r in d["layers"] if not r["elementwise"]]
        return json.dumps(d, indent=2)
    rows = select_rows(p, depth=depth, all_rows=all_rows)
    if fmt == "csv":
        data = [_csv_row(r) for r in rows]
        data.append(
            {
                "name": "total",
                "memory_bytes": p.total_memory_bytes,
                "params": p.total_params,
                "macs": p.total_macs,
                "ops": p.total_ops,
                "receptive_field": p.receptive_field,
                "effective_stride": p.effective_stride,
            }
        )
        return render_rows(data, CSV_COLUMNS, "csv")
    data = [lecture_row(r) for r in rows]
    data.append(lecture_total(p))
    text = render_rows(data, lecture_columns(rows), fmt)
    if fmt != "table":
        return text
    notes = "".join(f"note: {n}\n" for n in p.notes)
    return text + "\n\n" + notes + summary_line(p)


def summary_line(p: Profile) -> str:
    size = "x".join(map(str, p.input_size))
    parts = [
        f"{p.model_name} at {size}: {p.total_params:,} parameters",
        f"{p.total_macs / 1e9:.3f} GMACs ({p.total_macs:,})",
        f"activations {p.total_memory_bytes / 2**20:.2f} MiB (fp32)",
        f"receptive field {p.receptive_field if p.receptive_field is not None else '-'}"
        + (f", effective stride {p.effective_stride}" if p.effective_stride is not None else ""),
    ]
    line = ", ".join(parts)
    if p.unused_params:
        line += f"; {p.unused_params:,} parameters unused in eval mode (e.g. auxiliary heads)"
    return line
