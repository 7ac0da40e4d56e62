"""Streaming rollouts for TRL's GRPOTrainer: judge each finished chunk while the next one generates.

With `fapo.rollout: streaming`, GRPOTrainer gets a `rollout_func` (`StreamingRollout`) that
generates the batch in `fapo.rollout_chunks` chunks of whole groups, with TRL's own generation
(`_generate_single_turn`: transformers, or vLLM colocated/server), and hands each finished chunk
to `fapo.train.assess.assess_rollouts` on TRL's reward event loop, where it is verified and judged
while the next chunk generates. The reward function (`make_streaming_reward_func`) then only waits
for what is still outstanding and computes rewards, metrics and critiques once for the whole batch
with the same code as the synchronous path (`record_assessment`), so the two agree exactly.

Owns the chunking and the hand-over between the generating thread and the reward loop; owns no
reward arithmetic, verification or judging logic, and no loss math.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from fapo.train.assess import assess_rollouts, merge_assessments
from fapo.train.reward_funcs import PolicyRewardState, completion_text, record_assessment, score_policy_batch

logger = logging.getLogger(__name__)


def chunk_bounds(n_rollouts: int, group_size: int, chunks: int) -> list[tuple[int, int]]:
    """Split `n_rollouts` (whole groups of `group_size`) into at most `chunks` near-equal runs of whole groups."""
    if group_size < 1 or n_rollouts % group_size:
        raise ValueError(f"{n_rollouts} rollouts are not whole groups of {group_size}")
    groups = n_rollouts // group_size
    chunks = max(1, min(chunks, groups))
    sizes = [groups // chunks + (1 if c < groups % chunks else 0) for c in range(chunks)]
    bounds, lo = [], 0
    for size in sizes:
        bounds.append((lo * group_size, (lo + size) * group_size))
        lo += size
    return bounds


@dataclass
class _PendingBatch:
    """A generated batch whose chunks are still being assessed on the reward loop."""

    completion_ids: list[list[int]]
    texts: list[str]
    problems: list[str]
    golds: list[str]
    futures: list[concurrent.futures.Future]
    generated_at: float


class StreamingRollout:
    """GRPOTrainer `rollout_func`: generate in chunks, assess each finished chunk in the background.

    The trainer must record its batch rows in `fapo_batch_rows` before generating (`streaming_trainer_class`
    does): the rollout function receives prompts only, the judge needs each row's problem and gold answer.
    """

    def __init__(self, state: PolicyRewardState, chunks: int):
        self.state = state
        self.chunks = chunks
        self._pending: _PendingBatch | None = None
        self._lock = threading.Lock()

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        rows = trainer.fapo_batch_rows
        if len(rows) != len(prompts):
            raise RuntimeError(f"streaming rollout: {len(prompts)} prompts but {len(rows)} batch rows recorded")
        prompt_ids, images, multimodal = trainer._tokenize_prompts(prompts)
        if images is not None or multimodal:
            raise ValueError("fapo.rollout: streaming supports text prompts only; use fapo.rollout: sync")
        group = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        problems, golds = [r["problem"] for r in rows], [r["answer"] for r in rows]
        completion_ids: list[list[int]] = []
        logprobs: list | None = []
        texts: list[str] = []
        futures = []
        for lo, hi in chunk_bounds(len(prompts), group, self.chunks):
            ids, lps = trainer._generate_single_turn(prompt_ids[lo:hi], None, {}, group)
            chunk_texts = trainer.processing_class.batch_decode(ids, skip_special_tokens=True)
            futures.append(asyncio.run_coroutine_threadsafe(
                assess_rollouts(self.state, chunk_texts, ids, problems[lo:hi], golds[lo:hi]), trainer.async_loop))
            completion_ids += ids
            texts += chunk_texts
            logprobs = None if lps is None or logprobs is None else logprobs + list(lps)
        with self._lock:
            self._pending = _PendingBatch(completion_ids, texts, problems, golds, futures, time.perf_counter())
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    def take(self) -> _PendingBatch | None:
        with self._lock:
            pending, self._pending = self._pending, None
            return pending


def make_streaming_reward_func(rollout: StreamingRollout):
    """The FAPO reward for a streaming rollout: waits for the batch's chunk assessments, then scores it.

    A batch the rollout did not assess (or whose decoded texts differ from TRL's completions, e.g. a
    tokenizer with a response parser) is scored synchronously instead, with a warning: never a wrong reward.
    """
    state = rollout.state

    async def fapo_reward_func(prompts, completions, completion_ids, problem, answer, trainer_state=None,
                               log_metric=None, **_: Any) -> list[float]:
        step = (trainer_state.global_step + 1) if trainer_state is not None else 0
        pending = rollout.take()
        texts = [completion_text(c) for c in completions]
        problems, golds = list(problem), list(answer)
        if pending is None or pending.completion_ids != [list(c) for c in completion_ids] or pending.texts != texts \
                or pending.problems != problems or pending.golds != golds:
            if pending is not None:
                for future in pending.futures:
                    future.cancel()
            logger.warning("fapo: streaming rollout did not match the batch to score; scoring it synchronously")
            return await score_policy_batch(state, completions, completion_ids, problems, golds, step, log_metric)
        parts = [await asyncio.wrap_future(f) for f in pending.futures]
        assessment = merge_assessments(parts)
        since = max(pending.generated_at, assessment.verified_at)
        return record_assessment(state, assessment, texts, problems, golds, step, log_metric,
                                 judge_wait_s=assessment.judge_wait_s(since))

    fapo_reward_func.__name__ = "fapo_reward"
    return fapo_reward_func


def streaming_trainer_class(base: type) -> type:
    """`base` (a GRPOTrainer subclass) that records each generation batch's rows for `StreamingRollout`."""

    class StreamingGRPOTrainer(base):
        fapo_batch_rows: list[dict[str, Any]] = []

        def _generate_and_score_completions(self, inputs):
            self.fapo_batch_rows = list(inputs)
            return super()._generate_and_score_completions(inputs)

    return StreamingGRPOTrainer
