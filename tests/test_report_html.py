"""`cnnzoo report`'s HTML page, opened in a real headless browser (Debian's chromium).

The browser is driven through chromedriver's W3C WebDriver HTTP API with the standard library
(no selenium; tests/browser.py): open the page, let it load, then ask the browser itself whether
every plot was decoded (`naturalWidth > 0`), whether the console logged errors, and whether
anything was fetched from outside the page. A corrupt PNG is the negative control: the same checks must
catch it.

Chromium is not optional here: without it the test fails and says how to install it.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from browser import browser_session
from cnnzoo.cli.main import main as cnnzoo_main
from cnnzoo.experiments import EXPERIMENTS
from cnnzoo.experiments.html import write_html_report
from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table, write_result

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def browser():
    yield from browser_session("the HTML report")


PAGE_STATE = """
const imgs = Array.from(document.querySelectorAll("img.plot"));
const box = document.getElementById("image-check");
return {
  title: document.title,
  sections: Array.from(document.querySelectorAll("section.experiment")).map(s => ({
    id: s.id,
    badge: s.querySelector("h2 .badge").textContent,
    images: Array.from(s.querySelectorAll("img.plot")).map(i => [i.dataset.file, i.complete, i.naturalWidth]),
    tables: s.querySelectorAll("table").length,
  })),
  check: [box.dataset.loaded, box.dataset.total, box.className, box.textContent],
  external: performance.getEntriesByType("resource").map(r => r.name).filter(n => !n.startsWith("data:")),
};
"""


def _png(color: str) -> bytes:
    from cnnzoo.experiments.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 0.5], color=color)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    return buf.getvalue()


def _fake_reports(root: Path, broken: str | None = None) -> Path:
    """One result per experiment, each with two real plots (the `broken` one gets a truncated PNG:
    its signature passes the page's file check, its pixels cannot be decoded)."""
    for i, name in enumerate(EXPERIMENTS):
        out = root / name
        out.mkdir(parents=True)
        figs = []
        for j in range(2):
            file = f"plot{j}.png"
            (out / file).write_bytes(_png(f"C{i}")[:60] if name == broken and j == 1 else _png(f"C{i}"))
            figs.append(Figure(file, f"{name} <plot {j}> & caption"))
        result = ExperimentResult(
            name,
            f"{name.title()} experiment",
            'A claim with <markup> & "quotes" that must be escaped',
            "Zoph & Le 2016",
            findings=[Finding("first part", True, "1 > 0"), Finding("second part", i % 2 == 0, "numbers")],
            tables=[Table("numbers", ["net", "top-1 (%)"], [["resnet20", 91.25], ["lenet5", 88.5]])],
            figures=figs,
            notes=["a caveat"],
            meta={
                "command": f"cnnzoo experiment {name} --budget tiny",
                "budget": "tiny",
                "wall_seconds": 3.0,
            },
        )
        write_result(result, out)
    return root


def test_report_page_renders_every_plot(tmp_path, browser):
    reports = _fake_reports(tmp_path / "reports")
    assert cnnzoo_main(["report", "--reports", str(reports)]) == 0  # the CLI writes reports/index.html
    page = reports / "index.html"
    html = page.read_text()
    # Self-contained: no external scripts, styles, images or fonts.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<markup>" not in html and "&lt;markup&gt;" in html

    browser.open(page)
    state = browser.js(PAGE_STATE)
    assert state["title"].startswith("cnnzoo experiments")
    assert [s["id"] for s in state["sections"]] == list(EXPERIMENTS)  # the lectures' order
    for s in state["sections"]:
        assert len(s["images"]) == 2 and s["tables"] == 1, s
        for file, complete, width in s["images"]:
            assert complete and width > 0, f"{file} was not decoded"
    badges = [s["badge"] for s in state["sections"]]
    assert badges == ["claim held" if i % 2 == 0 else "claim held in part" for i in range(len(EXPERIMENTS))]
    plots = str(2 * len(EXPERIMENTS))  # two plots per experiment above
    assert state["check"][:3] == [plots, plots, ""]  # the page's own image check agrees
    assert state["external"] == []
    errors = [e for e in browser.console() if e.get("level") == "SEVERE"]
    assert not errors, errors
    shot = browser.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000  # something was drawn


def test_a_broken_plot_is_caught(tmp_path, browser):
    # The negative control: a plot that cannot be decoded must fail the same checks.
    reports = _fake_reports(tmp_path / "reports", broken="nas")
    page = write_html_report(reports)
    browser.open(page)
    state = browser.js(PAGE_STATE)
    bad = [(s["id"], f) for s in state["sections"] for f, ok, w in s["images"] if not (ok and w > 0)]
    assert bad == [("nas", "nas/plot1.png")]
    loaded, total, css, text = state["check"]
    total_plots = 2 * len(EXPERIMENTS)
    assert (loaded, total, css) == (
        str(total_plots - 1),
        str(total_plots),
        "failed",
    ) and "nas/plot1.png" in text


@pytest.mark.parametrize("entry", ["../../secret.txt", "ABSOLUTE", "link.png", "notes.png"])
def test_a_report_embeds_only_png_files_inside_its_folder(tmp_path, capsys, entry):
    reports = _fake_reports(tmp_path / "reports")
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    folder = reports / "nas"
    (folder / "link.png").symlink_to(secret)  # a link inside that leads out
    (folder / "notes.png").write_text("text, not an image")
    if entry == "ABSOLUTE":
        entry = str(secret)
    result = json.loads((folder / "result.json").read_text())
    result["figures"][0]["file"] = entry
    (folder / "result.json").write_text(json.dumps(result))
    assert cnnzoo_main(["report", "--reports", str(reports)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnzoo: error: ") and repr(entry) in err and "\n" not in err
    assert not (reports / "index.html").exists()  # nothing written


def test_committed_report_page(browser):
    # The page under reports/ is what a reader opens: every finished experiment, every plot shown.
    page = REPO / "reports" / "index.html"
    results = sorted(p.parent.name for p in (REPO / "reports").glob("*/result.json"))
    if not page.is_file():
        pytest.fail("reports/index.html is missing: run `cnnzoo report` after the experiments")
    assert sorted(results) == sorted(EXPERIMENTS), "a committed experiment report is missing"
    browser.open(page)
    state = browser.js(PAGE_STATE)
    assert sorted(s["id"] for s in state["sections"]) == sorted(EXPERIMENTS)
    for s in state["sections"]:
        assert s["images"], f"{s['id']} shows no plot"
        for file, complete, width in s["images"]:
            assert complete and width > 0, f"{file} was not decoded"
    assert state["external"] == []
    assert not [e for e in browser.console() if e.get("level") == "SEVERE"]
