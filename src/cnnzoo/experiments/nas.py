"""Neural architecture search: random search and regularized evolution under a MACs budget.

The lecture ("Can we learn good architectures automatically?"): sample an
architecture from a search space, train it to get a reward, use the reward to propose better
ones (Zoph & Le 2016); EfficientNet's baseline came out of such a search. Here the space is
`cnnzoo.models.nas.NAS_SPACE` (per stage: depth, width, kernel, expansion, SE; MnasNet-style),
candidates over the multiply-add budget are rejected before training (`spec_macs`), and every
candidate is trained briefly on a proxy task - a few thousand Fashion-MNIST training images,
one epoch - and scored on a validation split carved from the *training* set, so the test set
never steers the search.

- Random search (Li & Talwalkar 2019, arXiv:1902.07638, a strong NAS baseline): N candidates.
- Regularized ("aging") evolution (Real et al. 2019, arXiv:1802.01548): a population whose
  first P members are random search's first P candidates; each cycle samples S members, mutates
  the best (one choice of one stage), trains the child and retires the oldest member, until it
  too has N candidates.

The best candidate of both searches is then trained with the efficiency experiment's recipe
and compared, on the accuracy-vs-MACs-vs-latency plot, with hand-designed nets trained with the
same recipe on the same images.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnnzoo.experiments.efficiency import MODEL_KWARGS
from cnnzoo.experiments.report import ExperimentResult, Figure, Finding, Table
from cnnzoo.experiments.runner import Context, Experiment
from cnnzoo.models.nas import NAS_SPACE, DesignSpace, NasSpec, spec_macs
from cnnzoo.words import plural

__all__ = ["EXPERIMENT", "Candidate", "Settings", "random_search", "regularized_evolution", "sample_within"]


@dataclass(frozen=True)
class Settings:
    data: str = "fashion-mnist"
    macs_budget: int = 8_000_000  # a quarter of ResNet-20's 30.8M on 28 x 28
    candidates: int = 6  # proxy evaluations of each strategy
    population: int = 3  # evolution's population (its first members are random search's first)
    tournament: int = 2  # members sampled per evolution cycle
    proxy_train_size: int = 1000
    proxy_val_size: int = 500
    proxy_epochs: int = 1
    # The final comparison: the efficiency experiment's recipe (AdamW, cosine, batch 128).
    train_size: int = 4000
    test_size: int = 1000
    epochs: int = 2
    lr: float = 2e-3
    weight_decay: float = 0.05
    baselines: tuple[str, ...] = ("lenet5", "resnet20", "mobilenet_v2")
    latency_rounds: int = 15
    model_kwargs: dict[str, dict[str, Any]] = field(
        default_factory=lambda: dict(MODEL_KWARGS)
    )  # as efficiency


BUDGETS = {
    "tiny": Settings(
        candidates=3,
        population=2,
        tournament=2,
        proxy_train_size=64,
        proxy_val_size=32,
        train_size=128,
        test_size=64,
        epochs=1,
        baselines=("lenet5",),
        latency_rounds=3,
    ),
    "small": Settings(),
    "full": Settings(
        candidates=14,
        population=5,
        tournament=3,
        proxy_train_size=2500,
        proxy_val_size=1000,
        train_size=10000,
        test_size=2000,
        epochs=3,
        latency_rounds=25,
    ),
    # Real et al. 2019 (arXiv:1802.01548), sec. 3 and appendix: population 100, sample 25, 20,000
    # models, each child trained 25 epochs on a 45k/5k split of CIFAR-10's training set (here the
    # same share of Fashion-MNIST's 60,000: 54k/6k); random search gets as many models (Li &
    # Talwalkar 2019). The winner and the baselines then train on all the data for He et al.'s
    # 137-epoch schedule length, as in the efficiency experiment's paper budget.
    "paper": Settings(
        candidates=20000,
        population=100,
        tournament=25,
        proxy_train_size=54000,
        proxy_val_size=6000,
        proxy_epochs=25,
        train_size=0,
        test_size=0,
        epochs=137,
        latency_rounds=50,
    ),
}


@dataclass
class Candidate:
    spec: NasSpec
    macs: int
    score: float  # proxy validation accuracy
    strategy: str  # "random" or "evolution"
    seconds: float = 0.0


# -- the searches (plain functions of an `evaluate` callable, so they can be tested cheaply) ------
def sample_within(
    space: DesignSpace,
    rng: random.Random,
    macs_budget: int,
    seen: set[str] = frozenset(),
    tries: int = 10_000,
) -> NasSpec:
    """A uniformly random point of `space` within the MACs budget that is not in `seen`."""
    for _ in range(tries):
        spec = space.sample(rng)
        if spec.arch not in seen and spec_macs(spec) <= macs_budget:
            return spec
    raise ValueError(
        f"no new network of the design space fits {macs_budget:,} MACs after {tries:,} samples; "
        "raise macs_budget"
    )


def random_search(
    evaluate: Callable[[NasSpec], float],
    space: DesignSpace,
    rng: random.Random,
    *,
    n: int,
    macs_budget: int,
) -> list[Candidate]:
    """`n` distinct random candidates within budget, scored by `evaluate`, in sampling order."""
    out: list[Candidate] = []
    seen: set[str] = set()
    for _ in range(n):
        spec = sample_within(space, rng, macs_budget, seen)
        seen.add(spec.arch)
        t0 = time.perf_counter()
        score = evaluate(spec)
        out.append(Candidate(spec, spec_macs(spec), score, "random", time.perf_counter() - t0))
    return out


def regularized_evolution(
    evaluate: Callable[[NasSpec], float],
    space: DesignSpace,
    rng: random.Random,
    *,
    n: int,
    population: int,
    tournament: int,
    macs_budget: int,
    initial: list[Candidate],
) -> list[Candidate]:
    """Real et al. 2019's aging evolution, started from `initial` (already scored); returns all
    `n` candidates it holds the credit for, the initial ones first."""
    if not 1 <= tournament <= population <= len(initial) or population > n:
        raise ValueError(
            f"need 1 <= tournament ({tournament}) <= population ({population}) <= initial candidates "
            f"({len(initial)}) and population <= n ({n})"
        )
    history = list(initial[:population])
    pop = deque(history)
    seen = {c.spec.arch for c in initial}
    while len(history) < n:
        parent = max(rng.sample(list(pop), tournament), key=lambda c: c.score)
        child = None
        for _ in range(100):  # a mutation can leave the budget or repeat a network: try again
            spec = space.mutate(parent.spec, rng)
            if spec.arch not in seen and spec_macs(spec) <= macs_budget:
                child = spec
                break
        if child is None:  # a corner of the space with no new neighbour: a random restart
            child = sample_within(space, rng, macs_budget, seen)
        seen.add(child.arch)
        t0 = time.perf_counter()
        score = evaluate(child)
        cand = Candidate(child, spec_macs(child), score, "evolution", time.perf_counter() - t0)
        history.append(cand)
        pop.append(cand)
        pop.popleft()  # the oldest dies, whatever its score: "regularized" evolution
    return history


def best_so_far(cands: list[Candidate]) -> list[float]:
    out, best = [], float("-inf")
    for c in cands:
        best = max(best, c.score)
        out.append(best)
    return out


def shared_start_note(rand: list[Candidate], evo: list[Candidate], population: int) -> str | None:
    """A note when the best candidate of both searches is in evolution's start, which it shares with
    random search: then neither improved on it and their best-so-far curves are the same line."""
    best = max(rand + evo, key=lambda c: c.score)
    first = next((i for i, c in enumerate(rand[:population]) if c.score == best.score), None)
    if first is None or max(c.score for c in evo) > best.score:
        return None
    return (
        f"The best candidate of both searches ({100 * best.score:.2f}% proxy accuracy) is random search's "
        f"#{first + 1}, one of the {population} that also start evolution: no later candidate of either "
        "strategy beat it, so the two best-so-far curves in search.png are the same line (each candidate's "
        "own accuracy is drawn beside them)."
    )


# -- the experiment ------------------------------------------------------------------------------
def run(s: Settings, ctx: Context) -> ExperimentResult:
    from cnnzoo.analysis import profile
    from cnnzoo.experiments.efficiency import add_comparison, measure_latency
    from cnnzoo.experiments.training import (
        PRECISE_BN_NOTE,
        Dataset,
        experiment_subsets,
        load_dataset,
        options_note,
        stratified_subset,
        train_run,
    )
    from cnnzoo.registry import model_info

    data = load_dataset(s.data, ctx.data_root)
    size = (data.info.in_chans, *data.info.image_size)
    if size != (1, 28, 28):
        raise ValueError(
            f"the NAS design space and its MACs budget are for 1x28x28 images, {s.data} has "
            f"{'x'.join(map(str, size))}; use fashion-mnist or mnist"
        )
    # Proxy split, inside the training set: the test set never steers the search.
    order = stratified_subset(data.train[1], s.proxy_train_size + s.proxy_val_size, ctx.seed + 3)
    px, py = data.train[0][order], data.train[1][order]
    proxy = Dataset(
        data.name,
        (px[: s.proxy_train_size], py[: s.proxy_train_size]),
        (px[s.proxy_train_size :], py[s.proxy_train_size :]),
        data.info,
    )
    ctx.seeds += [
        f"{ctx.seed}: the search's sampling and mutations, every initialisation and data order, the final training subset",
        f"{ctx.seed + 1}: test subset",
        f"{ctx.seed + 3}: the proxy training and validation images (both from the training split)",
    ]
    evaluated: dict[str, float] = {}

    def evaluate(spec: NasSpec) -> float:
        if spec.arch not in evaluated:
            ctx.log(f"proxy {len(evaluated) + 1}: {spec.arch} ({spec_macs(spec) / 1e6:.2f}M MACs)")
            r = train_run(
                ctx,
                f"proxy-{len(evaluated) + 1:02d}",
                "nas_candidate",
                data=proxy,
                epochs=s.proxy_epochs,
                optimizer="adamw",
                lr=s.lr,
                weight_decay=s.weight_decay,
                seed=ctx.seed,
                model_kwargs={"arch": spec.arch},
            )
            evaluated[spec.arch] = r.test_top1
        return evaluated[spec.arch]

    rng = random.Random(ctx.seed)
    ctx.log(f"random search: {s.candidates} candidates within {s.macs_budget / 1e6:g}M MACs")
    rand = random_search(evaluate, NAS_SPACE, rng, n=s.candidates, macs_budget=s.macs_budget)
    ctx.log(f"regularized evolution: population {s.population}, tournament {s.tournament}")
    evo = regularized_evolution(
        evaluate,
        NAS_SPACE,
        rng,
        n=s.candidates,
        population=s.population,
        tournament=s.tournament,
        macs_budget=s.macs_budget,
        initial=rand,
    )
    pool = {c.spec.arch: c for c in [*rand, *evo]}
    best = max(pool.values(), key=lambda c: (c.score, -c.macs))
    ctx.log(f"best candidate {best.spec.arch}: proxy accuracy {100 * best.score:.2f}%; training it fully")

    train_idx, test_idx = experiment_subsets(data, s.train_size, s.test_size, ctx.seed)
    finals = {}
    found = "found by search"
    for name, model, kwargs in [
        (found, "nas_candidate", {"arch": best.spec.arch}),
        *((b, b, s.model_kwargs.get(b, {})) for b in s.baselines),
    ]:
        finals[name] = train_run(
            ctx,
            "final-searched" if name == found else f"final-{name}",
            model,
            data=data,
            train_idx=train_idx,
            test_idx=test_idx,
            epochs=s.epochs,
            optimizer="adamw",
            lr=s.lr,
            weight_decay=s.weight_decay,
            seed=ctx.seed,
            model_kwargs=kwargs,
        )
    latency = measure_latency({n: r.model for n, r in finals.items()}, size, rounds=s.latency_rounds)
    entries: dict[str, dict[str, Any]] = {}
    for name, r in finals.items():
        p = profile(r.model, size)
        entries[name] = {
            "family": "nas" if name == found else model_info(name).family,
            "macs": p.total_macs,
            "params": p.num_parameters,
            "latency_ms": latency[name],
            "test_top1": r.test_top1,
            "train_seconds": r.seconds,
        }

    result = ExperimentResult(
        name="nas", title=EXPERIMENT.title, claim=EXPERIMENT.claim, source=EXPERIMENT.source
    )
    result.tables.append(
        Table(
            f"Every candidate ({len(pool)} trained on the proxy task: {s.proxy_train_size:,} images, "
            f"{s.proxy_epochs} epoch(s), validated on {s.proxy_val_size:,} other training images)",
            ["#", "strategy", "arch", "MMACs", "proxy val top-1 (%)", "proxy time (s)"],
            [
                [
                    i + 1,
                    c.strategy,
                    c.spec.arch,
                    round(c.macs / 1e6, 2),
                    round(100 * c.score, 2),
                    round(c.seconds, 1),
                ]
                for i, c in enumerate(pool.values())
            ],
            f"arch: stem width c, then per stage depth d, width w, kernel k, expansion e, stride s, and se "
            f"when it has squeeze-and-excitation (cnnzoo.models.nas). Budget: {s.macs_budget / 1e6:g}M MACs.",
        )
    )
    add_comparison(
        result,
        entries,
        ctx,
        s.data,
        label=f"{len(train_idx):,} images, {plural(s.epochs, 'epoch')}; the searched net is {best.spec.arch}",
        findings=False,
    )
    points = {n: (e["macs"], e["test_top1"]) for n, e in entries.items()}
    dominated_by = [
        n for n in s.baselines if points[n][0] <= points[found][0] and points[n][1] >= points[found][1]
    ]
    f = entries[found]
    result.findings.append(
        Finding(
            "Search finds, automatically, a network within the MACs budget that no hand-designed net beats "
            "at equal or lower multiply-adds",
            not dominated_by,
            f"searched net {100 * f['test_top1']:.2f}% test top-1 at {f['macs'] / 1e6:.2f}M MACs; "
            + (
                f"dominated by {', '.join(dominated_by)}"
                if dominated_by
                else "baselines: "
                + ", ".join(
                    f"{n} {100 * entries[n]['test_top1']:.2f}% at {entries[n]['macs'] / 1e6:.2f}M"
                    for n in s.baselines
                )
            ),
        )
    )
    best_r, best_e = max(c.score for c in rand), max(c.score for c in evo)
    result.findings.append(
        Finding(
            f"Regularized evolution finds a better candidate than random search with the same {s.candidates} "
            "proxy evaluations (Real et al. 2019)",
            best_e > best_r,
            f"best proxy validation accuracy: evolution {100 * best_e:.2f}%, random {100 * best_r:.2f}%",
        )
    )
    shared_best = shared_start_note(rand, evo, s.population)
    if shared_best:
        result.notes.append(shared_best)
    if s.model_kwargs:
        result.notes.append(options_note(s.model_kwargs))
    result.notes.append(PRECISE_BN_NOTE)
    result.notes.append(
        f"Each strategy trains {s.candidates} candidates (out of {NAS_SPACE.size():,} in the space) on a proxy "
        f"task of {s.proxy_train_size:,} images for {s.proxy_epochs} epoch(s): proxy rankings are noisy, and with "
        "one seed a gap of a point between the strategies is within that noise."
    )
    result.data.update(
        {
            "best_arch": best.spec.arch,
            "best_proxy_score": best.score,
            "random": [[c.spec.arch, c.macs, c.score] for c in rand],
            "evolution": [[c.spec.arch, c.macs, c.score] for c in evo],
        }
    )
    result.figures.insert(0, _plot_search(rand, evo, list(pool.values()), s, ctx))
    return result


def _plot_search(
    rand: list[Candidate], evo: list[Candidate], pool: list[Candidate], s: Settings, ctx: Context
) -> Figure:
    from cnnzoo.experiments.plots import pyplot, save_png
    from cnnzoo.train.plots import epoch_axis

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    # Evolution's first `population` members are random search's first candidates, so the two
    # best-so-far curves share their start - and coincide throughout when the best candidate of
    # both is in that shared start. Each strategy's own scores are drawn too, so the strategies
    # stay distinguishable; random search's curve is drawn wide underneath, evolution's dashed on top.
    shared = min(s.population, len(rand), len(evo))
    a1.axvspan(0.5, shared + 0.5, color="gray", alpha=0.12, label=f"shared start ({shared} candidates)")
    for cands, label, color, style in (
        (rand, "random search", "C0", dict(ls="-", lw=4, alpha=0.45)),
        (evo, "regularized evolution", "C3", dict(ls="--", lw=1.5)),
    ):
        steps = range(1, len(cands) + 1)
        a1.step(
            steps,
            [100 * v for v in best_so_far(cands)],
            where="post",
            color=color,
            label=f"{label}: best so far",
            **style,
        )
        a1.plot(
            steps,
            [100 * c.score for c in cands],
            "o" if color == "C0" else "x",
            color=color,
            alpha=0.7,
            label=f"{label}: each candidate",
        )
    if best_so_far(rand) == best_so_far(evo):
        a1.set_title("search progress (the best-so-far curves coincide)")
    else:
        a1.set_title("search progress")
    for strategy, label, color in (("random", "random sample", "C0"), ("evolution", "evolved child", "C3")):
        picked = [c for c in pool if c.strategy == strategy]
        a2.scatter([c.macs / 1e6 for c in picked], [100 * c.score for c in picked], color=color, label=label)
    a1.set_xlabel("proxy evaluations")
    a1.set_ylabel("proxy validation top-1 (%)")
    epoch_axis(a1, list(range(1, max(len(rand), len(evo)) + 1)))
    a1.grid(alpha=0.3)
    a1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    a2.axvline(s.macs_budget / 1e6, color="gray", ls=":", label="MACs budget")
    a2.set_xlabel("million multiply-adds")
    a2.set_ylabel("proxy validation top-1 (%)")
    a2.set_title("candidates")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    save_png(fig, ctx.out / "search.png")
    return Figure(
        "search.png",
        "Left: each candidate's proxy accuracy (marks) and the best found so far (lines), random search vs "
        "regularized evolution, whose first members (shaded) are random search's first; where the best of both "
        "is in that shared start the two lines coincide. Right: every candidate's proxy accuracy and "
        "multiply-adds.",
    )


EXPERIMENT = Experiment(
    name="nas",
    title="Architecture search: random search and evolution under a MACs budget",
    claim="Neural architecture search can now automate architecture design: sample an architecture from a "
    "search space, train it to get a reward corresponding to accuracy, and use it to find better ones.",
    source="Zoph & Le 2016, arXiv:1611.01578 (as the course's lecture on architecture search cites it); "
    "Real et al. 2019, arXiv:1802.01548",
    budgets=BUDGETS,
    run=run,
    summary="MnasNet-style space under a MACs budget: random search vs regularized evolution, best retrained",
)
