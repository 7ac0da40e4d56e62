"""Math problems for policy evaluation: MATH-500, AIME24, GSM8K or any JSONL, and the prompt built from each.

Field names are configurable; by default the problem is `problem` (or `question`, GSM8K's name,
when a file has no `problem`) and the answer `answer`. A GSM8K worked answer `... #### 1,200` gives
`1200` (`fapo.policy_prompt.gold_answer`, the training path's rule). Every problem is a `DataError`
naming file and line. Owns loading and prompting; knows nothing about models or scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fapo.io import DataError, iter_jsonl
from fapo.policy_prompt import DEFAULT_PROMPT_TEMPLATE, gold_answer, render_prompt  # noqa: F401 (re-exported)

PROBLEM_FIELD_FALLBACKS = ("problem", "question")
"""Problem fields tried in order when none is named."""


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
    path: str | Path, problem_field: str | None = None, answer_field: str = "answer", limit: int | None = None
) -> list[EvalProblem]:
    """The first `limit` (default all) problems of a JSONL file; DataError naming file:line on a bad row."""
    problems: list[EvalProblem] = []
    for lineno, row in iter_jsonl(path):
        if limit is not None and len(problems) >= limit:
            break
        where = f"{path}:{lineno}"
        name = problem_field or next((f for f in PROBLEM_FIELD_FALLBACKS if f in row), PROBLEM_FIELD_FALLBACKS[0])
        for field_name, flag in ((name, "--problem-field"), (answer_field, "--answer-field")):
            if field_name not in row:
                raise DataError(f"{where}: no {field_name!r} field (fields: {', '.join(sorted(row))}; set {flag})")
        text, answer = row[name], row[answer_field]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: field {name!r} must be a non-empty string")
        if answer is None or isinstance(answer, (dict, list, bool)):
            raise DataError(f"{where}: field {answer_field!r} must be a string or a number, got {answer!r}")
        problems.append(EvalProblem(str(row.get("id", lineno)), text, gold_answer(answer)))
    if not problems:
        raise DataError(f"{path}: no problems")
    return problems
