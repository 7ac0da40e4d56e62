"""`fapo judge INPUT.jsonl -o OUT.jsonl --endpoint URL ...`: judge solutions with GenRM servers.

Reads rows, hands them to the judge `fapo.grm.judge.make_judge` builds, writes one result row per input row as soon
as it and every row before it are judged (`fapo.io.ResumableJsonl`: a run that dies keeps what it judged, and
`--resume` judges only the rest, never a row twice) and a JSON summary on stderr. Holds no judging logic; never
imports torch.
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


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object (argparse turns the ValueError into a usage error naming the flag)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


CLIENT_OPTIONS = (
    ("--concurrency", int, "requests in flight at once"),
    ("--timeout", float, "seconds per HTTP attempt"),
    ("--retries", int, "retries after the first attempt"),
    ("--max-tokens", int, "critique length bound"),
    ("--temperature", float, "sampling temperature (0: greedy)"),
    ("--top-p", float, "nucleus sampling mass"),
    ("--chat-template-kwargs", json_object, "chat template arguments as JSON, e.g. '{\"enable_thinking\": false}'"),
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
                   help="JSONL file to write, one row per input row in input order, written as rows are judged "
                   "('-': stdout; never the input file)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: keep the rows OUTPUT already holds (they must be the input's "
                   "first rows) and judge only the rest")
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
    from fapo.io import DataError, ResumableJsonl, check_output_path

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
    try:
        output = ResumableJsonl(args.output, resume=args.resume)
    except DataError as err:
        raise CliError(str(err)) from err
    except OSError as err:
        raise CliError(f"cannot write {args.output}: {err.strerror or err}") from err
    with output:
        try:
            output.check_prefix(ids)
            if any(row.get("status") not in ("ok", "invalid", "error") for row in output.done):
                raise DataError(f"{args.output} holds rows that are not judgements; write to a new file")
        except DataError as err:
            raise CliError(f"--resume: {err}") from err
        t0 = time.perf_counter()
        metrics = _judge_into(output, ids, items, config)
        wall_s = time.perf_counter() - t0
    summary = summarise(output.done, wall_s, metrics, judged=output.written)
    print(json.dumps(summary), file=sys.stderr)
    if ids and summary["status"]["ok"] == 0:
        print(f"fapo judge: no valid verdict in {len(ids)} rows "
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
    if not steps:  # -1 ("no wrong step") would be the only valid verdict: a clean verdict for nothing
        raise CliError(f"{where}: no steps to judge (empty 'steps', or a blank 'response'); drop the row")
    gold = lookup(row, "gold")
    gold_value = gold_text(gold.value) if gold is not None else None
    if gold is not None and gold_value is None:
        raise CliError(f"{where}: field {gold.name!r} must be a string or a number")
    return JudgeItem(problem, tuple(steps), gold_value)


def _judge_into(output: Any, ids: list[Any], items: list[Any], config: Any) -> dict[str, float]:
    """Judge the items after those `output` already holds, writing each row in input order as soon as it and
    every row before it are judged; the judge's metrics."""
    import asyncio

    from fapo.grm.client import JudgeProgress
    from fapo.grm.judge import make_judge

    start = len(output.done)

    async def judge_all() -> dict[str, float]:
        judge = make_judge(config)
        todo = iter(range(start, len(items)))
        ready: dict[int, Any] = {}
        next_row = start
        bar = JudgeProgress(len(items) - start) if start < len(items) else None

        async def work() -> None:
            nonlocal next_row
            for i in todo:
                [ready[i]] = await judge.judge_many([items[i]])
                if bar is not None:
                    bar.advance(ready[i])
                while next_row in ready:
                    _write_row(output, ids[next_row], ready.pop(next_row))
                    next_row += 1

        try:
            await asyncio.gather(*(work() for _ in range(max(1, min(len(items) - start, config.concurrency)))))
            return judge.metrics()
        finally:
            if bar is not None:
                bar.close()
            await judge.aclose()

    return asyncio.run(judge_all())


def _write_row(output: Any, row_id: Any, judgement: Any) -> None:
    from fapo.cli import CliError

    row = {"id": row_id, **{name: getattr(judgement, name) for name in OUTPUT_FIELDS[1:]},
           "latency_s": round(judgement.latency_s, 4)}
    try:
        output.write(row)
    except OSError as err:
        where = "stdout" if str(output.path) == "-" else output.path
        raise CliError(f"cannot write {where}: {err.strerror or err}") from err
    output.done.append(row)


def summarise(rows: list[dict[str, Any]], wall_s: float, metrics: dict[str, float],
              judged: int | None = None) -> dict[str, Any]:
    """Counts by status over every output row (resumed ones included), flawed ratio among ok verdicts, the
    rows judged by this run and their throughput, and the client's metrics."""
    status = {"ok": 0, "invalid": 0, "error": 0}
    for row in rows:
        status[row["status"]] += 1
    flawed = sum(1 for row in rows if row.get("flawed"))
    judged = len(rows) if judged is None else judged
    return {
        "rows": len(rows),
        "judged": judged,
        "status": status,
        "flawed_ratio": round(flawed / status["ok"], 4) if status["ok"] else None,
        "wall_s": round(wall_s, 3),
        "rows_per_s": round(judged / wall_s, 1) if wall_s > 0 else None,
        "metrics": {k: round(v, 4) if math.isfinite(v) else None for k, v in metrics.items()},  # NaN: null
    }
