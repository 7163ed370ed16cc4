"""The NAS design space (cnnzoo.models.nas) and the searches (cnnzoo.experiments.nas).

Oracles: torch's FlopCounterMode for the multiply-adds `spec_macs` computes without building a
network (through `cnnzoo.profile`, which equals FlopCounterMode / 2 for every model), hand
arithmetic for the size of the space, and synthetic objectives with a known optimum for the
searches (no training: they take any `evaluate` callable).
"""

from __future__ import annotations

import random
from dataclasses import asdict

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.experiments.nas import random_search, regularized_evolution, sample_within
from cnnzoo.models.nas import MUTABLE, NAS_SPACE, NAS_SPECS, NasNet, NasSpec, spec_macs


def flop_counter_macs(model: torch.nn.Module, size: tuple[int, int, int]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, *size))
    return counter.get_total_flops() // 2


def test_space_size_by_hand():
    # Stage 1: 2 depths x 2 widths; stages 2 and 3: 3 x 3; each x 2 kernels x 3 expansions x 2 SE.
    assert NAS_SPACE.size() == (2 * 2 * 12) * (3 * 3 * 12) * (3 * 3 * 12) == 559_872


@pytest.mark.parametrize("seed", range(6))
def test_spec_macs_equal_flop_counter(seed):
    spec = NAS_SPACE.sample(random.Random(seed))
    model = NasNet(spec)
    assert spec_macs(spec) == flop_counter_macs(model, (1, 28, 28))
    # Other inputs: an odd side exercises the 'same'-padded stride-2 rounding (ceil(n / 2)).
    assert spec_macs(spec, (3, 33, 33), num_classes=7) == flop_counter_macs(
        NasNet(spec, in_chans=3, num_classes=7), (3, 33, 33)
    )


def test_named_specs_profile_like_the_registry():
    for name, arch in NAS_SPECS.items():
        assert cnnzoo.profile(name).total_macs == spec_macs(NasSpec.from_arch(arch))
        assert NAS_SPACE.contains(NasSpec.from_arch(arch))


def test_nas_fmnist_is_what_the_committed_search_found():
    import json
    from pathlib import Path

    from cnnzoo.experiments.nas import BUDGETS

    report = Path(__file__).resolve().parents[1] / "reports" / "nas" / "result.json"
    found = json.loads(report.read_text())
    assert found["meta"]["budget"] == "full"
    assert found["data"]["best_arch"] == NAS_SPECS["nas_fmnist"]
    assert spec_macs(NasSpec.from_arch(NAS_SPECS["nas_fmnist"])) <= BUDGETS["full"].macs_budget


def test_arch_strings_round_trip_and_bad_ones_are_explained():
    rng = random.Random(0)
    for _ in range(20):
        spec = NAS_SPACE.sample(rng)
        assert NasSpec.from_arch(spec.arch) == spec
        assert NAS_SPACE.contains(spec)
    spec = NasSpec.from_arch("c16_d2w24k5e6s2se_d1w48k3e1s1")
    assert [asdict(s) for s in spec.stages] == [
        {"depth": 2, "width": 24, "kernel": 5, "expansion": 6, "se": True, "stride": 2},
        {"depth": 1, "width": 48, "kernel": 3, "expansion": 1, "se": False, "stride": 1},
    ]
    with pytest.raises(ValueError, match="is not a NAS spec; write it as c<stem>_d<depth>"):
        NasSpec.from_arch("resnet20")
    with pytest.raises(ValueError, match="the depthwise kernel must be odd"):
        NasSpec.from_arch("c16_d1w16k4e1s1")
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        cnnzoo.create_model("nas_candidate", arch="c16_d1w16k3e1s3")


def test_network_follows_the_spec():
    spec = NasSpec.from_arch("c8_d2w16k3e3s1se_d3w24k5e6s2_d1w32k3e1s2se")
    model = cnnzoo.create_model("nas_candidate", arch=spec.arch, num_classes=4)
    blocks = [b for stage in model.stages for b in stage]
    assert len(blocks) == 6
    assert [b.out_channels for b in blocks] == [16, 16, 24, 24, 24, 32]
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4]
    # Residual only where shape is kept: the 2nd block of stage 1 and the 2nd, 3rd of stage 2.
    assert [b.use_residual for b in blocks] == [False, True, False, True, True, False]
    # SE where the spec asks for it; the expansion conv is absent at ratio 1.
    has_se = [any(type(m).__name__ == "SqueezeExcite" for m in b.modules()) for b in blocks]
    assert has_se == [True, True, False, False, False, True]
    assert len(blocks[-1].block) == 3  # depthwise, SE, projection: no 1x1 expansion
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 4)


def test_mutation_changes_one_choice_and_stays_in_the_space():
    rng = random.Random(1)
    for _ in range(50):
        parent = NAS_SPACE.sample(rng)
        child = NAS_SPACE.mutate(parent, rng)
        assert NAS_SPACE.contains(child)
        diffs = [
            (i, f)
            for i, (a, b) in enumerate(zip(parent.stages, child.stages, strict=True))
            for f in MUTABLE
            if getattr(a, f) != getattr(b, f)
        ]
        assert len(diffs) == 1
    with pytest.raises(ValueError, match="not in this design space"):
        NAS_SPACE.mutate(NasSpec.from_arch("c16_d9w16k3e1s1"), rng)


def test_sampling_respects_the_budget_and_says_when_it_cannot():
    rng = random.Random(2)
    seen: set[str] = set()
    for _ in range(30):
        spec = sample_within(NAS_SPACE, rng, 3_000_000, seen)
        assert spec_macs(spec) <= 3_000_000 and spec.arch not in seen
        seen.add(spec.arch)
    with pytest.raises(ValueError, match="no new network of the design space fits 1,000 MACs"):
        sample_within(NAS_SPACE, rng, 1_000, tries=50)


def width_objective(spec: NasSpec) -> float:
    # A synthetic reward with a known optimum: the widest last stage, then the most blocks.
    return spec.stages[-1].width + 0.01 * sum(s.depth for s in spec.stages)


def test_searches_are_deterministic_distinct_and_within_budget():
    budget = 8_000_000

    def run(seed):
        rng = random.Random(seed)
        rand = random_search(width_objective, NAS_SPACE, rng, n=8, macs_budget=budget)
        evo = regularized_evolution(
            width_objective, NAS_SPACE, rng, n=8, population=4, tournament=2, macs_budget=budget, initial=rand
        )
        return rand, evo

    rand, evo = run(0)
    assert [c.spec.arch for c in run(0)[1]] == [c.spec.arch for c in evo]
    assert len(rand) == len(evo) == 8
    assert [c.spec.arch for c in evo[:4]] == [c.spec.arch for c in rand[:4]]  # shared initial population
    archs = [c.spec.arch for c in [*rand, *evo[4:]]]
    assert len(set(archs)) == len(archs)  # nothing trained twice
    assert all(c.macs <= budget and c.macs == spec_macs(c.spec) for c in [*rand, *evo])
    assert [c.strategy for c in evo] == ["random"] * 4 + ["evolution"] * 4


def corner_objective(spec: NasSpec) -> float:
    # A synthetic reward with one optimum, the corner of the space: how many of the 15 choices
    # (5 per stage) take their largest value.
    return sum(
        getattr(s, f) == max(getattr(c, f))
        for s, c in zip(spec.stages, NAS_SPACE.stages, strict=True)
        for f in MUTABLE
    )


def test_evolution_concentrates_on_good_regions():
    # Selection + one-choice mutations: the evolved children score higher on average than
    # uniform samples at equal evaluations (the point of Real et al. 2019's comparison).
    wins = 0
    for seed in range(10):
        rng = random.Random(seed)
        rand = random_search(corner_objective, NAS_SPACE, rng, n=20, macs_budget=10**9)
        evo = regularized_evolution(
            corner_objective,
            NAS_SPACE,
            rng,
            n=20,
            population=4,
            tournament=2,
            macs_budget=10**9,
            initial=rand,
        )
        children = [c.score for c in evo[4:]]
        wins += sum(children) / len(children) > sum(c.score for c in rand) / len(rand)
    assert wins >= 9


def test_evolution_settings_are_checked():
    with pytest.raises(ValueError, match="tournament"):
        regularized_evolution(
            width_objective,
            NAS_SPACE,
            random.Random(0),
            n=4,
            population=3,
            tournament=4,
            macs_budget=10**9,
            initial=[],
        )
