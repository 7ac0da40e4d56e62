"""The one place a judge is built (`fapo.grm.judge.make_judge`), the `Judge` protocol, and the one
judge-and-collect helper, against a real `serve-grm` oracle over loopback HTTP and the in-process oracle."""

from __future__ import annotations

import math

import pytest

from conftest import policy_case
from fapo.grm.client import GenRMClient
from fapo.grm.judge import Judge, judge_and_collect_sync, make_judge
from fapo.grm.local import LocalJudge
from fapo.grm.types import JudgeConfig, JudgeItem


def _items() -> list[JudgeItem]:
    problem, answer, solutions = policy_case()
    from fapo.steps import split_steps

    return [JudgeItem(problem, tuple(split_steps(solutions[name])), answer) for name in ("clean", "skip")]


def test_make_judge_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        make_judge()
    with pytest.raises(ValueError, match="exactly one"):
        make_judge(JudgeConfig(endpoints=("http://127.0.0.1:1/v1",)), oracle="testbed")
    with pytest.raises(ValueError, match="unknown oracle 'nosuch'"):
        make_judge(oracle="nosuch")


def test_every_judge_is_a_judge():
    http = make_judge(JudgeConfig(endpoints=("http://127.0.0.1:1/v1",), model="m", api_key="k"))
    assert isinstance(http, GenRMClient) and isinstance(http, Judge)
    assert (http.config.endpoints[0].model, http.config.endpoints[0].api_key) == ("m", "k")
    assert isinstance(make_judge(oracle="testbed"), LocalJudge) and isinstance(make_judge(oracle="testbed"), Judge)
    assert isinstance(make_judge(verdict_fn=lambda problem, steps: -1), Judge)


def test_the_served_oracle_and_the_in_process_oracle_give_the_same_verdicts():
    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import load_oracle

    items = _items()
    local, local_metrics = judge_and_collect_sync(lambda: make_judge(oracle="testbed"), items)
    with serve_in_thread(load_oracle("testbed")) as server:
        config = JudgeConfig(endpoints=(server.url,), timeout=30.0)
        served, metrics = judge_and_collect_sync(lambda: make_judge(config), items)
    assert [j.verdict for j in served] == [j.verdict for j in local] == [-1, 0]
    assert metrics["grm/judgements"] == 2 and metrics["grm/flawed_ratio"] == 0.5
    assert metrics["grm/endpoint/0/healthy"] == 1.0 and local_metrics["grm/requests"] == 2


def test_an_empty_batch_follows_the_empty_case_convention():
    judgements, metrics = judge_and_collect_sync(lambda: make_judge(JudgeConfig(endpoints=("http://127.0.0.1:1/v1",))), [])
    assert judgements == [] and metrics["grm/judgements"] == 0
    assert math.isnan(metrics["grm/flawed_ratio"]) and math.isnan(metrics["grm/latency_p50"])
