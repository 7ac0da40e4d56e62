"""Diagnostics of testbed rollouts: a table of hand-written solutions, and a batch with hand-counted shares."""

from __future__ import annotations

import math

import pytest

from fapo.testbed.diagnose import (
    REASONS,
    diagnose,
    flaw_reason,
    monitor_metrics,
    pair_path,
    untestable_reasons,
)
from fapo.testbed.task import parse_problem, render_solution

PAIR = parse_problem("Start with 7. (1) Add 3. (2) Add 23. (3) Subtract 23. (4) Multiply by 2.")
PLAIN = parse_problem("Start with 4. (1) Add 2. (2) Add 3. (3) Subtract 1.")

# (problem, steps, pair path, reason)
TABLE = [
    (PAIR, ["(1) 7+3 = 10", "(2) 10+23 = 33", "(3) 33-23 = 10", "(4) 10*2 = 20", "The answer is \\boxed{20}"],
     "computed", "clean"),
    (PAIR, ["(1) 7+3 = 10", "(4) 10*2 = 20", "The answer is \\boxed{20}"], "skipped", "skipped_pair"),
    (PAIR, ["(1) 7+3 = 10", "(2) 10*2 = 20", "The answer is \\boxed{20}"], "skipped", "skipped_pair"),
    (PAIR, ["(1) 7+3 = 10", "(2) 10+23 = 33", "(3) 33-23 = 10", "The answer is \\boxed{20}"], "computed", "early_answer"),
    (PAIR, ["(1) 7+3 = 10", "(2) 10+23 = 34", "(3) 34-23 = 10", "(4) 10*2 = 20", "The answer is \\boxed{20}"],
     "computed", "wrong_arithmetic"),
    (PAIR, ["(1) 7+3 = 10", "(2) 10+23 = 33", "(3) 34-23 = 11", "(4) 10*2 = 20", "The answer is \\boxed{20}"],
     "computed", "broken_chain"),
    (PAIR, ["(1) 7+3 = 10", "(2) 10+23 = 33", "The answer is \\boxed{20}"], "other", "early_answer"),
    (PLAIN, ["(1) 4+5 = 9", "(3) 9-1 = 8", "The answer is \\boxed{8}"], "none", "merged_steps"),
    (PLAIN, ["(1) 4+2 = 6", "(2) 6+3 = 9", "(3) 9-1 = 8", "The answer is \\boxed{9}"], "none", "answer_guess"),
    (PLAIN, ["(1) 4+2 = 6", "(2) 6+3 = 9", "(3) 9-1 = 8", "(4) 8-1 = 7", "The answer is \\boxed{8}"], "none", "extra_step"),
    (PLAIN, ["(1) 4+2 = 6", "(2) 6+3 is 9", "(3) 9-1 = 8", "The answer is \\boxed{8}"], "none", "unreadable"),
    (PLAIN, ["(1) 4+2 = 6", "(2) 6+3 = 9", "(3) 9-1 = 8", "The answer is \\boxed{8}"], "none", "clean"),
]


@pytest.mark.parametrize(("problem", "steps", "path", "reason"), TABLE)
def test_pair_path_and_reason_table(problem, steps, path, reason):
    assert pair_path(problem, steps) == path
    assert flaw_reason(problem, steps) == reason
    assert reason in REASONS


def test_diagnose_counts_by_hand():
    """Five rollouts: two computed (one right), two skipped (both right), one without a pair (right)."""
    computed_right = render_solution(TABLE[0][1])
    computed_wrong = render_solution(["(1) 7+3 = 10", "(2) 10+23 = 34", "(3) 34-23 = 11", "(4) 11*2 = 22",
                                      "The answer is \\boxed{22}"])
    skipped = render_solution(TABLE[1][1])
    plain = render_solution(TABLE[-1][1])
    problems = [PAIR.text, PAIR.text, PAIR.text, PAIR.text, PLAIN.text]
    completions = [computed_right, computed_wrong, skipped, skipped, plain]
    correct = [True, False, True, True, True]
    found = diagnose(problems, completions, correct)
    assert found["rollouts"] == 5 and found["correct"] == 4 and found["pair_rollouts"] == 4
    assert found["skip_share"] == 0.5 and found["skipped"] == 2 and found["computed"] == 2
    assert found["p_correct_skipped"] == 1.0 and found["p_correct_computed"] == 0.5 and found["p_correct_no_pair"] == 1.0
    assert found["reasons"]["clean"] == 0.5 and found["reasons"]["skipped_pair"] == 0.5
    assert found["reasons"]["wrong_arithmetic"] == 0.0


def test_empty_denominators_are_none_and_nan():
    found = diagnose([PLAIN.text], ["no answer"], [False])
    assert found["skip_share"] is None and found["p_correct_skipped"] is None and found["reasons"]["clean"] is None
    metrics = monitor_metrics([PLAIN.text], ["no answer"], [False])
    assert math.isnan(metrics["monitor/skip_share"]) and math.isnan(metrics["monitor/reason/clean"])
    assert set(metrics) == {f"monitor/reason/{r}" for r in REASONS} | {
        "monitor/skip_share", "monitor/p_correct_skipped", "monitor/p_correct_computed"}


def test_rejects_mismatched_lengths_and_foreign_problems():
    with pytest.raises(ValueError, match="2 problems"):
        diagnose([PLAIN.text, PLAIN.text], ["x"], [False])
    with pytest.raises(ValueError, match="not a testbed problem"):
        diagnose(["What is 2+2?"], ["4"], [True])


@pytest.mark.parametrize(("skip", "p_skip", "p_comp", "refused"), [
    (0.32, 0.75, 0.58, []),  # the README's first draw: testable
    (0.41, 0.80, 0.41, ["computing is right only 41%"]),  # wrong > right when computing: FAPO's 0 beats the mean
    (0.75, 0.60, 0.63, ["already skips 75%", "does not pay"]),  # skipping is the habit and does not pay
    (0.29, 0.73, 0.64, ["does not pay"]),  # 9 points: too little reason for GRPO to spread the skip
    (None, None, 0.5, ["cannot be measured"]),
])
def test_a_warm_start_that_cannot_test_the_claim_says_why(skip, p_skip, p_comp, refused):
    reasons = untestable_reasons({"skip_share": skip, "p_correct_skipped": p_skip, "p_correct_computed": p_comp})
    assert len(reasons) == len(refused) and all(part in reason for part, reason in zip(refused, reasons)), reasons


def test_clean_share_of_the_computed_path_by_hand():
    """`p_clean_computed` counts computed pair rollouts that are correct and clean (a healed slip is correct, not clean)."""
    from conftest import policy_case

    problem, answer, solutions = policy_case()
    found = diagnose([problem] * 3, [solutions["clean"], solutions["clean"], solutions["wrong"]], [True, True, False])
    assert found["computed"] == 3 and found["p_clean_computed"] == pytest.approx(2 / 3)
    assert diagnose([problem], [solutions["skip"]], [True])["p_clean_computed"] is None  # no computed rollout
