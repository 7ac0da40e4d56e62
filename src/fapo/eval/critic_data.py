"""GenRM benchmark inputs: ProcessBench-format rows and prediction files, validated line by line.

A data row is `{id, problem, steps, label, final_answer_correct[, ground_truth]}` (ProcessBench's
format; the testbed's critic files add `ground_truth`); `id`, `problem` and the gold answer are read under
any of their `fapo.schema` names. `problem`, `steps` and `label` are required;
a row without `id` gets `<subset>:<line>`, one without `final_answer_correct` is left out of
FlawedPositiveBench. A subset's name is its file's stem. A prediction row is `{id, verdict}` as
`fapo judge` writes it (an optional `subset` field tells equal ids of different files apart; an
optional `status` "invalid" or "error" is kept).
Every problem is a `DataError` naming file and line. Owns the formats; scores nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fapo.io import DataError, iter_jsonl
from fapo.schema import gold_text, lookup, missing_message, problem_text


@dataclass(frozen=True)
class CriticRow:
    """One solution with its earliest-error label."""

    subset: str
    """The data file's stem, e.g. "gsm8k"."""
    id: str
    problem: str
    steps: tuple[str, ...]
    label: int
    """0-based index of the earliest wrong step, or -1 when no step is wrong."""
    final_answer_correct: bool | None
    """Whether the final answer is right (None: not given, so not in FlawedPositiveBench)."""
    ground_truth: str | None = None
    """The gold answer, shown to the GenRM when present."""
    where: str = ""
    """`file:line` the row came from, for messages."""


def _critic_row(row: dict[str, Any], subset: str, where: str, lineno: int) -> CriticRow:
    found = lookup(row, "problem")
    if found is None:
        raise DataError(f"{where}: {missing_message('problem', row, fix='add the problem text')}")
    problem, steps, label = problem_text(found.value), row["steps"], row["label"]
    if problem is None:
        raise DataError(f"{where}: field {found.name!r} must be a string")
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{where}: field 'steps' must be a list of strings")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise DataError(f"{where}: field 'label' must be -1 or a step index 0..{len(steps) - 1}, got {label!r}")
    answer_correct = row.get("final_answer_correct")
    if answer_correct is not None and not isinstance(answer_correct, bool):
        raise DataError(f"{where}: field 'final_answer_correct' must be true, false or null")
    gold = lookup(row, "gold")
    gold_value = None if gold is None else gold_text(gold.value)
    if gold is not None and gold_value is None:
        raise DataError(f"{where}: field {gold.name!r} must be a string or a number")
    row_id = lookup(row, "id")
    return CriticRow(subset, str(row_id.value) if row_id else f"{subset}:{lineno}", problem, tuple(steps), label,
                     answer_correct, gold_value, where)


def load_critic_rows(path: str | Path, limit: int | None = None) -> list[CriticRow]:
    """The rows of one ProcessBench-format file (the first `limit` when given); DataError on a bad row."""
    subset = Path(path).stem
    rows: list[CriticRow] = []
    for lineno, row in iter_jsonl(path, required=("steps", "label")):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(_critic_row(row, subset, f"{path}:{lineno}", lineno))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def stratified_sample(rows: Sequence[CriticRow], n: int, seed: int = 0) -> list[CriticRow]:
    """`n` rows drawn at random (seeded) within strata, in file order: wrong final answer, flawed positive
    (right answer, a wrong step), error-free (ProcessBench's own split strata). Each stratum gets its share
    of `n` (largest remainders), and at least one row when `n` is at least the number of strata, so that
    acc_err, acc_corr and FlawedPositiveBench are all measured. All rows when `n` >= len(rows)."""
    import random

    if n >= len(rows):
        return list(rows)
    strata: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        name = "error-free" if row.label == -1 else "flawed positive" if row.final_answer_correct else "wrong"
        strata.setdefault(name, []).append(i)
    floor = 1 if n >= len(strata) else 0
    exact = {k: n * len(v) / len(rows) for k, v in strata.items()}
    take = {k: max(floor, int(x)) for k, x in exact.items()}
    for k in sorted(strata, key=lambda k: exact[k] - int(exact[k]), reverse=True):
        if sum(take.values()) >= n:
            break
        take[k] += 1
    while sum(take.values()) > n:  # the floor overshot: take back from the largest stratum
        take[max(take, key=take.get)] -= 1
    rng = random.Random(seed)
    chosen = sorted(i for k, v in strata.items() for i in rng.sample(v, min(take[k], len(v))))
    return [rows[i] for i in chosen]


def load_critic_sets(paths: Sequence[str | Path], limit: int | None = None, sample: int | None = None,
                     seed: int = 0) -> list[CriticRow]:
    """Rows of several files, one subset each (the first `limit`, or a `stratified_sample` of `sample` rows,
    of each); two files with the same stem are an error."""
    seen: dict[str, str | Path] = {}
    rows: list[CriticRow] = []
    for path in paths:
        subset = Path(path).stem
        if subset in seen:
            raise DataError(f"{path}: subset name {subset!r} is already taken by {seen[subset]}; rename one file")
        seen[subset] = path
        subset_rows = load_critic_rows(path, limit)
        rows += stratified_sample(subset_rows, sample, seed) if sample else subset_rows
    return rows


PREDICTION_STATUSES = ("ok", "invalid", "error", "missing")
"""What a predictions file says about a row: a valid verdict; a verdict that is null or out of range
(or a judge status "invalid"); a judge status "error"; no prediction for the row at all."""


@dataclass(frozen=True)
class Predictions:
    """Each data row's verdict (None: no valid verdict) and its PREDICTION_STATUSES entry, in row order."""

    verdicts: list[int | None]
    statuses: list[str]
    unmatched: int
    """Prediction lines whose id is not a row of the data (e.g. rows left out by --limit)."""


def read_predictions(path: str | Path, rows: Sequence[CriticRow]) -> Predictions:
    """Each row's verdict and status from a predictions file, in `rows` order.

    A verdict outside -1..len(steps)-1, or null, is "invalid" (counted, never dropped); a row the
    file does not mention is "missing". A verdict that is not an integer or null, an id predicted
    twice, an id that is not unique in the data (without a `subset` field to tell them apart), or a
    file none of whose ids is in the data is a DataError.
    """
    by_key = _index_rows(rows)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    first_line: dict[tuple[str, str], int] = {}
    lines = 0
    for lineno, pred in iter_jsonl(path, required=("id", "verdict")):
        lines += 1
        where = f"{path}:{lineno}"
        verdict = pred["verdict"]
        if verdict is not None and (isinstance(verdict, bool) or not isinstance(verdict, int)):
            raise DataError(f"{where}: 'verdict' must be an integer step index, -1, or null; got {verdict!r}")
        key = _prediction_key(pred, by_key, where)
        if key is None:
            continue  # a prediction for a row not being evaluated (e.g. a --limit slice)
        if key in first_line:
            raise DataError(f"{where}: id {key[1]!r} was already predicted on line {first_line[key]}")
        first_line[key] = lineno
        found[key] = pred
    if not found:
        raise DataError(f"{path}: none of its {lines} predictions has the id of a data row "
                        f"(data ids look like {rows[0].id!r}); is it the predictions file for this data?")
    verdicts: list[int | None] = []
    statuses: list[str] = []
    for row in rows:
        verdict, status = _row_verdict(found.get((row.subset, row.id)), len(row.steps))
        verdicts.append(verdict)
        statuses.append(status)
    return Predictions(verdicts, statuses, lines - len(found))


def _row_verdict(pred: dict[str, Any] | None, num_steps: int) -> tuple[int | None, str]:
    if pred is None:
        return None, "missing"
    if pred.get("status") == "error":
        return None, "error"
    verdict = pred["verdict"]
    if verdict is None or pred.get("status") == "invalid" or not -1 <= verdict < num_steps:
        return None, "invalid"
    return verdict, "ok"


def load_predictions(path: str | Path, rows: Sequence[CriticRow]) -> list[int | None]:
    """Each row's valid verdict (None when it has none) from a predictions file; see `read_predictions`."""
    return read_predictions(path, rows).verdicts


def _index_rows(rows: Sequence[CriticRow]) -> dict[str, list[CriticRow]]:
    by_id: dict[str, list[CriticRow]] = {}
    for row in rows:
        same = by_id.setdefault(row.id, [])
        if any(other.subset == row.subset for other in same):
            raise DataError(f"{row.where}: id {row.id!r} appears twice in subset {row.subset!r}")
        same.append(row)
    return by_id


def _prediction_key(pred: dict[str, Any], by_id: dict[str, list[CriticRow]], where: str) -> tuple[str, str] | None:
    row_id = str(pred["id"])
    candidates = by_id.get(row_id, [])
    if "subset" in pred:
        candidates = [r for r in candidates if r.subset == str(pred["subset"])]
    if len(candidates) > 1:
        names = ", ".join(r.subset for r in candidates)
        raise DataError(f"{where}: id {row_id!r} is in several subsets ({names}); add a 'subset' field")
    return (candidates[0].subset, row_id) if candidates else None
