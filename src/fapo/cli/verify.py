"""`fapo verify INPUT.jsonl`: check each row's `response` against its `gold` with `fapo.verify`."""

from __future__ import annotations

import argparse
from typing import Any

from fapo.verify import MAX_TIMEOUT_S  # a worker is killed after it: a finite number of seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check final answers against gold answers (math-verify, with timeouts)",
        description="Read JSONL rows with `response` and `gold` (or their aliases: README, \"Row schema\"); write each "
        "row plus `correct`, `pred` and `status` (ok, no_answer, timeout, memory, error) as JSONL; print a JSON "
        "summary on stderr.",
    )
    p.add_argument("input", metavar="INPUT.jsonl", help="rows with a string `response` and a `gold` answer")
    p.add_argument("-o", "--output", metavar="OUT.jsonl",
                   help="where to write the rows ('-' or default: stdout); replaced only once complete, "
                   "never the input file")
    p.add_argument(
        "--workers", type=int, help="math-verify worker processes (default: usable CPUs, at most 8)"
    )
    p.add_argument(
        "--timeout", type=float, default=5.0,
        help=f"seconds of math-verify work per row (default 5, at most {MAX_TIMEOUT_S:g})"
    )
    p.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="read FIELD (response, gold) from COLUMN, a dotted path for nested objects; repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    from fapo.cli import CliError
    from fapo.io import DataError, check_output_path, write_jsonl
    from fapo.schema import FieldMap
    from fapo.verify import STATUSES, Verifier

    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers must be >= 1, got {args.workers}")
    if not 0 < args.timeout <= MAX_TIMEOUT_S:  # also refuses nan and inf
        raise CliError(f"--timeout must be > 0 and at most {MAX_TIMEOUT_S:g} seconds, got {args.timeout}")
    try:
        check_output_path(args.output, [args.input])
        rows, responses, golds = _read_rows(args.input, FieldMap.parse(args.map))
    except (DataError, ValueError) as err:
        raise CliError(str(err)) from err
    verifier = Verifier(workers=args.workers)
    start = time.perf_counter()
    try:
        results = verifier.verify_batch(responses, golds, timeout=args.timeout)
        stats = verifier.stats()
    finally:
        verifier.close()
    seconds = time.perf_counter() - start
    out = [
        {**row, "correct": r.correct, "pred": r.pred, "status": r.status}
        for row, r in zip(rows, results, strict=True)
    ]
    try:
        write_jsonl(args.output or "-", out)
    except OSError as err:
        where = "stdout" if args.output in (None, "-") else args.output
        raise CliError(f"cannot write {where}: {err.strerror or err}") from err
    n, correct = len(results), sum(r.correct for r in results)
    summary = {
        "rows": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "status": {s: sum(r.status == s for r in results) for s in STATUSES},
        "seconds": round(seconds, 3),
        "rows_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "fast_path": stats.fast_path,
        "cache_hits": stats.cache_hits,
        "worker_tasks": stats.worker_tasks,
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0


def _read_rows(path: str, mapping: Any) -> tuple[list[dict], list[str], list[str]]:
    """The rows, and each row's response and gold as strings, read under `fapo.schema`'s names (`response`
    or `output`/`completion`; `gold` or `ground_truth`/`answer`/`gts`, a number accepted); DataError names
    the line."""
    from fapo.io import DataError, iter_jsonl
    from fapo.schema import gold_text, lookup, missing_message

    rows, responses, golds = [], [], []
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        response, gold = lookup(row, "response", mapping), lookup(row, "gold", mapping)
        for name, found in (("response", response), ("gold", gold)):
            if found is None:
                raise DataError(f"{where}: {missing_message(name, row, mapping)}")
        gold_value = gold_text(gold.value)
        if not isinstance(response.value, str) or gold_value is None:
            raise DataError(f"{where}: `{response.name}` must be a string and `{gold.name}` a string or a number")
        rows.append(row)
        responses.append(response.value)
        golds.append(gold_value)
    return rows, responses, golds
