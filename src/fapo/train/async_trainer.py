"""FAPO policy RL on TRL's AsyncGRPOTrainer (`fapo.trainer: async`, `fapo train policy --trainer async`).

AsyncGRPOTrainer (trl.experimental.async_grpo) generates with a `vllm serve` server through
`/v1/completions` in a spawned rollout worker, scores each group as soon as it completes while other
groups still generate, and streams the trainer's weights to the vLLM server over NCCL: it needs GPUs
and vLLM. fapo gives it the picklable `FapoAsyncReward` (plus DAPO's soft overlong penalty when
configured) and a trainer subclass that folds the worker's per-group metrics file into TRL's logs, so
a run logs the same `verify/*`, `grm/*`, `reward/mean` and `time/*` keys as a GRPOTrainer run
(per group, averaged over each logging window) and writes the same critiques.jsonl.

Owns the config translation and the log bridge; the reward is `fapo.train.async_reward`'s and all
training is TRL's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fapo.train.config import ConfigError, TrainConfig
from fapo.train.launch_inputs import drop_long_prompts, overridden_model
from fapo.train.session import (
    build_judge_factory,
    load_tokenizer,
    resolve_monitor,
    reward_funcs_with_overlong,
    run_trainer,
    set_threads,
    write_run_config,
)
from fapo.train.trl_classes import async_config_class

ASYNC_FIXED = {
    "loss_type": (("dapo",), "its loss is token-mean over the optimizer step (TRL's dapo)"),
    "scale_rewards": (("group", True), "it divides each advantage by its group's std"),
    "mask_truncated_completions": ((False,), "it trains on truncated completions"),
    "beta": ((0, 0.0), "it has no KL term"),
    "num_iterations": ((1,), "it makes one pass over each rollout"),
    "delta": ((None,), "it has no dual clip"),
    "generation_batch_size": ((None,), "it has no generation batch: it trains on rollouts as they arrive"),
    "steps_per_generation": ((None,), "it has no generation batch: it trains on rollouts as they arrive"),
    "use_vllm": ((True,), "it always generates on a vLLM server"),
    "vllm_mode": (("server",), "it always generates on a vLLM server"),
    "vllm_importance_sampling_correction": ((False,), "it has no importance-sampling correction"),
}
"""GRPOConfig keys AsyncGRPOConfig lacks, the values that mean what AsyncGRPOTrainer does anyway, and what it
does. A config that sets one to another value is refused: the run would silently not be what it says."""


def async_refusals(trl: dict[str, Any]) -> list[str]:
    """`key: value (what AsyncGRPOTrainer does instead)` for each setting it would silently drop."""
    return [f"{key}: {trl[key]} ({what})" for key, (same, what) in ASYNC_FIXED.items()
            if key in trl and trl[key] not in same]


def async_grpo_args(config: TrainConfig, output_dir: Path, max_steps: int | None,
                    announce: Callable[[str], None] | None = None):
    """AsyncGRPOConfig from the config's TRL keys. A GRPOTrainer setting AsyncGRPOTrainer would drop with an
    effect (`ASYNC_FIXED`) is a ConfigError; the rest of GRPOTrainer's keys (vLLM memory, logging of
    completions, ...) have no meaning there and are named in the announced line, with the staleness."""
    refused = async_refusals(config.trl)
    if refused:
        raise ConfigError("--trainer async would drop " + "; ".join(refused) + ": set them to what it does "
                          "(e.g. --set delta=null) or use --trainer grpo")
    config_class = async_config_class()
    valid = {f.name for f in dataclasses.fields(config_class)}
    kept = {k: v for k, v in config.trl.items() if k in valid}
    dropped = sorted(k for k in config.trl if k not in valid and k not in ASYNC_FIXED)
    kept.update({"output_dir": str(output_dir), "disable_tqdm": True})
    kept.setdefault("report_to", "none")
    if max_steps is not None:
        kept["max_steps"] = max_steps
    try:
        args = config_class(**kept)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"invalid AsyncGRPOTrainer setting: {err}") from err
    if announce is not None and args.process_index == 0:
        announce(async_line(args, dropped))
    return args


def async_line(args, dropped: list[str]) -> str:
    """What AsyncGRPOTrainer will do, in one line: its groups, its batch and its staleness."""
    line = (f"async (AsyncGRPOTrainer): groups of {args.num_generations} from vLLM at "
            f"{args.vllm_server_base_url}, each verified and judged as it completes; "
            f"{args.per_device_train_batch_size} x {args.world_size} processes per optimizer step; trains on "
            f"rollouts sampled up to max_staleness = {args.max_staleness} optimizer steps before (older ones are "
            "dropped), with no importance-sampling correction for the lag")
    return line + (f"; not used by AsyncGRPOTrainer: {', '.join(dropped)}" if dropped else "")


def fapo_async_trainer_class():
    """AsyncGRPOTrainer that folds the rollout worker's FAPO metrics into its logs (and `time/step_s`)."""
    from trl.experimental.async_grpo import AsyncGRPOTrainer

    from fapo.train.async_reward import METRICS_FILE, MetricsTail

    class FapoAsyncGRPOTrainer(AsyncGRPOTrainer):
        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if not hasattr(self, "_fapo_tail"):
                self._fapo_tail = MetricsTail(Path(self.args.output_dir) / METRICS_FILE)
            if self.accelerator.is_main_process and self.model.training:
                add_rollout_metrics(self._metrics["train"], self._fapo_tail.read())
                step_times = self._metrics["train"].get("perf/step_s")
                if step_times:
                    self._metrics["train"]["time/step_s"] = list(step_times)
            super().log(logs, start_time)

    return FapoAsyncGRPOTrainer


def add_rollout_metrics(window: dict[str, list], rows: Sequence[dict[str, Any]]) -> None:
    """Append each group's metric values to the trainer's logging window (key -> list of values)."""
    for row in rows:
        for key, value in row.items():
            if key != "group" and isinstance(value, (int, float)):
                window.setdefault(key, []).append(float(value))


def check_async_requirements() -> None:
    """ConfigError unless vLLM is installed and a CUDA device is visible (AsyncGRPOTrainer needs both)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("fapo.trainer: async needs vLLM (pip install vllm) for its rollout server and a GPU for "
                          "its NCCL weight transfer; without them use trainer grpo with fapo.rollout: streaming")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("fapo.trainer: async moves weights to vLLM over NCCL and needs a CUDA device; "
                          "on a CPU use trainer grpo with fapo.rollout: streaming")


def train_policy_async(config: TrainConfig, output_dir: str | Path, max_steps: int | None = None,
                       resume: bool = False, callbacks: Sequence[Any] = (),
                       announce: Callable[[str], None] | None = None):
    """FAPO policy RL on AsyncGRPOTrainer; the same artefacts as `fapo.train.runner.train_policy`."""
    from datasets import Dataset

    from fapo.train.async_reward import FapoAsyncReward
    from fapo.train.data import policy_rows
    from fapo.train.reward_funcs import trainer_end_tokens

    settings = config.fapo
    check_async_requirements()
    output_dir = Path(output_dir)
    rows = policy_rows(settings)
    args = async_grpo_args(config, output_dir, max_steps, announce)
    tokenizer = load_tokenizer(settings.model)
    rows = drop_long_prompts(rows, tokenizer, settings.max_prompt_length, announce if args.process_index == 0 else None)
    settings = overridden_model(settings, output_dir)
    config = dataclasses.replace(config, fapo=settings)
    resolve_monitor(settings)  # a bad oracle name fails here, not in the worker
    build_judge_factory(settings)
    reward = FapoAsyncReward(settings, args.max_completion_length, None, str(output_dir))
    reward_funcs = reward_funcs_with_overlong([reward], settings, args)
    write_run_config(config, output_dir, "policy")
    set_threads(settings)
    trainer = fapo_async_trainer_class()(model=settings.model, reward_funcs=reward_funcs, args=args,
                                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    reward.eos_token_ids = trainer_end_tokens(trainer)  # TRL's own set; the rollout worker spawns at train()
    return run_trainer(trainer, output_dir, resume, callbacks=callbacks)
