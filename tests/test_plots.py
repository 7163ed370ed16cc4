"""Every figure cnnzoo draws: a title, labelled axes, and no text on top of other text.

The layout oracle is matplotlib's own renderer: `figure_checks` collects the drawn box of every
tick label, axis label, title, legend entry and annotation and asserts that no two overlap (the
boxes `savefig(bbox_inches="tight")` uses). The fixed cases of the issue each have a test: a
one-epoch run, log axes over less than a decade, models without a published top-1, a search
whose two best-so-far curves coincide, many point labels close together.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("matplotlib")  # the `plot` extra; the Makefile's dev install has it

from cnnzoo.analysis.compare import compare, plot_accuracy_vs_macs
from cnnzoo.counting.plots import plot_count_curves, plot_density_overlay, plot_scatter
from cnnzoo.train.plots import plot_confusion, plot_curves
from figure_checks import figure_texts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(epochs: int, lr_end: float = 5e-4) -> list[dict]:
    lr0 = 0.05
    return [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_top1": 0.5 + e / 40,
            "val_top1": 0.5 + e / 45,
            "test_top1": 0.5 + e / 46,
            "lr": lr_end + (lr0 - lr_end) * 0.5 * (1 + math.cos(math.pi * (e - 1) / max(epochs - 1, 1))),
        }
        for e in range(1, epochs + 1)
    ]


def _xticks(fig, panel: int) -> list[float]:
    ax = fig.axes[panel]
    low, high = ax.get_xlim()
    return [t for t in ax.get_xticks() if low <= t <= high]


def test_curves_many_epochs(tmp_path, checked_figures):
    path = plot_curves(_rows(15), tmp_path / "c.png", title="lenet5", selected_epoch=14)
    assert path.read_bytes()[:8] == PNG_MAGIC
    (fig,) = checked_figures
    assert fig._suptitle.get_text() == "lenet5"
    assert fig.axes[-1].get_yscale() == "log"  # the lr decays 100-fold
    assert all(t == int(t) for t in _xticks(fig, 0))


def test_curves_one_epoch_has_one_whole_epoch_tick(tmp_path, checked_figures):
    plot_curves(_rows(1), tmp_path / "c.png", selected_epoch=1)
    (fig,) = checked_figures
    # matplotlib's default for one point is 0.96 .. 1.04 in steps of 0.02.
    assert _xticks(fig, 0) == [1.0]
    assert fig.axes[0].get_xlim() == (0.5, 1.5)
    assert fig._suptitle.get_text() == "training curves"


def test_curves_lr_within_a_decade(tmp_path, checked_figures):
    # A gentle decay (0.05 -> 0.03): a linear axis, labels that do not run together.
    plot_curves(_rows(6, lr_end=0.03), tmp_path / "c.png")
    (fig,) = checked_figures
    assert fig.axes[-1].get_yscale() == "linear"


def test_confusion_has_a_title(tmp_path, checked_figures):
    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Boot",
    ]
    matrix = [[1000 if i == j else 3 * ((i + j) % 4) for j in range(10)] for i in range(10)]
    plot_confusion(matrix, classes, tmp_path / "m.png")
    (fig,) = checked_figures
    assert "confusion matrix" in fig.axes[0].get_title()


def test_counting_figures(tmp_path, checked_figures):
    import numpy as np

    rows = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_mae": 10 / e,
            "val_rmse": 12 / e,
            "train_crop_mae": 9 / e,
            "lr": 1e-4 * (1 + math.cos(math.pi * e / 20)) / 2,
        }
        for e in range(1, 11)
    ]
    plot_count_curves(rows, tmp_path / "curves.png")
    plot_count_curves(rows[:1], tmp_path / "one.png")
    plot_scatter([{"true": t, "estimate": 0.9 * t + 3} for t in range(0, 300, 7)], tmp_path / "s.png")
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    plot_density_overlay(image, np.ones((8, 10)) / 80, tmp_path / "d.png", count=1.0, true_count=1)
    assert len(checked_figures) == 4
    # The counting lr (1e-4 .. 5e-5) is linear with its power of ten written once.
    assert checked_figures[0].axes[2].get_yscale() == "linear"


def test_compare_plot_names_the_models_without_a_top1(tmp_path, checked_figures):
    rows = compare(["alexnet", "alexnet_paper", "resnet18", "vgg16", "mobilenet_v2", "googlenet"])
    plot_accuracy_vs_macs(rows, tmp_path / "p.png")
    (fig,) = checked_figures
    notes = [t.get_text() for t in fig.texts]
    assert any("alexnet_paper" in t for t in notes)
    labels = {t.get_text() for what, t in figure_texts(fig) if what == "axes 0 text"}
    assert labels == {"alexnet", "resnet18", "vgg16", "mobilenet_v2", "googlenet"}


def test_compare_plot_log_axis_within_a_decade(tmp_path, checked_figures):
    # 0.30 .. 0.45 GMACs: matplotlib's default labels the minor ticks "3x10^-1 4x10^-1" and they collide.
    rows = compare(["shufflenet_v2_x1_0", "mobilenet_v2", "shufflenet_v2_x1_5"])
    plot_accuracy_vs_macs(rows, tmp_path / "p.png")
    (fig,) = checked_figures
    assert len(_xticks(fig, 0)) >= 2
    assert all(
        "10^" not in t.get_text() and "times" not in t.get_text() for t in fig.axes[0].get_xticklabels()
    )


def test_compare_plot_of_cifar_nets_plots_what_is_known(tmp_path, checked_figures):
    rows = compare(["resnet20", "resnet56", "wrn16_8", "densenet_bc_100_12"])
    plot_accuracy_vs_macs(rows, tmp_path / "p.png")
    (fig,) = checked_figures
    assert "no published ImageNet top-1" in fig.axes[0].get_title()
    assert "parameters" in fig.axes[0].get_ylabel()
    assert len(fig.axes[0].texts) == 4


def test_frontier_labels_do_not_overlap(tmp_path, checked_figures):
    from cnnzoo.experiments.efficiency import plot_frontiers
    from cnnzoo.experiments.runner import Context

    # Close points (the committed efficiency report's numbers): names must move apart.
    entries = {
        "lenet5": (431_080, 0.3, 0.80, "lenet"),
        "resnet20": (30_800_000, 5.1, 0.858, "cifar_resnet"),
        "shufflenet_v2_x0_5": (690_000, 7.5, 0.791, "shufflenet"),
        "mobilenet_v1_050": (2_800_000, 4.8, 0.782, "mobilenet"),
        "mobilenet_v2": (5_600_000, 8.5, 0.81, "mobilenet"),
        "efficientnet_b0": (8_000_000, 15.0, 0.706, "efficientnet"),
        "found by search": (7_100_000, 3.3, 0.8585, "nas"),
        "twin": (7_000_000, 3.2, 0.857, "nas"),
    }
    entries = {
        n: {"macs": m, "latency_ms": t, "test_top1": a, "family": f} for n, (m, t, a, f) in entries.items()
    }
    plot_frontiers(entries, {"lenet5", "resnet20"}, Context(out=tmp_path), "fashion-mnist")
    assert len(checked_figures) == 1
    assert (tmp_path / "frontier.png").read_bytes()[:8] == PNG_MAGIC


def test_nas_search_shows_both_strategies_when_their_curves_coincide(tmp_path, checked_figures):
    from cnnzoo.experiments.nas import Candidate, Settings, _plot_search, shared_start_note
    from cnnzoo.experiments.runner import Context

    # The committed full run's scores: random search's first candidate is the best of both searches,
    # and evolution starts from it, so the two best-so-far curves are one flat line.
    rand_scores = [0.695, 0.66, 0.557, 0.486, 0.627, 0.626, 0.694, 0.607, 0.669, 0.501, 0.548, 0.579]
    evo_scores = [0.682, 0.6, 0.611, 0.599, 0.616, 0.592, 0.619]
    rand = [Candidate(None, 3_000_000 + 300_000 * i, v, "random") for i, v in enumerate(rand_scores)]
    evo = rand[:5] + [
        Candidate(None, 6_000_000 + 100_000 * i, v, "evolution") for i, v in enumerate(evo_scores)
    ]
    _plot_search(
        rand,
        evo,
        list({id(c): c for c in rand + evo}.values()),
        Settings(population=5),
        Context(out=tmp_path),
    )
    (fig,) = checked_figures
    left = fig.axes[0]
    assert "coincide" in left.get_title()
    # Each strategy's own candidates are drawn (12 points each), not only the shared best-so-far line.
    counts = sorted(len(line.get_xdata()) for line in left.get_lines() if line.get_marker() in ("o", "x"))
    assert counts == [12, 12]
    # ...and the report says why, in words; a later, better evolved child ends the coincidence.
    assert "random search's #1" in shared_start_note(rand, evo, 5)
    better = [*evo, Candidate(None, 7_000_000, 0.71, "evolution")]
    assert shared_start_note(rand, better, 5) is None
