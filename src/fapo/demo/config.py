"""Sizes and settings of the demo run (`--quick` and the default)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

POLICY_MAX_TOKENS = 80
"""Longest policy completion in RL and in evaluation (a clean 6-operation solution is <= 71 tokens)."""

GRM_MAX_TOKENS = 256
"""Longest GenRM critique in GenRM RL, evaluation and judging (a checker-style critique of the demo's critic rows
is at most 232 tokens with the testbed tokenizer, 116 on average)."""

DEMO_JUDGE: dict[str, Any] = {"max_tokens": GRM_MAX_TOKENS, "temperature": 0.0}
"""How the demo asks its GenRM (training and evaluation alike): critiques of at most GRM_MAX_TOKENS, decoded greedily
so that the demo's numbers reproduce (the recipe's default, and fapo's, leaves decoding to the server)."""


POLICY_STEPS_PER_GENERATION = 4
"""Optimizer steps per generation batch of 64 rollouts (8 prompts x 8), each on 16 rollouts (2 prompts): DAPO's
schedule in miniature (the paper makes 16 per batch). From the second mini-batch on the policy differs from the
one that sampled, so the clip [0.8, 1.28] binds."""


POLICY_RL_LR = 1e-4
"""Policy RL's default learning rate (configs/tiny-cpu-policy.yaml; `fapo demo --lr` overrides it)."""


def tiny_policy_trl(steps: int, seed: int, learning_rate: float = POLICY_RL_LR) -> dict[str, Any]:
    """TRL settings of the testbed's policy RL (mirrors configs/tiny-cpu-policy.yaml at the default learning rate);
    `steps` are optimizer steps."""
    return {
        "learning_rate": learning_rate, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 8, "num_generations": 8,
        "per_device_train_batch_size": 16, "steps_per_generation": POLICY_STEPS_PER_GENERATION,
        "gradient_accumulation_steps": 1, "max_completion_length": POLICY_MAX_TOKENS,
        "temperature": 1.0, "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.0,
        "scale_rewards": "group", "mask_truncated_completions": True, "max_steps": steps, "bf16": False,
        "gradient_checkpointing": False, "use_cpu": True, "logging_steps": 1, "save_steps": 10_000,
        "report_to": "none", "seed": seed,
    }


GRM_RL_LR = 2e-5
"""GenRM RL's default learning rate (configs/tiny-cpu-grm.yaml; `fapo demo --grm-rl-lr` overrides it)."""


def tiny_grm_trl(steps: int, seed: int, learning_rate: float = GRM_RL_LR) -> dict[str, Any]:
    """TRL settings of the testbed's GenRM RL (mirrors configs/tiny-cpu-grm.yaml at the default learning rate)."""
    return {
        "learning_rate": learning_rate, "lr_scheduler_type": "constant", "num_generations": 8,
        "per_device_train_batch_size": 32, "gradient_accumulation_steps": 1, "max_completion_length": GRM_MAX_TOKENS,
        "temperature": 1.2, "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.0,
        "scale_rewards": "group", "mask_truncated_completions": True, "max_steps": steps, "bf16": False,
        "gradient_checkpointing": False, "use_cpu": True, "logging_steps": 1, "save_steps": 10_000,
        "report_to": "none", "seed": seed,
    }


JUDGES = ("both", "trained", "oracle")
ARM_JUDGE = {"fapo": "trained", "fapo_oracle": "oracle"}
"""Each FAPO arm's judge: the RL-trained tiny GenRM, or the step checker."""


@dataclass(frozen=True)
class DemoConfig:
    """What one demo run does."""

    seeds: int = 3
    """Seeds per arm; every arm shares each seed (same initial policy, data order and sampling seed)."""
    seed_base: int = 0
    """The RL seeds are seed_base, seed_base + 1, ...; data and warm-starts stay fixed (data seed `data_seed`)."""
    data_seed: int = 0
    """Seed of the testbed data and of both warm-starts (their initialisation and data order): another data seed is
    another draw of everything before RL, cached apart (see `cache_name`)."""
    judge: str = "both"
    """FAPO's judge: "trained" (the RL-trained tiny GenRM, served by two workers), "oracle" (the step checker,
    served by one worker) or "both" (two FAPO arms from the same seeds)."""
    n_train: int = 2000
    """Training problems for policy RL."""
    n_test: int = 200
    """Held-out problems (policy evaluation and critic test rows)."""
    policy_warmstart: dict[str, Any] = field(default_factory=dict)
    """Overrides of the testbed's policy warm-start preset."""
    grm_warmstart: dict[str, Any] = field(default_factory=dict)
    """Overrides of the testbed's GenRM warm-start preset."""
    critic_heal: int = 0
    """Healed pair slips, each followed by its clean twin, appended to the GenRM's SFT rows
    (`fapo.testbed.data.GenerateConfig.n_critic_heal`; 0: the mix alone). The data changes, so both warm-starts are
    cached apart (see `cache_name`); the policy trains to the same weights, its text being unchanged."""
    warmstart_draws: int = 4
    """Policy warm-starts tried, at most: a draw whose held-out diagnostics say it cannot test FAPO's claim
    (`fapo.testbed.diagnose.untestable_reasons`) is refused and another drawn; the report lists every draw. With
    none testable, the last is used and the report says so."""
    grm_rl_steps: int = 15
    """GenRM RL steps (R_outcome + R_process), 4 critic prompts x 8 critiques each."""
    grm_rl_lr: float = GRM_RL_LR
    """GenRM RL's learning rate."""
    grm_process_reward: bool = True
    """GenRM RL's reward: R_outcome + R_process (the paper's), or R_outcome alone (False: its ablation)."""
    grm_eval_every: int = 0
    """Also score the GenRM RL checkpoint every this many steps on the held-out critic rows (0: the warm-start and
    the final GenRM only); each scoring is one more GenRM evaluation."""
    policy_rl_steps: int = 160
    """Policy RL optimizer steps per arm and seed (POLICY_STEPS_PER_GENERATION per generation batch)."""
    policy_rl_lr: float = POLICY_RL_LR
    """Policy RL's learning rate (after 8 warm-up steps, then constant)."""
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
        if min(self.seeds, self.policy_rl_steps, self.workers, self.jobs, self.warmstart_draws) < 1 \
                or min(self.grm_rl_steps, self.grm_eval_every, self.seed_base, self.data_seed, self.critic_heal) < 0:
            raise ValueError("seeds, policy_rl_steps, workers, jobs and warmstart_draws must be >= 1; grm_rl_steps, "
                             "grm_eval_every, seed_base, data_seed and critic_heal >= 0")
        for name in ("grm_rl_lr", "policy_rl_lr"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.judge not in JUDGES:
            raise ValueError(f"judge must be one of {JUDGES}, got {self.judge!r}")
        if self.policy_rl_steps % POLICY_STEPS_PER_GENERATION:
            raise ValueError(f"policy_rl_steps must be a multiple of {POLICY_STEPS_PER_GENERATION} (optimizer steps "
                             f"per generation batch), got {self.policy_rl_steps}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_base, self.seed_base + self.seeds))

    @property
    def cache_name(self) -> str:
        """The warm-starts' cache folder: "demo" (or "demo-quick"), with "-data<D>" for a data seed D other than 0 and
        "-heal<N>" for `critic_heal` N other than 0."""
        # the GenRM's own settings are in its cache key: another GenRM SFT retrains it in place, the policy stays
        quick = replace(QUICK, **_run_fields(self), critic_heal=self.critic_heal, grm_warmstart=self.grm_warmstart)
        name = "demo-quick" if self == quick else "demo"
        name = name if self.data_seed == 0 else f"{name}-data{self.data_seed}"
        return name if self.critic_heal == 0 else f"{name}-heal{self.critic_heal}"

    @property
    def judges(self) -> tuple[str, ...]:
        """The judges FAPO runs with: "trained" and/or "oracle"."""
        return ("trained", "oracle") if self.judge == "both" else (self.judge,)

    @property
    def arms(self) -> tuple[str, ...]:
        """The RL arms: "grpo", then one FAPO arm per judge (see ARM_JUDGE)."""
        return ("grpo",) + tuple(arm for arm, judge in ARM_JUDGE.items() if judge in self.judges)

    @property
    def trains_genrm(self) -> bool:
        return "trained" in self.judges


QUICK = DemoConfig(
    seeds=1, n_train=500, n_test=60, policy_warmstart={"max_steps": 250, "eval_problems": 40, "eval_samples": 4},
    grm_warmstart={"max_steps": 40, "eval_problems": 40}, grm_rl_steps=3, policy_rl_steps=12, eval_problems=40,
    eval_samples=4, grm_eval_rows=120, warmstart_draws=1,
)


LONG_STEPS_FACTOR = 4
"""`fapo demo --long` trains each policy RL run this many times the default's optimizer steps."""


def _run_fields(config: DemoConfig) -> dict[str, Any]:
    """The fields that do not change what is warm-started (so not the cache either)."""
    names = ("seeds", "seed_base", "data_seed", "judge", "grm_rl_steps", "grm_rl_lr", "grm_process_reward",
             "grm_eval_every", "policy_rl_steps", "policy_rl_lr", "jobs", "workers", "penalty", "warmstart_draws")
    return {name: getattr(config, name) for name in names}


def demo_config(quick: bool = False, long: bool = False, grm_sft_steps: int | None = None, **overrides: Any) -> DemoConfig:
    """The default (or quick) demo config with overrides (None values are ignored). `long` multiplies the policy
    RL steps by LONG_STEPS_FACTOR (after an explicit `policy_rl_steps`, if given); `grm_sft_steps` sets the GenRM
    warm-start's optimizer steps, keeping the base's other GenRM overrides."""
    if quick and long:
        raise ValueError("--quick and --long do not go together")
    base = QUICK if quick else DemoConfig()
    if grm_sft_steps is not None:
        if grm_sft_steps < 1:
            raise ValueError(f"grm_sft_steps must be >= 1, got {grm_sft_steps}")
        overrides["grm_warmstart"] = {**base.grm_warmstart, "max_steps": grm_sft_steps}
    config = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    return replace(config, policy_rl_steps=config.policy_rl_steps * LONG_STEPS_FACTOR) if long else config
