"""No silent GRPO: the share of failed judgements over the last N judged rollouts, and what to do past a bound.

A judgement that fails (status "error": no answer from any GenRM; "invalid": an answer without a valid
verdict) gives no penalty, so a run whose judge keeps failing quietly trains GRPO while its config says FAPO.
`FailureWindow` keeps the statuses of the last `FailureBudget.window` judged rollouts; once more than
`rate × window` of them failed (so it can trip before the window is full: 41 failures of the first 41 are
already more than 20% of 200), `check` raises `JudgeFailuresExceeded` naming the counts and the fix, or, with
action "warn", returns that message for the caller to print at every step while it holds.

Used by the TRL reward (`fapo.train.reward_funcs`: synchronous, streaming and async-trainer paths) and by the
verl adapter (`fapo.integrations.verl`). Knows nothing about HTTP, trainers or rewards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

FailureAction = Literal["stop", "warn"]
FAILURE_ACTIONS: tuple[FailureAction, ...] = ("stop", "warn")
FAILED_STATUSES = frozenset({"error", "invalid"})
"""Judgement statuses that carry no verdict (`fapo.grm.types.Judgement.status`)."""


class JudgeFailuresExceeded(RuntimeError):
    """Too many judgements failed over the window: the run would no longer be FAPO."""


@dataclass(frozen=True)
class FailureBudget:
    """How many failed judgements a run tolerates before it stops (or warns)."""

    rate: float = 0.2
    """Largest tolerated share of failed judgements over the window (0: none; 1: never stop)."""
    window: int = 200
    """Judged rollouts the share is taken over: the most recent ones."""
    action: FailureAction = "stop"
    """"stop": raise `JudgeFailuresExceeded`; "warn": a warning at every step while the share is above the rate."""

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:  # also refuses nan
            raise ValueError(f"the judge failure rate must be in [0, 1], got {self.rate!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"the judge failure window must be a whole number >= 1, got {self.window!r}")
        if self.action not in FAILURE_ACTIONS:
            raise ValueError(f"the action on judge failures must be one of {FAILURE_ACTIONS}, got {self.action!r}")


class FailureWindow:
    """Statuses of the last `budget.window` judged rollouts; `check` acts on the budget."""

    def __init__(self, budget: FailureBudget):
        self.budget = budget
        self._statuses: deque[str] = deque(maxlen=budget.window)

    def record(self, statuses: Iterable[str]) -> None:
        self._statuses.extend(statuses)

    @property
    def judged(self) -> int:
        return len(self._statuses)

    @property
    def failures(self) -> int:
        return sum(s in FAILED_STATUSES for s in self._statuses)

    def failure_share(self) -> float:
        """Failed judgements over the judged rollouts in the window (NaN before any: `fapo.metrics`' convention)."""
        return self.failures / self.judged if self.judged else float("nan")

    def exceeded(self) -> bool:
        return self.failures > self.budget.rate * self.budget.window

    def message(self, where: str) -> str:
        errors = sum(s == "error" for s in self._statuses)
        budget = self.budget
        return (f"{where}: {self.failures} of the last {self.judged} judgements failed ({errors} errors, "
                f"{self.failures - errors} without a valid verdict), more than {budget.rate:.0%} of {budget.window}: "
                "failed judgements give no penalty, so this run is turning into GRPO. Fix the GenRM servers "
                "(their logs; grm/client/endpoint/* health), or raise the tolerated rate / set the action to warn")

    def check(self, where: str) -> str | None:
        """None within budget; past it, raise `JudgeFailuresExceeded` ("stop") or return the message ("warn")."""
        if not self.exceeded():
            return None
        text = self.message(where)
        if self.budget.action == "stop":
            raise JudgeFailuresExceeded(text)
        return text
