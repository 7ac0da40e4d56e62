"""What AsyncGRPOTrainer's spawned rollout worker does with fapo's reward, run in a spawned child here.

`score_groups_in_child` receives the pickled reward functions (as the worker's `start()` sends them) and
scores groups with TRL's own `_AsyncRolloutLoop._score_group`, one group after another on one event
loop, as the worker's score loop does. Only vLLM generation is missing: the completions are given.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import traceback
from types import SimpleNamespace


def score_groups_in_child(payload: bytes, groups: list[dict], out) -> None:
    try:
        out.put(_score_groups(payload, groups))
    except BaseException:  # the parent reports it instead of waiting for a result that never comes
        out.put({"error": traceback.format_exc()})


def _score_groups(payload: bytes, groups: list[dict]) -> list[list[dict]]:
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    from accelerate import PartialState

    PartialState()  # as the worker's child does: accelerate's logging needs it
    from trl.experimental.async_grpo.async_rollout_worker import (
        RolloutGroup,
        TrainingSequence,
        _AsyncRolloutLoop,
    )
    from trl.trainer.utils import get_callable_name

    reward_funcs = pickle.loads(payload)
    loop_like = SimpleNamespace(reward_funcs=reward_funcs, reward_func_names=[get_callable_name(f) for f in reward_funcs],
                                _env_reward_types=[], _provides_rollout_reward=False)

    def rollout_group(gid: int, spec: dict) -> RolloutGroup:
        n = len(spec["completions"])
        return RolloutGroup(
            prompts=[[{"role": "user", "content": spec["problem"]}]] * n,
            reward_kwargs={"problem": [spec["problem"]] * n, "answer": [spec["answer"]] * n},
            completions=[[{"role": "assistant", "content": c}] for c in spec["completions"]],
            completions_ids=spec["completion_ids"],
            completions_sequences=[[TrainingSequence(list(ids), [1] * len(ids), [0.0] * len(ids), f"{gid}-{i}")]
                                   for i, ids in enumerate(spec["completion_ids"])],
            tool_call_counts=[0] * n, tool_failure_counts=[0] * n, model_version=0, group_id=gid,
            env_rewards=[None] * n, rollout_rewards=[None] * n)

    async def run() -> list[list[dict]]:
        scored = []
        for gid, spec in enumerate(groups):
            samples = await _AsyncRolloutLoop._score_group(loop_like, rollout_group(gid, spec))
            scored.append([{"advantage": s.advantage, **s.metrics} for s in samples])
        for func in reward_funcs:
            if hasattr(func, "aclose"):
                await func.aclose()
        return scored

    return asyncio.run(run())
