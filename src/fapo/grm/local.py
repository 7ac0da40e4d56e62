"""An in-process judge with the same interface as the HTTP client (`judge_many`, `metrics`, `aclose`).

It wraps a verdict function `(problem, steps) -> int | None` — the testbed's step checker, say — so
experiments can separate "FAPO with a perfect judge" from "FAPO with a learned judge" without a
server. Named oracles are resolved by `fapo.grm.judge.make_judge` through `fapo.oracles`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fapo.grm.types import JudgeItem, Judgement

VerdictFn = Callable[[str, list[str]], "int | None"]
"""(problem, steps) -> earliest wrong step, -1 for none, or None for no verdict."""


class LocalJudge:
    """Judges in-process with a verdict function. A raised exception is an "error" judgement."""

    def __init__(self, verdict_fn: VerdictFn, name: str = "oracle"):
        self._verdict_fn = verdict_fn
        self._name = name
        self._counts = {"requests": 0, "errors": 0, "invalid": 0}

    def judge_one(self, item: JudgeItem) -> Judgement:
        start = time.perf_counter()
        self._counts["requests"] += 1
        try:
            verdict = self._verdict_fn(item.problem, list(item.steps))
        except Exception as err:  # a broken oracle is counted and reported, never a verdict
            self._counts["errors"] += 1
            return Judgement(None, None, "error", None, self._name, 1, time.perf_counter() - start,
                             error=f"oracle failed: {err!r}")
        latency = time.perf_counter() - start
        if verdict is None or not -1 <= verdict < max(len(item.steps), 0):
            self._counts["invalid"] += 1
            return Judgement(None, None, "invalid", None, self._name, 1, latency,
                             error=f"oracle verdict {verdict!r} is not -1..{len(item.steps) - 1}")
        critique = "No step is wrong. \\boxed{-1}" if verdict == -1 else f"Step {verdict} is wrong. \\boxed{{{verdict}}}"
        return Judgement(verdict, verdict != -1, "ok", critique, self._name, 1, latency)

    async def judge_many(self, items: Sequence[JudgeItem], progress: bool = False) -> list[Judgement]:
        return [self.judge_one(item) for item in items]

    def metrics(self) -> dict[str, float]:
        return {f"grm/{key}": float(value) for key, value in self._counts.items()}

    async def aclose(self) -> None:
        return None
