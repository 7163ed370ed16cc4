"""`cnnzoo eval --ensemble`: two tiny saved runs evaluated as one classifier, checked against the
softmax outputs averaged by hand in the test (the ensemble of Krizhevsky et al. 2012, sec. 6)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from cnnzoo.cli.main import main
from cnnzoo.train import train
from cnnzoo.train.evaluate import average_log_probs, evaluate_ensemble, load_model

sys.path.insert(0, str(Path(__file__).parent))
import train_fakes

QUIET = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two LeNet-5 runs on the synthetic squares, different seeds (so different weights)."""
    tmp = tmp_path_factory.mktemp("ensemble")
    for seed in (0, 1):
        train(
            train_fakes.config(tmp, f"seed{seed}", epochs=2, seed=seed),
            data=train_fakes.make_loaders,
            log=QUIET,
        )
    return [tmp / "seed0", tmp / "seed1"]


@pytest.fixture
def fake_data(monkeypatch):
    """`cnnzoo.data` replaced by the synthetic loaders, for the verbs that load data by name."""
    mod = types.ModuleType("cnnzoo.data")
    mod.make_loaders = train_fakes.make_loaders
    mod.dataset_info = lambda name, root=None: train_fakes.Info()
    monkeypatch.setitem(sys.modules, "cnnzoo.data", mod)
    return mod


def _hand_averaged(runs: list[Path], flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of the members' softmax over the whole test split, labels), computed directly."""
    *_, test, _ = train_fakes.make_loaders(batch_size=1000, val_fraction=0.0)
    (x, y) = next(iter(test))
    probs = []
    with torch.no_grad():
        for run in runs:
            model = load_model(run).model
            p = model(x).softmax(1)
            if flip:  # the member's own test-time average first: the image and its mirror
                p = (p + model(x.flip(-1)).softmax(1)) / 2
            probs.append(p)
    return sum(probs) / len(probs), y


def test_average_log_probs_is_the_log_of_the_mean_softmax():
    torch.manual_seed(0)
    logits = [torch.randn(5, 7) * 30 for _ in range(3)]  # large: a naive exp would lose digits
    got = average_log_probs([t.log_softmax(1) for t in logits])
    want = torch.stack([t.double().softmax(1) for t in logits]).mean(0).log()
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tta", ["center", "flip"])
def test_ensemble_equals_the_hand_averaged_softmax(runs, fake_data, capsys, tta):
    probs, y = _hand_averaged(runs, flip=tta == "flip")
    assert (
        main(["eval", "--ensemble", *map(str, runs), "--tta", tta, "--format", "json", "--batch-size", "50"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    pred = probs.argmax(1)
    assert result["ensemble"] == 2 and result["samples"] == len(y) == 128
    assert result["test_top1"] == pytest.approx((pred == y).double().mean().item())
    assert result["test_top5"] == 1.0  # four classes: the top five hold every one
    assert result["test_loss"] == pytest.approx(-probs[torch.arange(len(y)), y].log().mean().item(), rel=1e-5)
    confusion = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in zip(y.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    assert result["confusion"] == confusion.tolist()
    # Each member's own score is its plain evaluation, and the gain is measured against the best.
    singles = []
    for run in runs:
        assert main(["eval", str(run), "--tta", tta, "--format", "json", "--confusion", ""]) == 0
        singles.append(json.loads(capsys.readouterr().out)["test_top1"])
    assert [m["test_top1"] for m in result["members"]] == pytest.approx(singles)
    assert result["gain_top1"] == pytest.approx(result["test_top1"] - max(singles))


def test_ensemble_table_names_members_ensemble_and_gain(runs, fake_data, capsys, tmp_path):
    png = tmp_path / "ens.png"
    assert main(["eval", "--ensemble", *map(str, runs), "--confusion", str(png)]) == 0
    out = capsys.readouterr().out
    assert "member 1: lenet5" in out and "member 2: lenet5" in out
    assert "ensemble of 2 (softmax averaged)" in out and "gain over the best member: top-1" in out
    assert png.read_bytes().startswith(b"\x89PNG")


def test_ensemble_refuses_runs_of_other_classes_in_one_line(runs, fake_data, tmp_path, capsys):
    other = tmp_path / "three"
    fewer = lambda *a, **k: train_fakes.make_loaders(*a, **{**k, "num_classes": 3})  # noqa: E731
    train(train_fakes.config(tmp_path, "three", epochs=1), data=fewer, log=QUIET)
    assert main(["eval", "--ensemble", str(runs[0]), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnzoo: error: the runs differ in class names") and "\n" not in err
    with pytest.raises(ValueError, match="at least two runs"):
        evaluate_ensemble([runs[0]], loaders=train_fakes.make_loaders)
    assert main(["eval", str(runs[0]), str(runs[1])]) == 2
    assert "pass --ensemble" in capsys.readouterr().err
    assert main(["eval", "--ensemble", str(runs[0]), str(runs[0])]) == 2
    assert "named twice" in capsys.readouterr().err
