"""`fapo judge INPUT.jsonl -o OUT.jsonl --endpoint URL ...`: judge solutions with GenRM servers.

Reads rows, hands them to the judge `fapo.grm.judge.make_judge` builds, writes one result row per input row and a JSON
summary on stderr. Holds no judging logic; never imports torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

OUTPUT_FIELDS = (
    "id", "verdict", "flawed", "status", "critique", "endpoint", "attempts", "latency_s", "error",
)  # fmt: skip


CLIENT_OPTIONS = (
    ("--concurrency", int, "requests in flight at once"),
    ("--timeout", float, "seconds per HTTP attempt"),
    ("--retries", int, "retries after the first attempt"),
    ("--max-tokens", int, "critique length bound"),
    ("--temperature", float, "sampling temperature (0: greedy)"),
    ("--top-p", float, "nucleus sampling mass"),
    ("--votes", int, "samples per solution, majority verdict"),
    ("--cache-size", int, "judgements kept in the client's cache (0: off)"),
    ("--breaker-failures", int, "consecutive failures that take an endpoint out"),
    ("--breaker-cooldown", float, "seconds before an endpoint taken out is probed again"),
    ("--backoff-base", float, "first retry delay in seconds (doubles per retry)"),
    ("--backoff-max", float, "cap on one retry delay in seconds"),
)
"""`fapo.grm.types.JudgeConfig` fields as flags; an option left out keeps the JudgeConfig default (one source)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge",
        help="judge solutions with GenRM servers (OpenAI-compatible endpoints)",
        description="Ask GenRM servers for the earliest wrong step of each solution. Input rows: id, "
        "problem, steps (list of str) or response (split into paragraphs), optional gold, or their aliases "
        "(README, 'Row schema'). "
        "Output rows: " + ", ".join(OUTPUT_FIELDS) + ". A JSON summary goes to stderr. Exit status 1 "
        "when no row gets a valid verdict (every row 'invalid' or 'error', e.g. no endpoint reachable).",
    )
    p.add_argument("input", help="JSONL file of solutions to judge")
    p.add_argument("-o", "--output", required=True,
                   help="JSONL file to write, replaced only once complete ('-': stdout; never the input file)")
    p.add_argument(
        "--endpoint",
        action="append",
        required=True,
        metavar="URL",
        help="base URL of a server, e.g. http://127.0.0.1:8000/v1 (repeat for several)",
    )
    p.add_argument("--model", default="genrm", help="model name sent to the servers (default genrm)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("FAPO_GRM_API_KEY"),
        help="bearer token (default $FAPO_GRM_API_KEY)",
    )
    for flag, kind, what in CLIENT_OPTIONS:
        p.add_argument(flag, type=kind, default=None, help=f"{what} (default: JudgeConfig's)")
    p.add_argument("--tie-break", choices=("flawed", "clean"), default=None,
                   help="tied votes go this way (default: JudgeConfig's, flawed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.grm.types import JudgeConfig
    from fapo.io import DataError, check_output_path

    names = [flag[2:].replace("-", "_") for flag, _, _ in CLIENT_OPTIONS] + ["tie_break"]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    try:
        config = JudgeConfig(endpoints=tuple(args.endpoint), model=args.model, api_key=args.api_key, **given)
    except ValueError as err:
        raise CliError(str(err)) from err
    try:
        check_output_path(args.output, [args.input])
    except DataError as err:
        raise CliError(str(err)) from err
    ids, items = read_items(args.input)

    t0 = time.perf_counter()
    judgements, metrics = _judge_all(items, config)
    wall_s = time.perf_counter() - t0
    _write_rows(args.output, ids, judgements)
    summary = summarise(judgements, wall_s, metrics)
    print(json.dumps(summary), file=sys.stderr)
    if judgements and summary["status"]["ok"] == 0:
        print(f"fapo judge: no valid verdict in {len(judgements)} rows "
              f"({summary['status']['invalid']} invalid, {summary['status']['error']} error)", file=sys.stderr)
        return 1
    return 0


def read_items(path: str) -> tuple[list[Any], list[Any]]:
    """Rows of `path` as (ids, JudgeItems), fields read under `fapo.schema`'s names (a row without an id
    gets its line number); CliError naming file and line on a bad row."""
    from fapo.cli import CliError
    from fapo.io import DataError, iter_jsonl
    from fapo.schema import lookup

    ids: list[Any] = []
    items: list[Any] = []
    try:
        for lineno, row in iter_jsonl(path):
            items.append(_item(row, f"{path}:{lineno}"))
            found = lookup(row, "id")
            ids.append(found.value if found is not None else lineno)
    except DataError as err:
        raise CliError(str(err)) from err
    return ids, items


def _item(row: dict[str, Any], where: str) -> Any:
    """One input row as a JudgeItem: `problem`, `steps` (else `response` split into paragraphs) and
    `gold`, each under any of its `fapo.schema` names."""
    from fapo.cli import CliError
    from fapo.grm.types import JudgeItem
    from fapo.schema import gold_text, lookup, missing_message, problem_text, response_texts
    from fapo.steps import split_steps

    found = lookup(row, "problem")
    if found is None:
        raise CliError(f"{where}: {missing_message('problem', row, fix='add the problem text')}")
    problem = problem_text(found.value)
    if problem is None:
        raise CliError(f"{where}: field {found.name!r} must be a string (or chat messages)")
    steps = row.get("steps")
    if steps is None:
        response = lookup(row, "response")
        texts = response_texts(response.value) if response is not None else None
        if texts is None or len(texts) != 1:
            raise CliError(f"{where}: give 'steps' (a list of strings) or 'response' (a string)")
        steps = split_steps(texts[0])
    elif not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise CliError(f"{where}: field 'steps' must be a list of strings")
    gold = lookup(row, "gold")
    gold_value = gold_text(gold.value) if gold is not None else None
    if gold is not None and gold_value is None:
        raise CliError(f"{where}: field {gold.name!r} must be a string or a number")
    return JudgeItem(problem, tuple(steps), gold_value)


def _judge_all(items: list[Any], config: Any) -> tuple[list[Any], dict[str, float]]:
    from fapo.grm.judge import judge_and_collect_sync, make_judge

    return judge_and_collect_sync(lambda: make_judge(config), items, progress=True)


def _write_rows(output: str, ids: list[Any], judgements: list[Any]) -> None:
    from fapo.cli import CliError
    from fapo.io import write_jsonl

    rows = (
        {
            "id": row_id,
            **{name: getattr(j, name) for name in OUTPUT_FIELDS[1:]},
            "latency_s": round(j.latency_s, 4),
        }
        for row_id, j in zip(ids, judgements, strict=True)
    )
    try:
        write_jsonl(output, rows)  # replaced at the end: never a half-written output
    except OSError as err:
        raise CliError(f"cannot write {'stdout' if output == '-' else output}: {err.strerror or err}") from err


def summarise(judgements: list[Any], wall_s: float, metrics: dict[str, float]) -> dict[str, Any]:
    """Counts by status, flawed ratio among ok verdicts, throughput and the client's metrics."""
    status = {"ok": 0, "invalid": 0, "error": 0}
    for j in judgements:
        status[j.status] += 1
    flawed = sum(1 for j in judgements if j.flawed)
    return {
        "rows": len(judgements),
        "status": status,
        "flawed_ratio": round(flawed / status["ok"], 4) if status["ok"] else None,
        "wall_s": round(wall_s, 3),
        "rows_per_s": round(len(judgements) / wall_s, 1) if wall_s > 0 else None,
        "metrics": {k: round(v, 4) if math.isfinite(v) else None for k, v in metrics.items()},  # NaN: null
    }
