"""Sizes and settings of the demo run (`--quick` and the default)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

POLICY_MAX_TOKENS = 80
"""Longest policy completion in RL and in evaluation (a clean 6-operation solution is <= 71 tokens)."""


def tiny_policy_trl(steps: int, seed: int) -> dict[str, Any]:
    """TRL settings of the testbed's policy RL (mirrors configs/tiny-cpu-policy.yaml)."""
    return {
        "learning_rate": 2e-4, "lr_scheduler_type": "constant", "num_generations": 8,
        "per_device_train_batch_size": 64, "gradient_accumulation_steps": 1, "max_completion_length": POLICY_MAX_TOKENS,
        "temperature": 1.0, "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.0,
        "scale_rewards": "group", "mask_truncated_completions": True, "max_steps": steps, "bf16": False,
        "gradient_checkpointing": False, "use_cpu": True, "logging_steps": 1, "save_steps": 10_000,
        "report_to": "none", "seed": seed,
    }


def tiny_grm_trl(steps: int, seed: int) -> dict[str, Any]:
    """TRL settings of the testbed's GenRM RL (mirrors configs/tiny-cpu-grm.yaml)."""
    return {
        "learning_rate": 2e-5, "lr_scheduler_type": "constant", "num_generations": 8,
        "per_device_train_batch_size": 32, "gradient_accumulation_steps": 1, "max_completion_length": 192,
        "temperature": 1.2, "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.0,
        "scale_rewards": "group", "mask_truncated_completions": True, "max_steps": steps, "bf16": False,
        "gradient_checkpointing": False, "use_cpu": True, "logging_steps": 1, "save_steps": 10_000,
        "report_to": "none", "seed": seed,
    }


@dataclass(frozen=True)
class DemoConfig:
    """What one demo run does."""

    seeds: int = 3
    """Seeds per arm; GRPO and FAPO share each seed (same initial policy, data order and sampling seed)."""
    judge: str = "trained"
    """FAPO's judge: "trained" (the RL-trained tiny GenRM, served by two workers) or "oracle" (the checker)."""
    n_train: int = 2000
    """Training problems for policy RL."""
    n_test: int = 200
    """Held-out problems (policy evaluation and critic test rows)."""
    policy_warmstart: dict[str, Any] = field(default_factory=dict)
    """Overrides of the testbed's policy warm-start preset."""
    grm_warmstart: dict[str, Any] = field(default_factory=dict)
    """Overrides of the testbed's GenRM warm-start preset."""
    grm_rl_steps: int = 15
    """GenRM RL steps (R_outcome + R_process)."""
    policy_rl_steps: int = 60
    """Policy RL steps per arm and seed."""
    eval_problems: int = 100
    """Held-out problems in the final policy evaluation."""
    eval_samples: int = 8
    """Samples per held-out problem (T = 1)."""
    grm_eval_rows: int = 400
    """Held-out critic rows in the GenRM evaluation."""
    workers: int = 2
    """GenRM server processes behind the client."""
    penalty: float = 1.0
    """FAPO's λ."""
    jobs: int = 2
    """Policy RL runs (and evaluations) at once, each a process with one torch thread."""

    def __post_init__(self) -> None:
        if min(self.seeds, self.policy_rl_steps, self.workers, self.jobs) < 1 or self.grm_rl_steps < 0:
            raise ValueError("seeds, policy_rl_steps, workers and jobs must be >= 1; grm_rl_steps >= 0")
        if self.judge not in ("trained", "oracle"):
            raise ValueError(f'judge must be "trained" or "oracle", got {self.judge!r}')


QUICK = DemoConfig(
    seeds=1, n_train=500, n_test=60, policy_warmstart={"max_steps": 150, "eval_problems": 40, "eval_samples": 4},
    grm_warmstart={"max_steps": 40, "eval_problems": 40}, grm_rl_steps=3, policy_rl_steps=10, eval_problems=40,
    eval_samples=4, grm_eval_rows=120,
)


def demo_config(quick: bool = False, **overrides: Any) -> DemoConfig:
    """The default (or quick) demo config with overrides (None values are ignored)."""
    base = QUICK if quick else DemoConfig()
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
