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
from cnnzoo.experiments import EXPERIMENTS, Finding, get_experiment, read_result, run_experiment
from cnnzoo.experiments.activations import SATURATION, activation_statistics, time_to_target
from cnnzoo.experiments.efficiency import beyond_frontier, measure_latency
from cnnzoo.experiments.ensemble import ensemble_log_probs, protocol_log_probs
from cnnzoo.experiments.equivariance import (
    P4CNN,
    PlainCNN,
    classifier_rotation,
    layer_translation_errors,
    relative_error,
    shift,
)
from cnnzoo.experiments.plots import pareto_front
from cnnzoo.experiments.report import ExperimentResult, Table, render_markdown
from cnnzoo.experiments.training import StepChunks, stratified_subset
from experiment_fakes import write_fake_root

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_fake_root(tmp_path_factory.mktemp("data"))


# -- every experiment, end to end --------------------------------------------------------------
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_tiny_end_to_end(name, data_root, tmp_path, checked_figures):
    out = tmp_path / name
    lines: list[str] = []
    result = run_experiment(name, "tiny", out, data_root=str(data_root), threads=1, log=lines.append)
    assert lines and lines[-1].startswith(f"{name}: the claim ")

    # The report a person reads: verdict in words, every finding, how it was made.
    md = (out / "report.md").read_text()
    assert f"--budget tiny --out {out}" in md and f"--data-root {data_root}" in md
    assert re.search(r"\*\*The claim (held|did not hold|held only in part)\*\*", md)
    assert md.count("- **Held:**") + md.count("- **Did not hold:**") == len(result.findings) >= 1
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
    for name in EXPERIMENTS:
        exp = get_experiment(name)
        assert {"tiny", "small", "full"} <= set(exp.budgets) <= {"tiny", "small", "full", "paper"}
        assert exp.claim and exp.source and exp.title
    with pytest.raises(ValueError, match="did you mean degradation"):
        run_experiment("degradaton", "tiny")
    with pytest.raises(ValueError, match="no budget 'huge'"):
        run_experiment("nas", "huge")
    with pytest.raises(ValueError, match="has no setting epoch; its settings are"):
        run_experiment("degradation", "tiny", overrides={"epoch": 3})


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
    assert "the claim" in done.stdout and (out / "report.md").is_file() and (out / "rotation.png").is_file()

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
    assert len(calls) == 2 and read_result(default).verdict == "held"
    assert cnnzoo_main([*argv, "--out", "reports/degradation"]) == 0
    assert (tmp_path / "reports" / "degradation" / "report.md").is_file()
    capsys.readouterr()


# -- the report --------------------------------------------------------------------------------
def test_verdict_wording():
    r = ExperimentResult("x", "T", "claim", "src", tables=[Table("t", ["a", "b"], [[1, 2.5]])])
    assert r.verdict == "no finding"
    r.findings = [Finding("a", True, "e"), Finding("b", True, "e")]
    assert r.verdict == "held" and "**The claim held**" in render_markdown(r)
    r.findings[1].held = False
    assert r.verdict == "partly held" and "**The claim held only in part**" in render_markdown(r)
    r.findings[0].held = False
    md = render_markdown(r)
    assert r.verdict == "did not hold" and "**The claim did not hold**" in md
    assert "- **Did not hold:** a — e" in md and "| 1 | 2.5 |" in md


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
    got = ensemble_log_probs([torch.log_softmax(z, 1) for z in logits])
    torch.testing.assert_close(got.exp(), expected)
    # Averaging probabilities differs from averaging logits: one confident member does not win
    # outright. Member A: class 0 at 0.99; B and C: class 1 at 0.7, class 0 at 0.1.
    a = torch.tensor([[0.99, 0.01 / 3, 0.01 / 3, 0.01 / 3]]).log()
    b = torch.tensor([[0.1, 0.7, 0.1, 0.1]]).log()
    assert ensemble_log_probs([a, b, b]).argmax(1).item() == 1  # (0.99 + 0.2) / 3 < (0.0033 + 1.4) / 3
    assert (a + b + b).argmax(1).item() == 0  # the mean of the log-probabilities picks class 0
    assert torch.equal(ensemble_log_probs([a]), a)
    with pytest.raises(ValueError, match="at least one member"):
        ensemble_log_probs([])


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
