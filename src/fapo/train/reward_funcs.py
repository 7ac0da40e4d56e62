"""FAPO's rewards as TRL reward functions (docs/design.md §1.1, §1.2).

`make_policy_reward_func` returns an `async def` (TRL 1.16 runs those concurrently on its own
event loop; it does not detect objects with an async `__call__`): decide each completion's outcome
with `fapo.outcome.rollout_outcomes` (verification in worker processes), ask the judge (a
`fapo.grm.judge.Judge`) about the correct ones only, each as soon as it is verified (`fapo.train.assess`),
return `fapo_reward` per completion, log metrics through TRL's `log_metric`, and write each judged
rollout's critique to critiques.jsonl.

Logged each batch (one logging path: TRL forwards them to metrics.jsonl and its `report_to` loggers): the short,
fixed set `POLICY_STEP_KEYS` (README's metrics table lists each with its meaning) — per-batch `verify/...`,
`grm/...`, `reward/mean`, `completions/mean_steps`, `time/judge_s`, `time/judge_busy_s`, NaN where a ratio has
nothing to count (`fapo.metrics`), and `grm/healthy_endpoints` — plus the monitor oracle's `monitor/...` when one is
set. The detail a dashboard cannot hold goes to OUTPUT/counters.jsonl, one record per batch: the judge's cumulative
counters and per-endpoint health under `grm/client/...` (`GenRMClient.metrics`, e.g.
`grm/client/endpoint/0/healthy`) and the shared verifier's cumulative `VerifyStats` under `verify/total/...`.
`make_grm_reward_func` scores sampled critiques with `grm_reward`. No advantages or losses here: TRL computes them.

Truncation is read with the trainer's own end tokens (`trainer_end_tokens`: TRL's `eos_token_ids`, which include
`generation_config.eos_token_id`, plus pad), bound from the trainer (`PolicyRewardState.bind_trainer`). No silent
GRPO: every judged rollout's status goes into `PolicyRewardState.failures` (`fapo.grm.failure_window`), which
stops the run (or warns at every step) once failed judgements pass `fapo.judge_failure_rate` of the window;
`grm/failed_share_window` logs the share.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fapo.grm.failure_window import FailureWindow
from fapo.grm.judge import Judge
from fapo.grm.prompt import parse_verdict
from fapo.grm.types import JudgeItem, Judgement
from fapo.io import JsonlAppender
from fapo.metrics import mean, percentile, ratio
from fapo.outcome import RolloutOutcome
from fapo.rewards import fapo_reward, grm_reward
from fapo.steps import split_steps
from fapo.train.assess import Assessment, assess_rollouts
from fapo.train.config import FapoSettings
from fapo.verify import verify_stats

logger = logging.getLogger(__name__)

POLICY_STEP_KEYS = (
    "verify/accuracy", "verify/no_answer", "verify/timeouts", "verify/errors", "grm/judged", "grm/flawed_ratio",
    "grm/flawed_of_all", "grm/clean_accuracy", "grm/errors", "grm/cached", "grm/invalid", "grm/latency_p50",
    "grm/latency_p95", "grm/healthy_endpoints", "reward/mean", "completions/mean_steps", "time/judge_s",
    "time/judge_busy_s", "grm/failed_share_window",
)  # fmt: skip
"""The keys the policy reward logs every batch (README's metrics table), besides the monitor's `monitor/...`."""

COUNTERS_FILE = "counters.jsonl"
"""OUTPUT/counters.jsonl: per batch, the judge client's and the verifier's cumulative counters (`cumulative_metrics`)."""


def completion_text(completion: Any) -> str:
    """Text of a TRL completion: a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))


def trainer_end_tokens(trainer: Any) -> frozenset[int]:
    """The token ids that end a completion for a TRL GRPOTrainer / AsyncGRPOTrainer: its own `eos_token_ids`
    (the tokenizer's EOS plus every `generation_config.eos_token_id`, e.g. `<|im_end|>`) and the pad token, the
    set TRL reads truncation with (`completions/clipped_ratio`, `mask_truncated_completions`)."""
    tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    return frozenset(int(t) for t in [*trainer.eos_token_ids, tokenizer.pad_token_id] if t is not None)


@dataclass
class PolicyRewardState:
    """What the policy reward function keeps between calls: settings, the judge, files, counters.

    `max_completion_length` and `eos_token_ids` come from the trainer (`bind_trainer`); None until bound."""

    settings: FapoSettings
    max_completion_length: int | None
    eos_token_ids: frozenset[int] | None
    judge_factory: Callable[[], Judge] | None
    critiques: JsonlAppender
    monitor: Callable[[str, list[str]], int | None] | None = None
    monitor_metrics: Callable[[list[str], list[str], list[bool]], dict[str, float]] | None = None
    judge: Judge | None = None
    totals: dict[str, int] = field(default_factory=lambda: {"judged": 0, "errors": 0, "invalid": 0, "flawed": 0})
    failures: FailureWindow = field(init=False)
    """The last judged rollouts' statuses (`fapo.grm.failure_window`): no silent GRPO."""
    counters: JsonlAppender = field(default_factory=lambda: JsonlAppender(None))
    """Where each batch's cumulative judge and verifier counters go (OUTPUT/counters.jsonl; None: nowhere)."""

    def __post_init__(self) -> None:
        self.failures = FailureWindow(self.settings.failure_budget)

    def bind_trainer(self, trainer: Any) -> None:
        """Take the completion limit and the end tokens from the TRL trainer that generates the rollouts."""
        self.max_completion_length = int(trainer.args.max_completion_length)
        self.eos_token_ids = trainer_end_tokens(trainer)

    def is_truncated(self, ids: Sequence[int]) -> bool:
        if self.max_completion_length is None or self.eos_token_ids is None:
            raise RuntimeError("the FAPO reward does not know the trainer's end tokens yet: bind it to the trainer "
                               "(PolicyRewardState.bind_trainer / the reward function's .bind(trainer))")
        return len(ids) >= self.max_completion_length and (not ids or ids[-1] not in self.eos_token_ids)

    async def open_judge(self) -> None:
        """Make the judge (once); its connections open on the running event loop when first used."""
        if self.judge is None:
            self.judge = self.judge_factory()

    async def judge_correct(self, problems: list[str], golds: list[str], texts: list[str]) -> list[Judgement]:
        await self.open_judge()
        gold_for = (lambda g: g) if self.settings.judge_with_gold else (lambda g: None)
        items = [
            JudgeItem(problem=p, steps=split_steps(t, self.settings.step_split), gold=gold_for(g))
            for p, g, t in zip(problems, golds, texts)
        ]
        return await self.judge.judge_many(items)

    async def close(self) -> None:
        if self.judge is not None:
            await self.judge.aclose()
            self.judge = None


async def score_policy_batch(
    state: PolicyRewardState,
    completions: list[Any],
    completion_ids: list[list[int]],
    problems: list[str],
    golds: list[str],
    step: int,
    log_metric: Callable[[str, float], None] | None,
) -> list[float]:
    """Rewards for one batch of rollouts; see the module docstring. Each verified-correct rollout goes to
    the judge as soon as it is verified (`fapo.train.assess`)."""
    texts = [completion_text(c) for c in completions]
    assessment = await assess_rollouts(state, texts, completion_ids, problems, golds)
    return record_assessment(state, assessment, texts, problems, golds, step, log_metric,
                             judge_wait_s=assessment.judge_wait_s(assessment.verified_at))


def record_assessment(state: PolicyRewardState, assessment: Assessment, texts: list[str], problems: list[str],
                      golds: list[str], step: int, log_metric: Callable[[str, float], None] | None,
                      judge_wait_s: float) -> list[float]:
    """FAPO rewards from an assessment; writes the critiques and logs the batch's metrics.

    `judge_wait_s` is how long the step waited on the judge once its rollouts were verified (synchronous
    path) or generated (streaming path): `time/judge_s`. `time/judge_busy_s` is the judge's whole span."""
    settings = state.settings
    results, correct = assessment.results, assessment.correct
    judged_idx, judgements = assessment.judged_idx, assessment.judgements
    flawed: list[bool | None] = [None] * len(texts)
    for i, j in zip(judged_idx, judgements):
        flawed[i] = j.flawed if j.status == "ok" else None
    rewards = [fapo_reward(ok, f, settings.penalty) for ok, f in zip(correct, flawed)]

    monitor_verdicts: dict[int, int | None] = {}
    if state.monitor is not None:
        for i in (i for i, ok in enumerate(correct) if ok):
            monitor_verdicts[i] = state.monitor(problems[i], split_steps(texts[i], settings.step_split))
    if settings.write_critiques:
        state.critiques.write([
            {"step": step, "problem": problems[i], "answer": golds[i], "completion": texts[i], "verdict": j.verdict,
             "flawed": j.flawed, "status": j.status, "critique": j.critique, "reward": rewards[i],
             "endpoint": j.endpoint, "attempts": j.attempts, "latency_s": round(j.latency_s, 4),
             **({"monitor_verdict": monitor_verdicts.get(i)} if state.monitor is not None else {})}
            for i, j in zip(judged_idx, judgements)
        ])
    state.failures.record(j.status for j in judgements)
    counters = cumulative_metrics(state.judge)
    state.counters.write([{"step": step, **counters}])
    if log_metric is not None:
        metrics = _policy_metrics(results, correct, judgements, rewards, texts, settings, judge_wait_s)
        metrics["time/judge_busy_s"] = assessment.judge_busy_s()
        metrics["grm/healthy_endpoints"] = counters.get("grm/client/healthy_endpoints", math.nan)
        metrics["grm/failed_share_window"] = state.failures.failure_share()
        if state.monitor is not None:
            metrics.update(_monitor_metrics(monitor_verdicts, judged_idx, judgements, len(texts)))
        if state.monitor_metrics is not None:
            metrics.update(state.monitor_metrics(problems, texts, correct))
        for key, value in metrics.items():
            log_metric(key, value)
    if state.judge_factory is not None:
        warning = state.failures.check(f"fapo (step {step})")  # "stop" raises: the run ends with the reason
        if warning is not None:
            logger.warning(warning)
    return rewards


def _monitor_metrics(verdicts: dict[int, int | None], judged_idx: list[int], judgements: list[Judgement],
                     n: int) -> dict[str, float]:
    """The monitor oracle's flawed ratios, and how often the judge's verdict agrees with it (flawed or not)."""
    flawed = sum(1 for v in verdicts.values() if v is not None and v != -1)
    pairs = [(verdicts.get(i), j.flawed) for i, j in zip(judged_idx, judgements) if j.status == "ok"]
    agree = [(truth is not None and truth != -1) == said for truth, said in pairs if truth is not None]
    return {
        "monitor/flawed_ratio": ratio(flawed, len(verdicts)),
        "monitor/flawed_of_all": ratio(flawed, n),
        "monitor/judge_agreement": ratio(sum(agree), len(agree)),
    }


def cumulative_metrics(judge: Judge | None) -> dict[str, float]:
    """The judge's counters since it was made under `grm/client/...` (per-endpoint health included) and the
    shared verifier's `VerifyStats` under `verify/total/...`: one OUTPUT/counters.jsonl record."""
    judge_metrics = judge.metrics() if judge is not None else {}
    out = {"grm/client/" + key.removeprefix("grm/"): value for key, value in judge_metrics.items()}
    out.update(verify_stats().as_metrics("verify/total/"))
    return out


def _policy_metrics(results: list[RolloutOutcome], correct: list[bool], judgements: list[Judgement],
                    rewards: list[float], texts: list[str], settings: FapoSettings, judge_s: float) -> dict[str, float]:
    n = len(correct)
    ok = [j for j in judgements if j.status == "ok"]
    n_flawed = sum(1 for j in ok if j.flawed)
    latencies = [j.latency_s for j in judgements if j.status != "error"]
    n_correct = sum(correct)
    return {
        "verify/accuracy": ratio(n_correct, n),
        "verify/no_answer": ratio(sum(r.verify_status == "no_answer" for r in results), n),
        "verify/timeouts": float(sum(r.verify_status == "timeout" for r in results)),
        "verify/errors": float(sum(r.verify_status == "error" for r in results)),
        "grm/judged": float(len(judgements)),
        "grm/flawed_ratio": ratio(n_flawed, len(ok)),
        "grm/flawed_of_all": ratio(n_flawed, n),
        "grm/clean_accuracy": ratio(n_correct - n_flawed, n),
        "grm/errors": float(sum(j.status == "error" for j in judgements)),
        "grm/cached": float(sum(bool(getattr(j, "cached", False)) for j in judgements)),
        "grm/invalid": float(sum(j.status == "invalid" for j in judgements)),
        "grm/latency_p50": percentile(latencies, 0.5),
        "grm/latency_p95": percentile(latencies, 0.95),
        "reward/mean": mean(rewards),
        "completions/mean_steps": mean(len(split_steps(t, settings.step_split)) for t in texts),
        "time/judge_s": judge_s,
    }


def make_policy_reward_func(state: PolicyRewardState):
    """The FAPO policy reward as an `async def` TRL reward function over `problem`/`answer` columns."""

    async def fapo_reward_func(prompts, completions, completion_ids, problem, answer, trainer_state=None,
                               log_metric=None, **_: Any) -> list[float]:
        step = (trainer_state.global_step + 1) if trainer_state is not None else 0
        bind_from_caller(state, log_metric)
        return await score_policy_batch(state, completions, completion_ids, list(problem), list(answer), step,
                                        log_metric)

    fapo_reward_func.__name__ = "fapo_reward"
    return fapo_reward_func


def bind_from_caller(state: PolicyRewardState, log_metric: Any) -> None:
    """Bind `state` to the TRL trainer calling the reward, if not yet bound: TRL passes its own bound method
    `log_metric`, whose owner is the trainer."""
    if state.eos_token_ids is None:
        trainer = getattr(log_metric, "__self__", None)
        if trainer is not None and hasattr(trainer, "eos_token_ids"):
            state.bind_trainer(trainer)


def make_grm_reward_func(critiques: JsonlAppender, write_critiques: bool = True, process: bool = True):
    """R_GenRM = R_outcome + R_process for sampled critiques, over `label`/`num_steps` columns (docs/design.md §1.2);
    `process=False`: R_outcome alone."""

    def genrm_reward_func(prompts, completions, label, num_steps, trainer_state=None, log_metric=None,
                          **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        predicted = [parse_verdict(t, n) for t, n in zip(texts, num_steps)]
        rewards = [grm_reward(p, lab, n, process) for p, lab, n in zip(predicted, label, num_steps)]
        step = (trainer_state.global_step + 1) if trainer_state is not None else 0
        if write_critiques:
            critiques.write([
                {"step": step, "label": lab, "verdict": p, "num_steps": n, "critique": t, "reward": r}
                for t, p, lab, n, r in zip(texts, predicted, label, num_steps, rewards)
            ])
        if log_metric is not None:
            total = len(rewards)
            valid = [(p, lab) for p, lab in zip(predicted, label) if p is not None]
            log_metric("grm/valid_rate", len(valid) / total)
            log_metric("grm/outcome_accuracy", sum((p != -1) == (lab != -1) for p, lab in valid) / total)
            log_metric("grm/exact_match", sum(p == lab for p, lab in valid) / total)
            log_metric("reward/mean", mean(rewards))
        return rewards

    genrm_reward_func.__name__ = "genrm_reward"
    return genrm_reward_func
