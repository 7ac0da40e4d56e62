"""FAPO's rewards (docs/design.md §1.1 and §1.2), as pure functions.

`fapo_reward` is the policy reward; `grm_reward` trains the GenRM. Advantages and losses are TRL's
business, not this module's.
"""

from __future__ import annotations

MAX_PENALTY = 1000.0
"""Largest λ a config may give (the paper's is 1): finite, so a flawed positive's reward stays a number that
GRPO's group advantages can use (nan or −inf would poison its whole group)."""


def fapo_reward(is_correct: bool, is_flawed: bool | None, penalty: float = 1.0) -> float:
    """R_FAPO(o) = R_RLVR(o) − λ·[R_RLVR(o) = +1 and GenRM says flawed]   (paper §3, docs/design.md §1.1).

    R_RLVR is +1 for a verified-correct final answer and −1 otherwise. `is_flawed=None` means the
    GenRM could not say (error or invalid output): that is not a verdict, so no penalty.
    `penalty` is λ (1.0 in the paper; 0.0 gives plain GRPO).
    """
    if not is_correct:
        return -1.0
    return 1.0 - penalty if is_flawed is True else 1.0


def grm_reward(predicted: int | None, label: int, num_steps: int, process: bool = True) -> float:
    """R_GenRM = R_outcome + R_process   (paper §3.2, docs/design.md §1.2).

    R_outcome = +1 if (predicted flawed) == (label flawed) else −1; an unparseable verdict
    (`predicted=None`) is −1 with no process term.
    R_process = −|k̂ − k*| / n when both prediction and label say flawed, else 0 (n = num_steps);
    `process=False` leaves it out (R_outcome alone: the paper's ablation).
    """
    if predicted is None:
        return -1.0
    predicted_flawed = predicted != -1
    label_flawed = label != -1
    outcome = 1.0 if predicted_flawed == label_flawed else -1.0
    step_term = 0.0
    if process and predicted_flawed and label_flawed:
        step_term = -abs(predicted - label) / max(num_steps, 1)
    return outcome + step_term
