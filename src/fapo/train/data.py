"""Training data → TRL datasets: chat prompts plus the columns the reward functions read.

Policy rows become {"prompt": chat messages, "problem", "answer"}. A field name may be dotted
(`reward_model.ground_truth`, `extra_info.question`) to reach into nested columns, and verl-format rows
(the FAPO recipe's parquet: `prompt` as a chat list, `reward_model.ground_truth`, `extra_info.question`) are
read as they are: their chat prompt is used unchanged (no second instruction appended) and the problem text
the judge reads is `extra_info.question`, as the recipe's reward reads it (`policy_row`). GenRM rows, from ProcessBench's
format (`problem, steps, label[, ground_truth]`) or the FAPO authors' critic format (chat `prompt`,
`reward_model.ground_truth`, `extra_info.total_steps`), become {"prompt", "label", "num_steps"}.
Knows nothing about rewards or models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fapo.grm.prompt import count_prompt_steps, grm_messages
from fapo.io import DataError, iter_jsonl, parse_json
from fapo.policy_prompt import gold_answer, render_prompt
from fapo.schema import get_path
from fapo.train.config import ConfigError, FapoSettings


def read_rows(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a .jsonl (`fapo.io.iter_jsonl`) / .json (array) / .parquet file; malformed input raises ConfigError
    with file:line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix == ".json":
        try:
            rows = parse_json(path.read_text(encoding="utf-8"))
        except ValueError as err:  # syntax, NaN or 1e999, nesting too deep, a huge integer, not UTF-8
            raise ConfigError(f"{path}: not valid JSON: {err}") from err
        if not isinstance(rows, list):
            raise ConfigError(f"{path}: expected a JSON array of rows")
    else:
        rows = []
        try:
            for _, row in iter_jsonl(path):
                rows.append(row)
                if limit is not None and len(rows) >= limit:
                    break
        except DataError as err:
            raise ConfigError(str(err)) from err
    return rows[:limit] if limit is not None else rows


_MISSING = object()
_ABSENT = object()

VERL_PROBLEM_FIELD = "extra_info.question"
"""Where a verl-format row keeps the bare problem text (the recipe's `prepare_fapo_data.py` writes it)."""
VERL_ANSWER_FIELD = "reward_model.ground_truth"
"""Where a verl-format row keeps the gold answer."""


def field_value(row: Any, name: str, default: Any = _MISSING) -> Any:
    """`row[name]`, or for a dotted name the nested value (`fapo.schema.get_path`); `default` (or KeyError
    naming the field) when it is missing."""
    value = get_path(row, name, _MISSING) if isinstance(row, dict) else _MISSING
    if value is _MISSING and default is _MISSING:
        raise KeyError(name)
    return default if value is _MISSING else value


def is_chat(value: Any) -> bool:
    """A chat prompt: a non-empty list of {role, content} messages."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in value))


def is_verl_row(row: dict[str, Any]) -> bool:
    """A verl RL row: chat `prompt` and `reward_model.ground_truth`."""
    return is_chat(row.get("prompt")) and field_value(row, VERL_ANSWER_FIELD, None) is not None


def _chat_problem(row: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    """The problem text behind a chat prompt: `extra_info.question`, else the last user message."""
    question = field_value(row, VERL_PROBLEM_FIELD, None)
    if isinstance(question, str) and question.strip():
        return question
    users = [m for m in messages if m.get("role") == "user"] or messages
    return str(users[-1].get("content") or "")


def policy_row(row: dict[str, Any], problem_field: str, answer_field: str, template: str) -> dict[str, Any]:
    """One policy row → {"prompt", "problem", "answer"}; KeyError naming the field that is missing.

    A chat `prompt` column is the prompt as it is; otherwise the prompt is `template` filled with the problem.
    A verl-format row missing the configured fields falls back to `extra_info.question` and
    `reward_model.ground_truth`."""
    verl = is_verl_row(row)
    problem = field_value(row, problem_field, _ABSENT)
    if problem is _ABSENT:
        if not verl:
            raise KeyError(problem_field)
        problem = row["prompt"]
    answer = field_value(row, answer_field, _ABSENT)
    if answer is _ABSENT:
        if not verl:
            raise KeyError(answer_field)
        answer = field_value(row, VERL_ANSWER_FIELD)
    chat = row.get("prompt") if is_chat(row.get("prompt")) else problem if is_chat(problem) else None
    if chat is not None:
        text = _chat_problem(row, chat) if is_chat(problem) else str(problem)
        prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in chat]
    else:
        text = str(problem)
        prompt = render_prompt(template, text)
    return {"prompt": prompt, "problem": text, "answer": gold_answer(answer)}


def policy_rows(settings: FapoSettings) -> list[dict[str, Any]]:
    """Policy-training rows: chat prompt, problem text and gold answer (`policy_row`)."""
    rows = read_rows(settings.train_data, settings.max_train_samples)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(policy_row(row, settings.problem_field, settings.answer_field, settings.prompt_template))
        except KeyError as err:
            raise ConfigError(
                f"{settings.train_data}: row {i + 1} has no {err.args[0]!r} field (set fapo.problem_field / "
                f"fapo.answer_field, dotted for nested fields such as {VERL_ANSWER_FIELD}; fields here: "
                f"{sorted(row)})"
            ) from None
    if not out:
        raise ConfigError(f"{settings.train_data}: no training rows")
    return out


def _critic_row(row: dict[str, Any]) -> dict[str, Any]:
    """A FAPO-Critic row (verl format) → prompt, label, num_steps."""
    messages = row["prompt"]
    label = int(row["reward_model"]["ground_truth"])
    num_steps = int((row.get("extra_info") or {}).get("total_steps") or count_prompt_steps(messages[-1]["content"]))
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in messages], "label": label,
            "num_steps": num_steps}


def grm_rows(settings: FapoSettings) -> list[dict[str, Any]]:
    """GenRM-training rows from ProcessBench-format or FAPO-Critic-format data."""
    rows = read_rows(settings.train_data, settings.max_train_samples)
    out = []
    for i, row in enumerate(rows):
        if "reward_model" in row and isinstance(row.get("prompt"), list):
            out.append(_critic_row(row))
            continue
        missing = [k for k in (settings.problem_field, settings.steps_field, settings.label_field) if k not in row]
        if missing:
            raise ConfigError(
                f"{settings.train_data}: row {i + 1} is neither a FAPO-Critic row nor a ProcessBench row "
                f"(missing {missing})"
            )
        steps = [str(s) for s in row[settings.steps_field]]
        gold = row.get("ground_truth") if settings.grm_with_gold else None
        out.append({
            "prompt": grm_messages(str(row[settings.problem_field]), steps, None if gold is None else str(gold)),
            "label": int(row[settings.label_field]),
            "num_steps": len(steps),
        })
    if not out:
        raise ConfigError(f"{settings.train_data}: no training rows")
    return out
