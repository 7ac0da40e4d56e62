"""FAPO rewards (docs/design.md §1.1, §1.2) and the λ analysis (docs/design.md §3), cross-checked by simulation."""

from __future__ import annotations

import random
import statistics

import pytest

from fapo.rewards import fapo_reward, grm_reward
from fapo.theory import flip_ratio, group_stats, stability_ratio, variance_gap


@pytest.mark.parametrize(
    ("correct", "flawed", "penalty", "expected"),
    [
        (True, False, 1.0, 1.0),
        (True, True, 1.0, 0.0),
        (True, None, 1.0, 1.0),  # the GenRM could not say: no penalty
        (False, True, 1.0, -1.0),
        (False, None, 1.0, -1.0),
        (True, True, 0.0, 1.0),  # λ = 0 is GRPO
        (True, True, 0.5, 0.5),
    ],
)
def test_fapo_reward(correct, flawed, penalty, expected):
    assert fapo_reward(correct, flawed, penalty) == expected


@pytest.mark.parametrize(
    ("predicted", "label", "n", "expected"),
    [
        (-1, -1, 5, 1.0),
        (2, 2, 5, 1.0),
        (1, 3, 4, 1.0 - 2 / 4),
        (-1, 3, 4, -1.0),
        (2, -1, 4, -1.0),
        (None, -1, 4, -1.0),
        (None, 2, 4, -1.0),
    ],
)
def test_grm_reward(predicted, label, n, expected):
    assert grm_reward(predicted, label, n) == pytest.approx(expected)


def test_grm_reward_outcome_alone():
    """The ablation: without R_process a flawed verdict at the wrong step earns R_outcome's +1 in full."""
    assert grm_reward(1, 3, 4, process=False) == 1.0 and grm_reward(1, 3, 4) == 0.5
    assert grm_reward(-1, 3, 4, process=False) == -1.0 and grm_reward(None, 3, 4, process=False) == -1.0
    assert grm_reward(-1, -1, 4, process=False) == 1.0 and grm_reward(2, -1, 4, process=False) == -1.0


def _simulated_group(clean: int, flawed: int, wrong: int, penalty: float):
    rewards = [1.0] * clean + [1.0 - penalty] * flawed + [-1.0] * wrong
    mean = statistics.fmean(rewards)
    std = statistics.pstdev(rewards)
    return mean, std, [(r - mean) / std for r in (1.0, 1.0 - penalty, -1.0)]


@pytest.mark.parametrize("counts", [(3, 2, 3), (5, 1, 2), (1, 4, 3), (6, 1, 1), (2, 2, 4)])
@pytest.mark.parametrize("penalty", [1.0, 0.5, 2.0])
def test_group_stats_match_direct_computation(counts, penalty):
    stats = group_stats(*counts, penalty=penalty)
    mean, std, (a_clean, a_flawed, a_wrong) = _simulated_group(*counts, penalty)
    assert stats.mean == pytest.approx(mean)
    assert stats.std == pytest.approx(std)
    assert (stats.advantage_clean, stats.advantage_flawed, stats.advantage_wrong) == pytest.approx(
        (a_clean, a_flawed, a_wrong)
    )
    grpo = [1.0] * (counts[0] + counts[1]) + [-1.0] * counts[2]
    assert stats.grpo_mean == pytest.approx(statistics.fmean(grpo))
    assert stats.grpo_std == pytest.approx(statistics.pstdev(grpo))


def test_variance_gap_closed_form_matches_stats():
    rng = random.Random(0)
    for _ in range(200):
        clean, flawed, wrong = (rng.random() for _ in range(3))
        penalty = rng.choice([0.5, 1.0, 1.5])
        stats = group_stats(clean, flawed, wrong, penalty)
        assert stats.std**2 - stats.grpo_std**2 == pytest.approx(variance_gap(clean, flawed, wrong, penalty), abs=1e-12)


def test_flip_and_stability_thresholds_by_monte_carlo():
    """Sample groups of 64 rollouts: the flawed advantage is negative exactly past ρ = 2/λ − 1, and
    FAPO's std exceeds GRPO's exactly past ρ = 4/λ − 1 (for any γ)."""
    rng = random.Random(1)
    for penalty in (1.0, 0.5):
        checked = 0
        for _ in range(400):
            outcomes = rng.choices(["clean", "flawed", "wrong"], weights=[rng.random() for _ in range(3)], k=64)
            clean, flawed, wrong = (outcomes.count(c) for c in ("clean", "flawed", "wrong"))
            if min(clean, flawed, wrong) == 0:
                continue
            rho = clean / wrong
            stats = group_stats(clean, flawed, wrong, penalty)
            if abs(rho - flip_ratio(penalty)) > 1e-9:
                assert (stats.advantage_flawed < 0) == (rho > flip_ratio(penalty))
            if abs(rho - stability_ratio(penalty)) > 1e-9:
                assert (stats.std > stats.grpo_std) == (rho > stability_ratio(penalty))
            checked += 1
        assert checked > 100


def test_thresholds_at_lambda_one():
    assert flip_ratio(1.0) == 1.0
    assert stability_ratio(1.0) == 3.0
    with pytest.raises(ValueError):
        flip_ratio(0.0)


@pytest.mark.parametrize("counts", [(0, 0, 0), (1, -1, 0), (-0.5, 0.25, 0.25), (float("nan"), 1, 1)])
def test_group_stats_and_variance_gap_reject_groups_without_a_positive_total(counts):
    with pytest.raises(ValueError, match="positive sum"):
        group_stats(*counts)
    with pytest.raises(ValueError, match="positive sum"):
        variance_gap(*counts)


def test_trl_bessel_std_scales_every_advantage_alike():
    """TRL divides by the Bessel-corrected std of the G rewards (+1e-4): sqrt(G/(G-1)) x ours, for every class."""
    import statistics

    clean, flawed, wrong = 3, 2, 3  # G = 8
    stats = group_stats(clean, flawed, wrong)
    rewards = [1.0] * clean + [0.0] * flawed + [-1.0] * wrong
    bessel_std = statistics.stdev(rewards)
    assert bessel_std == pytest.approx(stats.std * (8 / 7) ** 0.5)
    trl = [(r - statistics.fmean(rewards)) / (bessel_std + 1e-4) for r in (1.0, 0.0, -1.0)]
    ours = (stats.advantage_clean, stats.advantage_flawed, stats.advantage_wrong)
    ratios = [a / b for a, b in zip(ours, trl) if b != 0]
    assert len(ratios) == 2 and ratios == pytest.approx([ratios[0]] * 2) and ratios[0] > 1
