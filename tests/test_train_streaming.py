"""Judging that overlaps generation and verification on GRPOTrainer: the synchronous path sends each
rollout to the judge as soon as it is verified; the streaming rollout hands each rollout over as it ends
(and each chunk as it finishes) while the rest generates, with the same rewards, metrics and critiques."""

from __future__ import annotations

import asyncio
import time

import pytest

from fapo.grm.judge import resolve_oracle
from fapo.grm.local import LocalJudge
from fapo.io import JsonlAppender
from fapo.serving.launch import serve_in_thread
from fapo.serving.server import load_oracle
from fapo.train.assess import assess_rollouts
from fapo.train.reward_funcs import PolicyRewardState, score_policy_batch
from fapo.train.streaming import chunk_bounds
from test_train import (
    CLEAN,
    POLICY_ANSWER,
    POLICY_PROBLEM,
    SKIP,
    WRONG,
    _assert_trained,
    policy_config,
    read_jsonl,
    write_policy_data,
)


def test_chunks_are_whole_groups_and_cover_the_batch():
    assert chunk_bounds(64, 8, 4) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert chunk_bounds(40, 8, 3) == [(0, 16), (16, 32), (32, 40)]
    assert chunk_bounds(16, 8, 4) == [(0, 8), (8, 16)]  # never more chunks than groups
    assert chunk_bounds(16, 4, 1) == [(0, 16)]
    with pytest.raises(ValueError, match="whole groups"):
        chunk_bounds(10, 4, 2)


def test_a_rollout_is_judged_while_later_rollouts_are_still_being_verified(tmp_path, monkeypatch):
    import fapo.train.assess as assess

    real_outcomes = assess.rollout_outcomes

    def slow_outcomes(*args, **kwargs):  # the real verifier, 0.2 s slower per slice
        time.sleep(0.2)
        return real_outcomes(*args, **kwargs)

    monkeypatch.setattr(assess, "rollout_outcomes", slow_outcomes)
    asked: list[float] = []

    class TimedJudge(LocalJudge):
        async def judge_many(self, items, progress=False):
            asked.append(time.perf_counter())
            return await super().judge_many(items)

    settings = policy_config(tmp_path, tmp_path, verify_workers=1).fapo  # slices of one rollout
    state = PolicyRewardState(settings, 40, frozenset({3}), lambda: TimedJudge(resolve_oracle("testbed")),
                              JsonlAppender(None))
    texts = [CLEAN, WRONG, SKIP, WRONG, WRONG]
    assessment = asyncio.run(assess_rollouts(state, texts, [[1, 2, 3]] * 5, [POLICY_PROBLEM] * 5,
                                             [POLICY_ANSWER] * 5))
    assert assessment.correct == [True, False, True, False, False] and assessment.judged_idx == [0, 2]
    assert [j.verdict for j in assessment.judgements] == [-1, 0]
    # the first correct rollout was judged while four more slices (0.2 s each) were still to be verified
    assert asked[0] < assessment.verified_at - 0.6
    assert asked[1] < assessment.verified_at - 0.2


def _spy_on_streaming(monkeypatch) -> tuple[list, list]:
    """Record each streamed batch (its rollouts) and what the reward made of it (rewards, metrics, step)."""
    import fapo.train.streaming as streaming

    batches, scored = [], []
    real_take, real_record = streaming.StreamingRollout.take, streaming.record_assessment

    def take(self):
        pending = real_take(self)
        batches.append(pending)
        return pending

    def record(state, assessment, texts, problems, golds, step, log_metric, judge_wait_s):
        metrics: dict[str, float] = {}

        def log(key, value):
            metrics[key] = value
            log_metric(key, value)

        rewards = real_record(state, assessment, texts, problems, golds, step, log, judge_wait_s)
        scored.append((rewards, metrics, step))
        return rewards

    monkeypatch.setattr(streaming.StreamingRollout, "take", take)
    monkeypatch.setattr(streaming, "record_assessment", record)
    return batches, scored


def _score_synchronously(config, batches, scored, url_critiques) -> list[tuple[list[float], dict]]:
    from fapo.train.session import build_judge_factory, load_tokenizer

    tokenizer = load_tokenizer(config.fapo.model)
    eos = frozenset({tokenizer.eos_token_id, tokenizer.pad_token_id} - {None})
    state = PolicyRewardState(config.fapo, 40, eos, build_judge_factory(config.fapo), JsonlAppender(url_critiques))

    async def run():
        out = []
        for pending, (_, _, step) in zip(batches, scored):
            metrics: dict[str, float] = {}
            rewards = await score_policy_batch(state, pending.texts, pending.completion_ids, pending.problems,
                                               pending.golds, step, metrics.__setitem__)
            out.append((rewards, metrics))
        await state.close()
        return out

    return asyncio.run(run())


TIMING_KEYS = ("time/", "grm/latency", "grm/cached", "grm/client/", "verify/total/")
"""Keys that differ between two scorings of the same rollouts: timings, cache hits, and the judge's and the
verifier's counters since their process started (the second scoring adds to them)."""
CRITIQUE_KEYS = ("step", "problem", "answer", "completion", "verdict", "flawed", "status", "critique", "reward")


def test_streaming_rollout_trains_with_the_synchronous_rewards_metrics_and_critiques(memorised_policy_dir, tmp_path,
                                                                                      monkeypatch):
    from fapo.train.runner import train_policy

    batches, scored = _spy_on_streaming(monkeypatch)
    data = write_policy_data(tmp_path / "train.jsonl")
    with serve_in_thread(load_oracle("testbed")) as server:
        config = policy_config(memorised_policy_dir, data, oracle=None, judge={"endpoints": [server.url]},
                               rollout="streaming", rollout_chunks=2)
        result = train_policy(config, tmp_path / "run")
        again = _score_synchronously(config, batches, scored, tmp_path / "sync-critiques.jsonl")
    metrics = _assert_trained(result, memorised_policy_dir)
    assert all("time/judge_busy_s" in m for m in metrics if "loss" in m)
    assert len(batches) == len(scored) == result.global_step == 2
    for b in batches:  # 4 groups of 4 in 2 chunks, rollouts handed over as they ended: more parts than chunks
        assert sorted(i for indices, _ in b.parts for i in indices) == list(range(16)) and len(b.parts) > 2
    assert sum(len(set(r)) > 1 for r, _, _ in scored) >= 1  # some batch had rewards to learn from
    for (rewards, streamed, _), (sync_rewards, sync_metrics) in zip(scored, again):
        assert rewards == sync_rewards
        assert {k: v for k, v in streamed.items() if not k.startswith(TIMING_KEYS)} == \
               {k: v for k, v in sync_metrics.items() if not k.startswith(TIMING_KEYS)}
        assert set(streamed) == set(sync_metrics)
    streamed_critiques = read_jsonl(tmp_path / "run" / "critiques.jsonl")
    sync_critiques = read_jsonl(tmp_path / "sync-critiques.jsonl")
    assert streamed_critiques and all(c["status"] == "ok" for c in streamed_critiques)
    assert [{k: c[k] for k in CRITIQUE_KEYS} for c in streamed_critiques] == \
           [{k: c[k] for k in CRITIQUE_KEYS} for c in sync_critiques]


def test_streaming_is_a_grpo_trainer_option(tmp_path):
    from fapo.train.config import ConfigError

    with pytest.raises(ConfigError, match="fapo.rollout must be"):
        policy_config(tmp_path, tmp_path, rollout="chunked")
    with pytest.raises(ConfigError, match="always streams"):
        policy_config(tmp_path, tmp_path, rollout="streaming", trainer="async")
    with pytest.raises(ConfigError, match="rollout_chunks must be"):
        policy_config(tmp_path, tmp_path, rollout="streaming", rollout_chunks=0)
    with pytest.raises(ConfigError, match="fapo.trainer must be"):
        policy_config(tmp_path, tmp_path, trainer="ppo")
