"""Experiments that reproduce the lectures' claims on real data, one command each.

    cnnzoo experiment degradation --budget small     # or transfer, activations, equivariance,
    cnnzoo experiment --list                          #    efficiency, nas, finetune
    cnnzoo experiment finetune --set epochs=10        # any setting; --budget tiny/small/full/paper
    cnnzoo report                                     # reports/*/ -> reports/index.html

>>> from cnnzoo.experiments import run_experiment
>>> result = run_experiment("equivariance", "small", "reports/equivariance")  # doctest: +SKIP
>>> result.verdict  # doctest: +SKIP
'held'

Each writes `OUT/report.md` (the claim, a plain verdict per finding, the exact command, seeds,
machine and wall time, tables and plots) and `OUT/result.json`, which `cnnzoo report` renders.
At the tiny and small budgets the verdict reads "indicative only: budget too small".
"""

from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table, read_result
from cnnzoo.experiments.runner import (
    BUDGETS,
    EXPERIMENTS,
    Experiment,
    get_experiment,
    list_experiments,
    run_experiment,
)

__all__ = [
    "BUDGETS",
    "EXPERIMENTS",
    "Experiment",
    "ExperimentResult",
    "Figure",
    "Finding",
    "Table",
    "get_experiment",
    "list_experiments",
    "read_result",
    "run_experiment",
]
