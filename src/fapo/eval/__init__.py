"""Evaluation: GenRM benchmarks, policy evaluation, training curves — numbers, reports and plots.

- `grm_bench`: ProcessBench (acc_err, acc_corr, F1 per subset) and FlawedPositiveBench from verdicts
  given in a file or asked of a judge (`judges`: endpoints, a local model served in-process, an oracle).
- `policy`: k samples per problem (`generation`: vLLM or transformers), `fapo.verify`, the judge on
  the correct ones → avg@k, pass@k, maj@k, flawed-positive rates, lengths; `policy_report` writes it.
- `curves`: a training run's metrics.jsonl → PNG curves, several runs compared.
- `metrics`: the pure metric functions all of them use.

Owns measurement. Must not train. Importing this package loads neither torch nor matplotlib:
both are imported by the functions that need them.
"""

from __future__ import annotations

from fapo.eval.critic_data import CriticRow, load_critic_rows, load_critic_sets, load_predictions
from fapo.eval.curves import CURVE_METRICS, RunCurves, read_run, write_curves
from fapo.eval.generation import Sample, SamplingConfig, sample_completions
from fapo.eval.grm_bench import GrmReport, evaluate_grm, grm_markdown, judge_critic_rows, write_grm_report
from fapo.eval.judges import JudgeSpec, judge_items
from fapo.eval.policy import (
    PolicyEvalConfig,
    PolicyReport,
    PolicyScores,
    Rollout,
    evaluate_policy,
    score_rollouts,
)
from fapo.eval.policy_report import policy_markdown, write_policy_report
from fapo.eval.problems import DEFAULT_PROMPT_TEMPLATE, EvalProblem, load_problems
from fapo.metrics import (
    FlawedPositiveScores,
    SubsetScores,
    flawed_positive_scores,
    majority_index,
    pass_at_k,
    processbench_scores,
)

__all__ = [
    "CURVE_METRICS", "DEFAULT_PROMPT_TEMPLATE", "CriticRow", "EvalProblem", "FlawedPositiveScores", "GrmReport",
    "JudgeSpec", "PolicyEvalConfig", "PolicyReport", "PolicyScores", "Rollout", "RunCurves", "Sample",
    "SamplingConfig", "SubsetScores", "evaluate_grm", "evaluate_policy", "flawed_positive_scores", "grm_markdown",
    "judge_critic_rows", "judge_items", "load_critic_rows", "load_critic_sets", "load_predictions",
    "load_problems", "majority_index", "pass_at_k", "policy_markdown", "processbench_scores", "read_run",
    "sample_completions", "score_rollouts", "write_curves", "write_grm_report", "write_policy_report",
]  # fmt: skip
