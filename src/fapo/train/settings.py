"""The `fapo:` section of a training config (`FapoSettings`, one docstring per field) and its value checks.

`fapo.train.config` reads YAML, applies overrides and validates the TRL keys; this module owns only what the
fapo keys mean and which values they take. Imports nothing from `fapo.train`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from fapo.bounds import check_number
from fapo.grm.failure_window import FailureBudget
from fapo.grm.types import JudgeConfig
from fapo.policy_prompt import DEFAULT_PROMPT_TEMPLATE
from fapo.rewards import MAX_PENALTY
from fapo.verify import MAX_TIMEOUT_S


class ConfigError(ValueError):
    """A config value or key that cannot be used; the message says how to fix it."""


MAX_VERIFY_TIMEOUT_S = MAX_TIMEOUT_S
"""Largest `fapo.verify_timeout` (`fapo.verify.MAX_TIMEOUT_S`)."""


def _bounded(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    try:
        check_number(name, value, low, high, low_open=low_open)
    except ValueError as err:
        raise ConfigError(str(err)) from err


_FAPO_RANGES: tuple[tuple[str, float | None, str], ...] = (
    ("max_train_samples", 1, "a whole number >= 1, or null for all rows"),
    ("max_prompt_length", 1, "a whole number of tokens >= 1, or null to keep every prompt"),
    ("max_position_embeddings", 1, "a whole number of positions >= 1, or null for the model's own"),
    ("verify_workers", 1, "a whole number >= 1, or null"),
    ("torch_threads", 1, "a whole number >= 1, or null"),
    ("rollout_chunks", 1, "a whole number >= 1"),
)
"""fapo fields with a lower bound: (name, inclusive bound or None for "> 0", what the message asks for)."""


@dataclass(frozen=True)
class FapoSettings:
    """The `fapo:` section of a training config."""

    model: str = ""
    """Model to train: a local directory or a hub name (loaded with from_pretrained). Required in a training
    config (`require_run_inputs`); a reward function alone (`fapo.trl`) needs none."""
    train_data: str = ""
    """Training data file (.jsonl, .json or .parquet). Required in a training config, like `model`."""
    problem_field: str = "problem"
    """Column holding the problem text (policy) — e.g. `question` for GSM8K, `prompt` for DAPO-Math; dotted for a
    nested field (`extra_info.question`). verl-format rows (chat `prompt`, `reward_model.ground_truth`) need none:
    their chat prompt is used as it is and `extra_info.question` is the problem (`fapo.train.data.policy_row`)."""
    answer_field: str = "answer"
    """Column holding the gold answer (policy), dotted for a nested field (`reward_model.ground_truth`). A
    GSM8K-style `... #### 42` keeps only `42`."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """User message built from the problem; `{problem}` is replaced by the problem text."""
    max_train_samples: int | None = None
    """Use only the first N rows of the training data (None: all)."""
    max_prompt_length: int | None = None
    """Drop (and count) rows whose chat-templated prompt is longer than this many tokens, as verl's
    `data.filter_overlong_prompts` does with `data.max_prompt_length` (None: keep all)."""
    max_position_embeddings: int | None = None
    """Override the model's `max_position_embeddings` (verl's `override_config`; the recipe sets 32768 on
    Qwen2.5-Math-7B, whose config.json says 4096). Applied to the trained model and, through the model
    directory it loads from, to colocated vLLM; a vLLM server needs `--hf-overrides` (README)."""
    penalty: float = 1.0
    """λ: reward taken off a verified-correct rollout the GenRM calls flawed. 0 = the GRPO baseline."""
    judge: JudgeConfig | None = None
    """The GenRM client (`fapo.grm.types.JudgeConfig`, every field settable: `endpoints`, `model`, `api_key`,
    `concurrency`, `timeout`, `retries`, `max_tokens`, `temperature`, `top_p`, `votes`, `tie_break`,
    `cache_size`, `breaker_failures`, `breaker_cooldown`, `backoff_base`, `backoff_max`,
    `max_response_bytes`). Set: verified-correct rollouts are judged by these GenRM servers (our serve-grm,
    vLLM or SGLang). Leave out `judge` and `oracle` for GRPO (or FAPO without a judge)."""
    oracle: str | None = None
    """An in-process programmatic judge (`fapo.oracles`, e.g. "testbed": the testbed's step checker) instead
    of GenRM servers; not together with `judge`."""
    monitor_oracle: str | None = None
    """An in-process oracle that only measures (never changes a reward): logs `monitor/flawed_ratio`,
    the true flawed-positive ratio, for GRPO and FAPO runs alike (the testbed's checker: "testbed")."""
    judge_with_gold: bool = True
    """Show the GenRM the gold answer (the FAPO-Critic prompt does)."""
    step_split: str = "paragraph"
    """How a completion is split into steps for the judge: "paragraph", "line" or a regex."""
    verify_timeout: float = 5.0
    """Seconds allowed to check one answer (enforced in worker processes)."""
    verify_workers: int | None = None
    """Verifier worker processes (None: a sensible default for the machine)."""
    answer_format: str = "last_boxed"
    """The answer rule (`fapo.outcome`): "last_boxed": the last \\boxed{} is the answer. "strict": exactly one
    \\boxed{} with nothing after it but whitespace or a closer (`.`, `$`, `\\]`)."""
    truncation_rule: str = "wrong"
    """What a rollout cut at max_completion_length is worth (`fapo.outcome`): "wrong": it has no answer (−1);
    "tail": verl-recipe fapo's rule, every rollout's answer is read from its last 300 characters, cut or not, so
    a cut rollout with the right answer there counts and only the overlong penalty (`overlong_buffer`) costs it.
    The verl adapter reads every response by "tail" (verl does not tell a reward function what was cut)."""
    judge_failure_rate: float = 0.2
    """No silent GRPO (`fapo.grm.failure_window`): the largest share of failed judgements (status error or
    invalid: no penalty given) tolerated over the last `judge_failure_window` judged rollouts (1: never act)."""
    judge_failure_window: int = 200
    """Judged rollouts the failure share is taken over."""
    on_judge_failures: str = "stop"
    """Past the tolerated share: "stop" (training stops with the counts and the fix) or "warn" (a warning at
    every step while it holds)."""
    overlong_buffer: int = 0
    """DAPO's soft overlong penalty: its buffer length L_cache in tokens (0 = off)."""
    torch_threads: int | None = None
    """torch CPU threads for the trainer (None: torch's choice). 1 helps when GenRM workers share a few cores."""
    write_critiques: bool = True
    """Write every judged rollout's critique, verdict and reward to OUTPUT/critiques.jsonl."""
    label_field: str = "label"
    """GenRM training (ProcessBench rows): the column with the earliest wrong step (-1 = none)."""
    steps_field: str = "steps"
    """GenRM training (ProcessBench rows): the column with the list of steps."""
    grm_with_gold: bool = True
    """GenRM training on ProcessBench rows: include `ground_truth` in the prompt when the row has one."""
    grm_process_reward: bool = True
    """GenRM training: R = R_outcome + R_process (the paper's); false: R_outcome alone (its ablation)."""
    trainer: str = "grpo"
    """Policy RL trainer: "grpo" (TRL's GRPOTrainer) or "async" (TRL's AsyncGRPOTrainer: vLLM server rollouts,
    each group verified and judged as it completes; needs GPUs and vLLM). `--trainer` on the command line."""
    rollout: str = "sync"
    """GRPOTrainer rollouts: "sync" (judge after the whole batch is generated) or "streaming" (verify and judge
    rollouts while the rest of the batch generates: with transformers generation each rollout as it ends, and
    with any backend each finished chunk of `rollout_chunks` while the next chunk generates)."""
    rollout_chunks: int = 1
    """Streaming rollouts: chunks per generation batch, whole groups each. 1 suits transformers generation (its
    rollouts are handed over as they end); vLLM returns whole chunks, so there use 4-8 (more chunks hide more
    judging but generate in smaller batches)."""

    def __post_init__(self) -> None:
        if self.judge is not None and self.oracle is not None:
            raise ConfigError("fapo.judge (GenRM servers) and fapo.oracle (an in-process judge) exclude each other: "
                              "keep one")
        _bounded("fapo.penalty (λ)", self.penalty, 0, MAX_PENALTY)
        _bounded("fapo.verify_timeout", self.verify_timeout, 0, MAX_VERIFY_TIMEOUT_S, low_open=True)
        if self.step_split not in ("paragraph", "line"):
            try:
                re.compile(self.step_split)
            except (re.error, RecursionError, OverflowError) as err:
                raise ConfigError(f'fapo.step_split must be "paragraph", "line" or a regular expression; '
                                  f"{self.step_split!r} is not one ({err})") from err
        if self.trainer not in ("grpo", "async"):
            raise ConfigError(f'fapo.trainer must be "grpo" or "async", got {self.trainer!r}')
        if self.rollout not in ("sync", "streaming"):
            raise ConfigError(f'fapo.rollout must be "sync" or "streaming", got {self.rollout!r}')
        if self.rollout == "streaming" and self.trainer == "async":
            raise ConfigError('fapo.rollout: streaming is for trainer "grpo"; trainer "async" always streams')
        if self.answer_format not in ("last_boxed", "strict"):
            raise ConfigError(f'fapo.answer_format must be "last_boxed" or "strict", got {self.answer_format!r}')
        if self.truncation_rule not in ("wrong", "tail"):
            raise ConfigError(f'fapo.truncation_rule must be "wrong" or "tail", got {self.truncation_rule!r}')
        try:
            _ = self.failure_budget  # validates the three judge-failure keys
        except ValueError as err:
            raise ConfigError(f"fapo.judge_failure_rate / judge_failure_window / on_judge_failures: {err}") from err
        if "{problem}" not in self.prompt_template:
            raise ConfigError("fapo.prompt_template must contain {problem}")
        if self.overlong_buffer < 0:
            raise ConfigError(f"fapo.overlong_buffer must be >= 0, got {self.overlong_buffer}")
        for name, low, what in _FAPO_RANGES:
            value = getattr(self, name)
            if value is not None and not (value >= low if low is not None else value > 0):
                raise ConfigError(f"fapo.{name} must be {what}, got {value!r}")

    @property
    def failure_budget(self) -> FailureBudget:
        """The judge-failure bound as `fapo.grm.failure_window.FailureBudget`."""
        return FailureBudget(self.judge_failure_rate, self.judge_failure_window, self.on_judge_failures)  # type: ignore[arg-type]

    def require_run_inputs(self) -> None:
        """ConfigError unless the model and the training data are named (a reward alone needs neither)."""
        if not self.model:
            raise ConfigError("fapo.model is required: a local model directory or a hub name")
        if not self.train_data:
            raise ConfigError("fapo.train_data is required: a .jsonl, .json or .parquet file")

    @property
    def judge_kind(self) -> str:
        """Who judges verified-correct rollouts: "http" (GenRM servers), "oracle" (in-process) or "none"."""
        return "http" if self.judge is not None else "oracle" if self.oracle is not None else "none"

    def record(self) -> dict[str, Any]:
        """The settings as plain data for the run record, API keys masked."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["judge"] = self.judge.safe_dict() if self.judge is not None else None
        return out
