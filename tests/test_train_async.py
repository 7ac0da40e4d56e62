"""FAPO on TRL's AsyncGRPOTrainer, the parts a CPU can run: the reward pickles (the rollout worker is a
spawned child), scores groups inside a spawned child with TRL's own group scoring against real
`serve-grm` endpoints, and stays correct under a slow and a dead judge. Training itself needs vLLM and
NCCL: `@pytest.mark.gpu` at the end."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import pickle
import socket
import time
from pathlib import Path

import pytest

from fapo.serving.launch import serve_in_thread
from fapo.serving.server import load_oracle
from fapo.train.async_reward import METRICS_FILE, FapoAsyncReward, MetricsTail
from fapo.train.async_trainer import add_rollout_metrics, async_grpo_args
from test_train import CLEAN, POLICY_ANSWER, POLICY_PROBLEM, SKIP, TRAILING, WRONG, policy_config, read_jsonl

GROUP = [CLEAN, SKIP, WRONG, TRAILING]
FAPO_REWARDS = [1.0, 0.0, -1.0, -1.0]  # the skip is a flawed positive; `}}}` breaks the strict format
RLVR_REWARDS = [1.0, 1.0, -1.0, -1.0]  # no verdict: no penalty


def score_group(reward: FapoAsyncReward, completions=GROUP) -> list[float]:
    """One group, called the way AsyncGRPOTrainer's worker calls a reward function."""
    n = len(completions)
    return asyncio.run(reward(prompts=[[{"role": "user", "content": POLICY_PROBLEM}]] * n,
                              completions=[[{"role": "assistant", "content": c}] for c in completions],
                              completion_ids=[[1, 2, 3]] * n, problem=[POLICY_PROBLEM] * n,
                              answer=[POLICY_ANSWER] * n))


def http_reward(tmp_path: Path, urls: list[str], **judge) -> FapoAsyncReward:
    settings = policy_config(tmp_path, tmp_path, oracle=None, judge={"endpoints": urls, **judge}).fapo
    return FapoAsyncReward(settings, 40, frozenset({3}), str(tmp_path / "run"))


class SleepingOracle:
    """serve-grm's testbed oracle behind a model that takes `delay` seconds per batch (a slow GenRM)."""

    def __init__(self, delay: float):
        self.inner = load_oracle("testbed")
        self.model_name = self.inner.model_name
        self.delay = delay

    def generate(self, requests):
        time.sleep(self.delay)
        return self.inner.generate(requests)

    def count_prompt_tokens(self, messages):
        return self.inner.count_prompt_tokens(messages)


def test_the_reward_pickles_and_scores_the_same_after_the_round_trip(tmp_path):
    with serve_in_thread(load_oracle("testbed")) as server:
        reward = http_reward(tmp_path, [server.url])
        assert score_group(reward) == FAPO_REWARDS  # its judge client is now open (on a loop that has ended)
        clone = pickle.loads(pickle.dumps(reward))
        assert clone._state is None and clone.groups == 1 and clone.settings == reward.settings
        assert score_group(clone) == FAPO_REWARDS  # opens its own client on its own loop
        assert score_group(reward) == FAPO_REWARDS  # a new loop: the old client is dropped, a new one opened
    critiques = read_jsonl(tmp_path / "run" / "critiques.jsonl")
    assert [c["verdict"] for c in critiques] == [-1, 0] * 3 and [c["step"] for c in critiques] == [1, 1, 2, 2, 2, 2]


def test_groups_are_scored_in_a_spawned_worker_against_serve_grm_endpoints(tmp_path):
    from trl.rewards import get_soft_overlong_punishment

    with serve_in_thread(load_oracle("testbed")) as one, serve_in_thread(load_oracle("testbed")) as two:
        reward = http_reward(tmp_path, [one.url, two.url])
        payload = pickle.dumps([reward, get_soft_overlong_punishment(40, 8)])  # what the worker's start() sends
        groups = [{"problem": POLICY_PROBLEM, "answer": POLICY_ANSWER, "completions": GROUP,
                   "completion_ids": [[5] * 10, [5] * 10, [5] * 10, [5] * 36]} for _ in range(3)]
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        from async_worker_child import score_groups_in_child

        child = ctx.Process(target=score_groups_in_child, args=(payload, groups, out))
        child.start()
        scored = out.get(timeout=180)
        child.join(timeout=30)
    assert "error" not in scored, scored["error"]
    assert child.exitcode == 0
    assert len(scored) == 3
    for samples in scored:
        assert [s["rewards/fapo_reward"] for s in samples] == FAPO_REWARDS
        assert [s["rewards/soft_overlong_punishment_reward"] for s in samples] == [0.0, 0.0, 0.0, -0.5]
        assert [s["reward"] for s in samples] == [1.0, 0.0, -1.0, -1.5]
        assert samples[0]["advantage"] > samples[1]["advantage"] > samples[2]["advantage"] > samples[3]["advantage"]
    run = tmp_path / "run"
    critiques = read_jsonl(run / "critiques.jsonl")
    assert [c["step"] for c in critiques] == [1, 1, 2, 2, 3, 3]
    assert {c["endpoint"] for c in critiques} <= {one.url, two.url} and all(c["status"] == "ok" for c in critiques)
    rows = MetricsTail(run / METRICS_FILE).read()
    assert [r["group"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert row["grm/judged"] == 2 and row["grm/errors"] == 0 and row["grm/flawed_ratio"] == 0.5
        assert row["verify/accuracy"] == 0.5 and row["reward/mean"] == -0.25
        # the step waits on the judge at most for the judge's whole span (first request to last verdict)
        assert 0 < row["time/judge_busy_s"] and row["time/judge_s"] <= row["time/judge_busy_s"]
    window: dict[str, list] = {}
    add_rollout_metrics(window, rows)
    assert window["grm/judged"] == [2.0, 2.0, 2.0] and "group" not in window


def test_a_slow_judge_costs_time_not_verdicts(tmp_path):
    with serve_in_thread(SleepingOracle(0.4), max_batch=1) as server:
        reward = http_reward(tmp_path, [server.url], timeout=10.0)
        assert score_group(reward) == FAPO_REWARDS
    row = MetricsTail(tmp_path / "run" / METRICS_FILE).read()[0]
    assert row["grm/errors"] == 0 and row["grm/judged"] == 2
    assert row["time/judge_busy_s"] >= 0.8  # two requests, one at a time, 0.4 s each
    assert row["grm/latency_p95"] >= 0.4


def test_a_judge_slower_than_its_timeout_gives_no_penalty_and_does_not_hang(tmp_path):
    with serve_in_thread(SleepingOracle(3.0), max_batch=1) as server:
        reward = http_reward(tmp_path, [server.url], timeout=0.5, retries=0)
        start = time.perf_counter()
        assert score_group(reward) == RLVR_REWARDS
        elapsed = time.perf_counter() - start
    assert elapsed < 2.5
    row = MetricsTail(tmp_path / "run" / METRICS_FILE).read()[0]
    assert row["grm/errors"] == 2 and row["grm/flawed_of_all"] == 0.0
    critiques = read_jsonl(tmp_path / "run" / "critiques.jsonl")
    assert [c["status"] for c in critiques] == ["error", "error"] and [c["verdict"] for c in critiques] == [None, None]


def test_a_dead_judge_is_counted_not_a_verdict(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket closes
    reward = http_reward(tmp_path, [f"http://127.0.0.1:{port}/v1"], timeout=1.0, retries=1)
    start = time.perf_counter()
    assert score_group(reward) == RLVR_REWARDS
    assert time.perf_counter() - start < 10
    row = MetricsTail(tmp_path / "run" / METRICS_FILE).read()[0]
    assert row["grm/errors"] == 2 and row["verify/accuracy"] == 0.5 and row["reward/mean"] == 0.0


def test_metrics_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / METRICS_FILE
    tail = MetricsTail(path)
    assert tail.read() == []
    path.write_text('{"group": 1, "grm/judged": 2}\n{"group": 2, "grm/ju')
    assert tail.read() == [{"group": 1, "grm/judged": 2}]
    with path.open("a") as f:
        f.write('dged": 3}\n')
    assert tail.read() == [{"group": 2, "grm/judged": 3}] and tail.read() == []


def test_async_args_keep_what_asyncgrpo_knows_and_say_what_it_drops(tmp_path):
    config = policy_config(tmp_path, tmp_path, trl={"vllm_gpu_memory_utilization": 0.5, "max_staleness": 2,
                                                    "loss_type": "dapo", "delta": None}, trainer="async")
    lines: list[str] = []
    args = async_grpo_args(config, tmp_path / "run", 3, lines.append)
    assert args.max_steps == 3 and args.num_generations == 4 and args.max_staleness == 2
    assert len(lines) == 1 and "groups of 4 from vLLM" in lines[0]
    assert "up to max_staleness = 2 optimizer steps before" in lines[0]
    assert lines[0].endswith("not used by AsyncGRPOTrainer: vllm_gpu_memory_utilization")


def test_async_refuses_the_paper_config_settings_it_would_drop(tmp_path):
    """The 7B config's dual clip and generation batch have no AsyncGRPOTrainer equivalent: one line names them;
    its token-mean loss, group std and untruncated masking are what AsyncGRPOTrainer does, so they pass."""
    from fapo.train.config import ConfigError, load_config

    paper = Path(__file__).resolve().parents[1] / "configs" / "qwen2.5-math-7b-fapo.yaml"
    config = load_config(paper, ["fapo.trainer=async"])
    with pytest.raises(ConfigError) as err:
        async_grpo_args(config, tmp_path / "run", 3)
    message = str(err.value)
    assert "\n" not in message and message.startswith("--trainer async would drop ")
    for dropped in ("delta: 10.0", "generation_batch_size: 4096"):
        assert dropped in message
    for same in ("loss_type", "scale_rewards", "mask_truncated_completions", "beta"):
        assert same not in message
    ok = load_config(paper, ["fapo.trainer=async", "delta=null", "generation_batch_size=null", "bf16=false",
                             "use_cpu=true"])
    lines: list[str] = []
    assert async_grpo_args(ok, tmp_path / "run", 3, lines.append).max_staleness == 4
    assert "max_staleness = 4" in lines[0]


@pytest.mark.gpu
def test_async_training_on_a_gpu_with_vllm(memorised_policy_dir, tmp_path):
    """AsyncGRPOTrainer end to end: needs CUDA, vLLM and a `vllm serve` of the policy at $FAPO_VLLM_URL."""
    import importlib.util
    import os

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None or "FAPO_VLLM_URL" not in os.environ:
        pytest.skip("needs a CUDA device, vLLM, and a vLLM server of the policy at $FAPO_VLLM_URL")
    from fapo.train.runner import train_policy
    from test_train import _assert_trained, write_policy_data

    data = write_policy_data(tmp_path / "train.jsonl")
    with serve_in_thread(load_oracle("testbed")) as server:
        config = policy_config(memorised_policy_dir, data, {"use_cpu": False, "bf16": True,
                                                            "vllm_server_base_url": os.environ["FAPO_VLLM_URL"]},
                               oracle=None, judge={"endpoints": [server.url]}, trainer="async")
        result = train_policy(config, tmp_path / "run")
    _assert_trained(result, memorised_policy_dir)


def test_train_policy_trainer_async_says_what_it_needs_where_vllm_or_cuda_is_missing(memorised_policy_dir, tmp_path,
                                                                                     capsys):
    import importlib.util

    import torch
    import yaml

    from fapo.cli import main
    from test_train import TRL_TINY, write_policy_data

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and CUDA are both here: the async trainer can run")
    fapo = {"model": str(memorised_policy_dir), "train_data": str(write_policy_data(tmp_path / "train.jsonl")),
            "oracle": "testbed"}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TRL_TINY, "fapo": fapo}))
    assert main(["train", "policy", "--config", str(config), "--output", str(tmp_path / "run"),
                 "--trainer", "async"]) == 2
    err = capsys.readouterr().err
    assert "fapo.trainer: async" in err and "fapo.rollout: streaming" in err
    assert not (tmp_path / "run").exists()  # refused before any work
