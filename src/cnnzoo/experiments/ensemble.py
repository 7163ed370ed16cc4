"""Ensembles and multi-crop testing: averaging softmax outputs lowers the error.

The lecture's AlexNet slide: "7 CNN ensemble: 18.2% -> 15.4%" (Krizhevsky et al. 2012, sec. 6:
averaging the predictions of several CNNs lowered ILSVRC-2012 top-5 error; ZFNet, Zeiler & Fergus
2013, arXiv:1311.2901, did the same). The same paper tests on ten patches - four corners, the
centre and their mirrors - and averages the softmax over them (sec. 4.1).

Here N copies of one small CNN (LeNet-5 with ReLU and max pooling) train on one Fashion-MNIST
subset with different seeds (initialisation and data order), each with horizontal flips, each
selected on validation images outside the subset. Every member's softmax is computed once on a
fixed validation set and the test set for each test-time protocol (`cnnzoo.train.evaluate`'s
"center", "flip" and "10crop"); ensembles of the first k members average those probabilities.
Which protocol and which single member look best is read on validation; the test numbers are
reported beside them, never chosen by. Saved runs can be ensembled the same way with
`cnnzoo eval --ensemble RUN RUN ...`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment

__all__ = ["EXPERIMENT", "Settings", "protocol_log_probs"]


@dataclass(frozen=True)
class Settings:
    data: str = "fashion-mnist"
    model: str = "lenet5"
    act: str = "relu"
    members: int = 7  # the lecture's "7 CNN ensemble"
    protocols: tuple[str, ...] = ("center", "flip", "10crop")
    train_size: int = 10000
    val_size: int = 2000  # the ensemble's validation set, outside the training subset
    test_size: int = 0  # 0: the whole test set
    epochs: float = 2
    evals_per_epoch: int = 2
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    augment: str | None = "flip"  # the mirror images the "flip" and "10crop" protocols average over


BUDGETS = {
    "tiny": Settings(
        members=3, train_size=128, val_size=64, test_size=64, epochs=1, evals_per_epoch=1, batch_size=32
    ),
    "small": Settings(members=5, train_size=10000, epochs=2),
    "full": Settings(members=7, train_size=30000, epochs=4),
    # Krizhevsky et al. 2012, sec. 5: SGD, batch 128, momentum 0.9, weight decay 5e-4, lr 0.01
    # divided by 10 when the validation error stopped improving, about 90 passes - applied to the
    # zoo's small net on the whole Fashion-MNIST training set (a tenth held out for validation).
    "paper": Settings(
        members=7,
        train_size=0,
        epochs=90,
        evals_per_epoch=1,
        lr=0.01,
        schedule="plateau",
    ),
}


@torch.inference_mode()
def protocol_log_probs(
    model: nn.Module, x: torch.Tensor, protocol: str, batch_size: int = 500
) -> torch.Tensor:
    """A model's log-softmax on normalised inputs `x` under a test-time protocol, in batches."""
    from cnnzoo.train.evaluate import tta_log_probs

    model.eval()
    return torch.cat(
        [
            tta_log_probs(model, x[i : i + batch_size], protocol=protocol)
            for i in range(0, x.shape[0], batch_size)
        ]
    )


def _error(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100 * float((log_probs.argmax(1) != labels).float().mean())


def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.experiments.training import (
        load_dataset,
        normalize,
        stratified_subset,
        train_run,
        validation_subset,
    )
    from cnnzoo.train.evaluate import average_log_probs

    if s.members < 2:
        raise ValueError(f"an ensemble needs members >= 2, got {s.members}")
    data = load_dataset(s.data, ctx.data_root)
    y_all = data.train[1]
    train_idx = stratified_subset(y_all, s.train_size, ctx.seed)
    if train_idx.shape[0] >= y_all.shape[0]:  # the whole set: hold the ensemble's validation out of it
        from cnnzoo.data import split_validation

        keep, held = split_validation(y_all, 0.1)
        train_idx, val_idx = keep, held
    else:
        val_idx = validation_subset(y_all, train_idx, s.val_size, ctx.seed + 2)
    test_idx = stratified_subset(data.test[1], s.test_size, ctx.seed + 1)
    seeds = [ctx.seed + 100 + i for i in range(s.members)]
    ctx.seeds += [
        f"{ctx.seed}: training subset; {ctx.seed + 2}: the ensemble's validation set",
        f"{ctx.seed + 1}: test subset",
        f"{seeds[0]}..{seeds[-1]}: member i's initialisation, data order and flips (and its own "
        "selection set, outside the training subset)",
    ]
    vx, vy = normalize(data.train[0][val_idx], data.info), y_all[val_idx]
    tx, ty = normalize(data.test[0][test_idx], data.info), data.test[1][test_idx]

    # Each member's log-softmax per protocol on validation and test, computed once.
    val_lp: dict[str, list[torch.Tensor]] = {p: [] for p in s.protocols}
    test_lp: dict[str, list[torch.Tensor]] = {p: [] for p in s.protocols}
    rows, seconds = [], 0.0
    for i, seed in enumerate(seeds):
        ctx.log(f"training member {i + 1}/{s.members} ({s.model}, seed {seed}) on {len(train_idx):,} images")
        r = train_run(
            ctx,
            f"member{i + 1}",
            s.model,
            data=data,
            train_idx=train_idx,
            test_idx=test_idx,
            epochs=s.epochs,
            evals_per_epoch=s.evals_per_epoch,
            batch_size=s.batch_size,
            lr=s.lr,
            weight_decay=s.weight_decay,
            schedule=s.schedule,
            augment=s.augment,
            seed=seed,
            model_kwargs={"act": s.act, "pool": "max"},
        )
        seconds += r.seconds
        row = [i + 1, seed]
        for p in s.protocols:
            val_lp[p].append(protocol_log_probs(r.model, vx, p))
            test_lp[p].append(protocol_log_probs(r.model, tx, p))
            row += [round(_error(val_lp[p][-1], vy), 2), round(_error(test_lp[p][-1], ty), 2)]
        rows.append(row)

    result = ExperimentResult(
        name="ensemble", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    cols = [f"{kind} error, {p} (%)" for p in s.protocols for kind in ("val", "test")]
    result.tables.append(
        Table(
            f"The {s.members} members: {s.model} ({s.act}) on {len(train_idx):,} {s.data} images, one seed each",
            ["member", "seed", *cols],
            rows,
            f"Validation: {len(val_idx):,} training images outside the subset (the same for every member); "
            f"test: {len(test_idx):,} images. Each member's weights were selected on its own validation "
            "images during training.",
        )
    )

    # Ensembles of the first k members (k = 1 is member 1 alone).
    curve: dict[str, dict[str, list[float]]] = {p: {"val": [], "test": []} for p in s.protocols}
    ens_rows = []
    for k in range(1, s.members + 1):
        row = [k]
        for p in s.protocols:
            v = _error(average_log_probs(val_lp[p][:k]), vy)
            t = _error(average_log_probs(test_lp[p][:k]), ty)
            curve[p]["val"].append(v)
            curve[p]["test"].append(t)
            row += [round(v, 2), round(t, 2)]
        ens_rows.append(row)
    result.tables.append(
        Table(
            "Ensembles of the first k members: softmax outputs averaged (over members, and over a "
            "protocol's views)",
            ["members k", *cols],
            ens_rows,
        )
    )

    def single(p: str, split: str) -> list[float]:
        lps, labels = (val_lp[p], vy) if split == "val" else (test_lp[p], ty)
        return [_error(lp, labels) for lp in lps]

    c = "center"
    mean_single = sum(single(c, "test")) / s.members
    ens = curve[c]["test"][-1]
    best = min(range(s.members), key=lambda i: single(c, "val")[i])  # chosen on validation
    best_test = single(c, "test")[best]
    lecture = (18.2 - 15.4) / 18.2
    gain = (mean_single - ens) / mean_single if mean_single else 0.0
    result.findings.append(
        Finding(
            f"An ensemble of {s.members} CNNs (softmax averaged) has a lower test error than its members on average",
            ens < mean_single,
            f"{s.members}-net ensemble {ens:.2f}% vs {mean_single:.2f}% for one net (mean of "
            f"{s.members}), {abs(100 * gain):.0f}% {'fewer' if gain >= 0 else 'more'} errors; the lecture's 18.2% -> 15.4% is "
            f"{100 * lecture:.0f}% fewer",
        )
    )
    result.findings.append(
        Finding(
            "... and lower than the single member that looks best on validation",
            ens < best_test,
            f"ensemble {ens:.2f}% vs member {best + 1} (best validation error, "
            f"{single(c, 'val')[best]:.2f}%) {best_test:.2f}% on test",
        )
    )
    for p in (q for q in s.protocols if q != c):
        views = "10 crops" if p == "10crop" else ("the image and its mirror" if p == "flip" else p)
        multi = sum(single(p, "test")) / s.members
        result.findings.append(
            Finding(
                f"Multi-view testing ({p}: softmax averaged over {views}) lowers a single net's test error",
                multi < mean_single,
                f"mean member test error {multi:.2f}% with {p} vs {mean_single:.2f}% with one centre view "
                f"(validation {sum(single(p, 'val')) / s.members:.2f}% vs {sum(single(c, 'val')) / s.members:.2f}%)",
            )
        )
    # Selection on validation: the protocol and ensemble a user would pick, and its test error.
    pick = min(s.protocols, key=lambda p: curve[p]["val"][-1])
    result.notes.append(
        f"Chosen on validation, the {s.members}-net ensemble would test with '{pick}' "
        f"(validation error {curve[pick]['val'][-1]:.2f}%): its test error is {curve[pick]['test'][-1]:.2f}%. "
        "No number in this report was chosen by its test error."
    )
    if "10crop" in s.protocols:
        result.notes.append(
            "The 10 crops follow Krizhevsky et al.'s protocol relative to the input: the image is enlarged "
            "by 256/224 and cut back to its size at the corners and the centre, plus mirrors. The members "
            "trained on flips only, not on crops at that scale, so the crops also show them a slightly "
            "larger object than they learned from; AlexNet trained on random 224-pixel crops of 256-pixel "
            "images and tested on crops of the same scale."
        )
    result.notes.append(
        f"Training all {s.members} members took {seconds:.0f} s: an ensemble costs N times the training and N "
        "times the inference (and 10crop another 10x)."
    )
    result.data = {
        "members": [dict(zip(["member", "seed", *cols], r, strict=True)) for r in rows],
        "ensemble_curve": curve,
        "mean_single_test_error": mean_single,
        "ensemble_test_error": ens,
    }
    result.figures.append(_plot(curve, single, s, ctx))
    return result


def _plot(curve: dict, single, s: Settings, ctx: Context) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ks = list(range(1, s.members + 1))
    for i, p in enumerate(s.protocols):
        ax.plot(ks, curve[p]["test"], "o-", color=f"C{i}", label=f"{p}: ensemble of first k, test")
        ax.plot(ks, curve[p]["val"], ":", color=f"C{i}", label=f"{p}: ensemble of first k, validation")
        # Every member alone, beside k = 1 (one column per protocol so that they do not overlap).
        x = 0.8 - 0.12 * (len(s.protocols) - 1 - i)
        ax.scatter([x] * s.members, single(p, "test"), marker="_", s=150, color=f"C{i}", alpha=0.8)
        mean = sum(single(p, "test")) / s.members
        ax.axhline(
            mean, color=f"C{i}", ls="--", lw=0.8, alpha=0.7, label=f"{p}: mean of single members, test"
        )
    ax.set_xlabel("members in the ensemble (k)")
    ax.set_ylabel("error (%)")
    ax.set_xticks(ks)
    ax.set_title(f"{s.members} x {s.model} on {s.data}: softmax averaging over members and views")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, ctx.out / "ensemble.png")
    return Figure(
        "ensemble.png",
        "Test (solid) and validation (dotted) error of the ensemble of the first k members, per test-time "
        "protocol; the ticks left of k = 1 are every member's own test error, the dashed lines their mean.",
    )


EXPERIMENT = Experiment(
    name="ensemble",
    title="Ensembles and multi-crop testing lower the error",
    claim="7 CNN ensemble: 18.2% -> 15.4% (and, at test time, the softmax averaged over ten patches: four "
    "corners, the centre and their mirrors).",
    source="Krizhevsky et al. 2012, ImageNet Classification with Deep CNNs, sec. 4.1 and 6 (the course's "
    "lecture on CNN architectures, AlexNet slide)",
    budgets=BUDGETS,
    run=run,
    summary="7 LeNet-5s from 7 seeds: single vs softmax-averaged ensemble, centre vs flip vs 10-crop testing",
)
