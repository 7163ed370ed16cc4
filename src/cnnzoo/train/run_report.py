"""Reports of training and counting runs: `cnnzoo report RUN [RUN...]`.

One run gives OUT/report.md and OUT/report.html (default OUT = RUN/report): how the run was made
(a command that repeats it, rebuilt from its config.json, and the settings), the selected and
last epochs' numbers, the curves, and on the test split with the selected weights either the
confusion matrix and per-class accuracy (classification) or the count scatter and density maps
drawn over a few test images (counting). Several runs add the comparison table (model, start
from scratch or pretrained, epochs, validation and test scores, time, parameters) and their
curves overlaid, then each run's own section.

The pictures are PNG files beside report.md; the HTML page inlines them as data URIs, so it is
one file that opens offline. Parts that need the test data (confusion matrix, density maps)
are computed when the run's dataset can be read; when it cannot, the report says which data is
missing and keeps the parts that need none. `report.json` holds the numbers the page shows.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnzoo.atomic import atomic_write_text
from cnnzoo.words import plural

__all__ = [
    "REPORT_DIR",
    "RunRecord",
    "read_run",
    "repeat_command",
    "write_run_report",
]

REPORT_DIR = "report"  # RUN/report/: a run's own report (removed with the run by --overwrite)
REPORT_FILES = ("report.md", "report.html", "report.json")
DENSITY_IMAGES = 3  # test images drawn with their density map: the fewest heads, the median, the most


class RunReportError(ValueError):
    """A run folder that cannot be reported, or an output that would replace a report."""


@dataclass
class RunRecord:
    """What a finished run left in its folder."""

    path: Path
    config: dict[str, Any]
    final: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counting(self) -> bool:
        return self.final.get("task") == "counting" or "cnnzoo_counter" in self.config

    @property
    def kind(self) -> str:
        return "counting" if self.counting else "classification"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def start(self) -> str:
        """How the weights started: from scratch, or pretrained (and on what), frozen or not."""
        source = self.config.get("pretrained")
        if not source:
            return "from scratch"
        text = "pretrained on ImageNet" if source == "imagenet" else f"pretrained ({Path(source).name})"
        if self.config.get("freeze_backbone"):
            text += ", backbone frozen"
        elif (self.config.get("backbone_lr_mult") or 1.0) != 1.0:
            text += f", backbone lr x {self.config['backbone_lr_mult']:g}"
        return text


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise RunReportError(f"{str(path)!r} is not valid JSON ({e}); the run's files are damaged") from None


def read_run(path: str | os.PathLike) -> RunRecord:
    """The finished run in `path` (config.json, final.json, metrics.jsonl), or a one-line error."""
    folder = Path(path).expanduser()
    if folder.is_file():
        raise RunReportError(
            f"{str(folder)!r} is a file; pass the run's folder (the one holding config.json)"
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder {str(folder)!r}")
    if (folder / "result.json").is_file() or any(folder.glob("*/result.json")):
        where = folder.parent if (folder / "result.json").is_file() else folder
        raise RunReportError(
            f"{str(folder)!r} holds experiment reports, not a training run; collect them with "
            f"`cnnzoo report --reports {where}`"
        )
    if not (folder / "config.json").is_file():
        raise RunReportError(
            f"{str(folder)!r} holds no run (no config.json); pass a folder written by `cnnzoo train` "
            "or `cnnzoo count train`"
        )
    if not (folder / "final.json").is_file():
        raise RunReportError(
            f"{str(folder)!r}: the run has not finished (no final.json); let it finish, or continue it "
            "with --resume, then report it"
        )
    history = []
    metrics = folder / "metrics.jsonl"
    if metrics.is_file():
        try:
            history = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line]
        except ValueError as e:
            raise RunReportError(f"{str(metrics)!r} is damaged ({e})") from None
    return RunRecord(folder, _read_json(folder / "config.json"), _read_json(folder / "final.json"), history)


# -- the command that repeats a run ----------------------------------------------------------------
# (config key, flag) in the order `--help` lists them; booleans use the --flag/--no-flag pairs.
_TRAIN_FLAGS = (
    ("epochs", "--epochs"),
    ("batch_size", "--batch-size"),
    ("lr", "--lr"),
    ("optimizer", "--optimizer"),
    ("momentum", "--momentum"),
    ("nesterov", "--nesterov"),
    ("weight_decay", "--weight-decay"),
    ("schedule", "--schedule"),
    ("milestones", "--milestones"),
    ("gamma", "--gamma"),
    ("patience", "--patience"),
    ("warmup", "--warmup"),
    ("label_smoothing", "--label-smoothing"),
    ("augment", "--augment"),
    ("amp", "--amp"),
    ("channels_last", "--channels-last"),
    ("pretrained", "--pretrained"),
    ("freeze_backbone", "--freeze-backbone"),
    ("backbone_lr_mult", "--backbone-lr-mult"),
    ("resize_to", "--resize"),
    ("val_fraction", "--val-fraction"),
    ("eval_every", "--eval-every"),
    ("test_curve", "--test-curve"),
    ("seed", "--seed"),
    ("data_root", "--data-root"),
)
_COUNT_FLAGS = (
    ("epochs", "--epochs"),
    ("batch_size", "--batch-size"),
    ("lr", "--lr"),
    ("optimizer", "--optimizer"),
    ("weight_decay", "--weight-decay"),
    ("schedule", "--schedule"),
    ("warmup", "--warmup"),
    ("backbone_lr_mult", "--backbone-lr-mult"),
    ("crop", "--crop"),
    ("scale", "--scale"),
    ("flip", "--no-flip"),
    ("density", "--density"),
    ("sigma", "--sigma"),
    ("density_scale", "--density-scale"),
    ("val_fraction", "--val-fraction"),
    ("pretrained", "--pretrained"),
    ("seed", "--seed"),
    ("amp", "--amp"),
    ("channels_last", "--channels-last"),
)


def _flag(flag: str, key: str, value: Any) -> list[str]:
    if flag == "--no-flip":
        return [] if value else [flag]
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if value is None:
        return [flag, "none"] if key in ("crop", "scale", "augment") else []
    if key == "crop":
        return [flag, "x".join(map(str, value))]
    if isinstance(value, list | tuple):
        return [flag, ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
    if isinstance(value, float):
        return [flag, f"{value:g}"]
    return [flag, str(value)]


def repeat_command(run: RunRecord) -> str:
    """A `cnnzoo train` / `cnnzoo count train` command that repeats the run's settings.

    Rebuilt from config.json: the recipe the run started from, then each setting that differs
    from that recipe's value, so that the CLI resolves exactly the recorded settings.
    """
    c = dict(run.config)
    if run.counting:
        from cnnzoo.counting.train import resolve_count_config

        base = resolve_count_config(c.get("recipe"), root=c.get("root") or "?").to_dict()
        argv = ["cnnzoo", "count", "train", "--root", str(c.get("root")), "--part", str(c.get("part"))]
        argv += ["--model", str(c.get("model"))]
        flags = _COUNT_FLAGS
    else:
        from cnnzoo.train.config import resolve_config
        from cnnzoo.train.recipes import default_recipe

        try:
            recipe = c.get("recipe") or default_recipe(c.get("model", ""))
            base = resolve_config(recipe).to_dict()
        except Exception:  # a model registered outside cnnzoo, a retired recipe: every setting is written
            base = {}
        argv = ["cnnzoo", "train", str(c.get("model")), "--data", str(c.get("data"))]
        if c.get("recipe"):
            argv += ["--recipe", c["recipe"]]
        flags = _TRAIN_FLAGS
    for key, flag in flags:
        if key not in c:
            continue
        value, default = c[key], base.get(key)
        if isinstance(value, list) and isinstance(default, tuple | list):
            default = list(default)
        if value != default:
            argv += _flag(flag, key, value)
    for key, value in (c.get("model_kwargs") or {}).items():
        argv += ["--model-arg", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    argv += ["--out", str(run.path)]
    return shlex.join(argv)


# -- the report as blocks, rendered to Markdown and HTML ------------------------------------------
@dataclass
class _Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class _Block:
    kind: str  # h2, h3, p, code, list, table, figure, missing
    text: str = ""
    items: list[str] = field(default_factory=list)
    table: _Table | None = None
    file: str = ""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    m, s = divmod(round(float(value)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else f"{m} min {s} s" if m else f"{float(value):.1f} s"


def _markdown(blocks: Sequence[_Block], title: str) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"# {title}", ""]
    for b in blocks:
        if b.kind in ("h2", "h3"):
            lines += ["#" * int(b.kind[1]) + " " + b.text, ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "missing":
            lines += [f"> **Not shown:** {b.text}", ""]
        elif b.kind == "code":
            lines += ["```", b.text, "```", ""]
        elif b.kind == "list":
            lines += [f"- {item}" for item in b.items] + [""]
        elif b.kind == "table" and b.table is not None:
            t = b.table
            if t.title:
                lines += [f"**{t.title}**", ""]
            lines.append("| " + " | ".join(esc(c) for c in t.columns) + " |")
            lines.append("|" + "|".join(" --- " for _ in t.columns) + "|")
            lines += ["| " + " | ".join(esc(_cell(v)) for v in row) + " |" for row in t.rows]
            lines.append("")
            if t.note:
                lines += [t.note, ""]
        elif b.kind == "figure":
            lines += [f"![{b.text}]({b.file})", "", f"*{b.text}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _html(blocks: Sequence[_Block], title: str, folder: Path) -> str:
    from cnnzoo.experiments.html import _CSS, _SCRIPT  # one look for every page cnnzoo writes

    parts = []
    for b in blocks:
        if b.kind in ("h2", "h3"):
            parts.append(f"<{b.kind}>{_e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{_e(b.text)}</p>")
        elif b.kind == "missing":
            parts.append(f"<p class='missing'>Not shown: {_e(b.text)}</p>")
        elif b.kind == "code":
            parts.append(f"<pre><code>{_e(b.text)}</code></pre>")
        elif b.kind == "list":
            parts.append("<ul class='meta'>" + "".join(f"<li>{_e(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table" and b.table is not None:
            t = b.table
            head = "".join(f"<th>{_e(c)}</th>" for c in t.columns)
            body = "".join(
                "<tr>"
                + "".join(
                    f"<td class='num'>{_e(_cell(v))}</td>"
                    if isinstance(v, int | float)
                    else f"<td>{_e(_cell(v))}</td>"
                    for v in row
                )
                + "</tr>"
                for row in t.rows
            )
            caption = f"<h3>{_e(t.title)}</h3>" if t.title else ""
            note = f"<p class='source'>{_e(t.note)}</p>" if t.note else ""
            parts.append(f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}")
        elif b.kind == "figure":
            data = (folder / b.file).read_bytes()
            if not data.startswith(PNG_SIGNATURE):  # written by this module a moment ago
                raise RunReportError(f"{folder / b.file} is not a PNG image")
            encoded = base64.b64encode(data).decode("ascii")
            parts.append(
                f"<figure><img class='plot' data-file='{_e(b.file)}' alt='{_e(b.text)}' "
                f"src='data:image/png;base64,{encoded}'><figcaption>{_e(b.text)}</figcaption></figure>"
            )
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS} pre {{ background: #eef1f5; padding: .6rem .8rem; overflow-x: auto; white-space: pre-wrap; }}</style>
</head>
<body>
<main>
<h1>{_e(title)}</h1>
<div id="image-check"></div>
{body}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


# -- one run's section ---------------------------------------------------------------------------
_SETTINGS_LEFT_OUT = {
    "out",
    "cnnzoo_run",
    "cnnzoo_counter",
    "val_split",
    "resumes",
    "progress",
    "summary",
    "data_source",
    "data_pipeline",
}


def _settings_table(run: RunRecord) -> _Table:
    rows = []
    for key, value in run.config.items():
        if key in _SETTINGS_LEFT_OUT:
            continue
        if isinstance(value, dict | list | tuple):
            value = json.dumps(value)
        rows.append([key, value])
    note = ""
    if run.config.get("resumes"):
        note = f"Resumed {plural(len(run.config['resumes']), 'time')}; config.json's `resumes` lists what changed."
    return _Table("Settings (config.json)", ["setting", "value"], rows, note)


def _results_table(run: RunRecord) -> _Table:
    f = run.final
    sel = f"selected (epoch {f.get('best_epoch', '?')})"
    last = f"last (epoch {f.get('epochs', '?')})"
    if run.counting:
        rows = [
            ["validation MAE", _num(f.get("val_mae")), "-"],
            ["validation RMSE", _num(f.get("val_rmse")), "-"],
            ["test MAE", _num(f.get("test_mae")), _num(f.get("test_mae_last"))],
            ["test RMSE", _num(f.get("test_rmse")), _num(f.get("test_rmse_last"))],
            ["test MAE of predicting the training mean", _num(f.get("mean_baseline_test_mae")), "-"],
            ["test RMSE of predicting the training mean", _num(f.get("mean_baseline_test_rmse")), "-"],
        ]
        note = (
            "The epoch is chosen on validation MAE; test is read on its weights. RMSE is what the "
            "counting papers call MSE. The mean baseline predicts the training images' mean count "
            f"({_num(f.get('train_mean_count'))}) for every test image."
        )
    else:
        rows = [
            ["validation top-1", _pct(f.get("val_top1")), "-"],
            ["test top-1", _pct(f.get("test_top1")), _pct(f.get("test_top1_last"))],
            ["test top-5", _pct(f.get("test_top5")), _pct(f.get("test_top5_last"))],
            ["test loss", _num(f.get("test_loss")), _num(f.get("test_loss_last"))],
        ]
        note = (
            f"Selected on {f.get('selected_on', '?')}; the test split is read on the selected weights "
            "(the last epoch's for the record), never used for a choice."
        )
    rows += [
        ["training time", _seconds(f.get("train_seconds")), "-"],
        ["parameters", f"{f['params']:,}" if isinstance(f.get("params"), int) else "-", "-"],
    ]
    return _Table("Results (final.json)", ["", sel, last], rows, note)


@dataclass
class _Options:
    data_root: str | None
    device: str
    batch_size: int
    loaders: Any  # make_loaders's signature, or None for cnnzoo.data's


def _classification_parts(run: RunRecord, out: Path, prefix: str, opt: _Options) -> tuple[list[_Block], dict]:
    from cnnzoo.data import DataError
    from cnnzoo.train.evaluate import evaluate
    from cnnzoo.train.plots import plot_confusion

    try:
        result = evaluate(
            run.path,
            batch_size=opt.batch_size,
            device=opt.device,
            root=opt.data_root or run.config.get("data_root"),
            loaders=opt.loaders,
            progress=False,
        )
    except (DataError, FileNotFoundError) as e:
        text = (
            f"the confusion matrix and per-class accuracy need the test split of {run.final.get('data')}, "
            f"which cannot be read here ({e}); fetch it (or pass --data-root) and report again"
        )
        return [_Block("missing", text)], {"missing": text}
    blocks = [_Block("h3", "Test split, selected weights")]
    recorded = run.final.get("test_top1")
    line = f"Recomputed now: top-1 {_pct(result['test_top1'])}, top-5 {_pct(result['test_top5'])} on {plural(result['samples'], 'test image')}."
    if recorded is not None and abs(recorded - result["test_top1"]) > 1e-9:
        line += f" The run recorded {_pct(recorded)}: the test data or the code changed since it was trained."
    blocks.append(_Block("p", line))
    file = f"{prefix}confusion.png"
    plot_confusion(result["confusion"], result["classes"], out / file)
    blocks.append(
        _Block(
            "figure",
            "Confusion matrix on the test split (rows: true class; colour: share of the row)",
            file=file,
        )
    )
    rows = [[c, _pct(a)] for c, a in result["per_class"].items()]
    blocks.append(_Block("table", table=_Table("Per-class test accuracy", ["class", "accuracy"], rows)))
    keep = {
        k: result[k]
        for k in ("samples", "test_top1", "test_top5", "test_loss", "per_class", "classes", "confusion")
    }
    return blocks, keep


def _read_predictions(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [
            {"image": r["image"], "true": float(r["true"]), "estimate": float(r["estimate"])}
            for r in csv.DictReader(f)
        ]


def _counting_parts(run: RunRecord, out: Path, prefix: str, opt: _Options) -> tuple[list[_Block], dict]:
    import numpy as np

    from cnnzoo.counting.plots import plot_density_overlay, plot_scatter

    blocks: list[_Block] = [_Block("h3", "Test split, selected weights")]
    kept: dict[str, Any] = {}
    f = run.final
    rows = None
    csv_path = run.path / "test_predictions.csv"
    if csv_path.is_file():
        rows = _read_predictions(csv_path)
        file = f"{prefix}scatter.png"
        plot_scatter(
            rows,
            out / file,
            title=f"test: MAE {_num(f.get('test_mae'))}, RMSE {_num(f.get('test_rmse'))} "
            f"(predicting the mean: MAE {_num(f.get('mean_baseline_test_mae'))})",
        )
        blocks.append(_Block("figure", "Estimated against true count, one dot per test image", file=file))
        kept["test_images"] = len(rows)
    else:
        blocks.append(_Block("missing", f"the count scatter: {csv_path} is missing (the run wrote none)"))
    root = opt.data_root or run.config.get("root")
    part = run.config.get("part", "B")
    try:
        from cnnzoo.counting.models import load_counter
        from cnnzoo.counting.shanghaitech import ShanghaiTech, load_rgb
        from cnnzoo.counting.train import _normalise

        test = ShanghaiTech(root, part, "test")
    except (FileNotFoundError, ValueError) as e:
        text = (
            f"density maps over test images need ShanghaiTech Part {part} under {root!r}, which cannot "
            f"be read here ({str(e).splitlines()[0]}); pass --data-root DIR and report again"
        )
        blocks.append(_Block("missing", text))
        kept["missing"] = text
        return blocks, kept
    import torch

    counts = np.array([len(test.points(i)) for i in range(len(test))])
    order = np.argsort(counts, kind="stable")
    picks = list(dict.fromkeys([int(order[0]), int(order[len(order) // 2]), int(order[-1])]))[:DENSITY_IMAGES]
    model, _ = load_counter(run.path, device=opt.device)
    drawn = []
    for n, i in enumerate(picks, 1):
        image, _ = load_rgb(test.image_path(i))
        with torch.no_grad():
            density = model(_normalise(image)[None].to(opt.device))[0, 0].float().cpu().numpy()
        density = density / model.density_scale
        estimate = float(density.sum(dtype=np.float64))
        file = f"{prefix}density-{n}.png"
        plot_density_overlay(
            image,
            density,
            out / file,
            count=estimate,
            true_count=int(counts[i]),
            title=test.image_path(i).name,
        )
        blocks.append(
            _Block(
                "figure",
                f"{test.image_path(i).name}: estimated {estimate:.1f}, true {plural(int(counts[i]), 'head')}",
                file=file,
            )
        )
        drawn.append({"image": test.image_path(i).name, "true": int(counts[i]), "estimate": estimate})
    kept["density_images"] = drawn
    return blocks, kept


def _run_blocks(
    run: RunRecord, out: Path, prefix: str, opt: _Options, *, level: str = "h2"
) -> tuple[list[_Block], dict]:
    from cnnzoo.counting.plots import plot_count_curves
    from cnnzoo.train.plots import plot_curves

    f = run.final
    what = f"ShanghaiTech Part {run.config.get('part')}" if run.counting else str(f.get("data"))
    blocks = [_Block(level, f"{run.name}: {f.get('model')} on {what}, {run.start}")]
    selected = f.get("selected_on", "")
    blocks.append(
        _Block(
            "p",
            f"A {run.kind} run of {plural(int(f.get('epochs', 0)), 'epoch')}; epoch {f.get('best_epoch', '?')} "
            f"was selected ({selected}). Folder: {run.path}.",
        )
    )
    blocks.append(_Block("p", "A command that repeats it (rebuilt from config.json):"))
    blocks.append(_Block("code", repeat_command(run)))
    blocks.append(_Block("table", table=_results_table(run)))
    if run.history:
        file = f"{prefix}curves.png"
        title = f"{f.get('model')} on {what}"
        if run.counting:
            plot_count_curves(run.history, out / file, title=title)
        else:
            has_val = "val" in str(selected)
            plot_curves(
                run.history, out / file, title=title, selected_epoch=f.get("best_epoch") if has_val else None
            )
        blocks.append(_Block("figure", "Training curves (one point per epoch)", file=file))
    else:
        blocks.append(_Block("missing", f"curves: {run.path / 'metrics.jsonl'} is missing"))
    parts, kept = (_counting_parts if run.counting else _classification_parts)(run, out, prefix, opt)
    blocks += parts
    blocks.append(_Block("table", table=_settings_table(run)))
    return blocks, kept


# -- several runs ----------------------------------------------------------------------------------
def _comparison_table(runs: Sequence[RunRecord]) -> _Table:
    if runs[0].counting:
        columns = [
            "run", "model", "start", "epochs", "selected", "val MAE", "val RMSE", "test MAE", "test RMSE",
            "test MAE (last)", "mean-baseline MAE", "mean-baseline RMSE", "training time", "params",
        ]  # fmt: skip
        rows = [
            [
                r.name,
                r.final.get("model"),
                r.start,
                r.final.get("epochs"),
                r.final.get("best_epoch"),
                _num(r.final.get("val_mae")),
                _num(r.final.get("val_rmse")),
                _num(r.final.get("test_mae")),
                _num(r.final.get("test_rmse")),
                _num(r.final.get("test_mae_last")),
                _num(r.final.get("mean_baseline_test_mae")),
                _num(r.final.get("mean_baseline_test_rmse")),
                _seconds(r.final.get("train_seconds")),
                r.final.get("params"),
            ]
            for r in runs
        ]
        note = "Lower is better. Test on the weights of the epoch with the lowest validation MAE."
    else:
        columns = [
            "run", "model", "start", "data", "epochs", "selected", "val top-1", "test top-1",
            "test top-1 (last)", "test top-5", "training time", "params",
        ]  # fmt: skip
        rows = [
            [
                r.name,
                r.final.get("model"),
                r.start,
                r.final.get("data"),
                r.final.get("epochs"),
                r.final.get("best_epoch"),
                _pct(r.final.get("val_top1")),
                _pct(r.final.get("test_top1")),
                _pct(r.final.get("test_top1_last")),
                _pct(r.final.get("test_top5")),
                _seconds(r.final.get("train_seconds")),
                r.final.get("params"),
            ]
            for r in runs
        ]
        note = (
            'Test on the weights of the epoch with the best validation top-1 ("selected"); the last '
            "epoch's test top-1 for the record. Compare runs on validation, report them on test."
        )
    return _Table("Comparison", columns, rows, note)


def _plot_overlaid(runs: Sequence[RunRecord], path: Path) -> Path:
    from cnnzoo.train.plots import epoch_axis, pyplot, save_png

    plt = pyplot()
    val_key, val_label, scale = (
        ("val_mae", "validation MAE", 1) if runs[0].counting else ("val_top1", "validation top-1 (%)", 100)
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs: list[int] = []
    for r in runs:
        label = f"{r.name}: {r.final.get('model')}, {r.start}"
        rows = [h for h in r.history if "train_loss" in h]
        axes[0].plot([h["epoch"] for h in rows], [h["train_loss"] for h in rows], "o-", ms=3, label=label)
        val = [h for h in r.history if val_key in h]
        axes[1].plot([h["epoch"] for h in val], [scale * h[val_key] for h in val], "o-", ms=3, label=label)
        epochs += [h["epoch"] for h in r.history]
    axes[0].set_title("training loss")
    axes[0].set_ylabel("loss")
    axes[1].set_title(val_label.split(" (")[0])
    axes[1].set_ylabel(val_label)
    for ax in axes:
        ax.set_xlabel("epoch")
        epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


# -- writing ---------------------------------------------------------------------------------------
def write_run_report(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    data_root: str | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    loaders: Any = None,
) -> dict[str, Any]:
    """Write the report of one run or the comparison of several into `out`; returns report.json's data.

    `out` defaults to RUN/report for one run and must be given for several. A folder that
    already holds a report is replaced only with `overwrite`. `data_root` overrides where the
    runs' datasets are read (the classification data root, or the counting runs' --root);
    `loaders` (make_loaders's signature) lets tests pass their own data.
    """
    records = [read_run(r) for r in runs]
    if not records:
        raise RunReportError("name a run: `cnnzoo report RUN [RUN...]`")
    if len({r.path.resolve() for r in records}) < len(records):
        raise RunReportError("the same run is named twice; name each run once")
    kinds = {r.kind for r in records}
    if len(kinds) > 1:
        listed = ", ".join(f"{r.name} ({r.kind})" for r in records)
        raise RunReportError(
            f"cannot compare classification with counting runs ({listed}); report them separately"
        )
    if out is None:
        if len(records) > 1:
            raise RunReportError("several runs: name the comparison's folder with --out DIR")
        out = records[0].path / REPORT_DIR
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RunReportError(f"--out {str(folder)!r} is a file; name a folder")
    taken = [name for name in REPORT_FILES if (folder / name).exists()]
    if taken and not overwrite:
        raise RunReportError(
            f"{str(folder)!r} already holds a report ({taken[0]}); pass --overwrite to replace it"
        )
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _write(records, folder, _Options(data_root, device, batch_size, loaders))
    except BaseException:
        if created:  # a report that failed leaves no empty folder behind (plots it made go too)
            for child in folder.iterdir():
                child.unlink()
            folder.rmdir()
        raise


def _write(records: Sequence[RunRecord], folder: Path, opt: _Options) -> dict[str, Any]:
    blocks: list[_Block] = []
    data: dict[str, Any] = {"kind": records[0].kind, "runs": []}
    if len(records) == 1:
        run = records[0]
        title = f"Run report: {run.name}"
        run_blocks, kept = _run_blocks(run, folder, "", opt)
        blocks += run_blocks[1:]  # the title says which run
        blocks.insert(0, _Block("p", run_blocks[0].text))
        data["runs"].append(
            {"path": str(run.path), "final": run.final, "command": repeat_command(run), **kept}
        )
    else:
        title = f"Comparison of {plural(len(records), 'run')}"
        table = _comparison_table(records)
        blocks.append(_Block("table", table=table))
        datasets = {r.final.get("data") for r in records}
        if len(datasets) > 1:
            blocks.append(
                _Block(
                    "p",
                    f"Note: the runs use different datasets ({', '.join(map(str, sorted(datasets)))}); their scores do not compare directly.",
                )
            )
        if any(r.history for r in records):
            _plot_overlaid(records, folder / "compare-curves.png")
            blocks.append(
                _Block(
                    "figure",
                    "Training loss and validation score per epoch, runs overlaid",
                    file="compare-curves.png",
                )
            )
        data["comparison"] = {"columns": table.columns, "rows": table.rows}
        for i, run in enumerate(records, 1):
            run_blocks, kept = _run_blocks(run, folder, f"run{i}-", opt)
            blocks += run_blocks
            data["runs"].append(
                {"path": str(run.path), "final": run.final, "command": repeat_command(run), **kept}
            )
    data["files"] = sorted({b.file for b in blocks if b.kind == "figure"})
    data["missing"] = [b.text for b in blocks if b.kind == "missing"]
    atomic_write_text(folder / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(folder / "report.md", _markdown(blocks, title))
    atomic_write_text(folder / "report.html", _html(blocks, title, folder))
    data["out"] = str(folder)
    return data
