"""What an experiment found, as data, and the `report.md` and `result.json` written from it.

An `ExperimentResult` holds the claim (quoted from the lecture, with its source), one `Finding`
per testable part of it (held or not, and the numbers that decide it), tables, figures and the
raw measurements. The runner adds how it was made (`meta`: command, budget and its settings,
seeds, machine, wall time), so a report always says what budget, machine and time it took.
`result.json` is what `cnnzoo report` reads to build the HTML page.

The verdict follows the budget: a run at an `INDICATIVE_BUDGETS` budget (tiny, small) is far
shorter than the papers' schedules, so its verdict and every finding's label read
"indicative only: budget too small" whatever the numbers say (`outcome` keeps what they say).
Only full and paper runs say held or did not hold. Every experiment gets this from here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "INDICATIVE",
    "INDICATIVE_BUDGETS",
    "ExperimentResult",
    "Figure",
    "Finding",
    "Table",
    "read_result",
    "render_markdown",
    "write_result",
]

RESULT_FILE = "result.json"
REPORT_FILE = "report.md"

# Budgets too small to decide a claim: minutes on a CPU against the papers' hours on GPUs.
INDICATIVE_BUDGETS = ("tiny", "small")
INDICATIVE = "indicative only: budget too small"


@dataclass
class Finding:
    """One testable part of a claim: whether it held on this run, and the numbers why."""

    claim: str
    held: bool
    evidence: str


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Figure:
    file: str  # a PNG next to report.md
    caption: str


@dataclass
class ExperimentResult:
    name: str
    title: str
    claim: str  # the lecture's claim, quoted or paraphrased
    source: str  # where the lecture (or paper) makes it
    findings: list[Finding] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # caveats: why a claim did not hold, what differs
    data: dict[str, Any] = field(default_factory=dict)  # raw measurements (curves, per-run numbers)
    meta: dict[str, Any] = field(default_factory=dict)  # filled in by the runner

    @property
    def outcome(self) -> str:
        """What the numbers say, whatever the budget: 'held', 'did not hold', 'partly held' (some
        findings held, some did not) or 'no finding'."""
        held = [f.held for f in self.findings]
        if not held:
            return "no finding"
        if all(held):
            return "held"
        return "did not hold" if not any(held) else "partly held"

    @property
    def indicative(self) -> bool:
        """Whether the run's budget (the runner's `meta["budget"]`) is too small to decide the claim."""
        return self.meta.get("budget") in INDICATIVE_BUDGETS

    @property
    def verdict(self) -> str:
        """The outcome at a full or paper budget; at tiny and small, `INDICATIVE`."""
        if self.indicative and self.findings:
            return INDICATIVE
        return self.outcome

    def label(self, finding: Finding) -> str:
        """A finding's label: 'held' or 'did not hold', or `INDICATIVE` at tiny and small."""
        if self.indicative:
            return INDICATIVE
        return "held" if finding.held else "did not hold"

    @property
    def headline(self) -> str:
        """The verdict as a phrase: 'the claim held', ... or 'indicative only: budget too small'."""
        if self.verdict in (INDICATIVE, "no finding"):
            return self.verdict
        return "the claim " + {"partly held": "held only in part"}.get(self.verdict, self.verdict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict
        d["outcome"] = self.outcome
        d["labels"] = [self.label(f) for f in self.findings]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentResult:
        return cls(
            name=d["name"],
            title=d["title"],
            claim=d["claim"],
            source=d["source"],
            findings=[Finding(**f) for f in d.get("findings", [])],
            tables=[Table(**t) for t in d.get("tables", [])],
            figures=[Figure(**f) for f in d.get("figures", [])],
            notes=list(d.get("notes", [])),
            data=dict(d.get("data", {})),
            meta=dict(d.get("meta", {})),
        )


def format_cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _md_table(t: Table) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    head = "| " + " | ".join(esc(c) for c in t.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in t.columns) + "|"
    body = ["| " + " | ".join(esc(format_cell(v)) for v in row) + " |" for row in t.rows]
    return "\n".join([head, rule, *body])


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def render_markdown(result: ExperimentResult) -> str:
    """The report a person reads: claim, verdict, how it was made, numbers, plots, caveats."""
    m = result.meta
    verdict = {
        "held": "**The claim held** on this data at this budget.",
        "did not hold": "**The claim did not hold** on this data at this budget.",
        "partly held": "**The claim held only in part** on this data at this budget.",
        "no finding": "No finding was measured.",
        INDICATIVE: f"**Indicative only: budget too small.** A `{m.get('budget')}` run is far shorter "
        "than the papers' schedules, so it neither confirms nor refutes the claim; run `--budget full` "
        "or `--budget paper` for a verdict. The direction of each measurement is given below.",
    }[result.verdict]
    lines = [
        f"# {result.title}",
        "",
        f"> {result.claim}",
        f"> — {result.source}",
        "",
        "## Verdict",
        "",
        verdict,
        "",
    ]
    for f in result.findings:
        label = result.label(f)
        if label == INDICATIVE:
            # The measured direction, so a small run still shows which way it leans.
            lean = "as claimed" if f.held else "against the claim"
            lines.append(
                f"- **Indicative only: budget too small** ({lean} on this run): {f.claim} — {f.evidence}"
            )
        else:
            lines.append(f"- **{label.capitalize()}:** {f.claim} — {f.evidence}")
    lines.append("")
    if result.notes:
        lines += ["Why, and what to keep in mind:", ""]
        lines += [f"- {n}" for n in result.notes]
        lines.append("")
    machine = m.get("machine", {})
    lines += [
        "## How it was made",
        "",
        f"- Command: `{m.get('command', '')}`",
        f"- Budget: `{m.get('budget', '')}` — settings: "
        + ", ".join(f"`{k}={v}`" for k, v in m.get("settings", {}).items()),
        f"- Seeds: {m.get('seeds', '')}",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores "
        f"({machine.get('threads', '?')} torch thread(s)), torch {machine.get('torch', '?')}, "
        f"Python {machine.get('python', '?')}, {machine.get('platform', '?')}",
        f"- Wall time: {_duration(float(m.get('wall_seconds', 0.0)))} (finished {m.get('finished', '?')})",
    ]
    if m.get("overrides"):
        lines.append(f"- Settings changed from the budget's: {m['overrides']}")
    if machine.get("note"):
        lines.append(f"- Note: {machine['note']}")
    lines.append("")
    if result.tables:
        lines += ["## Measurements", ""]
        for t in result.tables:
            lines += [f"### {t.title}", "", _md_table(t), ""]
            if t.note:
                lines += [t.note, ""]
    if result.figures:
        lines += ["## Plots", ""]
        for fig in result.figures:
            lines += [f"![{fig.caption}]({fig.file})", "", f"*{fig.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_result(result: ExperimentResult, out: str | os.PathLike) -> Path:
    """Write `out/report.md` and `out/result.json` (each atomically); returns the report's path."""
    from cnnzoo.atomic import atomic_write_text
    from cnnzoo.train.checkpoint import write_json_atomic

    out = Path(out)
    write_json_atomic(out / RESULT_FILE, result.to_dict())
    return atomic_write_text(out / REPORT_FILE, render_markdown(result))


def read_result(folder: str | os.PathLike) -> ExperimentResult:
    """The result an experiment left in `folder` (its result.json)."""
    import json

    path = Path(folder) / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `cnnzoo experiment NAME --out {folder}` first")
    try:
        return ExperimentResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not an experiment result ({e}); run the experiment again") from e
