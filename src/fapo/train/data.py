"""Training data → TRL datasets: chat prompts plus the columns the reward functions read.

Policy rows become {"prompt": [user message], "problem", "answer"}. GenRM rows, from ProcessBench's
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


def policy_rows(settings: FapoSettings) -> list[dict[str, Any]]:
    """Policy-training rows: chat prompt, problem text and gold answer."""
    rows = read_rows(settings.train_data, settings.max_train_samples)
    out = []
    for i, row in enumerate(rows):
        for name in (settings.problem_field, settings.answer_field):
            if name not in row:
                raise ConfigError(
                    f"{settings.train_data}: row {i + 1} has no {name!r} field "
                    f"(set fapo.problem_field / fapo.answer_field; fields here: {sorted(row)})"
                )
        problem = str(row[settings.problem_field])
        out.append({"prompt": render_prompt(settings.prompt_template, problem), "problem": problem,
                    "answer": gold_answer(row[settings.answer_field])})
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
