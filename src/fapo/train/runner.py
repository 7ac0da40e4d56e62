"""Build TRL's GRPOTrainer for FAPO policy RL or GenRM RL, run it, and resume it.

`train_policy` wires the FAPO reward (verify → judge → fapo_reward) and DAPO's optional soft
overlong penalty into GRPOTrainer; `train_grm` wires `grm_reward`. Everything else — generation
(transformers or vLLM), advantages, the clipped token-mean loss, accelerate/DeepSpeed — is TRL's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fapo.train.config import ConfigError, TrainConfig
from fapo.train.launch_inputs import drop_long_prompts, overridden_model
from fapo.train.session import (
    TrainResult,
    build_judge_factory,
    load_tokenizer,
    resolve_monitor,
    reward_funcs_with_overlong,
    run_trainer,
    set_threads,
    write_run_config,
)


def _trainer_class():
    from trl import GRPOTrainer

    class FapoGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that also reports TRL's step time under `time/step_s`."""

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            step_times = self._metrics.get("train", {}).get("step_time") if self.model.training else None
            if step_times:
                logs["time/step_s"] = sum(step_times) / len(step_times)
            super().log(logs, start_time)

    return FapoGRPOTrainer


def _grpo_args(config: TrainConfig, output_dir: Path, max_steps: int | None,
               announce: Callable[[str], None] | None = None):
    """TRL's GRPOConfig for this run; `announce` gets the effective update schedule in one line (main process)."""
    from fapo.train.schedule import effective_schedule

    overrides: dict[str, Any] = {"output_dir": str(output_dir), "disable_tqdm": True}
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    overrides.setdefault("report_to", config.trl.get("report_to", "none"))
    try:
        args = config.grpo_config(**overrides)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid TRL setting: {err}") from err
    if announce is not None and args.process_index == 0:
        announce(effective_schedule(args, args.world_size).describe())
    return args


@dataclass
class RunPlan:
    """What one training run needs besides its config: TRL's arguments, data, tokenizer and reward functions."""

    kind: str
    """"policy" or "grm" (written to fapo_config.json)."""
    args: Any
    """TRL's GRPOConfig."""
    rows: list[dict[str, Any]]
    tokenizer: Any
    reward_funcs: list[Any]
    on_close: Callable[[], Any] | None = None
    """Coroutine function run on TRL's event loop when training ends (closes the judge)."""
    callbacks: Sequence[Any] = field(default_factory=tuple)
    rollout_func: Any = None
    """A TRL `rollout_func` (`fapo.train.streaming.StreamingRollout` for `fapo.rollout: streaming`), or None."""
    bind: Callable[[Any], None] | None = None
    """Called with the built trainer before training (the policy reward takes TRL's end tokens from it)."""


def _build_and_run(config: TrainConfig, output_dir: Path, plan: RunPlan, resume: bool) -> TrainResult:
    from datasets import Dataset

    write_run_config(config, output_dir, plan.kind)
    set_threads(config.fapo)
    trainer_class = _trainer_class()
    if plan.rollout_func is not None:
        from fapo.train.streaming import streaming_trainer_class

        trainer_class = streaming_trainer_class(trainer_class)
    trainer = trainer_class(model=config.fapo.model, reward_funcs=plan.reward_funcs, args=plan.args,
                            train_dataset=Dataset.from_list(plan.rows), processing_class=plan.tokenizer,
                            rollout_func=plan.rollout_func)
    if plan.bind is not None:
        plan.bind(trainer)
    return run_trainer(trainer, output_dir, resume, on_close=plan.on_close, callbacks=plan.callbacks)


def train_policy(config: TrainConfig, output_dir: str | Path, max_steps: int | None = None,
                 resume: bool = False, callbacks: Sequence[Any] = (),
                 announce: Callable[[str], None] | None = None) -> TrainResult:
    """FAPO (or, with penalty 0 / no judge, GRPO) policy RL on TRL's GRPOTrainer.

    `announce`, if given, receives one line at start: the update schedule TRL will run."""
    from fapo.io import JsonlAppender
    from fapo.train.data import policy_rows
    from fapo.train.reward_funcs import COUNTERS_FILE, PolicyRewardState, make_policy_reward_func

    settings = config.fapo
    if settings.trainer == "async":
        from fapo.train.async_trainer import train_policy_async

        return train_policy_async(config, output_dir, max_steps, resume, callbacks, announce)
    output_dir = Path(output_dir)
    rows = policy_rows(settings)
    args = _grpo_args(config, output_dir, max_steps, announce)
    tokenizer = load_tokenizer(settings.model)
    rows = drop_long_prompts(rows, tokenizer, settings.max_prompt_length, announce if args.process_index == 0 else None)
    config = dataclasses.replace(config, fapo=overridden_model(settings, output_dir))
    monitor, monitor_metrics = resolve_monitor(settings)
    state = PolicyRewardState(
        settings=settings,
        max_completion_length=args.max_completion_length,
        eos_token_ids=None,  # TRL's own set, from the trainer (`plan.bind`)
        judge_factory=build_judge_factory(settings),
        critiques=JsonlAppender(output_dir / "critiques.jsonl"),
        monitor=monitor,
        monitor_metrics=monitor_metrics,
        counters=JsonlAppender(output_dir / COUNTERS_FILE),
    )
    rollout_func = None
    if settings.rollout == "streaming":
        from fapo.train.streaming import StreamingRollout, make_streaming_reward_func

        rollout_func = StreamingRollout(state, settings.rollout_chunks)
        reward_func = make_streaming_reward_func(rollout_func)
    else:
        reward_func = make_policy_reward_func(state)
    reward_funcs = reward_funcs_with_overlong([reward_func], settings, args)
    plan = RunPlan("policy", args, rows, tokenizer, reward_funcs, on_close=state.close, callbacks=callbacks,
                   rollout_func=rollout_func, bind=state.bind_trainer)
    return _build_and_run(config, output_dir, plan, resume)


def train_grm(config: TrainConfig, output_dir: str | Path, max_steps: int | None = None,
              resume: bool = False, callbacks: Sequence[Any] = (),
              announce: Callable[[str], None] | None = None) -> TrainResult:
    """GenRM RL with R_outcome + R_process (R_outcome alone with `fapo.grm_process_reward: false`) on TRL's
    GRPOTrainer (docs/design.md §1.2); `announce` as in train_policy."""
    from fapo.io import JsonlAppender
    from fapo.train.data import grm_rows
    from fapo.train.reward_funcs import make_grm_reward_func

    settings = config.fapo
    output_dir = Path(output_dir)
    rows = grm_rows(settings)
    args = _grpo_args(config, output_dir, max_steps, announce)
    tokenizer = load_tokenizer(settings.model)
    rows = drop_long_prompts(rows, tokenizer, settings.max_prompt_length, announce if args.process_index == 0 else None)
    config = dataclasses.replace(config, fapo=overridden_model(settings, output_dir))
    grm_reward_func = make_grm_reward_func(JsonlAppender(output_dir / "critiques.jsonl"), settings.write_critiques,
                                           settings.grm_process_reward)
    reward_funcs = reward_funcs_with_overlong([grm_reward_func], settings, args)
    return _build_and_run(config, output_dir, RunPlan("grm", args, rows, tokenizer, reward_funcs, callbacks=callbacks),
                          resume)
