"""The engine's contract, in-process: validation split, selection on validation only, resume that
applies or refuses a change, and any nn.Module through `cnnzoo.train.train`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnzoo.data import split_validation
from cnnzoo.train import ResumeError, TrainConfig, train
from cnnzoo.train.rundir import RunDirError

sys.path.insert(0, str(Path(__file__).parent))
import train_fakes

QUIET = lambda *_: None  # noqa: E731


def config(tmp_path: Path, name: str = "run", **kw) -> TrainConfig:
    return train_fakes.config(tmp_path, name, **{"schedule": "constant", **kw})


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


# -- the validation split --------------------------------------------------------------------------
def test_validation_split_is_stratified_deterministic_and_disjoint():
    labels = torch.arange(1000) % 7
    labels = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(1))]
    train_idx, val_idx = split_validation(labels, 0.1)
    again = split_validation(labels, 0.1)
    assert torch.equal(train_idx, again[0]) and torch.equal(val_idx, again[1])
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(1000))
    per_class = torch.bincount(labels[val_idx], minlength=7)
    expected = torch.tensor([round(0.1 * int((labels == c).sum())) for c in range(7)])
    assert torch.equal(per_class, expected)
    # Independent of the seed the run trains with: a function of the data alone.
    torch.manual_seed(123)
    assert torch.equal(split_validation(labels, 0.1)[1], val_idx)
    assert split_validation(labels, 0.0)[1].numel() == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(labels, 1.0)


def test_make_loaders_holds_validation_out_of_train_never_test(tmp_path):
    from cnnzoo.data import make_loaders
    from test_data import write_mnist_like

    write_mnist_like(tmp_path, "mnist", "MNIST", n_train=40, n_test=12)
    train_l, val_l, _, info = make_loaders("mnist", batch_size=64, root=tmp_path, val_fraction=0.25)
    assert (info.train_size, info.val_size, info.test_size) == (30, 10, 12)
    assert info.val_split["val_size"] == 10 and "sha256" in info.val_split["rule"]

    def rows(loader) -> set[bytes]:
        return {img.numpy().tobytes() for img in loader.images}

    assert rows(train_l).isdisjoint(rows(val_l))
    assert len(rows(train_l) | rows(val_l)) == 40  # together they are the training split
    none = make_loaders("mnist", batch_size=64, root=tmp_path, val_fraction=0.0)
    assert none.val is None and none.info.train_size == 40


# -- selection -------------------------------------------------------------------------------------
class Spy:
    """A loader that records when it is read (the epoch count of the trainer at that moment)."""

    def __init__(self, loader, trainer_box: list) -> None:
        self.loader, self.box, self.reads = loader, trainer_box, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        trainer = self.box[0]
        self.reads.append(len(trainer.history) if trainer is not None else None)
        return iter(self.loader)


def test_selection_reads_validation_only_and_test_once_on_the_selected_weights(tmp_path):
    from cnnzoo.train import Trainer

    train_l, val_l, test_l, info = train_fakes.make_loaders(batch_size=32)
    # A test set whose labels are wrong: were it read for any choice, the choice would differ
    # from the validation one, and the reads would show up before training ended.
    test_l.labels = (test_l.labels + 1) % train_fakes.NUM_CLASSES
    box: list = [None]
    spy = Spy(test_l, box)
    trainer = Trainer(
        config(tmp_path, epochs=4, schedule="cosine", lr=0.02),
        data=(train_l, val_l, spy, info),
        log=QUIET,
    )
    box[0] = trainer
    final = trainer.fit()
    rows = read_metrics(tmp_path / "run")
    best = max(rows, key=lambda r: r["val_top1"])
    assert final["best_epoch"] == best["epoch"] and final["val_top1"] == best["val_top1"]
    assert all(r == 4 for r in spy.reads) and 1 <= len(spy.reads) <= 2  # only after the last epoch
    assert final["test_top1"] < 0.5  # the inverted labels: the test score is reported, not used
    selected = read_json(tmp_path / "run" / "final.json")
    assert selected["selected_on"] == "val_top1"


def test_test_curve_is_recorded_but_never_chosen_from(tmp_path):
    from cnnzoo.train import Trainer

    train_l, val_l, test_l, info = train_fakes.make_loaders(batch_size=32)
    test_l.labels = (test_l.labels + 1) % train_fakes.NUM_CLASSES
    trainer = Trainer(
        config(tmp_path, epochs=3, schedule="cosine", test_curve=True),
        data=(train_l, val_l, test_l, info),
        log=QUIET,
    )
    final = trainer.fit()
    rows = read_metrics(tmp_path / "run")
    assert all("test_top1" in r for r in rows)
    best = max(rows, key=lambda r: r["val_top1"])
    assert final["best_epoch"] == best["epoch"]
    # The reported test score is the selected epoch's point of the curve, not the curve's best.
    assert final["test_top1"] == pytest.approx(best["test_top1"])
    assert final["test_top1_last"] == pytest.approx(rows[-1]["test_top1"])


def test_plateau_schedule_listens_to_validation(tmp_path):
    # A validation set that never improves after the first epoch (a constant one-batch loader) drops
    # the lr after `patience` epochs, whatever test says.
    from cnnzoo.train import Trainer

    train_l, val_l, test_l, info = train_fakes.make_loaders(batch_size=32)

    class Frozen:
        def __init__(self, loader) -> None:
            self.batch = next(iter(loader))

        def __len__(self) -> int:
            return 1

        def __iter__(self):
            x, y = self.batch
            yield torch.zeros_like(x), y  # every epoch the same blank images: no progress

    trainer = Trainer(
        config(tmp_path, epochs=5, schedule="plateau", patience=1, gamma=0.1, optimizer="sgd", lr=0.05),
        data=(train_l, Frozen(val_l), test_l, info),
        log=QUIET,
    )
    trainer.fit()
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run")]
    assert lrs[-1] < lrs[0]


def test_without_validation_the_last_epoch_is_reported_and_said_so(tmp_path):
    from functools import partial

    final = train(
        config(tmp_path, val_fraction=0.0),
        data=partial(train_fakes.make_loaders, val_fraction=0.0),
        log=QUIET,
    )
    assert final["selected_on"] == "last epoch (no validation set)" and final["best_epoch"] == 2
    assert final["test_top1"] == final["test_top1_last"]


# -- resume ----------------------------------------------------------------------------------------
def test_resume_with_a_new_lr_applies_it_and_records_it(tmp_path):
    train(config(tmp_path, epochs=2, lr=0.01), data=train_fakes.make_loaders, log=QUIET)
    logs: list[str] = []
    final = train(
        config(tmp_path, epochs=4, lr=0.001, resume=True), data=train_fakes.make_loaders, log=logs.append
    )
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and final["epochs"] == 4
    assert rows[1]["lr"] == pytest.approx(0.01) and rows[2]["lr"] == pytest.approx(0.001)
    saved = read_json(tmp_path / "run" / "config.json")
    assert saved["lr"] == 0.001 and saved["epochs"] == 4  # config.json says what runs now ...
    (record,) = saved["resumes"]  # ... and what changed, when
    assert record["at_epoch"] == 2
    assert record["changes"] == {"epochs": [2, 4], "lr": [0.01, 0.001]}
    assert "epochs 3-4" in record["schedule"]
    assert any("applied from here" in line and "lr 0.01 -> 0.001" in line for line in logs)


def test_resume_extends_a_cosine_run_with_a_new_phase(tmp_path):
    train(config(tmp_path, epochs=2, schedule="cosine", lr=0.02), data=train_fakes.make_loaders, log=QUIET)
    train(
        config(tmp_path, epochs=4, schedule="cosine", lr=0.02, resume=True),
        data=train_fakes.make_loaders,
        log=QUIET,
    )
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run")]
    # The first phase ended near zero; the extension restarts at the peak and decays again.
    assert lrs[1] < 1e-3 and lrs[2] > 0.005 and lrs[3] < lrs[2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 16}, "cannot change batch_size"),
        ({"optimizer": "sgd"}, "cannot change optimizer"),
        ({"epochs": 1}, "already trained 2 epochs"),
        ({}, "finished all 2 epochs"),
    ],
)
def test_resume_refuses_what_it_cannot_apply(tmp_path, change, message):
    train(config(tmp_path, epochs=2), data=train_fakes.make_loaders, log=QUIET)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(ResumeError, match=message):
        train(config(tmp_path, resume=True, **change), data=train_fakes.make_loaders, log=QUIET)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path):
    train(config(tmp_path, epochs=1), data=train_fakes.make_loaders, log=QUIET)
    before = (tmp_path / "run" / "final.json").read_bytes()
    with pytest.raises(RunDirError, match="--resume to continue it or --overwrite to replace it"):
        train(config(tmp_path, epochs=1), data=train_fakes.make_loaders, log=QUIET)
    assert (tmp_path / "run" / "final.json").read_bytes() == before
    final = train(
        config(tmp_path, epochs=1, overwrite=True, seed=5), data=train_fakes.make_loaders, log=QUIET
    )
    assert final["epochs"] == 1 and (tmp_path / "run" / "final.json").read_bytes() != before


# -- any module ------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    """A user's own network: no registry, no cnnzoo interface."""

    def __init__(self, classes: int = train_fakes.NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def test_a_user_module_trains_through_the_engine(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    final = train(
        config(tmp_path, model="", model_kwargs={}, epochs=4, lr=0.05, schedule="cosine"),
        model=net,
        data=train_fakes.make_loaders,
        log=QUIET,
    )
    assert final["model"] == "TinyNet" and final["test_top1"] > 0.5  # 4 classes: chance is 0.25
    run = tmp_path / "run"
    assert {"config.json", "metrics.jsonl", "final.json", "model.safetensors", "last.safetensors"} <= {
        p.name for p in run.iterdir()
    }
    from cnnzoo.weights import read_state_dict

    selected = read_state_dict(run / "model.safetensors")
    assert all(
        torch.equal(selected[k], v) for k, v in net.state_dict().items()
    )  # net holds the selected weights


def test_a_run_warns_once_when_the_machine_is_busier_than_its_threads(tmp_path, monkeypatch, capsys):
    from cnnzoo.train import progress

    monkeypatch.setattr(progress.os, "getloadavg", lambda: (7.0, 7.0, 7.0))
    monkeypatch.setattr(progress, "_warned", False)
    train(config(tmp_path, "a", epochs=1), data=train_fakes.make_loaders, log=QUIET)
    train(config(tmp_path, "b", epochs=1), data=train_fakes.make_loaders, log=QUIET)
    err = capsys.readouterr().err
    assert err.count("the machine is busy (load 7.0") == 1 and "--threads" in err
