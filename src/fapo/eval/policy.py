"""Policy evaluation: k samples per problem → verify → judge the correct ones → accuracy and flaw rates.

    problems = load_problems("../shared/data/math500/test.jsonl", limit=100)
    report = evaluate_policy("out/checkpoint-100", problems, PolicyEvalConfig(SamplingConfig(k=16)),
                             judge=JudgeSpec(JudgeConfig(endpoints=("http://127.0.0.1:8000/v1",))))
    report.scores.avg_at_k, report.scores.flawed_among_correct

A rollout is correct as training counts it: `fapo.outcome.rollout_outcomes` (the one rule: not cut at
max_tokens, with answer_format "strict" exactly one `\\boxed{}` with nothing after it but a closer, and `fapo.verify`
finds its final answer equivalent to the gold). Only correct rollouts go to the judge (docs/design.md §1.1),
and a judge failure is counted, never read as "clean" or "flawed". `score_rollouts` is the pure
part, testable without a model. Must not train.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fapo.eval.generation import Sample, SamplingConfig, sample_completions
from fapo.eval.judges import JudgeSpec, judge_items
from fapo.eval.problems import DEFAULT_PROMPT_TEMPLATE, EvalProblem, check_template, render_prompt
from fapo.eval.report import rounded
from fapo.metrics import majority_index, pass_at_k, percent

OUTCOMES = ("clean correct", "flawed correct", "correct, no verdict", "wrong", "no answer")
"""Rollout outcome groups, in report order. "correct, no verdict": the judge failed or was not asked."""


@dataclass(frozen=True)
class PolicyEvalConfig:
    """How a policy is evaluated (besides the judge)."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """k, temperature, max_tokens, backend, ... (see `SamplingConfig`)."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """User message around each problem; `{problem}` is replaced (the testbed's policy uses "{problem}")."""
    answer_format: Literal["last_boxed", "strict"] = "last_boxed"
    """The `fapo.outcome` answer rule: "last_boxed" (the last \\boxed{} is the answer) or "strict" (exactly one
    \\boxed{}, nothing after it but whitespace, `.`, `$` or `\\]`; the training setting of the same name; the testbed's rule)."""
    judge_with_gold: bool = True
    """Show the gold answer to the GenRM (the FAPO critic prompt does)."""
    verify_timeout: float = 5.0
    """Seconds math-verify may spend on one answer."""

    def __post_init__(self) -> None:
        check_template(self.prompt_template)
        if self.answer_format not in ("last_boxed", "strict"):
            raise ValueError(f'answer_format must be "last_boxed" or "strict", got {self.answer_format!r}')
        if not self.verify_timeout > 0:
            raise ValueError(f"verify_timeout must be > 0 seconds, got {self.verify_timeout}")


@dataclass(frozen=True)
class Rollout:
    """One sampled solution and what verification and the judge said about it."""

    problem_index: int
    sample_index: int
    text: str
    num_tokens: int
    truncated: bool
    num_steps: int
    """Steps as the GenRM sees them (`fapo.steps.split_steps`, blank-line paragraphs)."""
    correct: bool
    pred: str | None
    """The extracted final answer (None when there is none)."""
    verify_status: str
    """`fapo.verify`'s status: "ok", "no_answer", "timeout" or "error"."""
    answer_counted: bool
    """The answer rule accepted the response (`fapo.outcome.RolloutOutcome.answer_counted`)."""
    verdict: int | None = None
    """The judge's earliest wrong step (-1: none); None when not judged or the judge failed."""
    judge_status: str | None = None
    """"ok", "invalid", "truncated" (the critique was cut at the critique budget: no verdict) or "error" for
    judged rollouts; None when not judged (wrong, or no judge)."""

    @property
    def outcome(self) -> str:
        if self.correct:
            if self.judge_status != "ok":
                return "correct, no verdict"
            return "flawed correct" if self.verdict != -1 else "clean correct"
        return "wrong" if self.verify_status == "ok" and self.answer_counted else "no answer"


@dataclass(frozen=True)
class PolicyScores:
    """Accuracy and flaw numbers over a set of rollouts (percentages 0–100)."""

    n_problems: int
    n_rollouts: int
    n_correct: int
    avg_at_k: float
    """Share of rollouts that are correct (mean accuracy over k samples)."""
    pass_at: dict[int, float]
    """j → unbiased pass@j averaged over problems, for j = 1, 2, 4, ... and k."""
    maj_at_k: float
    """Share of problems whose most common extracted answer is correct."""
    n_judged: int
    """Correct rollouts with a valid verdict."""
    n_flawed: int
    """Correct rollouts the judge called flawed (flawed positives)."""
    flawed_among_correct: float | None
    """n_flawed / n_judged: the flawed-positive rate (None without a judge or verdicts)."""
    flawed_among_all: float | None
    """n_flawed / n_rollouts (None without a judge; a lower bound when the judge failed on some)."""
    mean_length_tokens: float
    mean_steps: float
    truncated: float
    """Share of rollouts cut at max_tokens."""
    verify_status: dict[str, int]
    judge_status: dict[str, int]
    """ok / invalid / error among judged rollouts (empty without a judge)."""
    outcomes: dict[str, int]
    """Rollouts per OUTCOMES group."""


def pass_at_ks(k: int) -> list[int]:
    """1, 2, 4, ... up to k, and k itself."""
    ks, j = [], 1
    while j < k:
        ks.append(j)
        j *= 2
    return ks + [k]


def score_rollouts(rollouts: Sequence[Rollout], judged: bool) -> PolicyScores:
    """Scores of rollouts grouped by `problem_index` (each group: that problem's samples).

    `judged` says whether a judge was asked about the correct rollouts; without one the flaw rates
    are None.
    """
    from fapo.answers import normalize_answer

    groups: dict[int, list[Rollout]] = defaultdict(list)
    for r in rollouts:
        groups[r.problem_index].append(r)
    if not groups:
        raise ValueError("no rollouts to score")
    k = min(len(g) for g in groups.values())
    pass_at = {
        j: 100.0 * sum(pass_at_k(len(g), sum(r.correct for r in g), j) for g in groups.values()) / len(groups)
        for j in pass_at_ks(k)
    }
    majority_correct = 0
    for group in groups.values():
        answers = [normalize_answer(r.pred) if r.pred and r.verify_status == "ok" and r.answer_counted else None
                   for r in group]
        best = majority_index(answers)
        majority_correct += best is not None and group[best].correct
    n = len(rollouts)
    n_correct = sum(r.correct for r in rollouts)
    judged_ok = [r for r in rollouts if r.correct and r.judge_status == "ok"]
    n_flawed = sum(r.verdict != -1 for r in judged_ok)
    return PolicyScores(
        n_problems=len(groups), n_rollouts=n, n_correct=n_correct,
        avg_at_k=100.0 * n_correct / n, pass_at=pass_at, maj_at_k=100.0 * majority_correct / len(groups),
        n_judged=len(judged_ok), n_flawed=n_flawed,
        flawed_among_correct=percent(n_flawed, len(judged_ok)) if judged else None,
        flawed_among_all=percent(n_flawed, n) if judged else None,
        mean_length_tokens=sum(r.num_tokens for r in rollouts) / n,
        mean_steps=sum(r.num_steps for r in rollouts) / n,
        truncated=100.0 * sum(r.truncated for r in rollouts) / n,
        verify_status=dict(Counter(r.verify_status for r in rollouts)),
        judge_status=dict(Counter(r.judge_status for r in rollouts if r.judge_status is not None)),
        outcomes={name: sum(r.outcome == name for r in rollouts) for name in OUTCOMES},
    )


@dataclass(frozen=True)
class PolicyReport:
    """A policy's evaluation: what was run, the scores, and every rollout."""

    model: str
    data: str
    judge: str
    """The judge's description, or "none"."""
    generation_backend: str
    config: PolicyEvalConfig
    scores: PolicyScores
    seconds: dict[str, float]
    """Wall time of sampling, verification and judging."""
    judge_metrics: dict[str, float]
    problems: tuple[EvalProblem, ...] = field(repr=False)
    rollouts: tuple[Rollout, ...] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The REPORT.json object: run description, then the scores (percentages 0–100)."""
        head = {"model": self.model, "data": self.data, "judge": self.judge, "generation_backend": self.generation_backend,
                "k": self.config.sampling.k}
        return rounded({**head, **asdict(self.scores), "config": asdict(self.config), "seconds": self.seconds,
                        "judge_metrics": self.judge_metrics})


def verify_samples(problems: Sequence[EvalProblem], samples: Sequence[Sequence[Sample]],
                   answer_format: str = "last_boxed", timeout: float = 5.0) -> list[Rollout]:
    """Rollouts (unjudged) for each problem's samples, scored by `fapo.outcome.rollout_outcomes`."""
    from fapo.outcome import rollout_outcomes
    from fapo.steps import split_steps

    flat = [(i, j, s) for i, group in enumerate(samples) for j, s in enumerate(group)]
    outcomes = rollout_outcomes([s.text for _, _, s in flat], [problems[i].answer for i, _, _ in flat],
                                [s.truncated for _, _, s in flat], answer_format, timeout=timeout)  # type: ignore[arg-type]
    return [Rollout(i, j, s.text, s.num_tokens, s.truncated, len(split_steps(s.text)), o.correct, o.pred,
                    o.verify_status, o.answer_counted)
            for (i, j, s), o in zip(flat, outcomes, strict=True)]


def judge_rollouts(rollouts: Sequence[Rollout], problems: Sequence[EvalProblem], judge: JudgeSpec,
                   with_gold: bool = True, progress: bool = False) -> tuple[list[Rollout], dict[str, float]]:
    """Ask the judge about the correct rollouts; the rest are returned unchanged."""
    from dataclasses import replace

    from fapo.grm.types import JudgeItem
    from fapo.steps import split_steps

    asked = [i for i, r in enumerate(rollouts) if r.correct]
    items = [
        JudgeItem(problems[rollouts[i].problem_index].problem, tuple(split_steps(rollouts[i].text)),
                  problems[rollouts[i].problem_index].answer if with_gold else None)
        for i in asked
    ]
    judgements, metrics = judge_items(items, judge, progress=progress)
    out = list(rollouts)
    for i, j in zip(asked, judgements, strict=True):
        out[i] = replace(out[i], verdict=j.verdict, judge_status="truncated" if j.truncated else j.status)
    return out, metrics


def evaluate_policy(
    model_dir: str,
    problems: Sequence[EvalProblem],
    config: PolicyEvalConfig | None = None,
    judge: JudgeSpec | None = None,
    data_name: str = "",
    progress: bool = False,
) -> PolicyReport:
    """Sample, verify, judge (when `judge` is given) and score a policy on `problems`."""
    config = config or PolicyEvalConfig()
    if not problems:
        raise ValueError("no problems to evaluate")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    prompts = [render_prompt(config.prompt_template, p.problem) for p in problems]
    samples, backend = sample_completions(model_dir, prompts, config.sampling, progress=progress)
    seconds["sampling"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rollouts = verify_samples(problems, samples, config.answer_format, config.verify_timeout)
    seconds["verify"] = time.perf_counter() - t0
    metrics: dict[str, float] = {}
    if judge is not None:
        t0 = time.perf_counter()
        rollouts, metrics = judge_rollouts(rollouts, problems, judge, config.judge_with_gold, progress)
        seconds["judge"] = time.perf_counter() - t0
    return PolicyReport(
        model=str(model_dir), data=data_name, judge=judge.name if judge else "none", generation_backend=backend,
        config=config, scores=score_rollouts(rollouts, judged=judge is not None), seconds=seconds,
        judge_metrics=metrics, problems=tuple(problems), rollouts=tuple(rollouts),
    )
