"""Verify rollouts and judge the verified-correct ones, judging overlapping verification.

`assess_rollouts` verifies a batch slice by slice (each slice as wide as the verifier's worker
pool) in a thread, and sends each verified-correct rollout to the judge as soon as its slice is
verified, while the next slices are still being verified (docs/design.md §4.2: a GenRM request leaves
as soon as a rollout is verified). `Assessment` is what comes back: per rollout the verification
result, whether it counts as correct, and the judgement of the judged ones, plus when judging
started and ended. `merge_assessments` joins the assessments of the parts of one batch (the
streaming rollout hands rollouts over as they finish), so rewards, metrics and critiques are computed
once per batch either way.

Owns no reward arithmetic (`fapo.rewards`), no metric names (`fapo.train.reward_funcs`), no answer
rule (`fapo.outcome`) and no HTTP (`fapo.grm`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from fapo.grm.types import JudgeConfig, Judgement
from fapo.outcome import RolloutOutcome, rollout_outcomes
from fapo.verify import default_workers


@dataclass(frozen=True)
class Assessment:
    """Verification and judgement of a batch (or a chunk of one) of rollouts, in rollout order."""

    results: list[RolloutOutcome]
    correct: list[bool]
    """`RolloutOutcome.correct` (answer counted by the rule and verified): the rollouts the judge sees."""
    judged_idx: list[int]
    """Indices of the judged rollouts (the correct ones when a judge is configured), ascending."""
    judgements: list[Judgement]
    """One per index in `judged_idx`, same order."""
    verified_at: float
    """perf_counter() when the last rollout was verified."""
    judge_started: float | None
    """perf_counter() when the first judge request left (None: nothing judged)."""
    judge_done: float | None
    """perf_counter() when the last judgement came back (None: nothing judged)."""

    def judge_wait_s(self, since: float) -> float:
        """Seconds judging ran past `since` (e.g. the end of verification, or of generation)."""
        return max(0.0, self.judge_done - since) if self.judge_done is not None else 0.0

    def judge_busy_s(self) -> float:
        """Seconds from the first judge request to the last judgement."""
        if self.judge_started is None or self.judge_done is None:
            return 0.0
        return self.judge_done - self.judge_started


def _judge_concurrency(settings: Any) -> int:
    """`fapo.judge.concurrency`, or JudgeConfig's default for an in-process oracle (no `fapo.judge`)."""
    if settings.judge is not None:
        return settings.judge.concurrency
    return next(f.default for f in fields(JudgeConfig) if f.name == "concurrency")


def _slice_size(workers: int | None) -> int:
    return max(1, workers if workers is not None else default_workers())


async def assess_rollouts(state: Any, texts: Sequence[str], completion_ids: Sequence[Sequence[int]],
                          problems: Sequence[str], golds: Sequence[str]) -> Assessment:
    """Verify every rollout; judge each correct one (through `state.judge_correct`) as soon as it is verified.

    `state` is a `fapo.train.reward_funcs.PolicyRewardState`. At most `fapo.judge.concurrency` judge
    requests (its default for an in-process oracle) are in flight at once; verification of later slices goes on while they are.
    """
    settings = state.settings
    judging = state.judge_factory is not None
    if judging:
        await state.open_judge()
    limit = asyncio.Semaphore(_judge_concurrency(settings))
    results: list[RolloutOutcome] = []
    correct: list[bool] = []
    tasks: dict[int, asyncio.Task[Judgement]] = {}
    started: list[float] = []

    async def judge_one(i: int) -> Judgement:
        async with limit:
            if not started:
                started.append(time.perf_counter())
            return (await state.judge_correct([problems[i]], [golds[i]], [texts[i]]))[0]

    step = _slice_size(settings.verify_workers)
    try:
        for lo in range(0, len(texts), step):
            hi = min(lo + step, len(texts))
            verified = await asyncio.to_thread(
                rollout_outcomes, list(texts[lo:hi]), list(golds[lo:hi]),
                [state.is_truncated(ids) for ids in completion_ids[lo:hi]], settings.answer_format,
                truncation=settings.truncation_rule, workers=settings.verify_workers, timeout=settings.verify_timeout)
            for i, r in zip(range(lo, hi), verified):
                ok = r.correct
                results.append(r)
                correct.append(ok)
                if ok and judging:
                    tasks[i] = asyncio.create_task(judge_one(i))
        verified_at = time.perf_counter()
        judged_idx = sorted(tasks)
        judgements = list(await asyncio.gather(*(tasks[i] for i in judged_idx)))
    finally:  # a failure or cancellation leaves no judge request behind
        for task in tasks.values():
            task.cancel()
    done = time.perf_counter() if judged_idx else None
    return Assessment(results, correct, judged_idx, judgements, verified_at,
                      started[0] if started else None, done)


def merge_assessments(parts: Sequence[tuple[Sequence[int], Assessment]], n: int) -> Assessment:
    """One assessment of a batch of `n` rollouts from assessments of its parts, each given with the batch
    indices of its rollouts (every index exactly once); times span all parts."""
    results: list[RolloutOutcome | None] = [None] * n
    correct: list[bool] = [False] * n
    judged: dict[int, Judgement] = {}
    for indices, part in parts:
        for local, index in enumerate(indices):
            if results[index] is not None:
                raise ValueError(f"rollout {index} is in two parts")
            results[index], correct[index] = part.results[local], part.correct[local]
        judged.update({indices[i]: j for i, j in zip(part.judged_idx, part.judgements)})
    if any(r is None for r in results):
        raise ValueError("some rollouts are in no part")
    starts = [p.judge_started for _, p in parts if p.judge_started is not None]
    dones = [p.judge_done for _, p in parts if p.judge_done is not None]
    judged_idx = sorted(judged)
    return Assessment(results, correct, judged_idx, [judged[i] for i in judged_idx],  # type: ignore[arg-type]
                      max(p.verified_at for _, p in parts), min(starts) if starts else None,
                      max(dones) if dones else None)
