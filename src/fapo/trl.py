"""fapo for TRL users: the FAPO reward function for `trl.GRPOTrainer`, from a judge and a penalty.

    from trl import GRPOConfig, GRPOTrainer
    from fapo.grm.types import JudgeConfig
    from fapo.trl import fapo_reward

    reward = fapo_reward(JudgeConfig(endpoints=("http://genrm-0:8001/v1",), model="FAPO-GenRM-4B"), penalty=1.0)
    trainer = GRPOTrainer(model="Qwen/Qwen2.5-Math-7B", reward_funcs=[reward], args=GRPOConfig(...),
                          train_dataset=dataset)
    trainer.train()

The function it returns is the reward `fapo train policy` runs (`fapo.train.reward_funcs`): an `async def` that
TRL awaits on its own event loop; each rollout is verified (`fapo.outcome`) and each verified-correct one sent
to the judge as soon as it is verified, while the rest are still being verified; it returns R_FAPO per rollout
(+1, 1 − λ for a flawed positive, −1), logs `verify/*`, `grm/*`, `reward/mean`, ... through TRL's `log_metric`,
writes each judged rollout's critique to `critiques.jsonl` in the trainer's output directory, and stops the run
when judgements keep failing (`fapo.grm.failure_window`). It takes the completion limit and the end tokens from
the trainer that calls it (TRL passes its own `log_metric`; `reward.bind(trainer)` does it explicitly) and
closes its judge's connections when training ends.

The dataset needs a `prompt` column (a string or chat messages) and, per row, the problem text and the gold
answer: columns `problem` and `answer`, other names (dotted for nested columns) through `problem_field` and
`answer_field`, or verl-format rows as they are (`extra_info.question`, `reward_model.ground_truth`).

Owns only this assembly; the reward's logic is `fapo.train`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fapo.grm.types import JudgeConfig
from fapo.io import JsonlAppender
from fapo.train.config import ConfigError, FapoSettings
from fapo.train.data import policy_row
from fapo.train.reward_funcs import PolicyRewardState, make_policy_reward_func
from fapo.train.session import build_judge_factory

RewardFunc = Callable[..., Any]

_REWARD_OPTIONS = ("problem_field", "answer_field", "judge_with_gold", "step_split", "verify_timeout",
                   "verify_workers", "answer_format", "truncation_rule", "judge_failure_rate",
                   "judge_failure_window", "on_judge_failures", "write_critiques", "monitor_oracle")
"""`FapoSettings` fields that shape the reward (the rest name a model, data or a trainer)."""


def fapo_reward(judge: JudgeConfig | str | Sequence[str] | None = None, penalty: float = 1.0, *,
                oracle: str | None = None, output_dir: str | Path | None = None, **options: Any) -> RewardFunc:
    """The FAPO reward function for `trl.GRPOTrainer(reward_funcs=[...])` (see the module docstring).

    `judge`: the GenRM client (`fapo.grm.types.JudgeConfig`), or its endpoint URL(s) with JudgeConfig's other
    defaults; or `oracle`: a registered in-process judge (e.g. "testbed"). `penalty`: λ, what a flawed positive
    loses (1.0 in the paper; 0 gives GRPO's rewards with the judge still measuring). `output_dir`: where
    `critiques.jsonl` goes (default: the trainer's output_dir). `options`: any of `_REWARD_OPTIONS`, as in a
    training config's `fapo:` section (e.g. `truncation_rule="tail"`, `problem_field="extra_info.question"`).
    A bad value raises `fapo.train.config.ConfigError` naming it.
    """
    unknown = sorted(set(options) - set(_REWARD_OPTIONS))
    if unknown:
        raise ConfigError(f"fapo_reward() got unknown option(s) {unknown}; the options are {list(_REWARD_OPTIONS)}")
    if isinstance(judge, str):
        judge = (judge,)
    if judge is not None and not isinstance(judge, JudgeConfig):
        judge = JudgeConfig(endpoints=tuple(judge))
    if judge is None and oracle is None:
        raise ConfigError("fapo_reward needs a judge: a JudgeConfig (or GenRM endpoint URLs), or oracle=NAME")
    settings = FapoSettings(judge=judge, oracle=oracle, penalty=penalty, **options)
    critiques = JsonlAppender(Path(output_dir) / "critiques.jsonl" if output_dir is not None else None)
    state = PolicyRewardState(settings, None, None, build_judge_factory(settings), critiques)
    if settings.monitor_oracle is not None:
        from fapo.train.session import resolve_monitor

        state.monitor, state.monitor_metrics = resolve_monitor(settings)
    score = make_policy_reward_func(state)
    bound: list[Any] = []

    def bind(trainer: Any) -> None:
        """Take the limit and end tokens from `trainer`, write critiques to its output_dir (unless told
        otherwise) and close the judge when its training ends. Done on the first call when TRL calls."""
        if any(t is trainer for t in bound):
            return
        bound.append(trainer)
        state.bind_trainer(trainer)
        if output_dir is None and settings.write_critiques:
            state.critiques = JsonlAppender(Path(trainer.args.output_dir) / "critiques.jsonl")
        trainer.add_callback(_close_judge_callback(state, trainer))

    async def fapo_reward_func(prompts, completions, completion_ids, trainer_state=None, log_metric=None,
                               **columns: Any) -> list[float]:
        trainer = getattr(log_metric, "__self__", None)
        if trainer is not None and hasattr(trainer, "eos_token_ids"):
            bind(trainer)
        problems, golds = _problems_and_golds(prompts, columns, settings)
        return await score(prompts, completions, completion_ids, problems, golds, trainer_state=trainer_state,
                           log_metric=log_metric)

    fapo_reward_func.__name__ = "fapo_reward"
    fapo_reward_func.bind = bind  # type: ignore[attr-defined]
    fapo_reward_func.state = state  # type: ignore[attr-defined]
    return fapo_reward_func


def _problems_and_golds(prompts: list[Any], columns: dict[str, Any], settings: FapoSettings
                        ) -> tuple[list[str], list[str]]:
    """Each rollout's problem text and gold answer from the dataset columns TRL passes (`policy_row`'s rules)."""
    n = len(prompts)
    per_row = {k: v for k, v in columns.items() if isinstance(v, list) and len(v) == n}
    problems, golds = [], []
    for i, prompt in enumerate(prompts):
        row = {"prompt": prompt, **{k: v[i] for k, v in per_row.items()}}
        try:
            parsed = policy_row(row, settings.problem_field, settings.answer_field, settings.prompt_template)
        except KeyError as err:
            raise ConfigError(f"the FAPO reward needs each row's problem and gold answer: no {err.args[0]!r} column "
                              f"(columns here: {sorted(row)}); pass problem_field= / answer_field= to "
                              "fapo_reward (dotted for nested columns)") from None
        problems.append(parsed["problem"])
        golds.append(parsed["answer"])
    return problems, golds


def _close_judge_callback(state: PolicyRewardState, trainer: Any):
    from transformers import TrainerCallback

    class CloseJudge(TrainerCallback):
        """Closes the reward's judge (its HTTP connections) on TRL's event loop when training ends."""

        def on_train_end(self, args, train_state, control, **kwargs):
            loop = getattr(trainer, "async_loop", None)
            if loop is not None and state.judge is not None:
                asyncio.run_coroutine_threadsafe(state.close(), loop).result(timeout=30)

    return CloseJudge()


__all__ = ["fapo_reward"]
