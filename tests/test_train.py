"""The trainer on tiny synthetic data: files, learning, resume, atomic checkpoints, fine-tuning, CLI, DDP."""

from __future__ import annotations

import argparse
import functools
import json
import math
import socket
import sys
import time
import types
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.cli.train_cmd import _config_from_args, add_parsers
from cnnzoo.train import (
    RECIPES,
    NonFiniteLossError,
    PretrainedUnavailable,
    TrainConfig,
    Trainer,
    UnknownRecipeError,
    imagenet_weights,
    latest_checkpoint,
    load_checkpoint,
    resolve_config,
    train,
)
from cnnzoo.weights import CheckpointError, read_state_dict

sys.path.insert(0, str(Path(__file__).parent))
import train_fakes

QUIET = lambda *_: None  # noqa: E731


config = train_fakes.config


def run(cfg: TrainConfig, data=train_fakes.make_loaders) -> dict:
    return train(cfg, data=data, log=QUIET)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def without_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One 3-epoch run shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("trained")
    run(config(tmp, epochs=3))
    return tmp / "run"


# -- recipes and configuration --------------------------------------------------------------------
def test_recipes_resolve_and_cite():
    for name, recipe in RECIPES.items():
        cfg = resolve_config(name, model="resnet20", data="cifar10")
        cfg.validate()
        assert cfg.recipe == name and recipe.source
    r = resolve_config("resnet-paper", model="resnet20", data="cifar10")
    # He et al. 2015, sec. 4.2: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, /10 at 32k and 48k of 64k.
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.batch_size) == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert (r.schedule, r.milestones, r.gamma) == ("step", (0.5, 0.75), 0.1)
    v = resolve_config("vgg-paper", model="vgg11", data="cifar10")
    assert (v.lr, v.weight_decay, v.batch_size, v.schedule) == (0.01, 5e-4, 256, "plateau")
    a = resolve_config("alexnet-paper", model="alexnet", data="cifar10")
    assert (a.lr, a.weight_decay, a.batch_size, a.schedule) == (0.01, 5e-4, 128, "plateau")
    with pytest.raises(UnknownRecipeError, match="resnet-paper"):
        resolve_config("resnet-papr", model="resnet20", data="cifar10")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cnnzoo")
    add_parsers(parser.add_subparsers(dest="verb"))
    return parser.parse_args(list(argv))


def test_cli_flags_override_recipe():
    args = parse(
        "train",
        "resnet20",
        "--data",
        "cifar10",
        "--recipe",
        "resnet-paper",
        "--lr",
        "0.05",
        "--batch-size",
        "64",
        "--augment",
        "none",
        "--no-nesterov",
        "--model-arg",
        "drop_path_rate=0.1",
    )
    cfg = _config_from_args(args)
    assert (cfg.lr, cfg.batch_size, cfg.augment, cfg.nesterov) == (0.05, 64, None, False)
    assert (cfg.momentum, cfg.weight_decay, cfg.schedule) == (0.9, 1e-4, "step")  # from the recipe
    assert cfg.model_kwargs == {"drop_path_rate": 0.1}
    # Without --recipe the family's default recipe fills in what the flags leave.
    plain = _config_from_args(parse("train", "resnet20", "--data", "cifar10", "--lr", "0.02"))
    assert plain.recipe == "cifar-sgd" and plain.lr == 0.02
    assert plain.nesterov == RECIPES["cifar-sgd"].values["nesterov"]
    lenet = _config_from_args(parse("train", "lenet5", "--data", "fashion-mnist", "--epochs", "5"))
    assert lenet.recipe == "lenet-fast" and lenet.optimizer == "adamw" and lenet.epochs == 5


def test_lr_schedules():
    from cnnzoo.train.optim import LRSchedule

    def lrs(**kw):
        cfg = TrainConfig(model="m", data="d", epochs=4, lr=1.0, **kw)
        opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0, "base_lr": 1.0}])
        sched = LRSchedule(opt, cfg, steps_per_epoch=10)
        out = [sched.lr]
        for _ in range(39):
            sched.step()
            out.append(sched.lr)
        return out

    step = lrs(schedule="step")
    assert step[19] == 1.0 and step[20] == pytest.approx(0.1) and step[30] == pytest.approx(0.01)
    cos = lrs(schedule="cosine", warmup=1)
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0) and cos[-1] < 0.01
    one = lrs(schedule="onecycle", pct_start=0.25)
    assert one[0] == pytest.approx(0.04) and max(one) == pytest.approx(1.0) and one.index(1.0) == 10
    assert one[-1] < 1e-2


# -- a run's files and learning -----------------------------------------------------------------
def test_run_writes_metrics_final_weights_and_curves(trained):
    rows = read_metrics(trained)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    fields = {
        "train_loss",
        "train_top1",
        "train_top5",
        "val_loss",
        "val_top1",
        "val_top5",
        "lr",
        "seconds",
    }
    assert all(fields <= set(r) for r in rows)
    assert not any(k.startswith("test_") for r in rows for k in r)  # no test curve unless asked
    for r in rows:
        assert all(0 <= r[k] <= 1 for k in ("train_top1", "train_top5", "val_top1", "val_top5"))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    final = json.loads((trained / "final.json").read_text())
    best = max(rows, key=lambda r: r["val_top1"])  # the first of the best, as the engine picks
    assert final["best_epoch"] == best["epoch"] and final["val_top1"] == best["val_top1"]
    assert final["selected_on"] == "val_top1"
    assert final["test_top1"] > 0.5  # 4 classes: chance is 0.25
    assert {"test_top1_last", "test_loss", "test_top5"} <= set(final)
    assert final["epochs"] == 3 and final["model"] == "lenet5"
    saved = json.loads((trained / "config.json").read_text())
    assert (
        saved["val_split"]["val_size"] == 24 and saved["val_split"]["train_size"] == 232
    )  # 6 of 64 per class
    assert (trained / "curves.png").stat().st_size > 1000
    assert latest_checkpoint(trained).name == "epoch-0003"
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == [
        "epoch-0002",
        "epoch-0003",
        "latest",
    ]
    weights = read_state_dict(trained / "model.safetensors")
    assert weights["fc3.weight"].shape == (4, 84)
    saved = json.loads((trained / "config.json").read_text())
    assert saved["cnnzoo_run"]["classes"] == train_fakes.Info().classes
    assert saved["cnnzoo_run"]["model_kwargs"]["img_size"] == 12  # LeNet-5 built for the data's size


def test_resume_after_crash_equals_uninterrupted(tmp_path):
    straight = config(tmp_path, "straight", optimizer="sgd", lr=0.05, schedule="onecycle")
    run(straight)

    def crashing(*args, **kwargs):
        loaders = train_fakes.make_loaders(*args, **kwargs)
        loaders[0].crash_at_epoch = 1
        return loaders

    crashed = config(tmp_path, "crashed", optimizer="sgd", lr=0.05, schedule="onecycle")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed, data=crashing)
    assert latest_checkpoint(tmp_path / "crashed").name == "epoch-0001"
    resumed = config(tmp_path, "crashed", optimizer="sgd", lr=0.05, schedule="onecycle", resume=True)
    run(resumed)

    a = read_state_dict(tmp_path / "straight" / "model.safetensors")
    b = read_state_dict(tmp_path / "crashed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_times(read_metrics(tmp_path / "straight")) == without_times(
        read_metrics(tmp_path / "crashed")
    )
    _, optim_a, state_a = load_checkpoint(latest_checkpoint(tmp_path / "straight"))
    _, optim_b, state_b = load_checkpoint(latest_checkpoint(tmp_path / "crashed"))
    assert state_a["step"] == state_b["step"] == 16
    assert all(
        torch.equal(optim_a["state"][i]["momentum_buffer"], optim_b["state"][i]["momentum_buffer"])
        for i in optim_a["state"]
    )


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from cnnzoo.train.rundir import RunDirError

    with pytest.raises(RunDirError, match="holds no run to continue"):
        run(config(tmp_path, resume=True))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")  # a run that died before its first checkpoint
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        run(config(tmp_path, resume=True))


def test_crash_during_checkpoint_leaves_previous_intact(tmp_path, monkeypatch):
    import safetensors.torch

    trainer = Trainer(config(tmp_path, epochs=2), data=train_fakes.make_loaders, log=QUIET)
    trainer.train_epoch(0)
    trainer.history.append({"epoch": 1})
    first = trainer.save_checkpoint(1)
    before = read_state_dict(first / "model.safetensors")
    trainer.train_epoch(1)

    real = safetensors.torch.save_file

    def dies_on_optimizer(tensors, filename, metadata=None):
        if str(filename).endswith("optimizer.safetensors"):
            Path(filename).write_bytes(b"half")  # a partial file, then the process dies
            raise KeyboardInterrupt("simulated kill")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", dies_on_optimizer)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(2)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch-0001", "latest"]  # no temp dir left
    assert latest_checkpoint(tmp_path / "run") == first
    weights, _, state = load_checkpoint(first)
    assert state["epoch"] == 1
    assert all(torch.equal(weights[k], before[k]) for k in before)


def test_non_finite_loss_names_epoch_and_step_and_suggests_lower_lr(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step \d+ of 8.*lower the learning rate"):
        run(config(tmp_path, optimizer="sgd", lr=1e4, schedule="constant"))
    assert latest_checkpoint(tmp_path / "run") is None


# -- fine-tuning --------------------------------------------------------------------------------
def test_finetune_with_frozen_backbone_changes_only_the_head(trained, tmp_path):
    source = read_state_dict(trained / "model.safetensors")
    cfg = config(
        tmp_path,
        "ft",
        pretrained=str(trained / "model.safetensors"),
        freeze_backbone=True,
        optimizer="sgd",
        lr=0.1,
        epochs=1,
    )
    notes: list[str] = []
    trainer = Trainer(cfg, data=functools.partial(train_fakes.make_loaders, num_classes=3), log=notes.append)
    trainer.fit()
    assert any("4-way classifier 'fc3' was replaced" in n for n in notes)
    tuned = read_state_dict(tmp_path / "ft" / "model.safetensors")
    assert tuned["fc3.weight"].shape == (3, 84)
    backbone = [k for k in source if not k.startswith("fc3.")]
    assert backbone and all(torch.equal(source[k], tuned[k]) for k in backbone)
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["head"]


def test_frozen_backbone_keeps_batchnorm_statistics(tmp_path):
    cfg = config(tmp_path, model="resnet20", freeze_backbone=True, epochs=1, model_kwargs={})
    trainer = Trainer(cfg, data=functools.partial(train_fakes.make_loaders, n_train=64, n_test=32), log=QUIET)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    trainer.fit()
    after = trainer.raw_model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}


def test_discriminative_learning_rates(tmp_path):
    cfg = config(tmp_path, backbone_lr_mult=0.1, lr=0.02, schedule="constant", epochs=1)
    trainer = Trainer(cfg, data=train_fakes.make_loaders, log=QUIET)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(0.002) and groups["head"]["lr"] == pytest.approx(0.02)
    assert len(groups["head"]["params"]) == 2


def test_pretrained_of_another_architecture_fails_with_checkpoint_error(trained, tmp_path):
    cfg = config(tmp_path, model="resnet20", pretrained=str(trained / "model.safetensors"), model_kwargs={})
    with pytest.raises(CheckpointError, match="different architecture"):
        run(cfg)


def test_imagenet_weights_come_from_the_hub_cache_or_a_clear_message(tmp_path, monkeypatch):
    import urllib.error

    from cnnzoo import pretrained

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dest, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(pretrained, "_download", offline)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(PretrainedUnavailable) as e:
        imagenet_weights("resnet18")
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in str(e.value)
    assert str(expected) in str(e.value) and "no network" in str(e.value)
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"cached")
    assert imagenet_weights("resnet18") == expected
    with pytest.raises(PretrainedUnavailable, match="no torchvision twin"):
        imagenet_weights("resnet20")


# -- eval and predict CLI -----------------------------------------------------------------------
@pytest.fixture
def fake_data(monkeypatch):
    """`cnnzoo.data` replaced by the synthetic loaders, for the verbs that load data by name."""
    mod = types.ModuleType("cnnzoo.data")
    mod.make_loaders = train_fakes.make_loaders
    mod.dataset_info = lambda name, root=None: train_fakes.Info()
    monkeypatch.setitem(sys.modules, "cnnzoo.data", mod)
    return mod


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    args = parse(*argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_cli_reports_accuracy_per_class_and_confusion(trained, fake_data, capsys, tmp_path):
    png = tmp_path / "cm.png"
    code, out, _ = cli(capsys, "eval", str(trained), "--format", "json", "--confusion", str(png))
    result = json.loads(out)
    final = json.loads((trained / "final.json").read_text())
    assert code == 0 and result["test_top1"] == pytest.approx(final["test_top1"])
    assert set(result["per_class"]) == set(train_fakes.Info().classes)
    assert sum(map(sum, result["confusion"])) == result["samples"] == 128
    assert png.stat().st_size > 1000
    code, out, _ = cli(capsys, "eval", str(trained / "model.safetensors"), "--confusion", "")
    assert code == 0 and "top-1" in out and "bottom-right" in out


def test_eval_of_another_architecture_is_a_checkpoint_error(trained, fake_data, capsys):
    with pytest.raises(CheckpointError, match="does not fit resnet20"):
        cli(capsys, "eval", str(trained), "--model", "resnet20")


def test_predict_cli_gives_top_k_class_names(trained, capsys, tmp_path):
    from PIL import Image

    images, _ = train_fakes.make_images(4, seed=5)
    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img[0].numpy()).resize((48, 48)).save(p)  # other sizes are resized back
        paths.append(str(p))
    code, out, _ = cli(capsys, "predict", str(trained), *paths, "--top-k", "2", "--format", "json")
    result = [json.loads(line) for line in out.splitlines()]  # JSON lines, one object per image
    assert code == 0 and [r["image"] for r in result] == paths
    for r in result:
        assert len(r["top"]) == 2 and r["top"][0]["prob"] >= r["top"][1]["prob"]
        assert {t["class"] for t in r["top"]} <= set(train_fakes.Info().classes)
    code, out, _ = cli(capsys, "predict", str(trained), paths[0])
    assert code == 0 and out.splitlines()[0].split() == ["image", "rank", "class", "prob"]


def test_train_cli_and_resume_from_the_command_line(fake_data, capsys, tmp_path):
    out_dir = tmp_path / "cli-run"
    code, out, _ = cli(
        capsys,
        "train",
        "lenet5",
        "--data",
        "fake",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--optimizer",
        "adamw",
        "--lr",
        "0.01",
        "--out",
        str(out_dir),
        "--format",
        "json",
        "--model-arg",
        "act=relu",
        "--threads",
        "1",
    )
    assert code == 0
    assert "lenet5 at 1x12x12" in out  # the model's summary comes first
    assert json.loads(out[out.index("{\n") :])["epochs"] == 1
    code, out, _ = cli(capsys, "train", "--resume", str(out_dir), "--epochs", "2", "--no-summary")
    assert code == 0 and "resumed from" in out and "of 2 on validation" in out
    assert [r["epoch"] for r in read_metrics(out_dir)] == [1, 2]


def test_train_cli_errors_are_usage_errors(fake_data, capsys, tmp_path):
    from cnnzoo.cli.main import UsageError

    with pytest.raises(UsageError, match="which dataset"):
        cli(capsys, "train", "lenet5")
    with pytest.raises(UsageError, match="no run"):
        cli(capsys, "train", "--resume", str(tmp_path / "nothing"))
    with pytest.raises(UsageError, match="lower the learning rate"):
        cli(
            capsys,
            "train",
            "lenet5",
            "--data",
            "fake",
            "--optimizer",
            "sgd",
            "--lr",
            "1e4",
            "--schedule",
            "constant",
            "--model-arg",
            "act=relu",
            "--out",
            str(tmp_path / "nan"),
            "--no-summary",
        )


# -- DDP ----------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    sys.path.insert(0, str(Path(__file__).parent))
    import train_fakes as fakes

    train(TrainConfig.from_dict(cfg_dict), data=fakes.make_loaders, log=QUIET)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    import torch.multiprocessing as mp

    kw = dict(epochs=1, optimizer="sgd", lr=0.05, schedule="cosine", batch_size=32)
    single = config(tmp_path, "single", **kw)
    run(single)
    ddp = config(tmp_path, "ddp", **kw)
    ctx = mp.start_processes(
        _ddp_worker, args=(2, _free_port(), ddp.to_dict()), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP processes did not finish in 60 s")
    a = read_state_dict(tmp_path / "single" / "model.safetensors")
    b = read_state_dict(tmp_path / "ddp" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    ra, rb = read_metrics(tmp_path / "single")[0], read_metrics(tmp_path / "ddp")[0]
    assert rb["val_top1"] == ra["val_top1"]
    assert math.isclose(rb["train_loss"], ra["train_loss"], rel_tol=1e-5)
    assert cnnzoo.create_model("lenet5", num_classes=4, img_size=12, act="relu").load_state_dict(b)


def test_amp_and_channels_last_train_and_learn(tmp_path: Path) -> None:
    # bf16 autocast on the CPU and channels_last batches: the run completes, the loss is finite
    # and falls, and the weights stay fp32 (autocast changes compute, not storage).
    final = run(config(tmp_path, epochs=2, amp=True, channels_last=True))
    rows = read_metrics(tmp_path / "run")
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert final["test_top1"] > 0.3  # 4 classes in train_fakes: chance is 0.25
    weights = read_state_dict(tmp_path / "run" / "model.safetensors")
    assert all(v.dtype == torch.float32 for k, v in weights.items() if v.is_floating_point())


def test_auxiliary_heads_are_trained_with_their_loss(tmp_path: Path) -> None:
    # GoogLeNet returns (logits, aux2, aux1) in training mode; without the auxiliary losses
    # (weight 0.3, Szegedy et al. 2014) its aux classifiers would never change.
    trainer = Trainer(
        config(
            tmp_path,
            model="googlenet",
            epochs=1,
            optimizer="sgd",
            weight_decay=0.0,
            resize_to=32,
            model_kwargs={},
        ),
        data=train_fakes.make_loaders,
        log=QUIET,
    )
    aux = trainer.raw_model.aux1.fc2.weight
    before = aux.detach().clone()
    trainer.fit()
    assert not torch.equal(aux.detach(), before)


def test_fast_recipe_from_the_cli_trains_and_says_its_settings(tmp_path, capsys):
    """`cnnzoo train lenet5 --recipe fast`: the family's fast recipe, its architecture options
    printed at the start and applied to the model that trains (tiny fake data, one epoch)."""
    args = parse(
        "train", "lenet5", "--data", "fake", "--recipe", "fast", "--epochs", "1", "--batch-size", "32",
        "--out", str(tmp_path / "fast"), "--no-summary", "--no-progress", "--threads", "1",
    )  # fmt: skip
    cfg = _config_from_args(args)
    assert cfg.recipe == "lenet-relu-fast" and cfg.model_kwargs == {"act": "relu"}
    trainer = Trainer(cfg, data=train_fakes.make_loaders)
    final = trainer.fit()
    start = capsys.readouterr().out.splitlines()[0]
    assert "recipe lenet-relu-fast" in start and "model act=relu" in start
    assert "schedule onecycle" in start and "channels_last" in start
    assert trainer.raw_model.act_name == "relu" and trainer.raw_model.pool_type == "max"
    assert final["epochs"] == 1 and math.isfinite(final["train_loss"])
    saved = json.loads((tmp_path / "fast" / "config.json").read_text())
    assert saved["recipe"] == "lenet-relu-fast" and saved["model_kwargs"] == {"act": "relu"}


def test_busy_warning_needs_a_core_taken(monkeypatch) -> None:
    """The residue of a finished job (or this process's own start) does not warn; a second job
    keeping a core busy does."""
    import os

    from cnnzoo.train.progress import busy_load

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for load, busy in ((0.54, False), (1.0, False), (1.3, True), (2.0, True)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert (busy_load(2) is not None) is busy, load
    monkeypatch.setattr(os, "getloadavg", lambda: (1.3, 1.3, 1.3))
    assert busy_load(1) is None  # one thread still has a free core
