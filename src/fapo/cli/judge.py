"""`fapo judge INPUT.jsonl -o OUT.jsonl --endpoint URL ...`: judge solutions with GenRM servers.

Reads rows, hands them to `fapo.grm.client`, writes one result row per input row and a JSON
summary on stderr. Holds no judging logic; never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

OUTPUT_FIELDS = (
    "id", "verdict", "flawed", "status", "critique", "endpoint", "attempts", "latency_s", "error",
)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge",
        help="judge solutions with GenRM servers (OpenAI-compatible endpoints)",
        description="Ask GenRM servers for the earliest wrong step of each solution. Input rows: id, "
        "problem, steps (list of str) or response (split into paragraphs), optional ground_truth. "
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
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at once (default 64)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP attempt (default 60)")
    p.add_argument("--retries", type=int, default=3, help="retries after the first attempt (default 3)")
    p.add_argument("--max-tokens", type=int, default=2048, help="critique length bound (default 2048)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0, greedy)")
    p.add_argument("--votes", type=int, default=1, help="samples per solution, majority verdict (default 1)")
    p.add_argument(
        "--tie-break", choices=("flawed", "clean"), default="flawed", help="tied votes go this way"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.grm.client import Endpoint, JudgeConfig
    from fapo.io import DataError, check_output_path

    try:
        endpoints = tuple(Endpoint(url, model=args.model, api_key=args.api_key) for url in args.endpoint)
        config = JudgeConfig(
            endpoints=endpoints,
            concurrency=args.concurrency,
            timeout=args.timeout,
            retries=args.retries,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            votes=args.votes,
            tie_break=args.tie_break,
        )
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
    """Rows of `path` as (ids, JudgeItems); CliError naming file and line on a bad row."""
    from fapo.cli import CliError
    from fapo.io import DataError, iter_jsonl

    ids: list[Any] = []
    items: list[Any] = []
    try:
        for lineno, row in iter_jsonl(path, required=("id", "problem")):
            items.append(_item(row, f"{path}:{lineno}"))
            ids.append(row["id"])
    except DataError as err:
        raise CliError(str(err)) from err
    return ids, items


def _item(row: dict[str, Any], where: str) -> Any:
    """One input row as a JudgeItem: `steps`, else `response` split into paragraphs."""
    from fapo.cli import CliError
    from fapo.grm.client import JudgeItem
    from fapo.steps import split_steps

    if not isinstance(row["problem"], str):
        raise CliError(f"{where}: field 'problem' must be a string")
    steps = row.get("steps")
    if steps is None:
        if not isinstance(row.get("response"), str):
            raise CliError(f"{where}: give 'steps' (a list of strings) or 'response' (a string)")
        steps = split_steps(row["response"])
    elif not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise CliError(f"{where}: field 'steps' must be a list of strings")
    gold = row.get("ground_truth")
    if gold is not None and not isinstance(gold, (str, int, float)):
        raise CliError(f"{where}: field 'ground_truth' must be a string or a number")
    return JudgeItem(row["problem"], tuple(steps), None if gold is None else str(gold))


def _judge_all(items: list[Any], config: Any) -> tuple[list[Any], dict[str, float]]:
    import asyncio

    from fapo.grm.client import GenRMClient

    async def judge() -> tuple[list[Any], dict[str, float]]:
        async with GenRMClient(config) as client:
            judgements = await client.judge_many(items, progress=True)
            return judgements, client.metrics()

    return asyncio.run(judge())


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
        "metrics": {k: round(v, 4) for k, v in metrics.items()},
    }
