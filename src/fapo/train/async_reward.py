"""The FAPO policy reward for TRL's AsyncGRPOTrainer, whose rollout worker is a spawned child process.

AsyncGRPOTrainer pickles its reward functions into a child that drives `vllm serve` and scores each
group of G rollouts as soon as the group completes, while other groups still generate.
`FapoAsyncReward` is that reward: a plain object (settings, lengths, paths) that pickles; inside the
worker it builds the same `PolicyRewardState` as the synchronous path on first use, opens its judge
client on the worker's event loop, and scores each group with `score_policy_batch` (verify, judge
each correct rollout as soon as it is verified, `fapo_reward`), writing critiques.jsonl as the
synchronous path does. The child cannot reach the trainer's logger, so each group's metrics
(`verify/*`, `grm/*`, `reward/mean`, `time/judge_s`, ...) go as one JSON line to
OUTPUT/rollout_metrics.jsonl, which `fapo.train.async_trainer` reads into TRL's logs (`MetricsTail`).

Owns nothing of the reward's logic (that is `fapo.train.reward_funcs` and `fapo.train.assess`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fapo.io import JsonlAppender
from fapo.train.config import FapoSettings
from fapo.train.reward_funcs import COUNTERS_FILE, PolicyRewardState, score_policy_batch
from fapo.train.session import build_judge_factory, resolve_monitor

METRICS_FILE = "rollout_metrics.jsonl"


class FapoAsyncReward:
    """Picklable async FAPO reward for one group of rollouts (AsyncGRPOTrainer calls it per group).

    `output_dir` None writes no critiques or metrics (tests, dry runs). The critiques' `step` is the
    number of groups this worker has scored, counting from 1 (the worker does not know the optimizer step).
    """

    __name__ = "fapo_reward"

    def __init__(self, settings: FapoSettings, max_completion_length: int, eos_token_ids: frozenset[int] | None,
                 output_dir: str | None = None):
        self.settings = settings
        self.max_completion_length = max_completion_length
        self.eos_token_ids = frozenset(eos_token_ids) if eos_token_ids is not None else None
        """The trainer's end tokens (`fapo.train.reward_funcs.trainer_end_tokens`), set before the worker spawns."""
        self.output_dir = output_dir
        self.groups = 0
        self._state: PolicyRewardState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Settings and counters only: the judge client and its connections are opened in the worker."""
        return {**self.__dict__, "_state": None, "_loop": None}

    def _ensure_state(self) -> PolicyRewardState:
        loop = asyncio.get_running_loop()
        if self._state is None:
            monitor, monitor_metrics = resolve_monitor(self.settings)
            out = Path(self.output_dir) if self.output_dir else None
            self._state = PolicyRewardState(
                settings=self.settings, max_completion_length=self.max_completion_length,
                eos_token_ids=self.eos_token_ids, judge_factory=build_judge_factory(self.settings),
                critiques=JsonlAppender(out / "critiques.jsonl" if out else None), monitor=monitor,
                monitor_metrics=monitor_metrics, counters=JsonlAppender(out / COUNTERS_FILE if out else None))
        elif self._loop is not loop:
            self._state.judge = None  # a client belongs to the loop it was opened on; that loop is gone
        self._loop = loop
        return self._state

    async def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]],
                       problem: list[str], answer: list[str], **_: Any) -> list[float]:
        state = self._ensure_state()
        self.groups += 1
        metrics: dict[str, float] = {}
        rewards = await score_policy_batch(state, completions, completion_ids, list(problem), list(answer),
                                           self.groups, metrics.__setitem__)
        if self.output_dir:
            JsonlAppender(Path(self.output_dir) / METRICS_FILE).write([{"group": self.groups, **metrics}])
        return rewards

    async def aclose(self) -> None:
        """Close the judge client (its connections) if one is open on the running loop."""
        if self._state is not None and self._loop is asyncio.get_running_loop():
            await self._state.close()


class MetricsTail:
    """Reads the lines appended to a rollout-metrics file since the last read (the trainer's side)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self.offset += len(complete)
        return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
