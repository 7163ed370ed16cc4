"""`cnnzoo report`: every finished experiment on one self-contained HTML page.

Reads `REPORTS/*/result.json` (what `cnnzoo experiment` writes), and renders a summary table of
the claims and their verdicts, then one section per experiment: the claim and its source, the
findings, how it was made (command, budget, seeds, machine, wall time), the tables and the
plots. The PNGs are inlined as base64 data URIs and the style sheet is inline, so the page is
one file that opens anywhere, offline, and can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import os
from datetime import datetime, timezone
from pathlib import Path

from cnnzoo.atomic import atomic_write_text
from cnnzoo.experiments.report import INDICATIVE, RESULT_FILE, ExperimentResult, format_cell, read_result
from cnnzoo.experiments.runner import EXPERIMENTS

__all__ = ["collect_results", "render_html", "write_html_report"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2430;
       background: #f6f7f9; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 1.2rem 4rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 2px solid #d8dde5; padding-bottom: .3rem; }
h3 { margin-bottom: .4rem; }
section.experiment { background: #fff; border: 1px solid #e1e5eb; border-radius: 8px; padding: 0 1.4rem 1.2rem;
                     margin-top: 2rem; }
blockquote { margin: .8rem 0; padding: .4rem 1rem; border-left: 4px solid #9fb3c8; background: #f2f5f9; }
.source { color: #5b6675; font-size: .9rem; }
.badge { display: inline-block; padding: .1rem .55rem; border-radius: 1rem; font-size: .85rem; font-weight: 600;
         white-space: nowrap; }
.held { background: #dff3e4; color: #1e6b34; } .did-not-hold { background: #fbe3e1; color: #8a2119; }
.partly-held { background: #fff1cc; color: #7a5600; } .no-finding { background: #e8eaee; color: #444; }
.indicative { background: #e3ecf8; color: #2b4a73; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .88rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #dde2e8; padding: .25rem .55rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e1e5eb; }
figcaption { color: #4b5563; font-size: .9rem; }
code { background: #eef1f5; padding: .05rem .3rem; border-radius: 3px; font-size: .85rem; }
ul.findings li { margin: .35rem 0; } .meta { font-size: .9rem; } .missing { color: #8a2119; font-weight: 600; }
#image-check.failed { background: #fbe3e1; color: #8a2119; padding: .5rem 1rem; border-radius: 6px; }
"""

# Flags any plot the browser could not decode, so a broken page says so instead of looking empty.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.plot"));
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var box = document.getElementById("image-check");
  box.setAttribute("data-loaded", String(imgs.length - bad.length));
  box.setAttribute("data-total", String(imgs.length));
  if (bad.length) {
    box.className = "failed";
    box.textContent = bad.length + " of " + imgs.length + " plots could not be shown: " +
      bad.map(function (i) { return i.getAttribute("data-file"); }).join(", ");
  }
});
"""

_VERDICT = {
    "held": "claim held",
    "did not hold": "claim did not hold",
    "partly held": "claim held in part",
    "no finding": "no finding",
    INDICATIVE: INDICATIVE,
}
_CSS_CLASS = {INDICATIVE: "indicative"}


def collect_results(reports: str | os.PathLike) -> list[tuple[Path, ExperimentResult]]:
    """(folder, result) of every experiment under `reports`, in the lectures' order, then by name."""
    root = Path(reports)
    if not root.is_dir():
        raise FileNotFoundError(
            f"no reports folder {str(root)!r}; run `cnnzoo experiment NAME` first (it writes runs/experiments/NAME)"
        )
    found = [p.parent for p in sorted(root.glob(f"*/{RESULT_FILE}"))]
    rank = {n: i for i, n in enumerate(EXPERIMENTS)}
    results = [(folder, read_result(folder)) for folder in found]
    results.sort(key=lambda fr: (rank.get(fr[1].name, len(rank)), fr[0].name))
    return results


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _badge(verdict: str, label: str | None = None) -> str:
    css = _CSS_CLASS.get(verdict, verdict.replace(" ", "-"))
    return f'<span class="badge {css}">{_e(label or _VERDICT.get(verdict, verdict))}</span>'


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ReportError(ValueError):
    """A report whose result.json names something the page must not embed."""


def _image(folder: Path, file: str, caption: str) -> str:
    # result.json is data from disk, not code we wrote: a figure entry is embedded only when it is
    # a PNG file inside the report's own folder (no "..", absolute path or link leading out).
    path = folder / file
    if not path.is_file():
        return f'<p class="missing">missing plot {_e(file)} (not found in {_e(folder)})</p>'
    resolved = path.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise ReportError(
            f"{folder / RESULT_FILE}: figure {file!r} lies outside the report's folder; "
            "a report embeds only PNG files inside its own folder"
        )
    data = resolved.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ReportError(f"{folder / RESULT_FILE}: figure {file!r} is not a PNG image; remake the report")
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img class="plot" data-file="{_e(folder.name + "/" + file)}" alt="{_e(caption)}" '
        f'src="data:image/png;base64,{encoded}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    text = str(value).replace(",", "").rstrip("%").strip()
    try:
        float(text)
    except ValueError:
        return False
    return True


def _table(t) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in t.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(format_cell(v))}</td>'
            if _is_number(v)
            else f"<td>{_e(format_cell(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in t.rows
    )
    note = f"<p class='source'>{_e(t.note)}</p>" if t.note else ""
    return f"<h3>{_e(t.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def _section(folder: Path, r: ExperimentResult, page_dir: Path) -> str:
    m = r.meta
    machine = m.get("machine", {})

    def lean(f) -> str:  # at tiny and small, which way the measurement went
        return f" ({'as claimed' if f.held else 'against the claim'} on this run)" if r.indicative else ""

    findings = "".join(
        f"<li>{_badge(r.label(f), r.label(f))}{_e(lean(f))} {_e(f.claim)} — {_e(f.evidence)}</li>"
        for f in r.findings
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in r.notes)
    settings = ", ".join(f"<code>{_e(k)}={_e(v)}</code>" for k, v in m.get("settings", {}).items())
    try:
        md_link = Path(os.path.relpath(folder / "report.md", page_dir)).as_posix()
    except ValueError:  # another drive on Windows
        md_link = (folder / "report.md").as_posix()
    parts = [
        f'<section class="experiment" id="{_e(r.name)}">',
        f"<h2>{_e(r.title)} {_badge(r.verdict)}</h2>",
        f"<blockquote>{_e(r.claim)}<div class='source'>— {_e(r.source)}</div></blockquote>",
        f"<h3>Findings</h3><ul class='findings'>{findings}</ul>",
    ]
    if notes:
        parts.append(f"<h3>Why, and what to keep in mind</h3><ul>{notes}</ul>")
    parts.append(
        "<h3>How it was made</h3><ul class='meta'>"
        f"<li>Command: <code>{_e(m.get('command', ''))}</code></li>"
        f"<li>Budget: <code>{_e(m.get('budget', ''))}</code> — {settings}</li>"
        f"<li>Seeds: {_e(m.get('seeds', ''))}</li>"
        f"<li>Machine: {_e(machine.get('cpu', '?'))}, {_e(machine.get('cores', '?'))} cores "
        f"({_e(machine.get('threads', '?'))} torch thread(s)), torch {_e(machine.get('torch', '?'))}, "
        f"Python {_e(machine.get('python', '?'))}</li>"
        f"<li>Wall time: {_e(_duration(float(m.get('wall_seconds', 0))))} (finished {_e(m.get('finished', '?'))})</li>"
        f"<li>Report as Markdown: <a href='{_e(md_link)}'>{_e(md_link)}</a></li></ul>"
    )
    for t in r.tables:
        parts.append(_table(t))
    for fig in r.figures:
        parts.append(_image(folder, fig.file, fig.caption))
    parts.append("</section>")
    return "\n".join(parts)


def render_html(results: list[tuple[Path, ExperimentResult]], page_dir: str | os.PathLike = ".") -> str:
    """The whole page for `results` (from `collect_results`); links are relative to `page_dir`."""
    page_dir = Path(page_dir)
    rows = "".join(
        f"<tr><td><a href='#{_e(r.name)}'>{_e(r.title)}</a></td><td>{_badge(r.verdict)}</td>"
        f"<td>{sum(f.held for f in r.findings)} of {len(r.findings)}{' (indicative)' if r.indicative else ''}</td>"
        f"<td><code>{_e(r.meta.get('budget', ''))}</code></td>"
        f"<td class='num'>{_e(_duration(float(r.meta.get('wall_seconds', 0))))}</td></tr>"
        for _, r in results
    )
    summary = (
        "<table><thead><tr><th>experiment</th><th>verdict</th><th>findings held</th><th>budget</th>"
        f"<th>wall time</th></tr></thead><tbody>{rows}</tbody></table>"
        if results
        else "<p>No experiment has finished yet: run <code>cnnzoo experiment NAME</code>.</p>"
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = "\n".join(_section(folder, r, page_dir) for folder, r in results)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnzoo experiments: the lectures' claims, measured</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>The lectures' claims, measured</h1>
<p class="source">cnnzoo experiment reports, collected {_e(stamp)}. Each experiment states a claim of the
lectures, measures it on real data and says plainly whether it held at the budget it ran with.</p>
<div id="image-check"></div>
{summary}
{sections}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write_html_report(reports: str | os.PathLike = "reports", out: str | os.PathLike | None = None) -> Path:
    """Render `reports/*/result.json` into `out` (default reports/index.html), atomically."""
    out_path = Path(out) if out is not None else Path(reports) / "index.html"
    if out_path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out must name an .html file, got {str(out_path)!r}")
    results = collect_results(reports)
    return atomic_write_text(out_path, render_html(results, out_path.parent))
