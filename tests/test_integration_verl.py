"""fapo.integrations.verl through our own calls: a real `serve-grm` (testbed oracle) over loopback for the
OpenAI path, and a `/generate` stand-in with a real tokenizer for verl's router path. verl itself is
exercised by tests/test_verl_real.py (`make test-verl`)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

from conftest import policy_case
from fapo.integrations.verl import (
    NO_ANSWER,
    compute_score_baseline,
    compute_score_fapo,
    compute_score_genrm,
    judge_metrics,
)
from fapo.serving.launch import serve_in_thread
from fapo.testbed.oracle import OracleBackend, oracle_reply
from verl_standins import GenerateStandIn, boxed_reply

PROBLEM, GOLD, SOLUTIONS = policy_case()  # clean, skip (a flawed positive), wrong
TRAIN = {"question": PROBLEM, "split": "train"}
KEYS = {"score", "acc", "pred", "is_flawed_positive", "judge_status", "judge_latency_s", "verify_status"}


@pytest.fixture(scope="module")
def oracle_url():
    with serve_in_thread(OracleBackend(), max_wait_ms=0) as server:
        yield server.url


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def fapo(solution: str, info: dict | None = None, gold: str = GOLD, **kwargs) -> dict:
    return asyncio.run(compute_score_fapo("testbed", solution, gold, TRAIN if info is None else info, **kwargs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_importable_without_verl_and_without_torch():
    code = ("import sys, fapo.integrations.verl; "
            "bad = [m for m in ('torch', 'transformers', 'verl') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("case", "score", "acc", "flawed", "status"),
    [("clean", 1.0, True, False, "ok"), ("skip", 0.0, True, True, "ok"), ("wrong", -1.0, False, False, "skipped")],
)
def test_openai_path_against_a_real_serve_grm(oracle_url, case, score, acc, flawed, status):
    out = fapo(SOLUTIONS[case], judge_endpoints=oracle_url)
    assert set(out) == KEYS
    assert (out["score"], out["acc"], out["is_flawed_positive"], out["judge_status"]) == (score, acc, flawed, status)
    assert out["pred"] == ("3" if case == "wrong" else "5") and out["verify_status"] == "ok"
    assert (out["judge_latency_s"] > 0) == (status == "ok")


def test_endpoints_from_the_environment_and_penalty(oracle_url, monkeypatch):
    monkeypatch.setenv("FAPO_JUDGE_ENDPOINTS", f" {oracle_url} ,")
    assert fapo(SOLUTIONS["skip"], penalty=0.5)["score"] == 0.5


def test_test_split_is_never_judged():
    # no GenRM is configured at all: judging would raise, so "skipped" proves no judge was asked
    out = fapo(SOLUTIONS["skip"], {"question": PROBLEM, "split": "test"})
    assert (out["score"], out["judge_status"], out["is_flawed_positive"]) == (1.0, "skipped", False)


def test_judge_down_is_an_error_status_and_no_penalty():
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = fapo(SOLUTIONS["skip"], judge_endpoints=[url], judge_retries=1, judge_timeout=5)
    assert (out["score"], out["judge_status"], out["is_flawed_positive"]) == (1.0, "error", False)


def test_garbage_verdict_is_invalid_and_no_penalty(oracle_url):
    # the oracle answers a prompt about a non-testbed problem without any \boxed{}
    info = {"question": "What is 2 + 3?", "split": "train"}
    out = fapo("2 + 3 = 5, so \\boxed{5}", info, gold="5", judge_endpoints=oracle_url)
    assert (out["score"], out["judge_status"], out["is_flawed_positive"]) == (1.0, "invalid", False)


@pytest.mark.parametrize(("case", "score", "status"), [("clean", 1.0, "ok"), ("skip", 0.0, "ok"), ("wrong", -1.0, "skipped")])
def test_router_path_sends_token_ids_and_reads_output_ids(tokenizer, case, score, status):
    async def run() -> tuple[dict, list]:
        async with GenerateStandIn(tokenizer, oracle_reply) as router:
            out = await compute_score_fapo("testbed", SOLUTIONS[case], GOLD, TRAIN,
                                           reward_router_address=router.address, reward_model_tokenizer=tokenizer)
            return out, router.requests

    out, requests = asyncio.run(run())
    assert (out["score"], out["judge_status"]) == (score, status)
    assert len(requests) == (status == "ok")
    if requests:
        (body,) = requests
        assert set(body) == {"input_ids", "sampling_params"}
        assert body["sampling_params"] == {"max_new_tokens": 16384}  # the recipe's: its budget, the server's decoding
        prompt = tokenizer.decode(body["input_ids"])
        assert "<paragraph_0>" in prompt and "[Ground Truth]\n\n5" in prompt and prompt.rstrip().endswith("assistant")


@pytest.mark.parametrize(("verdict", "score", "status"), [("-1", 1.0, "ok"), ("0", 0.0, "ok"), ("9", 1.0, "invalid"),
                                                          ("1+1", 1.0, "invalid"), ("__import__('os')", 1.0, "invalid")])
def test_router_path_reads_verdicts_strictly(tokenizer, verdict, score, status):
    async def run() -> dict:
        async with GenerateStandIn(tokenizer, boxed_reply(verdict)) as router:
            return await compute_score_fapo("testbed", SOLUTIONS["skip"], GOLD, TRAIN,
                                            reward_router_address=router.address, reward_model_tokenizer=tokenizer)

    out = asyncio.run(run())  # the skip solution has 2 paragraphs: 9 is out of range
    assert (out["score"], out["judge_status"]) == (score, status)


def test_router_answer_that_is_not_an_answer_is_an_error(tokenizer):
    async def run() -> dict:
        async with GenerateStandIn(tokenizer, oracle_reply, raw_reply=b'{"output_ids": "nope"}') as router:
            return await compute_score_fapo("testbed", SOLUTIONS["clean"], GOLD, TRAIN, judge_retries=0,
                                            reward_router_address=router.address, reward_model_tokenizer=tokenizer)

    out = asyncio.run(run())
    assert (out["score"], out["judge_status"], out["is_flawed_positive"]) == (1.0, "error", False)


def test_misconfiguration_is_a_clear_error(oracle_url):
    with pytest.raises(ValueError, match="needs a GenRM"):
        fapo(SOLUTIONS["clean"])
    with pytest.raises(ValueError, match="question"):
        fapo(SOLUTIONS["clean"], {"split": "train"}, judge_endpoints=oracle_url)
    with pytest.raises(TypeError, match="judge_endpoint'"):
        fapo(SOLUTIONS["clean"], judge_endpoint=oracle_url)
    for penalty in (-1, float("nan"), float("inf"), 1e300):  # nan/inf would poison the group's advantages
        with pytest.raises(ValueError, match=r"penalty \(λ\) must be a number in \[0, 1000\]"):
            fapo(SOLUTIONS["clean"], judge_endpoints=oracle_url, penalty=penalty)


def test_baseline_verifies_only():
    right = asyncio.run(compute_score_baseline(SOLUTIONS["skip"], GOLD, data_source="t", extra_info=TRAIN))
    wrong = asyncio.run(compute_score_baseline("", GOLD, data_source="t", extra_info=TRAIN))
    assert right == {"score": 1.0, "acc": True, "pred": "5", "verify_status": "ok"}
    assert (wrong["score"], wrong["acc"], wrong["pred"]) == (-1.0, False, NO_ANSWER)


def test_judge_metrics_count_this_process_judgements(oracle_url):
    async def run() -> tuple[dict, dict]:
        before = judge_metrics()  # clients of earlier tests' loops may still be alive: compare differences
        for case in ("clean", "skip", "skip", "wrong"):
            await compute_score_fapo("testbed", SOLUTIONS[case], GOLD, TRAIN, judge_endpoints=oracle_url)
        return before, judge_metrics()

    before, after = asyncio.run(run())
    moved = {k: after[k] - before.get(k, 0.0) for k in ("grm/judgements", "grm/ok", "grm/flawed", "grm/cache_hits")}
    assert moved == {"grm/judgements": 3, "grm/ok": 3, "grm/flawed": 2, "grm/cache_hits": 1}
    assert 0 < after["grm/flawed_ratio"] < 1


# (critique, label, total_steps) -> R_outcome + R_process: docs/design.md §1.2 worked by hand
GENRM_TABLE = [
    ("ok \\boxed{-1}", -1, 5, 1.0, True, -1),
    ("\\boxed{2}", -1, 5, -1.0, False, 2),
    ("\\boxed{-1}", 3, 5, -1.0, False, -1),
    ("\\boxed{3}", 3, 5, 1.0, True, 3),
    ("\\boxed{1}", 3, 5, 0.6, True, 1),
    ("\\boxed{4}", 0, 8, 0.5, True, 4),
    ("\\boxed{5}", 3, 5, -1.0, False, None),  # out of range: invalid
    ("no box", -1, 5, -1.0, False, None),
    ("\\boxed{two}", 1, 5, -1.0, False, None),
]


@pytest.mark.parametrize(("critique", "label", "steps", "score", "acc", "pred"), GENRM_TABLE)
def test_genrm_reward_table(critique, label, steps, score, acc, pred):
    out = compute_score_genrm(critique, str(label), {"total_steps": steps}, data_source="fapo-critic")
    assert out == {"score": pytest.approx(score), "acc": acc, "pred": pred, "gt": label}


def test_genrm_reward_rejects_bad_rows():
    with pytest.raises(ValueError, match="total_steps"):
        compute_score_genrm("\\boxed{1}", 1, {})
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score_genrm("\\boxed{1}", "first", {"total_steps": 3})
    with pytest.raises(ValueError, match="ground_truth 3 names no step of a 3-step solution"):
        compute_score_genrm("\\boxed{1}", 3, {"total_steps": 3})
    for fractional in (2.5, "2.5", True, float("inf")):
        with pytest.raises(ValueError, match="total_steps"):
            compute_score_genrm("\\boxed{1}", 1, {"total_steps": fractional})
    assert compute_score_genrm("\\boxed{1}", 1, {"total_steps": 3.0})["score"] == 1.0


def test_every_judge_config_field_is_a_reward_kwarg():
    """verl's reward_kwargs reach the same JudgeConfig as a training config: judge_<field> for every field."""
    from fapo.grm.types import JudgeConfig
    from fapo.integrations.verl import SETTINGS, VERL_JUDGE_DEFAULTS, _settings

    assert {f"judge_{name}" for name in ("tie_break", "top_p", "votes", "breaker_failures", "backoff_max")} <= set(SETTINGS)
    settings = _settings({"judge_tie_break": "clean", "judge_votes": 3, "judge_temperature": 0.7, "judge_model": "g"},
                         "compute_score_fapo")
    config = settings.judge_config(("http://genrm-0:8001/v1",))
    assert isinstance(config, JudgeConfig) and (config.tie_break, config.votes, config.temperature) == ("clean", 3, 0.7)
    assert config.endpoints[0].model == "g" and config.timeout == VERL_JUDGE_DEFAULTS["timeout"]
    with pytest.raises(ValueError, match="tie_break must be"):
        _settings({"judge_tie_break": "maybe"}, "compute_score_fapo")


def test_the_verl_and_trl_paths_read_answers_by_the_same_tail_rule():
    """verl cannot tell a reward function that a response was cut; the recipe reads every response's last 300
    characters, and so do both of fapo's paths (TRL with `fapo.truncation_rule: tail`), cut or not."""
    from fapo.outcome import rollout_outcomes
    from test_outcome import TAIL_CASES

    texts = [c[0] for c in TAIL_CASES]
    trl = [o.correct for o in rollout_outcomes(texts, ["5"] * len(texts), [c[1] for c in TAIL_CASES],
                                               truncation="tail", workers=1)]
    verl = [asyncio.run(compute_score_baseline(t, "5"))["acc"] for t in texts]
    assert verl == trl == [c[2] for c in TAIL_CASES]
    with pytest.raises(ValueError, match="verl does not tell a reward function"):
        asyncio.run(compute_score_baseline(texts[0], "5", truncation_rule="wrong"))


def test_the_genrm_reward_has_the_recipes_name():
    from fapo.integrations import verl

    assert verl.compute_score_fapo_genrm is compute_score_genrm
    assert compute_score_genrm("\\boxed{1}", "1", {"total_steps": 3})["score"] == \
        verl.compute_score_fapo_genrm("\\boxed{1}", "1", {"total_steps": 3})["score"]


def test_defaults_against_a_real_serve_grm_process_judge_a_flawed_positive_as_flawed():
    """The verl adapter with every default (the recipe's 16,384-token budget, the server's decoding) against a
    `fapo serve-grm` process with its defaults: the flawed positive scores 1 − λ = 0 with a real verdict, never
    an HTTP 400 read as "no penalty"."""
    from fapo.serving.launch import launch_subprocess

    with launch_subprocess(["--oracle", "testbed", "--port", "0"]) as server:
        flawed = fapo(SOLUTIONS["skip"], judge_endpoints=server.url)
        clean = fapo(SOLUTIONS["clean"], judge_endpoints=server.url)
    assert (flawed["score"], flawed["is_flawed_positive"], flawed["judge_status"]) == (0.0, True, "ok")
    assert (clean["score"], clean["is_flawed_positive"], clean["judge_status"]) == (1.0, False, "ok")
