"""The update schedule TRL's GRPOTrainer will run: how many rollouts one generation batch holds and
how many optimizer steps it feeds.

Owns: `effective_schedule`, TRL's own rules (GRPOConfig.__post_init__, TRL 1.16) applied to a config for
a given number of training processes, and the one-line description `fapo train` prints at start.
Must not: build a trainer, or import torch. It reads TRL's field defaults only for keys a config leaves
out.

TRL splits one generation batch of `generation_batch_size` completions into `steps_per_generation`
micro-batches of `per_device_train_batch_size` completions per process, goes over them `num_iterations`
times, and steps the optimizer every `gradient_accumulation_steps` micro-batches. With more than one
optimizer step per generation batch, every step after the first trains a policy that differs from the
one that sampled, so the PPO clip can bind (docs/design.md §2; the paper's run scripts make 16).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

SCHEDULE_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_generations",
                 "steps_per_generation", "generation_batch_size", "num_iterations")


@dataclass(frozen=True)
class Schedule:
    """What one generation batch is and how TRL spends it, for `world_size` training processes."""

    world_size: int
    """Training processes (GPUs) the schedule was worked out for."""
    num_generations: int
    """Rollouts per prompt (G)."""
    completions_per_generation: int
    """Completions sampled together: TRL's `generation_batch_size`."""
    steps_per_generation: int
    """Micro-batches (per process) the generation batch is split into."""
    num_iterations: int
    """Passes over each generation batch (μ)."""
    gradient_accumulation_steps: int
    """Micro-batches per optimizer step."""
    completions_per_optimizer_step: int
    """per_device_train_batch_size × world_size × gradient_accumulation_steps."""

    @property
    def prompts_per_generation(self) -> float:
        return self.completions_per_generation / self.num_generations

    @property
    def optimizer_steps_per_generation(self) -> float:
        """steps_per_generation × num_iterations / gradient_accumulation_steps (below 1: one step spans batches)."""
        return self.steps_per_generation * self.num_iterations / self.gradient_accumulation_steps

    @property
    def prompts_per_optimizer_step(self) -> float:
        return self.completions_per_optimizer_step / self.num_generations

    def describe(self) -> str:
        """One line: what TRL will do per generation batch."""
        return (
            f"schedule ({self.world_size} process{'es' if self.world_size != 1 else ''}): "
            f"{_num(self.prompts_per_generation)} prompts x {self.num_generations} = "
            f"{self.completions_per_generation} completions per generation batch; "
            f"{_num(self.optimizer_steps_per_generation)} optimizer steps per generation batch "
            f"({self.num_iterations} pass{'es' if self.num_iterations != 1 else ''}), "
            f"each on {_num(self.prompts_per_optimizer_step)} prompts = "
            f"{self.completions_per_optimizer_step} completions"
        )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.3g}"


@lru_cache(maxsize=1)
def _trl_defaults() -> dict[str, Any]:
    from trl import GRPOConfig

    fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    return {key: fields[key].default for key in SCHEDULE_KEYS}


def _settings(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        missing = [key for key in SCHEDULE_KEYS if key not in config]
        defaults = _trl_defaults() if missing else {}
        return {key: config[key] if key in config else defaults[key] for key in SCHEDULE_KEYS}
    return {key: getattr(config, key) for key in SCHEDULE_KEYS}


def effective_schedule(config: Mapping[str, Any] | Any, world_size: int) -> Schedule:
    """The schedule TRL derives from a config's TRL keys (a mapping, TRL defaults for missing keys) or from a
    built GRPOConfig, for `world_size` training processes. Raises ValueError where TRL would refuse.

    A built GRPOConfig has both `steps_per_generation` and `generation_batch_size` filled in for the
    world size it was built under; it is accepted when they agree with `world_size`.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    s = _settings(config)
    micro, accumulation, group = s["per_device_train_batch_size"], s["gradient_accumulation_steps"], s["num_generations"]
    if min(micro, accumulation, s["num_iterations"]) < 1 or group < 2:
        raise ValueError("per_device_train_batch_size, gradient_accumulation_steps and num_iterations must be >= 1, "
                         f"num_generations >= 2; got {micro}, {accumulation}, {s['num_iterations']}, {group}")
    per_micro_step = micro * world_size  # completions in one micro-batch over all processes
    steps, batch = s["steps_per_generation"], s["generation_batch_size"]
    if steps is None and batch is None:
        steps = accumulation
    elif steps is None:
        if batch % per_micro_step:
            raise ValueError(f"generation_batch_size ({batch}) must be divisible by per_device_train_batch_size x "
                             f"world_size ({micro} x {world_size} = {per_micro_step})")
        steps = batch // per_micro_step
    elif batch is not None and batch != steps * per_micro_step:
        raise ValueError(f"steps_per_generation ({steps}) and generation_batch_size ({batch}) disagree for world size "
                         f"{world_size} (set one of them; a built GRPOConfig holds both for its own world size)")
    batch = steps * per_micro_step
    if batch % group:
        raise ValueError(f"a generation batch of {batch} completions is not a whole number of groups of {group}")
    return Schedule(world_size=world_size, num_generations=group, completions_per_generation=batch,
                    steps_per_generation=steps, num_iterations=s["num_iterations"],
                    gradient_accumulation_steps=accumulation,
                    completions_per_optimizer_step=micro * world_size * accumulation)
