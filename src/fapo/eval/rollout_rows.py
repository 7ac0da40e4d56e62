"""Rows of rollout files → `Rollout`s an audit can verify and judge, read under the row schema.

    for rollout in to_rollouts(iter_rows(paths), RowSettings(mapping=FieldMap.parse(["gold=answer"]))):
        rollout.key, rollout.problem, rollout.response, rollout.gold, rollout.group, rollout.source

Each row's problem, response, gold answer, training step and data source are found by `fapo.schema`
(aliases, `--map`). A response field holding a list of strings is that many samples: one rollout each
(key `where#k`), and every other list field with one entry per sample is cut to the sample's entry (so
Qwen2.5-Math's `pred`/`score` lists stay beside their response). A row the audit cannot use (no problem,
response or gold) is a rollout with `skipped` saying why, never an exception; the first row of a file
without any of them is a DataError that names the columns (a wrong `--map`, a wrong file). Rows of TRL's
completion logs carry no gold answer: `gold_index` (problem text → gold, from the training data) supplies it.
Owns the reading of rows; verifies and judges nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fapo.eval.rollout_files import SourceRow, iter_rows
from fapo.io import DataError
from fapo.schema import (
    NO_MAP,
    FieldMap,
    get_path,
    gold_text,
    lookup,
    missing_message,
    problem_text,
    response_texts,
)

NO_GROUP = "all"
"""The group (and data source) of rows that carry none."""


@dataclass(frozen=True)
class RowSettings:
    """How rows are read."""

    mapping: FieldMap = NO_MAP
    """`--map field=path` overrides of the schema's names."""
    group_by: str | None = None
    """Column (dotted path) whose value groups the rows; default the training step when rows carry one."""
    gold_index: Mapping[str, str] = field(default_factory=dict)
    """Problem text → gold answer, for rows without a gold field (TRL's completion logs)."""


@dataclass(frozen=True)
class Rollout:
    """One response to audit, with the row it came from."""

    key: str
    """Where it came from (`file:line`, `file:#n`; `#k` appended for sample k of a list); unique, stable."""
    row: dict[str, Any]
    """The input row (for a sample of a list, the row cut to that sample)."""
    problem: str | None
    response: str | None
    gold: str | None
    group: str
    """The value of the grouping column (the training step by default), as text; NO_GROUP when absent."""
    source: str
    """The data source; NO_GROUP when the row names none."""
    skipped: str | None = None
    """Why the rollout cannot be audited (no problem, response or gold), or None."""


def group_text(value: Any) -> str:
    """A group value as text: integral numbers without a decimal point; NO_GROUP for None."""
    if value is None:
        return NO_GROUP
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _samples(row: dict[str, Any], settings: RowSettings) -> list[tuple[str, dict[str, Any]]] | None:
    """(suffix, row cut to the sample) for each response the row holds; None when it holds none."""
    found = lookup(row, "response", settings.mapping)
    texts = response_texts(found.value) if found is not None else None
    if texts is None:
        return None
    if len(texts) == 1 or not isinstance(found.value, list) or not all(isinstance(v, str) for v in found.value):
        return [("", {**row, found.name: texts[0]} if found.name in row else row)]
    n = len(texts)
    per_sample = [k for k, v in row.items() if isinstance(v, list) and len(v) == n]
    return [(f"#{i}", {**row, **{k: row[k][i] for k in per_sample}, found.name: texts[i]}) for i in range(n)]


def _rollout(key: str, row: dict[str, Any], settings: RowSettings) -> Rollout:
    mapping = settings.mapping
    problem_field = lookup(row, "problem", mapping)
    problem = problem_text(problem_field.value) if problem_field is not None else None
    response_field = lookup(row, "response", mapping)
    response = response_field.value if response_field is not None and isinstance(response_field.value, str) else None
    gold_field = lookup(row, "gold", mapping)
    gold = gold_text(gold_field.value) if gold_field is not None else None
    if gold is None and problem is not None:
        gold = settings.gold_index.get(problem)
    group_value = get_path(row, settings.group_by) if settings.group_by else _value(lookup(row, "step", mapping))
    source = group_text(_value(lookup(row, "data_source", mapping)))
    missing = [name for name, value in (("problem", problem), ("response", response), ("gold", gold)) if value is None]
    skipped = f"no {' / '.join(missing)}" if missing else None
    return Rollout(key, row, problem, response, gold, group_text(group_value), source, skipped)


def _value(found: Any) -> Any:
    return None if found is None else found.value


def to_rollouts(rows: Iterable[SourceRow], settings: RowSettings = RowSettings()) -> Iterator[Rollout]:
    """The rollouts of `rows`, in order; see the module docstring."""
    first_of_file: set[str] = set()
    for source_row in rows:
        samples = _samples(source_row.row, settings)
        file = source_row.where.rsplit(":", 1)[0]
        if file not in first_of_file:
            first_of_file.add(file)
            _check_first(source_row, samples, settings)
        if samples is None:
            yield _rollout(source_row.where, source_row.row, settings)
            continue
        for suffix, row in samples:
            yield _rollout(source_row.where + suffix, row, settings)


def _check_first(source_row: SourceRow, samples: list[Any] | None, settings: RowSettings) -> None:
    """A file whose first row lacks the problem or response (or gold, with no gold index) is misread."""
    row = source_row.row
    needed = ["problem", "response"] + ([] if settings.gold_index else ["gold"])
    for name in needed:
        if lookup(row, name, settings.mapping) is None:
            raise DataError(f"{source_row.where}: {missing_message(name, row, settings.mapping)}"
                            + ("; TRL's completion logs carry no gold: give --gold-file" if name == "gold" else ""))
    if samples is None:
        found = lookup(row, "response", settings.mapping)
        raise DataError(f"{source_row.where}: field {found.name!r} must be a string, a list of strings or chat "
                        "messages")


def gold_index(paths: Iterable[str], mapping: FieldMap = NO_MAP) -> dict[str, str]:
    """Problem text → gold answer from data files (the training or evaluation set the rollouts came from)."""
    index: dict[str, str] = {}
    for source_row in iter_rows(list(paths)):
        problem_field, gold_field = lookup(source_row.row, "problem", mapping), lookup(source_row.row, "gold", mapping)
        problem = problem_text(problem_field.value) if problem_field is not None else None
        gold = gold_text(gold_field.value) if gold_field is not None else None
        if problem is None or gold is None:
            raise DataError(f"{source_row.where}: a --gold-file row needs a problem and a gold answer")
        index[problem] = gold
    return index
