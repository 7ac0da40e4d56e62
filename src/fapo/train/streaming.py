"""Streaming rollouts for TRL's GRPOTrainer: judge rollouts while the rest of the batch generates.

With `fapo.rollout: streaming`, GRPOTrainer gets a `rollout_func` (`StreamingRollout`) that runs TRL's
own generation (`_generate_single_turn`: transformers, or vLLM colocated/server) over the batch in
`fapo.rollout_chunks` chunks of whole groups. With transformers generation a stopping criterion that
stops nothing (`_FinishedRollouts`) hands each rollout over as soon as it ends, while the others still
decode; other backends return whole chunks, handed over as each finishes while the next generates.
Each hand-over goes to `fapo.train.assess.assess_rollouts` on TRL's reward event loop (verify, judge
the correct ones). The reward function (`make_streaming_reward_func`) then only waits for what is
still outstanding and computes rewards, metrics and critiques once for the whole batch with the same
code as the synchronous path (`record_assessment`), so the two agree exactly.

Owns the hand-over between the generating thread and the reward loop; owns no reward arithmetic,
verification or judging logic, no sampling and no loss math.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from transformers import StoppingCriteria, StoppingCriteriaList

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
    """A generated batch whose parts (rollout indices, assessment future) are still being assessed."""

    completion_ids: list[list[int]]
    texts: list[str]
    problems: list[str]
    golds: list[str]
    parts: list[tuple[list[int], concurrent.futures.Future]]
    generated_at: float


class _FinishedRollouts(StoppingCriteria):
    """A stopping criterion that stops nothing: after each decoding step it hands the rows that just ended
    (their last token an EOS) to `submit`, so they are assessed while the rest of the batch decodes.
    `finish` hands over the rest (cut at max length) once generation returns, and checks the early
    hand-offs against TRL's own completions."""

    def __init__(self, offset: int, eos_token_ids, submit):
        self.offset, self.submit = offset, submit
        self.eos = set(int(t) for t in eos_token_ids)
        self.prompt_width: int | None = None
        self.handed: dict[int, list[int]] = {}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.prompt_width is None:
            self.prompt_width = input_ids.shape[1] - 1  # called after the first new token
        last = input_ids[:, -1].tolist()
        ended = [row for row, token in enumerate(last) if token in self.eos and row not in self.handed]
        if ended:
            for row in ended:
                self.handed[row] = input_ids[row, self.prompt_width:].tolist()
            self.submit([self.offset + row for row in ended], [self.handed[row] for row in ended])
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def finish(self, completion_ids: list[list[int]]) -> None:
        for row, ids in self.handed.items():
            if ids != list(completion_ids[row]):
                raise RuntimeError("streaming rollout: a rollout handed over early differs from TRL's completion")
        rest = [row for row in range(len(completion_ids)) if row not in self.handed]
        if rest:
            self.submit([self.offset + row for row in rest], [list(completion_ids[row]) for row in rest])


@contextlib.contextmanager
def _handing_off_finished(trainer: Any, handed: _FinishedRollouts):
    """Give the model's `generate` the hand-off criterion while TRL generates (transformers generation only;
    vLLM and continuous batching return whole chunks, which `handed.finish` then submits)."""
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    if trainer.use_vllm or trainer.use_transformers_continuous_batching or "generate" in vars(model):
        yield
        return
    model.generate = functools.partial(model.generate, stopping_criteria=StoppingCriteriaList([handed]))
    try:
        yield
    finally:
        del model.generate


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
        if self.state.eos_token_ids is None:
            self.state.bind_trainer(trainer)
        if len(rows) != len(prompts):
            raise RuntimeError(f"streaming rollout: {len(prompts)} prompts but {len(rows)} batch rows recorded")
        prompt_ids, images, multimodal = trainer._tokenize_prompts(prompts)
        if images is not None or multimodal:
            raise ValueError("fapo.rollout: streaming supports text prompts only; use fapo.rollout: sync")
        group = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        problems, golds = [r["problem"] for r in rows], [r["answer"] for r in rows]
        completion_ids: list[list[int]] = []
        logprobs: list | None = []
        parts: list[tuple[list[int], concurrent.futures.Future]] = []

        def submit(indices: list[int], ids: list[list[int]]) -> None:
            texts = trainer.processing_class.batch_decode(ids, skip_special_tokens=True)
            parts.append((indices, asyncio.run_coroutine_threadsafe(assess_rollouts(
                self.state, texts, ids, [problems[i] for i in indices], [golds[i] for i in indices]),
                trainer.async_loop)))

        for lo, hi in chunk_bounds(len(prompts), group, self.chunks):
            handed = _FinishedRollouts(lo, trainer.eos_token_ids, submit)
            with _handing_off_finished(trainer, handed):
                ids, lps = trainer._generate_single_turn(prompt_ids[lo:hi], None, {}, group)
            handed.finish(ids)
            completion_ids += ids
            logprobs = None if lps is None or logprobs is None else logprobs + list(lps)
        texts = trainer.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        with self._lock:
            self._pending = _PendingBatch(completion_ids, texts, problems, golds, parts, time.perf_counter())
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}

    def take(self) -> _PendingBatch | None:
        with self._lock:
            pending, self._pending = self._pending, None
            return pending


def make_streaming_reward_func(rollout: StreamingRollout):
    """The FAPO reward for a streaming rollout: waits for the batch's chunk assessments, then scores it.

    A batch the rollout did not assess (or whose decoded texts differ from TRL's completions, e.g. a
    tokenizer with a response parser) is scored synchronously instead, with a warning and
    `rollout/streaming_fallback` = 1 in that step's metrics: never a wrong reward.
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
                for _, future in pending.parts:
                    future.cancel()
            logger.warning("fapo: streaming rollout did not match the batch to score; scoring it synchronously")
            if log_metric is not None:  # counted, not only printed: a run that never streams shows it in its metrics
                log_metric("rollout/streaming_fallback", 1.0)
            return await score_policy_batch(state, completions, completion_ids, problems, golds, step, log_metric)
        parts = [(indices, await asyncio.wrap_future(f)) for indices, f in pending.parts]
        assessment = merge_assessments(parts, len(texts))
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
