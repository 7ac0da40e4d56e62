"""Metrics as pure functions, for training logs, evaluation and the testbed alike: the empty-case
convention, one percentile, ProcessBench, FlawedPositiveBench, pass@k, maj@k.

The empty-case convention. A ratio, mean or percentile over nothing is undefined: `ratio`, `mean` and
`percentile` return NaN, and logged metrics (metrics.jsonl, TRL's loggers, `GenRMClient.metrics()`) carry
that NaN, never a 0.0 that reads like a measurement (`grm/flawed_ratio` of a batch with no judged rollout is
NaN); counts are 0. JSON reports write an undefined score as null (`percent` below returns None). Cumulative
counters are namespaced apart from per-batch values: `grm/client/...` and `verify/total/...` in a run's counters.jsonl.

Definitions (docs/design.md §1.3; ProcessBench, Zheng et al. 2024; FAPO §4, arXiv 2510.22543), all in
percent (0–100):

    acc_err  = 100 · #{erroneous items whose exact earliest-error index is named} / #erroneous
    acc_corr = 100 · #{error-free items judged -1} / #error-free
    F1       = 2 · acc_err · acc_corr / (acc_err + acc_corr)          (0 when both are 0)

A missing verdict (None: the GenRM named no valid step, or failed) is never right: it is neither the
label's index nor -1. An empty class has no accuracy: `acc_err` / `acc_corr` is None (ProcessBench's
own code gets NaN there), and so is F1.

FlawedPositiveBench: the items whose final answer is correct; positive = the solution has an error
(label != -1), predicted positive = a valid verdict != -1 (a missing verdict predicts "clean").
Precision with no predicted positives is 0, recall with no positives is 0, F1 is 0 when precision
and recall are both 0, and accuracy over no items is 0 (scikit-learn's `zero_division=0`).

pass@k is the unbiased estimator of Chen et al. 2021 (Codex, eq. 1); maj@k takes the most common
extracted answer. Imports only the standard library; knows nothing about files, models or HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def ratio(part: float, whole: float) -> float:
    """part / whole, NaN when `whole` is 0 (the empty-case convention)."""
    return part / whole if whole else math.nan


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean, NaN for no values."""
    values = list(values)
    return math.fsum(values) / len(values) if values else math.nan


def undefined_as_none(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, recursively through dicts, lists and tuples: how
    an undefined metric is written to JSON (null, never the non-standard `NaN`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: undefined_as_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [undefined_as_none(v) for v in value]
    return value


def percentile(values: Collection[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of `values`: the sorted value at index round(q · (n - 1)); NaN when
    empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    last = len(ordered) - 1
    return ordered[min(last, max(0, round(q * last)))]


@dataclass(frozen=True)
class SubsetScores:
    """ProcessBench scores of one subset (percentages 0–100; None where a class is empty)."""

    n: int
    n_error: int
    """Items with an erroneous step (label >= 0)."""
    n_correct: int
    """Error-free items (label == -1)."""
    acc_err: float | None
    acc_corr: float | None
    f1: float | None
    n_invalid: int
    """Items with no valid verdict (counted as wrong in both accuracies)."""


@dataclass(frozen=True)
class FlawedPositiveScores:
    """FlawedPositiveBench: "is this correct-answer solution flawed?" as binary classification."""

    n: int
    """Items with a correct final answer."""
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int
    precision: float | None
    recall: float | None
    f1: float | None
    accuracy: float | None
    """All four are None when n is 0 (no item with a correct final answer: nothing was measured)."""


def percent(part: int, whole: int) -> float | None:
    """100 · part / whole, or None when `whole` is 0."""
    return 100.0 * part / whole if whole else None


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b), defined as 0 when a + b == 0 (the F1 convention)."""
    return 2.0 * a * b / (a + b) if a + b > 0 else 0.0


def processbench_counts(labels: Sequence[int], verdicts: Sequence[int | None]) -> tuple[int, int, int, int]:
    """(erroneous items, those whose exact index is named, error-free items, those judged -1)."""
    if len(labels) != len(verdicts):
        raise ValueError(f"{len(labels)} labels but {len(verdicts)} verdicts")
    n_error = sum(label != -1 for label in labels)
    found = sum(label != -1 and verdict == label for label, verdict in zip(labels, verdicts))
    cleared = sum(label == -1 and verdict == -1 for label, verdict in zip(labels, verdicts))
    return n_error, found, len(labels) - n_error, cleared


def processbench_scores(labels: Sequence[int], verdicts: Sequence[int | None]) -> SubsetScores:
    """acc_err, acc_corr and F1 of `verdicts` against earliest-error `labels` (-1 = no error)."""
    n_error, found, _, cleared = processbench_counts(labels, verdicts)
    acc_err = percent(found, n_error)
    acc_corr = percent(cleared, len(labels) - n_error)
    f1 = None if acc_err is None or acc_corr is None else harmonic_mean(acc_err, acc_corr)
    return SubsetScores(
        n=len(labels), n_error=n_error, n_correct=len(labels) - n_error, acc_err=acc_err,
        acc_corr=acc_corr, f1=f1, n_invalid=sum(v is None for v in verdicts),
    )


def flawed_positive_scores(
    labels: Sequence[int], final_answer_correct: Sequence[bool | None], verdicts: Sequence[int | None]
) -> FlawedPositiveScores:
    """FlawedPositiveBench precision, recall, F1, accuracy over the items with a correct final answer.

    Items whose `final_answer_correct` is False or None (unknown) are left out; with none left (n = 0) the
    four scores are None, never a 0.0 that reads like a measurement. With n > 0, precision (recall) is 0
    when nothing was said flawed (nothing is flawed), the F1 convention.
    """
    if not len(labels) == len(final_answer_correct) == len(verdicts):
        raise ValueError("labels, final_answer_correct and verdicts must have the same length")
    tp = fp = fn = tn = 0
    for label, answer_correct, verdict in zip(labels, final_answer_correct, verdicts):
        if answer_correct is not True:
            continue
        is_flawed = label != -1
        said_flawed = verdict is not None and verdict != -1
        tp += is_flawed and said_flawed
        fp += not is_flawed and said_flawed
        fn += is_flawed and not said_flawed
        tn += not is_flawed and not said_flawed
    n = tp + fp + fn + tn
    if n == 0:
        return FlawedPositiveScores(0, 0, 0, 0, 0, None, None, None, None)
    precision = percent(tp, tp + fp) or 0.0
    recall = percent(tp, tp + fn) or 0.0
    return FlawedPositiveScores(
        n=n, true_positive=tp, false_positive=fp, false_negative=fn, true_negative=tn,
        precision=precision, recall=recall, f1=harmonic_mean(precision, recall),
        accuracy=percent(tp + tn, n) or 0.0,
    )


def mean_defined(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, eq. 1), in [0, 1].

        pass@k = 1 − C(n − c, k) / C(n, k) = 1 − Π_{i = n−c+1}^{n} (1 − k / i)

    The product form avoids huge binomials.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def majority_index(answers: Sequence[Hashable | None]) -> int | None:
    """Index of the first sample holding the most common answer (None answers abstain).

    Ties go to the answer seen first. None when no sample has an answer. maj@k counts a problem
    correct when the sample at this index is correct.
    """
    counts: dict[Hashable, int] = {}
    first: dict[Hashable, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first.setdefault(answer, i)
    if not counts:
        return None
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return first[best]
