"""Math problems for policy evaluation: MATH-500, AIME24, GSM8K or any JSONL, and the prompt built from each.

Field names are configurable; by default the problem and the answer are read under their `fapo.schema`
names (`problem`, else `question`, ...; `gold`, else `ground_truth`, `answer`, ...). A GSM8K worked answer
`... #### 1,200` gives `1200` (`fapo.policy_prompt.gold_answer`, the training path's rule). Every problem is a `DataError`
naming file and line. Owns loading and prompting; knows nothing about models or scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fapo.io import DataError, iter_jsonl
from fapo.policy_prompt import DEFAULT_PROMPT_TEMPLATE, render_prompt  # noqa: F401 (re-exported)
from fapo.schema import FieldMap, gold_text, lookup, missing_message, problem_text


@dataclass(frozen=True)
class EvalProblem:
    """One problem: its text (shown to the policy and the GenRM), its gold answer, an id."""

    id: str
    problem: str
    answer: str


def check_template(template: str) -> None:
    if "{problem}" not in template:
        raise ValueError(f"prompt template must contain {{problem}}: {template!r}")


def load_problems(
    path: str | Path, problem_field: str | None = None, answer_field: str | None = None, limit: int | None = None
) -> list[EvalProblem]:
    """The first `limit` (default all) problems of a JSONL file; DataError naming file:line on a bad row.

    The problem and gold answer are the named columns, else the first of their `fapo.schema` names."""
    mapping = FieldMap({k: v for k, v in (("problem", problem_field), ("gold", answer_field)) if v})
    problems: list[EvalProblem] = []
    for lineno, row in iter_jsonl(path):
        if limit is not None and len(problems) >= limit:
            break
        where = f"{path}:{lineno}"
        found = {name: lookup(row, name, mapping) for name in ("problem", "gold")}
        for name, flag in (("problem", "--problem-field"), ("gold", "--answer-field")):
            if found[name] is None:
                raise DataError(f"{where}: {missing_message(name, row, mapping, fix=f'set {flag}')}")
        problem, gold = found["problem"], found["gold"]
        text, answer = problem_text(problem.value), gold_text(gold.value)
        if not text:
            raise DataError(f"{where}: field {problem.name!r} must be a non-empty string")
        if answer is None:
            raise DataError(f"{where}: field {gold.name!r} must be a string or a number, got {gold.value!r}")
        row_id = lookup(row, "id")
        problems.append(EvalProblem(str(row_id.value if row_id else lineno), text, answer))
    if not problems:
        raise DataError(f"{path}: no problems")
    return problems
