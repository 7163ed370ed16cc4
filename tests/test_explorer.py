"""`cnnzoo explore`: the architecture explorer page, opened in headless chromium (tests/browser.py).

The oracles: `cnnzoo summary NAME --format md`, run as a user runs it, for every cell of the page's
tables (the page must show what the terminal prints); torchvision's own modules for the groups
column (which convolutions are depthwise); Chromium's Content-Security-Policy enforcement, with an
injected request as the negative control, for "no request leaves the page".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torchvision

from browser import browser_session
from cnnzoo.analysis.explorer import ROW_FIELDS, render_explorer
from cnnzoo.cli.main import main as cnnzoo_main

MODELS = ["lenet5", "vgg16", "resnet50", "mobilenet_v2", "googlenet", "efficientnet_b0"]

# What the page shows now: each pane's model, table, bars and the receptive-field lines.
PAGE_STATE = """
const pane = p => p && {
  model: p.dataset.model,
  name: p.querySelector(".model-name").textContent,
  head: Array.from(p.querySelectorAll("table.layers thead tr:nth-child(2) th")).map(th => th.textContent),
  rows: Array.from(p.querySelectorAll("table.layers tbody tr")).map(tr =>
    Array.from(tr.children).map(td => td.firstChild ? td.firstChild.textContent : "")),
  total: Array.from(p.querySelectorAll("table.layers tfoot td")).map(td => td.textContent),
  depthwise: p.querySelectorAll("table.layers .dw").length,
  bars: Object.fromEntries(Array.from(p.querySelectorAll("svg.bars")).map(s =>
    [s.dataset.metric, [s.dataset.model, s.querySelectorAll("rect.bar").length]])),
  summary: p.querySelector(".summary-line").textContent,
  notes: Array.from(p.querySelectorAll(".note-line")).map(n => n.textContent),
};
return {
  ready: document.body.dataset.ready,
  a: pane(document.getElementById("pane-a")),
  b: pane(document.getElementById("pane-b")),
  panes: document.querySelectorAll("#panes .pane").length,
  lines: Array.from(document.querySelectorAll("#rf-svg path.rf-line")).map(p => p.dataset.model),
  compare: document.getElementById("compare").hidden ? null :
    Array.from(document.querySelectorAll("#compare tr")).map(tr => Array.from(tr.children).map(c => c.textContent)),
  hash: location.hash,
  external: performance.getEntriesByType("resource").map(r => r.name),
};
"""

CHOOSE = """
const select = document.getElementById(arguments[0]);
select.value = arguments[1];
select.dispatchEvent(new Event("change"));
"""


@pytest.fixture(scope="module")
def browser():
    yield from browser_session("the architecture explorer")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore") / "explorer.html"
    assert cnnzoo_main(["explore", *MODELS, "--out", str(out), "--threads", "1"]) == 0
    return out


def _summary(name: str, capsys) -> tuple[list[list[str]], str, list[str]]:
    """`cnnzoo summary NAME`'s Markdown rows (the totals row last), its text form's last line and
    its note lines."""
    capsys.readouterr()
    assert cnnzoo_main(["summary", name, "--format", "md"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    rows = [_without_groups(r, cells[0]) for r in cells[2:]]  # as the page's rows below
    assert cnnzoo_main(["summary", name]) == 0
    text = capsys.readouterr().out.strip().splitlines()
    return rows, text[-1], [line for line in text if line.startswith("note: ")]


def _without_groups(cells: list[str], head: list[str]) -> list[str]:
    return [c for c, h in zip(cells, head, strict=True) if h != "groups"]


def _state(browser) -> dict:
    return browser.js(PAGE_STATE)


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "efficientnet_b0"])
def test_the_page_shows_what_summary_prints(page, browser, capsys, name):
    browser.open(page.resolve().as_uri() + f"#a={name}")
    state = _state(browser)
    rows, last_line, notes = _summary(name, capsys)
    a = state["a"]
    assert a["model"] == name
    assert _without_groups(a["head"], a["head"]) == [
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
    ]
    page_rows = [_without_groups(r, a["head"]) for r in a["rows"]]
    assert page_rows == rows[:-1]  # every cell of every row, as the terminal shows it
    assert _without_groups(a["total"], a["head"]) == rows[-1]
    assert a["summary"] == last_line
    assert a["notes"] == notes
    # Issue 17: after EfficientNet's first squeeze-and-excitation gate every unit sees the whole
    # input; the table says so and a note names the gate (the plain CNNs keep their numbers).
    if name == "efficientnet_b0":
        assert rows[-1][-1] == "whole input" and "receptive field whole input" in last_line
        assert (
            len(notes) == 1
            and "features.1.0.block.1.mul" in notes[0]
            and "squeeze-and-excitation" in notes[0]
        )
    else:
        assert rows[-1][-1] == {"vgg16": "212", "resnet50": "427"}[name] and notes == []


def test_choosing_a_model_updates_the_table_and_the_charts(page, browser):
    browser.open(page)
    state = _state(browser)
    assert state["ready"] == "1" and state["a"]["model"] == MODELS[0] and state["panes"] == 1
    data = json.loads(
        re.search(r'id="explorer-data">(.*?)</script>', page.read_text(), re.S).group(1).replace("<\\/", "</")
    )
    entry = {m["name"]: m for m in data["models"]}["mobilenet_v2"]

    browser.js(CHOOSE, "pick-a", "mobilenet_v2")
    state = _state(browser)
    a = state["a"]
    assert a["model"] == a["name"] == "mobilenet_v2" and state["hash"] == "#a=mobilenet_v2"
    assert len(a["rows"]) == len(entry["rows"]) and a["rows"][0][0] == "features.0.0"
    for metric in ("params", "macs", "memory_bytes"):
        nonzero = sum(1 for r in entry["rows"] if r[ROW_FIELDS.index(metric)] > 0)
        assert a["bars"][metric] == ["mobilenet_v2", nonzero], metric
    assert state["lines"] == ["mobilenet_v2"]
    # The oracle for the groups column: torchvision's MobileNetV2 has one depthwise 3x3 conv
    # per inverted residual block, 17 in all (Sandler et al. 2018, Table 2).
    with torch.device("meta"):
        tv = torchvision.models.mobilenet_v2()
    convs = [m for m in tv.modules() if isinstance(m, torch.nn.Conv2d)]
    depthwise = [m for m in convs if m.groups == m.in_channels > 1]
    assert a["depthwise"] == len(depthwise) == 17
    assert [r[1] for r in a["rows"]].count("Conv2d") == len(convs)

    browser.js(CHOOSE, "pick-a", "lenet5")  # and back: nothing of the last model is left over
    a = _state(browser)["a"]
    assert a["model"] == "lenet5" and len(a["rows"]) == 8 and a["depthwise"] == 0


def test_two_models_side_by_side(page, browser):
    browser.open(page.resolve().as_uri() + "#a=vgg16")
    browser.js(CHOOSE, "pick-b", "resnet50")
    state = _state(browser)
    assert state["panes"] == 2
    assert (state["a"]["model"], state["b"]["model"]) == ("vgg16", "resnet50")
    assert state["b"]["bars"]["macs"][0] == "resnet50" and len(state["b"]["rows"]) > len(state["a"]["rows"])
    assert state["lines"] == ["vgg16", "resnet50"]  # both fields on one chart
    compare = {r[0]: r[1:] for r in state["compare"]}
    assert compare[""] == ["vgg16", "resnet50", "resnet50 / vgg16"]
    # Simonyan & Zisserman's 138M against He et al.'s 25.6M parameters.
    assert compare["parameters"] == ["138 M", "25.6 M", "0.18\u00d7"]  # x: the multiplication sign
    assert state["hash"] == "#a=vgg16&b=resnet50"
    browser.js(CHOOSE, "pick-b", "")  # back to one model
    state = _state(browser)
    assert state["panes"] == 1 and state["b"] is None and state["compare"] is None


def test_no_console_errors_and_no_request_leaves_the_page(page, browser):
    browser.console()  # forget what earlier tests logged
    browser.open(page.resolve().as_uri() + "#a=googlenet&b=resnet50&log=1")
    for name in MODELS:  # every model through both pickers
        browser.js(CHOOSE, "pick-a", name)
        browser.js(CHOOSE, "pick-b", MODELS[-1 - MODELS.index(name)])
    browser.js("document.getElementById('log-scale').click(); document.getElementById('same-scale').click();")
    state = _state(browser)
    assert state["external"] == []
    assert browser.console() == []  # not even a warning
    html = page.read_text()
    assert "default-src 'none'" in html and not re.search(r"""(src|href)=["']?(https?:)?//""", html)

    # The negative control: a request injected into the page is blocked by its policy, and says so.
    browser.js(
        "const i = document.createElement('img'); i.src = 'http://example.invalid/x.png'; document.body.append(i);"
    )
    blocked = [
        e for e in browser.console() if e["level"] == "SEVERE" and "Content Security Policy" in e["message"]
    ]
    assert len(blocked) == 1 and "example.invalid" in blocked[0]["message"]


def test_screenshot(page, browser):
    browser.open(page.resolve().as_uri() + "#a=vgg16&b=resnet50")
    shot = browser.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 50_000  # charts and tables were drawn


def test_the_data_cannot_end_its_script_element():
    data = {"version": "0", "columns": list(ROW_FIELDS), "models": [{"description": "a </script><b>x"}]}
    html = render_explorer(data)
    payload = html.split('id="explorer-data">', 1)[1]
    assert payload.index("</script>") > payload.index("<\\/script><b>x")  # the first end tag is the real one
    assert json.loads(payload.split("</script>", 1)[0])["models"][0]["description"] == "a </script><b>x"


def test_cli_refuses_an_existing_page_unknown_names_and_empty_patterns(tmp_path, capsys):
    out = tmp_path / "explorer.html"
    out.write_text("keep me")
    cases = [
        (["lenet5", "--out", str(out)], "already exists; pass --overwrite"),
        (["resnt50", "--out", str(tmp_path / "x.html")], "did you mean resnet50"),
        (["nosuch*", "--out", str(tmp_path / "x.html")], "no model matches 'nosuch*'"),
        (["lenet5", "--out", str(tmp_path)], "is a folder"),
    ]
    for args, expected in cases:
        capsys.readouterr()
        assert cnnzoo_main(["explore", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("cnnzoo: error: ") and expected in err and "\n" not in err, err
    assert out.read_text() == "keep me" and not (tmp_path / "x.html").exists()
    assert cnnzoo_main(["explore", "lenet*", "--out", str(out), "--overwrite"]) == 0
    assert '"name":"lenet5"' in out.read_text() and Path(out).stat().st_size > 10_000
