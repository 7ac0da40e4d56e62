"""One rule for "is this rollout correct", used by training rewards, policy evaluation and the testbed alike."""

from __future__ import annotations

import asyncio

import pytest

from fapo.boxed import single_final_box
from fapo.outcome import rollout_outcomes

CASES = [  # (completion, truncated, correct under "strict", correct under "last_boxed")
    ("2 + 3 = 5\n\nThe answer is \\boxed{5}", False, True, True),
    ("The answer is \\boxed{5}\n", False, True, True),
    ("The answer is $\\boxed{5}$.", False, True, True),  # closers after the box are not text
    ("\\[\\boxed{5}\\]", False, True, True),
    ("The answer is \\boxed{5}", True, False, False),  # cut at the length limit: no answer under either rule
    ("The answer is \\boxed{5}}}}}", False, False, True),  # padding: the reward hack the strict rule blocks
    ("\\boxed{4} or rather \\boxed{5}", False, False, True),  # two boxes
    ("The answer is \\boxed{5}. Or 6.", False, False, True),  # text after the box
    ("The answer is \\boxed{6}", False, False, False),
    ("The answer is 5", False, False, True),  # no box: math-verify's own extraction, "last_boxed" only
]


@pytest.mark.parametrize("rule", ["strict", "last_boxed"])
def test_the_rule_table(rule):
    texts = [c[0] for c in CASES]
    outcomes = rollout_outcomes(texts, ["5"] * len(CASES), [c[1] for c in CASES], rule, workers=1)
    expected = [c[2] if rule == "strict" else c[3] for c in CASES]
    assert [o.correct for o in outcomes] == expected
    assert all(o.answer_counted or not o.correct for o in outcomes)
    assert all(o.answer_counted == (not c[1] and (rule == "last_boxed" or single_final_box(c[0]) is not None))
               for o, c in zip(outcomes, CASES, strict=True))


def test_training_evaluation_and_the_testbed_agree(tmp_path):
    """The policy reward, `fapo.eval.policy.verify_samples` and `fapo.testbed.answer.are_correct` give the same
    verdict on every case (the testbed's problems, whose answer is 12)."""
    from fapo.eval.generation import Sample
    from fapo.eval.policy import verify_samples
    from fapo.eval.problems import EvalProblem
    from fapo.io import JsonlAppender
    from fapo.testbed.answer import are_correct
    from fapo.testbed.task import parse_problem
    from fapo.train.config import parse_config
    from fapo.train.reward_funcs import PolicyRewardState, score_policy_batch

    problem = "Start with 7. (1) Add 3. (2) Add 2."
    assert parse_problem(problem) is not None
    texts = [c[0].replace("5", "12").replace("6", "13").replace("4", "11") for c in CASES]
    cut = [c[1] for c in CASES]
    settings = parse_config({"fapo": {"model": str(tmp_path), "train_data": "d", "answer_format": "strict",
                                      "verify_workers": 1}}).fapo
    state = PolicyRewardState(settings, 100, frozenset({0}), None, JsonlAppender(None))
    ids = [[1] * 100 if c else [1, 0] for c in cut]  # truncated: max length and no EOS
    rewards = asyncio.run(score_policy_batch(state, texts, ids, [problem] * len(texts), ["12"] * len(texts), 1, None))
    samples = [[Sample(t, 10, c) for t, c in zip(texts, cut, strict=True)]]
    evaluated = [r.correct for r in verify_samples([EvalProblem("p0", problem, "12")], samples, "strict")]
    testbed = are_correct([problem] * len(texts), texts, cut)
    assert [r == 1.0 for r in rewards] == evaluated == testbed == [c[2] for c in CASES]


LONG_AFTER = " and then some more checking" * 12  # 336 characters: pushes a box out of the last 300
TAIL_CASES = [  # (completion, truncated, correct under "tail", correct under "wrong"), rule "last_boxed"
    ("x" * 1000 + " The answer is \\boxed{5}", True, True, False),  # cut, answer in the tail: the recipe counts it
    ("The answer is \\boxed{5}" + LONG_AFTER, True, False, False),  # cut, box before the tail
    ("The answer is \\boxed{5}" + LONG_AFTER, False, False, True),  # complete: the recipe still reads only the tail
    ("2 + 3 = 5\n\nThe answer is \\boxed{5}", False, True, True),
    ("The answer is \\boxed{6}", True, False, False),
]


@pytest.mark.parametrize("truncation", ["tail", "wrong"])
def test_the_truncation_rule_table(truncation):
    texts, cut = [c[0] for c in TAIL_CASES], [c[1] for c in TAIL_CASES]
    outcomes = rollout_outcomes(texts, ["5"] * len(texts), cut, "last_boxed", truncation=truncation, workers=1)
    assert [o.correct for o in outcomes] == [c[2] if truncation == "tail" else c[3] for c in TAIL_CASES]
    with pytest.raises(ValueError, match="truncation rule"):
        rollout_outcomes(texts, ["5"] * len(texts), cut, truncation="maybe")


def test_the_tail_rule_is_the_recipes_verify():
    """Reference: verl-recipe fapo's `verify` keeps `solution_str[-300:]` and takes its last \\boxed{}."""
    from fapo.boxed import last_boxed

    texts = [c[0] for c in TAIL_CASES] + [c[0] + "}}" for c in TAIL_CASES]
    recipe = [(last_boxed(t[-300:]) or "").strip() == "5" for t in texts]
    ours = [o.correct for o in rollout_outcomes(texts, ["5"] * len(texts), [True] * len(texts), truncation="tail",
                                                 workers=1)]
    assert ours == recipe
