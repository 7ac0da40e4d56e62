"""No silent GRPO: a run whose judgements keep failing stops with the reason (or warns at every step), on the
TRL reward paths and in the verl adapter, against a real `serve-grm` over loopback whose GenRM fails."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from failing_genrm import BrokenGenRM
from fapo.grm.failure_window import FailureBudget, FailureWindow, JudgeFailuresExceeded
from fapo.io import JsonlAppender
from fapo.serving.launch import serve_in_thread
from fapo.train.reward_funcs import PolicyRewardState, score_policy_batch
from test_train import CLEAN, POLICY_ANSWER, POLICY_PROBLEM, SKIP, WRONG, policy_config


@pytest.mark.parametrize(("statuses", "budget", "exceeded"), [
    (["ok"] * 10, FailureBudget(0.2, 10), False),
    (["error"] * 2 + ["ok"] * 8, FailureBudget(0.2, 10), False),  # 20%: at the bound, not over it
    (["error", "invalid", "error"], FailureBudget(0.2, 10), True),  # 3 > 2 trips before the window is full
    (["error"] * 3 + ["ok"] * 10, FailureBudget(0.2, 10), False),  # the old failures left the window
    (["error"] * 10, FailureBudget(1.0, 10), False),  # rate 1: never
    (["invalid"], FailureBudget(0.0, 10), True),  # rate 0: any failure
])
def test_the_window_table(statuses, budget, exceeded):
    window = FailureWindow(budget)
    window.record(statuses)
    assert window.exceeded() is exceeded
    if exceeded:
        with pytest.raises(JudgeFailuresExceeded, match="turning into GRPO"):
            window.check("here")
    if not exceeded:
        assert window.check("here") is None
    warn = FailureWindow(FailureBudget(budget.rate, budget.window, "warn"))
    warn.record(statuses)
    assert (warn.check("here") is not None) is exceeded


def test_bad_budgets_are_refused():
    for bad in ({"rate": 1.5}, {"rate": math.nan}, {"window": 0}, {"action": "ignore"}):
        with pytest.raises(ValueError):
            FailureBudget(**bad)


@pytest.fixture(scope="module")
def broken_url():
    with serve_in_thread(BrokenGenRM("no_verdict"), max_wait_ms=0) as server:
        yield server.url


def reward_state(tmp_path, url, **fapo) -> PolicyRewardState:
    from fapo.train.session import build_judge_factory

    settings = policy_config(tmp_path, tmp_path, oracle=None, judge={"endpoints": [url], "retries": 0}, **fapo).fapo
    return PolicyRewardState(settings, 40, frozenset({3}), build_judge_factory(settings), JsonlAppender(None))


def score(state, step: int) -> list[float]:
    completions = [[{"role": "assistant", "content": c}] for c in (CLEAN, SKIP, WRONG)]
    return asyncio.run(score_policy_batch(state, completions, [[1, 2, 3]] * 3, [POLICY_PROBLEM] * 3,
                                          [POLICY_ANSWER] * 3, step, {}.__setitem__))


def test_the_trl_reward_stops_once_the_window_is_over_budget(broken_url, tmp_path):
    state = reward_state(tmp_path, broken_url, judge_failure_window=10, judge_failure_rate=0.3)
    assert score(state, 1) == [1.0, 1.0, -1.0]  # 2 of 2 failed: not yet more than 30% of 10
    with pytest.raises(JudgeFailuresExceeded, match=r"4 of the last 4 judgements failed \(0 errors, 4 without a "
                                                    r"valid verdict\), more than 30% of 10"):
        score(state, 2)


def test_the_trl_reward_warns_at_every_step_when_told_to(broken_url, tmp_path, caplog):
    state = reward_state(tmp_path, broken_url, judge_failure_window=10, judge_failure_rate=0.1,
                         on_judge_failures="warn")
    with caplog.at_level(logging.WARNING, logger="fapo.train.reward_funcs"):
        for step in (1, 2, 3):
            assert score(state, step) == [1.0, 1.0, -1.0]
    warnings = [r.getMessage() for r in caplog.records if "turning into GRPO" in r.getMessage()]
    assert len(warnings) == 3 and warnings[0].startswith("fapo (step 1): 2 of the last 2")


def test_the_async_trainers_reward_stops_too(broken_url, tmp_path):
    from fapo.train.async_reward import FapoAsyncReward

    settings = policy_config(tmp_path, tmp_path, oracle=None, judge={"endpoints": [broken_url], "retries": 0},
                             judge_failure_window=4, judge_failure_rate=0.25).fapo
    reward = FapoAsyncReward(settings, 40, frozenset({3}), None)
    group = [[{"role": "assistant", "content": c}] for c in (CLEAN, SKIP)]
    with pytest.raises(JudgeFailuresExceeded):
        asyncio.run(reward(prompts=[[]] * 2, completions=group, completion_ids=[[1, 2, 3]] * 2,
                           problem=[POLICY_PROBLEM] * 2, answer=[POLICY_ANSWER] * 2))


def test_the_verl_adapter_stops_or_warns(broken_url, caplog):
    from fapo.integrations.verl import compute_score_fapo

    info = {"question": POLICY_PROBLEM, "split": "train"}
    kwargs = {"judge_endpoints": broken_url, "judge_retries": 0, "judge_max_tokens": 256, "judge_failure_window": 5,
              "judge_failure_rate": 0.4}

    async def run(n: int, **extra) -> list[dict]:
        return [await compute_score_fapo("testbed", CLEAN, POLICY_ANSWER, info, **kwargs, **extra) for _ in range(n)]

    first = asyncio.run(run(2))
    assert [r["judge_status"] for r in first] == ["invalid", "invalid"] and first[0]["score"] == 1.0
    with pytest.raises(JudgeFailuresExceeded, match="compute_score_fapo: 3 of the last 3"):
        asyncio.run(run(1))
    with caplog.at_level(logging.WARNING, logger="fapo.integrations.verl"):
        results = asyncio.run(run(9, on_judge_failures="warn"))
    assert all(r["judge_status"] == "invalid" for r in results)
    warned = [r for r in caplog.records if "turning into GRPO" in r.getMessage()]
    assert len(warned) == 2  # the first judgement over the budget, then once per window (5) while it holds
