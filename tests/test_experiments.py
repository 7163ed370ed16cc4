"""The experiments: each one end to end at its tiny budget on fake data, and the measuring parts
against independent oracles.

The end-to-end runs check what a report must hold (the command, seeds, machine, wall time, a
plain verdict per finding, tables, plots that are real PNGs), not the verdicts: on a few
hundred fake images a claim may hold or not. The measurements behind the verdicts are checked
on inputs whose answer is known without the code under test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnzoo.cli.main import main as cnnzoo_main
from cnnzoo.experiments import BUDGETS, EXPERIMENTS, Finding, get_experiment, read_result, run_experiment
from cnnzoo.experiments.activations import SATURATION, activation_statistics, time_to_target
from cnnzoo.experiments.efficiency import beyond_frontier, measure_latency
from cnnzoo.experiments.ensemble import protocol_log_probs
from cnnzoo.experiments.equivariance import (
    P4CNN,
    PlainCNN,
    classifier_rotation,
    layer_translation_errors,
    relative_error,
    shift,
)
from cnnzoo.experiments.plots import pareto_front
from cnnzoo.experiments.report import INDICATIVE, ExperimentResult, Table, render_markdown
from cnnzoo.experiments.runner import format_setting, parse_overrides
from cnnzoo.experiments.training import StepChunks, progress_label, stratified_subset
from cnnzoo.train.evaluate import average_log_probs
from experiment_fakes import write_fake_cifar10, write_fake_root

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_fake_root(tmp_path_factory.mktemp("data"))


def save_imagenet_resnet18(checkpoints: Path) -> Path:
    """torchvision's resnet18 with random weights, saved where its ImageNet file would be."""
    import torchvision

    from cnnzoo.pretrained import imagenet_url

    torch.manual_seed(0)
    path = checkpoints / Path(imagenet_url("resnet18")).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


# -- every experiment, end to end --------------------------------------------------------------
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_tiny_end_to_end(name, data_root, tmp_path, checked_figures, hub_cache):
    out = tmp_path / name
    if name == "finetune":  # CIFAR-10 and torchvision's ImageNet file, both stand-ins, offline
        data_root = write_fake_cifar10(tmp_path / "cifar")
        save_imagenet_resnet18(hub_cache)
    lines: list[str] = []
    result = run_experiment(name, "tiny", out, data_root=str(data_root), threads=1, log=lines.append)
    assert lines and lines[-1].startswith(f"{name}: {INDICATIVE} (")

    # The report a person reads: verdict in words, every finding, how it was made. A tiny run
    # gives no verdict, only the direction of each measurement.
    md = (out / "report.md").read_text()
    assert f"--budget tiny --out {out}" in md and f"--data-root {data_root}" in md
    assert "**Indicative only: budget too small.**" in md and "**The claim" not in md
    assert result.verdict == INDICATIVE and result.outcome in ("held", "did not hold", "partly held")
    leans = re.findall(
        r"- \*\*Indicative only: budget too small\*\* \((as claimed|against the claim) on this run\)", md
    )
    assert len(leans) == len(result.findings) >= 1
    assert leans.count("as claimed") == sum(f.held for f in result.findings)
    for needle in ("Seeds:", "Machine:", "cores", "torch ", "Wall time:", "## Measurements"):
        assert needle in md, needle
    assert all(isinstance(f.held, bool) and f.evidence for f in result.findings)
    assert result.meta["machine"]["threads"] == 1 and result.meta["wall_seconds"] >= 0

    # Plots: referenced in the report, on disk, real PNGs, each laid out without overlapping text
    # (the `checked_figures` fixture checks every figure as it is saved).
    assert result.figures and len(checked_figures) >= len(result.figures)  # + the runs' curves
    for fig in result.figures:
        assert f"]({fig.file})" in md
        assert (out / fig.file).read_bytes()[:8] == PNG_MAGIC

    # result.json is what `cnnzoo report` reads back.
    again = read_result(out)
    assert again.to_dict() == json.loads(json.dumps(result.to_dict()))
    assert again.verdict == result.verdict
    # Every table is rectangular.
    for t in result.tables:
        assert all(len(row) == len(t.columns) for row in t.rows), t.title


def test_budgets_and_overrides():
    assert BUDGETS == ("tiny", "small", "full", "paper")
    for name in EXPERIMENTS:
        exp = get_experiment(name)
        assert tuple(exp.budgets) == BUDGETS, name  # every experiment has the papers' schedule too
        assert exp.claim and exp.source and exp.title
    with pytest.raises(ValueError, match="did you mean degradation"):
        run_experiment("degradaton", "tiny")
    with pytest.raises(ValueError, match="no budget 'huge'"):
        run_experiment("nas", "huge")
    with pytest.raises(ValueError, match="has no setting epoch; its settings are"):
        run_experiment("degradation", "tiny", overrides={"epoch": 3})


def test_paper_budgets_follow_he_et_al_cifar_schedule():
    # He et al. 2015, sec. 4.2: 64k iterations at batch 128 on 45k training images (5k held out
    # for validation), lr / 10 at 32k and 48k; the step schedule divides at 50% and 75% of a run.
    for name, train in (("degradation", 45000), ("finetune", 45000)):
        s = get_experiment(name).budgets["paper"]
        assert s.batch_size == 128 and s.weight_decay == 1e-4 and s.augment == "crop-flip"
        iterations = s.epochs * train / s.batch_size
        assert abs(iterations - 64000) / 64000 < 0.005, (name, iterations)
        assert (0.5 * iterations, 0.75 * iterations) == pytest.approx((32000, 48000), rel=0.005)
    finetune = get_experiment("finetune").budgets["paper"]
    assert finetune.train_size == 0 and finetune.val_size == 5000 and finetune.image_size == 224
    assert get_experiment("degradation").budgets["paper"].data == "cifar10"


def test_missing_dataset_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="cnnzoo data fetch fashion-mnist"):
        run_experiment(
            "activations", "tiny", tmp_path / "out", data_root=str(tmp_path / "empty"), log=lambda s: None
        )


def test_cli_experiment_and_errors(data_root, tmp_path, capsys):
    # The real entry point once, in its own process: a tiny run writes its report.
    out = tmp_path / "eq"
    args = [
        "experiment",
        "equivariance",
        "--budget",
        "tiny",
        "--out",
        str(out),
        "--data-root",
        str(data_root),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "cnnzoo", *args, "--threads", "1"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{get_experiment('equivariance').title}: {INDICATIVE}\n")
    assert f"  [{INDICATIVE}] " in done.stdout
    assert (out / "report.md").is_file() and (out / "rotation.png").is_file()

    # The rest in this process (main() is what the console script calls).
    assert cnnzoo_main(["experiment", "--list", "--format", "json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == list(EXPERIMENTS)
    missing_data = ["--budget", "tiny", "--out", str(tmp_path / "x"), "--data-root", str(tmp_path)]
    for argv, message in (
        (["experiment", "nass"], "unknown experiment 'nass'; did you mean nas?"),
        (["experiment"], "name an experiment"),
        (["experiment", "nas", "--threads", "0"], "--threads must be >= 1"),
        (["experiment", "activations", *missing_data], "cnnzoo data fetch fashion-mnist"),
        (["report", "--reports", str(tmp_path / "none")], "no reports folder"),
        (
            ["report", "--reports", str(tmp_path), "--out", str(tmp_path / "page.txt")],
            "must name an .html file",
        ),
    ):
        assert cnnzoo_main(argv) == 2, argv
        # One error line, last (a run may log its start before it fails), no traceback.
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if line.startswith("cnnzoo: error: ")]
        assert errors == lines[-1:] and message in errors[0], lines


def test_cli_experiment_writes_under_runs_and_keeps_a_report_unless_overwrite(tmp_path, monkeypatch, capsys):
    # A stand-in experiment that finishes at once: what is tested is where the report goes.
    from cnnzoo.experiments import runner

    @dataclasses.dataclass(frozen=True)
    class Settings:
        epochs: int = 1

    calls: list[Path] = []

    def run(settings, ctx):
        calls.append(ctx.out)
        return ExperimentResult("degradation", "T", "claim", "src", findings=[Finding("a", True, "e")])

    fake = runner.Experiment("degradation", "T", "claim", "src", {"tiny": Settings()}, run)
    monkeypatch.setattr(runner, "get_experiment", lambda name: fake)
    monkeypatch.chdir(tmp_path)
    argv = ["experiment", "degradation", "--budget", "tiny"]

    assert cnnzoo_main(argv) == 0
    default = Path("runs") / "experiments" / "degradation"
    assert calls == [default] and (default / "report.md").is_file() and (default / "result.json").is_file()
    assert f"report: {default / 'report.md'}" in capsys.readouterr().out
    assert not Path("reports").exists()  # the committed reports change only when --out names them

    (default / "result.json").write_text("{}")
    (default / "report.md").unlink()  # either file marks a report
    assert cnnzoo_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{str(default)!r} already holds a report; pass --overwrite" in err
    assert calls == [default] and (default / "result.json").read_text() == "{}"  # nothing ran or changed

    assert cnnzoo_main([*argv, "--overwrite"]) == 0
    assert len(calls) == 2 and read_result(default).outcome == "held"
    assert read_result(default).verdict == INDICATIVE  # a tiny run
    assert cnnzoo_main([*argv, "--out", "reports/degradation"]) == 0
    assert (tmp_path / "reports" / "degradation" / "report.md").is_file()
    capsys.readouterr()


# -- the report --------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", ["full", "paper", None])
def test_verdict_wording(budget):
    # full and paper runs (and results without a budget) decide the claim.
    meta = {} if budget is None else {"budget": budget}
    r = ExperimentResult("x", "T", "claim", "src", tables=[Table("t", ["a", "b"], [[1, 2.5]])], meta=meta)
    assert r.verdict == "no finding"
    r.findings = [Finding("a", True, "e"), Finding("b", True, "e")]
    assert r.verdict == "held" and "**The claim held**" in render_markdown(r)
    assert r.headline == "the claim held" and r.label(r.findings[0]) == "held"
    r.findings[1].held = False
    assert r.verdict == "partly held" and "**The claim held only in part**" in render_markdown(r)
    assert r.headline == "the claim held only in part"
    r.findings[0].held = False
    md = render_markdown(r)
    assert r.verdict == "did not hold" and "**The claim did not hold**" in md
    assert "- **Did not hold:** a — e" in md and "| 1 | 2.5 |" in md
    assert INDICATIVE not in md and "indicative" not in r.to_dict()["verdict"]


@pytest.mark.parametrize("budget", ["tiny", "small"])
def test_small_budgets_give_indicative_verdicts_everywhere(budget, tmp_path):
    from cnnzoo.experiments.html import render_html
    from cnnzoo.experiments.report import write_result

    findings = [Finding("first", True, "1 > 0"), Finding("second", False, "0 < 1")]
    r = ExperimentResult("x", "T", "claim", "src", findings=findings, meta={"budget": budget})
    assert r.verdict == INDICATIVE == "indicative only: budget too small"
    assert r.outcome == "partly held"  # what the numbers say is kept, not shown as a verdict
    assert [r.label(f) for f in r.findings] == [INDICATIVE, INDICATIVE] and r.headline == INDICATIVE

    md = render_markdown(r)
    assert "**Indicative only: budget too small.**" in md and f"A `{budget}` run" in md
    assert "- **Indicative only: budget too small** (as claimed on this run): first — 1 > 0" in md
    assert "- **Indicative only: budget too small** (against the claim on this run): second — 0 < 1" in md
    assert "**The claim" not in md and "**Held:**" not in md and "**Did not hold:**" not in md

    write_result(r, tmp_path)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["verdict"] == INDICATIVE and saved["labels"] == [INDICATIVE, INDICATIVE]
    assert saved["outcome"] == "partly held" and read_result(tmp_path).verdict == INDICATIVE

    page = render_html([(tmp_path, r)], tmp_path)
    badges = re.findall(r'<span class="badge ([\w-]+)">([^<]*)</span>', page)
    assert badges == [("indicative", INDICATIVE)] * 4  # summary row, section heading, each finding
    assert "claim held" not in page and ">held<" not in page and "1 of 2 (indicative)" in page


def test_cli_prints_the_budgets_verdict(tmp_path, monkeypatch, capsys):
    from cnnzoo.experiments import runner

    @dataclasses.dataclass(frozen=True)
    class Settings:
        epochs: int = 1

    def run(settings, ctx):
        return ExperimentResult("nas", "T", "claim", "src", findings=[Finding("a", True, "e")])

    budgets = {b: Settings() for b in BUDGETS}
    fake = runner.Experiment("nas", "T", "claim", "src", budgets, run)
    monkeypatch.setattr(runner, "get_experiment", lambda name: fake)
    for budget, head, label in [
        ("tiny", INDICATIVE, INDICATIVE),
        ("small", INDICATIVE, INDICATIVE),
        ("full", "the claim held", "held"),
        ("paper", "the claim held", "held"),
    ]:
        argv = ["experiment", "nas", "--budget", budget, "--out", str(tmp_path / budget)]
        assert cnnzoo_main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"T: {head}\n  [{label}] a: e\n"), out


# -- --set --------------------------------------------------------------------------------------
def test_set_parses_each_value_to_its_fields_type():
    deg, eq, eff = get_experiment("degradation"), get_experiment("equivariance"), get_experiment("efficiency")
    got = parse_overrides(
        deg,
        "tiny",
        ["epochs=12", "lr=0.05", "models=resnet20, resnet56", "augment=crop-flip", "train_size=1_000"],
    )
    assert got == {
        "epochs": 12,
        "lr": 0.05,
        "models": ("resnet20", "resnet56"),
        "augment": "crop-flip",
        "train_size": 1000,
    }
    assert type(got["lr"]) is float and type(got["epochs"]) is int
    assert parse_overrides(deg, "tiny", ["augment=none"]) == {"augment": None}  # str | None
    assert parse_overrides(eq, "tiny", ["p4_widths=4,8,16"]) == {"p4_widths": (4, 8, 16)}
    assert parse_overrides(get_experiment("finetune"), "tiny", ["download=yes"]) == {"download": True}
    assert parse_overrides(get_experiment("finetune"), "tiny", ["download=false"]) == {"download": False}
    kwargs = parse_overrides(eff, "tiny", ['model_kwargs={"lenet5": {"act": "relu"}}'])
    assert kwargs == {"model_kwargs": {"lenet5": {"act": "relu"}}}
    # What the command line shows parses back to the same values.
    for key, value in {**got, "augment": None, "p4_widths": (4, 8, 16), **kwargs}.items():
        exp = eq if key == "p4_widths" else eff if key == "model_kwargs" else deg
        assert parse_overrides(exp, "tiny", [f"{key}={format_setting(value)}"]) == {key: value}


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("epochs=two", "--set epochs=two: degradation's setting epochs is int (invalid literal"),
        ("epochs=two", "e.g. --set epochs=12"),
        ("lr=fast", "setting lr is float"),
        ("models=", None),  # an empty tuple parses; the experiment decides what it means
        ("warmup_epochs=1,2", "warmup_epochs is float"),
        ("epoch=3", "degradation has no setting epoch; its settings are augment, batch_size, data,"),
        ("epochs", "--set takes key=value, e.g. --set epochs=12; got 'epochs'"),
        ("=3", "--set takes key=value"),
    ],
)
def test_set_errors_name_the_field_and_its_type(pair, message):
    exp = get_experiment("degradation")
    if message is None:
        assert parse_overrides(exp, "tiny", [pair]) == {"models": ()}
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_overrides(exp, "tiny", [pair])


def test_set_errors_for_tuples_and_booleans():
    with pytest.raises(ValueError, match=r"p4_widths is tuple\[int, int, int\] \(needs 3 comma-separated"):
        parse_overrides(get_experiment("equivariance"), "tiny", ["p4_widths=4,8"])
    with pytest.raises(ValueError, match=r"download is bool .*e\.g\. --set download=true"):
        parse_overrides(get_experiment("finetune"), "tiny", ["download=maybe"])


def test_cli_set_reaches_the_settings_report_and_command(tmp_path, monkeypatch, capsys):
    from cnnzoo.experiments import runner

    @dataclasses.dataclass(frozen=True)
    class Settings:
        epochs: int = 1
        models: tuple[str, ...] = ("a",)

    seen = []

    def run(settings, ctx):
        seen.append(settings)
        return ExperimentResult("degradation", "T", "claim", "src", findings=[Finding("a", True, "e")])

    fake = runner.Experiment("degradation", "T", "claim", "src", {"tiny": Settings()}, run)
    monkeypatch.setattr(runner, "get_experiment", lambda name: fake)
    out = tmp_path / "r"
    argv = ["experiment", "degradation", "--budget", "tiny", "--out", str(out)]
    assert cnnzoo_main([*argv, "--set", "epochs=12", "--set", "models=b,c"]) == 0
    assert seen == [Settings(epochs=12, models=("b", "c"))]
    capsys.readouterr()
    md = (out / "report.md").read_text()
    command = f"cnnzoo experiment degradation --budget tiny --out {out} --set epochs=12 --set models=b,c"
    assert f"- Command: `{command}`" in md and "`epochs=12`" in md
    meta = read_result(out).meta
    assert meta["overrides"] == {"epochs": 12, "models": ["b", "c"]} and meta["settings"]["epochs"] == 12

    # A bad value is one line, before anything runs.
    assert cnnzoo_main([*argv, "--overwrite", "--set", "epochs=many"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--set epochs=many: degradation's setting epochs is int" in err
    assert len(seen) == 1


# -- progress -----------------------------------------------------------------------------------
def test_progress_label_counts_what_the_settings_say():
    assert progress_label(3, epochs=12, evals_per_epoch=1, steps=None, chunk=10) == "epoch 3/12"
    assert progress_label(3, epochs=2, evals_per_epoch=4, steps=None, chunk=10) == "epoch 1/2, evaluation 3/4"
    assert progress_label(5, epochs=2, evals_per_epoch=4, steps=None, chunk=10) == "epoch 2/2, evaluation 1/4"
    assert progress_label(2, epochs=1, evals_per_epoch=1, steps=150, chunk=75) == "step 150/150"
    assert progress_label(3, epochs=1, evals_per_epoch=1, steps=100, chunk=34) == "step 100/100"


def test_training_lines_count_the_settings_epochs(data_root, tmp_path):
    from cnnzoo.experiments.runner import Context
    from cnnzoo.experiments.training import load_dataset, train_run

    data = load_dataset("fashion-mnist", str(data_root))
    lines: list[str] = []
    ctx = Context(out=tmp_path, log=lines.append)
    idx = torch.arange(64)
    train_run(ctx, "a", "lenet5", data=data, train_idx=idx, epochs=3, batch_size=32, precise_bn=0)
    epochs = [line.split("]  ", 1)[-1].split("  train")[0] for line in lines if "train loss" in line]
    assert [e.split("] ")[-1] for e in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    lines.clear()
    train_run(ctx, "b", "lenet5", data=data, train_idx=idx, steps=4, evals=2, batch_size=32, precise_bn=0)
    steps = [line.split("] ")[-1].split("  train")[0] for line in lines if "train loss" in line]
    assert steps == ["step 2/4", "step 4/4"]


# -- finetune -----------------------------------------------------------------------------------
def test_finetune_offline_names_the_weights_file_then_the_cifar_files(tmp_path, hub_cache, capsys):
    out = tmp_path / "out"
    empty = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError) as e:
        run_experiment("finetune", "tiny", out, data_root=empty, log=lambda s: None)
    text = str(e.value)
    assert str(hub_cache / "resnet18-f37072fd.pth") in text and "--set download=true" in text
    assert "--set weights=PATH" in text and not out.exists()  # nothing ran, nothing written

    save_imagenet_resnet18(hub_cache)
    with pytest.raises(FileNotFoundError) as e:
        run_experiment("finetune", "tiny", out, data_root=empty, log=lambda s: None)
    text = str(e.value)
    folder = Path(empty) / "cifar10" / "cifar-10-batches-py"
    assert f"CIFAR-10 is not in {Path(empty) / 'cifar10'}" in text and str(folder) in text
    for needed in (
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "data_batch_1",
        "data_batch_5",
        "test_batch",
        "batches.meta",
        "cnnzoo data fetch cifar10",
        "--set data=fashion-mnist",
    ):
        assert needed in text, needed

    # On the command line: one line, exit 2.
    argv = ["experiment", "finetune", "--budget", "tiny", "--out", str(out), "--data-root", empty]
    assert cnnzoo_main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cnnzoo: error: ")]
    assert len(errors) == 1 and "CIFAR-10 is not in" in errors[0]
    assert cnnzoo_main([*argv, "--set", f"weights={tmp_path / 'none.pth'}"]) == 2
    assert "--set weights=" in capsys.readouterr().err


def test_finetune_starts_from_the_weights_file_and_scratch_does_not(tmp_path, hub_cache, checked_figures):
    # With no learning (the engine refuses lr 0; 1e-30 moves no float32 weight of this size) the
    # fine-tuned net ends with the file's trunk, bit for bit; the scratch twin does not.
    from safetensors.torch import load_file

    state = torch.load(save_imagenet_resnet18(hub_cache), weights_only=True)
    root = write_fake_cifar10(tmp_path / "data")
    out = tmp_path / "out"
    overrides = {"finetune_lr": 1e-30, "weight_decay": 0.0, "baselines": (), "image_size": 32}
    run_experiment(
        "finetune", "tiny", out, data_root=str(root), threads=1, overrides=overrides, log=lambda s: None
    )
    for run, same in (("resnet18-imagenet", True), ("resnet18-scratch", False)):
        trained = load_file(out / "runs" / run / "model.safetensors")
        convs = [v for k, v in trained.items() if v.shape == state["layer4.1.conv2.weight"].shape]
        assert any(torch.equal(v, state["layer4.1.conv2.weight"]) for v in convs) is same, run
        stems = [v for v in trained.values() if v.shape == state["conv1.weight"].shape]
        assert len(stems) == 1 and torch.equal(stems[0], state["conv1.weight"]) is same, run


# -- the measurements, against oracles ----------------------------------------------------------
def test_stratified_subset_is_stratified_nested_and_seeded():
    labels = torch.arange(1000) % 10
    labels[:300] = 0  # unbalanced: class 0 is 37% of the set
    sub = stratified_subset(labels, 100, seed=3)
    assert len(set(sub.tolist())) == 100
    counts = torch.bincount(labels[sub], minlength=10)
    expected = torch.bincount(labels, minlength=10) / 10  # proportions of the whole set
    assert (counts - expected).abs().max() <= 1
    whole = stratified_subset(labels, 0, seed=3)
    assert sorted(whole.tolist()) == list(range(1000))
    assert torch.equal(whole[:100], sub)  # nested: a small subset is a prefix of a larger one
    assert torch.equal(stratified_subset(labels, 100, seed=3), sub)
    assert not torch.equal(stratified_subset(labels, 100, seed=4), sub)


def test_step_chunks_continue_the_stream_across_epochs():
    class Loader:
        def __init__(self):
            self.epochs: list[int] = []

        def set_epoch(self, e):
            self.epochs.append(e)

        def __iter__(self):
            e = self.epochs[-1]
            return iter([(e, 0), (e, 1), (e, 2)])

    loader = Loader()
    chunks = StepChunks(loader, 2)
    assert len(chunks) == 2
    seen = [b for _ in range(4) for b in chunks]
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]


def test_time_to_target_interpolates():
    # Crossing 0.8 between (1, 0.6) and (2, 1.0): halfway.
    assert time_to_target([1, 2, 3], [0.6, 1.0, 1.0], 0.8) == pytest.approx(1.5)
    # Before the first measurement: from (0, chance).
    assert time_to_target([2.0], [0.9], 0.5, start=0.1) == pytest.approx(2.0 * 0.4 / 0.8)
    assert time_to_target([1, 2], [0.3, 0.4], 0.8) is None


def test_activation_statistics_count_dead_channels_and_saturated_outputs():
    # A net whose pre-activations are known by construction: on inputs in [0, 1), conv channel 0
    # (weight 1, bias 0.1) is always positive, channel 1 (weight -1, bias -0.1) and channel 2
    # (weight 0, bias -0.5) never are: 2 of 3 ReLU channels dead. The sigmoid's inputs are
    # whatever the linear layer makes; the oracle counts saturation on sigmoid's *outputs*
    # (< 0.05 or > 0.95), the function under test on |pre-activation| > ln 19.
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.1, -0.1, -0.5]))
    fc = nn.Linear(3 * 4 * 4, 5)
    with torch.no_grad():
        fc.weight.mul_(20)  # wide pre-activations: some saturated, some not
    net = nn.Sequential(conv, nn.ReLU(inplace=True), nn.Flatten(), fc, nn.Sigmoid()).train()
    x = torch.rand(37, 1, 4, 4)
    stats = activation_statistics(net, x, nn.ReLU, batch=10)
    assert set(stats) == {"1"}
    assert stats["1"]["dead"] == pytest.approx(2 / 3)
    assert stats["1"]["fired"].tolist() == [True, False, False]
    assert stats["1"]["saturated"] is None  # no threshold given: not measured (and valid JSON)
    assert net.training  # the mode is restored

    sig = activation_statistics(net, x, nn.Sigmoid, saturation=SATURATION["sigmoid"], batch=10)
    with torch.no_grad():
        out = net(x)
    expected = float(((out < 0.05) | (out > 0.95)).float().mean())
    assert 0 < expected < 1
    assert sig["4"]["saturated"] == pytest.approx(expected)
    # tanh(z) = 2 sigmoid(2z) - 1: |tanh| > 0.9 exactly where sigmoid(2z) is saturated.
    assert math.tanh(SATURATION["tanh"]) == pytest.approx(0.9)
    # Never positive: a dead-by-construction neuron of a fully connected layer, on (N, C) inputs.
    fc2 = nn.Linear(2, 2)
    with torch.no_grad():
        fc2.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        fc2.bias.copy_(torch.tensor([0.5, -1.0]))
    stats = activation_statistics(nn.Sequential(fc2, nn.LeakyReLU(0.1)), torch.rand(8, 2), nn.LeakyReLU)
    assert stats["1"]["dead"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no Tanh module"):
        activation_statistics(net, x, nn.Tanh)


def test_train_run_probe_sees_every_evaluation_and_changes_nothing(data_root, tmp_path):
    from cnnzoo.experiments.runner import Context
    from cnnzoo.experiments.training import load_dataset, train_run

    data = load_dataset("fashion-mnist", str(data_root))
    idx = stratified_subset(data.train[1], 96, 0)
    calls = []

    def probe(model):
        calls.append(model.training)
        return {"weight_sum": float(sum(p.detach().sum() for p in model.parameters()))}

    def run(out, **kw):
        ctx = Context(out=tmp_path / out, log=lambda s: None)
        common = dict(data=data, train_idx=idx, test_idx=torch.arange(32), epochs=2, evals_per_epoch=2)
        return train_run(
            ctx, "net", "lenet5", batch_size=32, seed=3, model_kwargs={"act": "relu"}, **common, **kw
        )

    plain, probed = run("a"), run("b", probe=probe)
    assert len(probed.probes) == len(probed.history) + 1 == 5  # initialisation + each evaluation
    assert plain.probes == []
    # The probe saw the weights change, and the run is the same run with or without it.
    assert probed.probes[0] != probed.probes[-1]
    assert [h["train_loss"] for h in probed.history] == [h["train_loss"] for h in plain.history]
    assert probed.test_top1 == plain.test_top1


def test_ensemble_averages_probabilities_not_logits():
    # Oracle: the mean of the members' softmax, computed on probabilities directly.
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(6, 4, generator=g) * 3 for _ in range(3)]
    expected = torch.stack([torch.softmax(z, 1) for z in logits]).mean(0)
    got = average_log_probs([torch.log_softmax(z, 1) for z in logits])
    torch.testing.assert_close(got.exp(), expected)
    # Averaging probabilities differs from averaging logits: one confident member does not win
    # outright. Member A: class 0 at 0.99; B and C: class 1 at 0.7, class 0 at 0.1.
    a = torch.tensor([[0.99, 0.01 / 3, 0.01 / 3, 0.01 / 3]]).log()
    b = torch.tensor([[0.1, 0.7, 0.1, 0.1]]).log()
    assert average_log_probs([a, b, b]).argmax(1).item() == 1  # (0.99 + 0.2) / 3 < (0.0033 + 1.4) / 3
    assert (a + b + b).argmax(1).item() == 0  # the mean of the log-probabilities picks class 0
    assert torch.equal(average_log_probs([a]), a)
    with pytest.raises(ValueError, match="at least one member"):
        average_log_probs([])


def test_protocol_log_probs_center_is_the_plain_evaluation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 6 * 6, 5)).train()
    x = torch.randn(7, 1, 8, 8)
    got = protocol_log_probs(model, x, "center", batch_size=3)
    torch.testing.assert_close(got, torch.log_softmax(model(x), 1))
    assert not model.training
    flip = protocol_log_probs(model, x, "flip", batch_size=3)
    both = torch.stack([torch.softmax(model(x), 1), torch.softmax(model(x.flip(-1)), 1)]).mean(0)
    torch.testing.assert_close(flip.exp(), both)


def brute_force_front(costs, scores):
    n = len(costs)
    return sorted(
        i
        for i in range(n)
        if not any(
            costs[j] <= costs[i] and scores[j] >= scores[i] and (costs[j], scores[j]) != (costs[i], scores[i])
            for j in range(n)
        )
    )


def test_pareto_front_against_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        costs = torch.randint(0, 6, (8,), generator=g).tolist()
        scores = torch.randint(0, 6, (8,), generator=g).tolist()
        assert sorted(pareto_front(costs, scores)) == brute_force_front(costs, scores)
    # Hand example: (1, 0.5) and (4, 0.9) are the frontier; (2, 0.4) and (5, 0.9) are dominated.
    assert pareto_front([2, 1, 4, 5], [0.4, 0.5, 0.9, 0.9]) == [1, 2]


def test_beyond_frontier():
    points = {"lenet": (1.0, 0.80), "resnet": (30.0, 0.90), "mobile": (5.0, 0.85), "slow": (40.0, 0.88)}
    assert beyond_frontier(points, {"lenet", "resnet"}) == ["mobile"]
    assert beyond_frontier({"a": (1.0, 0.9), "b": (2.0, 0.9)}, {"a"}) == []


def test_latency_is_measured_per_model():
    slow = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(8)])
    fast = nn.Conv2d(8, 8, 1)
    ms = measure_latency({"slow": slow, "fast": fast}, (8, 32, 32), rounds=3, min_seconds=0.005)
    assert set(ms) == {"slow", "fast"} and all(v > 0 for v in ms.values())
    assert ms["slow"] > ms["fast"]  # 72x the multiply-adds


def test_shift_against_slicing():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    z = shift(x, 1, -2, "zero")
    want = torch.zeros_like(x)
    want[..., 1:, :3] = x[..., :4, 2:]
    assert torch.equal(z, want)
    assert torch.equal(shift(x, 2, 3, "circular"), torch.roll(x, (2, 3), (-2, -1)))
    assert torch.equal(shift(x, 7, 0, "zero"), torch.zeros_like(x))
    with pytest.raises(ValueError, match="'circular' or 'zero'"):
        shift(x, 1, 1, "reflect")


def test_translation_errors_exact_where_the_theory_says():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    x = torch.randn(4, 1, 16, 16)
    errs = layer_translation_errors(conv, x, 4)
    assert max(errs["circular"]) < 1e-6 and max(errs["zero_interior"]) < 1e-6
    assert min(errs["zero"]) > 1e-3  # the border sees the zero-filled band
    assert max(errs["pool"][1::2]) < 1e-6  # even shifts move the pooled map by whole pixels
    assert min(errs["pool"][0::2]) > 1e-3  # odd shifts do not
    assert relative_error(torch.ones(3), torch.ones(3)) == 0.0


def test_p4_classifier_is_rotation_invariant_and_the_plain_twin_has_its_weights():
    torch.manual_seed(0)
    p4, plain = P4CNN((2, 4, 4)), PlainCNN((4, 8, 8))
    # Every 3x3 conv after the first has exactly its twin's number of weights.
    assert [c.weight.numel() for c in p4.convs] == [c.weight.numel() for c in plain.convs[1:]]
    p4.eval()
    x = torch.randn(64, 1, 28, 28)
    logits = p4(x)
    for k in (1, 2, 3):
        torch.testing.assert_close(p4(torch.rot90(x, k, (-2, -1))), logits, rtol=0, atol=1e-5)
    y = logits.argmax(1)
    r = classifier_rotation(p4, x, y)
    assert r["agreement"] == [1.0] * 4 and r["accuracy"] == [1.0] * 4
    assert math.isclose(sum(r["agreement"]), 4.0)
