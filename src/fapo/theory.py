"""The analysis behind λ = 1 (docs/design.md §3; paper §3.3). Standard library only.

A group of rollouts has fractions α (clean correct), γ (flawed positive), β (wrong). FAPO rewards
them 1, 1−λ, −1; GRPO rewards them 1, 1, −1. Here advantages are (r − mean) / (std + eps) with the
population std of the fractions. TRL's GRPOTrainer divides by the Bessel-corrected std of the G rewards
plus 1e-4: sqrt(G / (G − 1)) times this std, the same factor for every class and for FAPO and GRPO, so
the signs of the advantages, the thresholds ρ_shift and 4/λ − 1, and which of the two stds is larger do
not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupStats:
    """Reward statistics of one group under FAPO and GRPO, and FAPO's per-class advantages."""

    mean: float
    std: float
    grpo_mean: float
    grpo_std: float
    advantage_clean: float
    advantage_flawed: float
    advantage_wrong: float


def _moments(fractions: tuple[float, float, float], rewards: tuple[float, float, float]) -> tuple[float, float]:
    mean = sum(f * r for f, r in zip(fractions, rewards))
    var = sum(f * (r - mean) ** 2 for f, r in zip(fractions, rewards))
    return mean, math.sqrt(max(var, 0.0))


def group_stats(clean: float, flawed: float, wrong: float, penalty: float = 1.0, eps: float = 0.0) -> GroupStats:
    """Group mean/std under FAPO (rewards 1, 1−λ, −1) and GRPO (1, 1, −1), and FAPO advantages.

    `clean, flawed, wrong` are fractions or counts (normalised here). Advantage of a class with
    reward r: (r − mean) / (std + eps); a group with zero std gets advantage 0 for every class.
    """
    total = clean + flawed + wrong
    if not total > 0 or min(clean, flawed, wrong) < 0:
        raise ValueError(f"clean, flawed, wrong must be non-negative with a positive sum, got {clean}, {flawed}, {wrong}")
    fractions = (clean / total, flawed / total, wrong / total)
    rewards = (1.0, 1.0 - penalty, -1.0)
    mean, std = _moments(fractions, rewards)
    grpo_mean, grpo_std = _moments(fractions, (1.0, 1.0, -1.0))

    def advantage(r: float) -> float:
        return 0.0 if std + eps == 0 else (r - mean) / (std + eps)

    return GroupStats(mean, std, grpo_mean, grpo_std, advantage(1.0), advantage(1.0 - penalty), advantage(-1.0))


def flip_ratio(penalty: float = 1.0) -> float:
    """ρ_shift = 2/λ − 1: flawed positives get a negative advantage once ρ = α/β exceeds it (docs/design.md §3)."""
    if penalty <= 0:
        raise ValueError("penalty must be > 0 (with λ = 0 flawed positives are never penalised)")
    return 2.0 / penalty - 1.0


def stability_ratio(penalty: float = 1.0) -> float:
    """4/λ − 1: once ρ exceeds it, FAPO's group std is larger than GRPO's (docs/design.md §3)."""
    if penalty <= 0:
        raise ValueError("penalty must be > 0")
    return 4.0 / penalty - 1.0


def variance_gap(clean: float, flawed: float, wrong: float, penalty: float = 1.0) -> float:
    """σ²_FAPO − σ²_GRPO = λγ(1 − γ)(λ − 4/(ρ + 1)), ρ = α/β, in closed form (docs/design.md §3).

    `clean, flawed, wrong` are fractions or counts (normalised here). With β = 0 (ρ = ∞) the last factor is λ.
    """
    total = clean + flawed + wrong
    if not total > 0 or min(clean, flawed, wrong) < 0:
        raise ValueError(f"clean, flawed, wrong must be non-negative with a positive sum, got {clean}, {flawed}, {wrong}")
    alpha, gamma, beta = clean / total, flawed / total, wrong / total
    if beta == 0:
        last = penalty
    else:
        rho = alpha / beta
        last = penalty - 4.0 / (rho + 1.0)
    return penalty * gamma * (1.0 - gamma) * last
