"""Build TRL's GRPOTrainer for FAPO policy RL or GenRM RL, run it, and resume it.

`train_policy` wires the FAPO reward (verify → judge → fapo_reward) and DAPO's optional soft
overlong penalty into GRPOTrainer; `train_grm` wires `grm_reward`. Everything else — generation
(transformers or vLLM), advantages, the clipped token-mean loss, accelerate/DeepSpeed — is TRL's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fapo.train.config import ConfigError, FapoSettings, TrainConfig

if TYPE_CHECKING:
    from fapo.grm.judge import Judge


@dataclass(frozen=True)
class TrainResult:
    """Where a run wrote its artefacts and where it stopped."""

    output_dir: str
    global_step: int
    metrics_path: str
    critiques_path: str
    final_model_dir: str


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


def build_judge_factory(settings: FapoSettings) -> Callable[[], Judge] | None:
    """A zero-argument factory for the configured judge (`fapo.grm.judge.make_judge`, created lazily on TRL's
    event loop), or None without one. An unknown oracle is a ConfigError now, not at the first batch."""
    from fapo.grm.judge import make_judge, resolve_oracle

    if settings.judge is not None:
        config = settings.judge
        return lambda: make_judge(config)
    if settings.oracle is None:
        return None
    try:
        resolve_oracle(settings.oracle)
    except (ValueError, ImportError, AttributeError) as err:
        raise ConfigError(f"fapo.oracle: {err}") from err
    return lambda: make_judge(oracle=settings.oracle)


def _resolve_monitor(settings: FapoSettings):
    """The monitor oracle's verdict function and its batch diagnostics (each None when absent)."""
    if settings.monitor_oracle is None:
        return None, None
    from fapo.grm.judge import resolve_oracle
    from fapo.oracles import has_oracle_part, oracle_part

    name = settings.monitor_oracle
    try:
        return resolve_oracle(name), oracle_part(name, "monitor_metrics") if has_oracle_part(name, "monitor_metrics") else None
    except (ValueError, ImportError, AttributeError) as err:
        raise ConfigError(f"fapo.monitor_oracle: {err}") from err


def _load_tokenizer(model: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` that was written to the end (its trainer_state.json exists).

    A run killed while saving leaves a partial directory; resuming skips it instead of crashing.
    """
    if not output_dir.is_dir():
        return None
    candidates = []
    for path in output_dir.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[1]
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            candidates.append((int(suffix), path))
    return str(max(candidates)[1]) if candidates else None


def _run(trainer, output_dir: Path, resume: bool, on_close=None, callbacks: Sequence[Any] = ()) -> TrainResult:
    from transformers import PrinterCallback, ProgressCallback

    from fapo.train.callbacks import KeyNumbersProgressCallback, MetricsFileCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(MetricsFileCallback(output_dir))
    trainer.add_callback(KeyNumbersProgressCallback())
    for callback in callbacks:
        trainer.add_callback(callback)
    checkpoint = last_complete_checkpoint(output_dir) if resume else None
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if on_close is not None and getattr(trainer, "async_loop", None) is not None:
            asyncio.run_coroutine_threadsafe(on_close(), trainer.async_loop).result(timeout=30)
    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))
    return TrainResult(str(output_dir), trainer.state.global_step, str(output_dir / "metrics.jsonl"),
                       str(output_dir / "critiques.jsonl"), str(final_dir))


def _set_threads(settings: FapoSettings) -> None:
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)


def _write_run_config(config: TrainConfig, output_dir: Path, kind: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "trl": config.trl, "fapo": config.fapo.record()}
    (output_dir / "fapo_config.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def _reward_funcs_with_overlong(reward_funcs: list[Any], settings: FapoSettings, args) -> list[Any]:
    """Append DAPO's soft overlong penalty (TRL's reward function) when a buffer is configured."""
    if settings.overlong_buffer:
        from trl.rewards import get_soft_overlong_punishment

        reward_funcs.append(get_soft_overlong_punishment(args.max_completion_length, settings.overlong_buffer))
    return reward_funcs


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


def _build_and_run(config: TrainConfig, output_dir: Path, plan: RunPlan, resume: bool) -> TrainResult:
    from datasets import Dataset

    _write_run_config(config, output_dir, plan.kind)
    _set_threads(config.fapo)
    trainer_class = _trainer_class()
    if plan.rollout_func is not None:
        from fapo.train.streaming import streaming_trainer_class

        trainer_class = streaming_trainer_class(trainer_class)
    trainer = trainer_class(model=config.fapo.model, reward_funcs=plan.reward_funcs, args=plan.args,
                            train_dataset=Dataset.from_list(plan.rows), processing_class=plan.tokenizer,
                            rollout_func=plan.rollout_func)
    return _run(trainer, output_dir, resume, on_close=plan.on_close, callbacks=plan.callbacks)


def train_policy(config: TrainConfig, output_dir: str | Path, max_steps: int | None = None,
                 resume: bool = False, callbacks: Sequence[Any] = (),
                 announce: Callable[[str], None] | None = None) -> TrainResult:
    """FAPO (or, with penalty 0 / no judge, GRPO) policy RL on TRL's GRPOTrainer.

    `announce`, if given, receives one line at start: the update schedule TRL will run."""
    from fapo.train.data import policy_rows
    from fapo.train.reward_funcs import JsonlAppender, PolicyRewardState, make_policy_reward_func

    settings = config.fapo
    if settings.trainer == "async":
        from fapo.train.async_trainer import train_policy_async

        return train_policy_async(config, output_dir, max_steps, resume, callbacks, announce)
    output_dir = Path(output_dir)
    rows = policy_rows(settings)
    args = _grpo_args(config, output_dir, max_steps, announce)
    tokenizer = _load_tokenizer(settings.model)
    monitor, monitor_metrics = _resolve_monitor(settings)
    state = PolicyRewardState(
        settings=settings,
        max_completion_length=args.max_completion_length,
        eos_token_ids=frozenset({tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}),
        judge_factory=build_judge_factory(settings),
        critiques=JsonlAppender(output_dir / "critiques.jsonl"),
        monitor=monitor,
        monitor_metrics=monitor_metrics,
    )
    rollout_func = None
    if settings.rollout == "streaming":
        from fapo.train.streaming import StreamingRollout, make_streaming_reward_func

        rollout_func = StreamingRollout(state, settings.rollout_chunks)
        reward_func = make_streaming_reward_func(rollout_func)
    else:
        reward_func = make_policy_reward_func(state)
    reward_funcs = _reward_funcs_with_overlong([reward_func], settings, args)
    plan = RunPlan("policy", args, rows, tokenizer, reward_funcs, on_close=state.close, callbacks=callbacks,
                   rollout_func=rollout_func)
    return _build_and_run(config, output_dir, plan, resume)


def train_grm(config: TrainConfig, output_dir: str | Path, max_steps: int | None = None,
              resume: bool = False, callbacks: Sequence[Any] = (),
              announce: Callable[[str], None] | None = None) -> TrainResult:
    """GenRM RL with R_outcome + R_process on TRL's GRPOTrainer (DESIGN.md §1.4); `announce` as in train_policy."""
    from fapo.train.data import grm_rows
    from fapo.train.reward_funcs import JsonlAppender, make_grm_reward_func

    settings = config.fapo
    output_dir = Path(output_dir)
    rows = grm_rows(settings)
    args = _grpo_args(config, output_dir, max_steps, announce)
    tokenizer = _load_tokenizer(settings.model)
    grm_reward_func = make_grm_reward_func(JsonlAppender(output_dir / "critiques.jsonl"), settings.write_critiques)
    reward_funcs = _reward_funcs_with_overlong([grm_reward_func], settings, args)
    return _build_and_run(config, output_dir, RunPlan("grm", args, rows, tokenizer, reward_funcs, callbacks=callbacks),
                          resume)
