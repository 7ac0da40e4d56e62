"""Metric definitions of `fapo.eval` against hand-computed cases, and cross-checks with references."""

from __future__ import annotations

import random
from math import comb

import pytest

from fapo.eval.policy import Rollout, pass_at_ks, score_rollouts
from fapo.metrics import (
    flawed_positive_scores,
    harmonic_mean,
    majority_index,
    mean_defined,
    pass_at_k,
    processbench_scores,
)

# ------------------------------------------------------------------------------------ ProcessBench

PROCESSBENCH_CASES = [
    # labels, verdicts, (n_error, n_correct, acc_err, acc_corr, f1, n_invalid)
    ([-1, -1, 2, 0, 1], [-1, None, 2, 1, None], (3, 2, 100 / 3, 50.0, 40.0, 2)),
    ([-1, -1], [-1, 3], (0, 2, None, 50.0, None, 0)),  # no erroneous items: acc_err undefined
    ([0, 4], [0, 0], (2, 0, 50.0, None, None, 0)),  # no error-free items: acc_corr undefined
    ([0, -1, 2], [None, None, None], (2, 1, 0.0, 0.0, 0.0, 3)),  # all null: F1 = 0 when both are 0
    ([0, -1], [0, -1], (1, 1, 100.0, 100.0, 100.0, 0)),
    ([3, -1], [-1, 0], (1, 1, 0.0, 0.0, 0.0, 0)),  # "-1" on an error and a step on a clean item: both wrong
    ([], [], (0, 0, None, None, None, 0)),
]


@pytest.mark.parametrize("labels, verdicts, expected", PROCESSBENCH_CASES)
def test_processbench_scores(labels, verdicts, expected):
    s = processbench_scores(labels, verdicts)
    got = (s.n_error, s.n_correct, s.acc_err, s.acc_corr, s.f1, s.n_invalid)
    assert got == pytest.approx(expected)
    assert s.n == len(labels)


def test_processbench_scores_length_mismatch():
    with pytest.raises(ValueError):
        processbench_scores([0, 1], [0])


def test_harmonic_mean_and_mean_defined():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(50.0, 50.0) == 50.0
    assert harmonic_mean(100.0, 0.0) == 0.0
    assert mean_defined([None, 10.0, 20.0]) == 15.0
    assert mean_defined([None, None]) is None


# ------------------------------------------------------------------------------------ FlawedPositiveBench

FPB_CASES = [
    # labels, final_answer_correct, verdicts, (n, tp, fp, fn, tn, precision, recall, f1, accuracy)
    ([0, -1, 1, -1, 2, 0], [True, True, True, True, False, None], [1, -1, None, 0, 2, 0],
     (4, 1, 1, 1, 1, 50.0, 50.0, 50.0, 50.0)),  # wrong-answer and unknown items are left out
    ([0, -1], [True, True], [-1, -1], (2, 0, 0, 1, 1, 0.0, 0.0, 0.0, 50.0)),  # no predicted positives: precision 0
    ([0, -1], [True, True], [None, None], (2, 0, 0, 1, 1, 0.0, 0.0, 0.0, 50.0)),  # no verdict predicts "clean"
    ([-1, -1], [True, True], [-1, 1], (2, 0, 1, 0, 1, 0.0, 0.0, 0.0, 50.0)),  # no positives: recall 0
    ([0, 1], [False, False], [0, 1], (0, 0, 0, 0, 0, None, None, None, None)),  # no items: nothing measured
    ([2, 0, -1], [True, True, True], [0, 0, -1], (3, 2, 0, 0, 1, 100.0, 100.0, 100.0, 100.0)),  # any step counts
]


@pytest.mark.parametrize("labels, answer_correct, verdicts, expected", FPB_CASES)
def test_flawed_positive_scores(labels, answer_correct, verdicts, expected):
    s = flawed_positive_scores(labels, answer_correct, verdicts)
    got = (s.n, s.true_positive, s.false_positive, s.false_negative, s.true_negative,
           s.precision, s.recall, s.f1, s.accuracy)
    assert got == pytest.approx(expected)


def test_grm_metrics_agree_with_the_testbed_scorer():
    """Cross-check with the testbed's own scorer (fractions, 0 for an empty class) on random verdicts."""
    from fapo.testbed.evaluate import score_verdicts

    rng = random.Random(0)
    for _ in range(50):
        rows, verdicts = [], []
        for _ in range(rng.randint(2, 30)):
            steps = rng.randint(1, 6)
            rows.append({"label": rng.randint(-1, steps - 1), "final_answer_correct": rng.random() < 0.6})
            verdicts.append(rng.choice([None, -1, *range(steps)]))
        rows[0]["label"], rows[1]["label"] = -1, 0  # both classes present
        ref = score_verdicts(rows, verdicts)
        pb = processbench_scores([r["label"] for r in rows], verdicts)
        fpb = flawed_positive_scores([r["label"] for r in rows], [r["final_answer_correct"] for r in rows], verdicts)
        assert (pb.acc_err, pb.acc_corr, pb.f1) == pytest.approx((100 * ref.acc_err, 100 * ref.acc_corr, 100 * ref.f1))
        if fpb.n == 0:  # nothing measured: None here, where the testbed's fractions say 0
            assert (fpb.precision, fpb.recall, fpb.f1) == (None, None, None) and ref.fpb_f1 == 0
            continue
        assert (fpb.precision, fpb.recall, fpb.f1) == pytest.approx(
            (100 * ref.fpb_precision, 100 * ref.fpb_recall, 100 * ref.fpb_f1))


# ------------------------------------------------------------------------------------ pass@k, maj@k


@pytest.mark.parametrize("n, c, k, expected", [
    (8, 1, 1, 0.125), (8, 1, 8, 1.0), (4, 2, 2, 1 - 1 / 6), (5, 0, 3, 0.0), (5, 5, 1, 1.0), (16, 4, 4, 1 - comb(12, 4) / comb(16, 4)),
])
def test_pass_at_k_hand_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_the_binomial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_majority_index():
    assert majority_index(["3", "5", "5", None, "3"]) == 0  # tie: the answer seen first
    assert majority_index(["a", "b", "b"]) == 1
    assert majority_index([None, None]) is None
    assert majority_index([]) is None
    assert pass_at_ks(16) == [1, 2, 4, 8, 16] and pass_at_ks(6) == [1, 2, 4, 6] and pass_at_ks(1) == [1]


# ------------------------------------------------------------------------------------ policy scores


def _rollout(problem, sample, correct, pred, verdict=None, judge_status=None, status="ok", tokens=10, steps=2):
    truncated = tokens >= 20
    return Rollout(problem, sample, "text", tokens, truncated, steps, correct, pred, status, not truncated, verdict,
                   judge_status)


def test_score_rollouts_hand_computed():
    rollouts = [
        # problem 0: 2 of 4 correct (one clean, one flawed); "7" ties "5" and comes first: maj wrong
        _rollout(0, 0, False, "7"), _rollout(0, 1, True, "5", -1, "ok"),
        _rollout(0, 2, True, "5", 1, "ok"), _rollout(0, 3, False, "7"),
        # problem 1: 1 of 4 correct with a failed judgement; "8" was truncated, so it is no answer and
        # does not vote: the majority "3" is correct
        _rollout(1, 0, True, "3", None, "error"), _rollout(1, 1, False, None, status="no_answer"),
        _rollout(1, 2, False, None, status="timeout"), _rollout(1, 3, False, "8", steps=4, tokens=20),
    ]
    s = score_rollouts(rollouts, judged=True)
    assert (s.n_problems, s.n_rollouts, s.n_correct) == (2, 8, 3)
    assert s.avg_at_k == pytest.approx(37.5)
    assert s.pass_at[1] == pytest.approx(37.5)
    assert s.pass_at[2] == pytest.approx(100 * ((1 - 1 / 6) + (1 - 3 / 6)) / 2)
    assert s.pass_at[4] == pytest.approx(100.0)
    assert s.maj_at_k == pytest.approx(50.0)
    assert (s.n_judged, s.n_flawed) == (1 + 1, 1)
    assert s.flawed_among_correct == pytest.approx(50.0)  # among correct rollouts with a verdict
    assert s.flawed_among_all == pytest.approx(12.5)
    assert s.mean_length_tokens == pytest.approx(11.25) and s.mean_steps == pytest.approx(2.25)
    assert s.truncated == pytest.approx(12.5)
    assert s.verify_status == {"ok": 6, "no_answer": 1, "timeout": 1}
    assert s.judge_status == {"ok": 2, "error": 1}
    assert s.outcomes == {"clean correct": 1, "flawed correct": 1, "correct, no verdict": 1, "wrong": 2, "no answer": 3}


def test_score_rollouts_without_a_judge_has_no_flaw_rates():
    s = score_rollouts([_rollout(0, 0, True, "1"), _rollout(0, 1, False, "2")], judged=False)
    assert s.flawed_among_correct is None and s.flawed_among_all is None
    assert s.outcomes["correct, no verdict"] == 1 and s.judge_status == {}
    with pytest.raises(ValueError):
        score_rollouts([], judged=False)
