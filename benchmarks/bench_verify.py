"""Benchmark `fapo.verify.verify_batch` against plain math-verify, for speed and agreement.

Speed: the 800 real Qwen2.5-Math responses of shared/data/qwen25math_rollouts/math_cot_100.jsonl
(8 per problem, gold = `gt`). Both sides are warmed up on the same 800 items first (imports, regex
compilation, sympy's caches); then each timed pass is cold for what is ours to cache: a timed
`verify_batch` starts with an empty result cache, on a pool already started. Timed passes of the
two sides alternate (same machine load); the median of `--repeats` passes counts.

"Plain math-verify" is the standard call a user writes, run sequentially in this process:

    verify(parse(gold_src), parse(response))          # default configs, default timeouts

with `gold_src` = the gold wrapped as `$gold$` unless it already holds `$` or `\\boxed` (a bare
`\\frac{1}{2}` is not found by math-verify's LaTeX extraction without a math environment).

Agreement: with plain math-verify and with Qwen's grader `score` on the 800; with `equal` on
shared/data/answer_equivalence/pairs.jsonl (each pair's own `strict`/`match_types` config is not
passed, on either side: both use the defaults).

    .venv/bin/python benchmarks/bench_verify.py [--workers N] [--repeats R] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FAPO_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_rollouts(data: Path) -> tuple[list[str], list[str], list[bool]]:
    """(responses, golds, grader scores) of the 800 rollouts."""
    responses, golds, scores = [], [], []
    with open(data / "qwen25math_rollouts" / "math_cot_100.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            responses += row["code"]
            golds += [row["gt"]] * len(row["code"])
            scores += [bool(s) for s in row["score"]]
    return responses, golds, scores


def load_pairs(data: Path) -> list[dict]:
    with open(data / "answer_equivalence" / "pairs.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def plain_math_verify(response: str, gold: str) -> bool:
    """The reference call (see the module docstring)."""
    from math_verify import parse, verify

    gold_src = gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"
    return bool(verify(parse(gold_src), parse(response)))


def time_both(verifier, responses: list[str], golds: list[str], repeats: int) -> dict:
    """Median seconds of `repeats` timed passes per side, the two sides interleaved so that both see
    the same machine load; one untimed warm-up pass each first. Ours: cold result cache each pass."""
    verifier.start()
    ours = verifier.verify_batch(responses, golds)  # warm-up
    plain = [plain_math_verify(r, g) for r, g in zip(responses, golds, strict=True)]  # warm-up
    plain_s, ours_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        plain = [plain_math_verify(r, g) for r, g in zip(responses, golds, strict=True)]
        plain_s.append(time.perf_counter() - start)
        verifier.clear_cache()
        before = verifier.stats()
        start = time.perf_counter()
        ours = verifier.verify_batch(responses, golds)
        ours_s.append(time.perf_counter() - start)
        after = verifier.stats()
    counters = {k: getattr(after, k) - getattr(before, k) for k in after.__dataclass_fields__}
    return {
        "plain_seconds": statistics.median(plain_s),
        "ours_seconds": statistics.median(ours_s),
        "plain": plain,
        "ours": [r.correct for r in ours],
        "counters": counters,
    }


def agreement(a: list[bool], b: list[bool]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def run(workers: int | None, repeats: int) -> dict:
    from fapo.verify import Verifier

    responses, golds, scores = load_rollouts(DATA)
    pairs = load_pairs(DATA)
    verifier = Verifier(workers=workers)
    try:
        timed = time_both(verifier, responses, golds, repeats)
        pair_results = verifier.verify_batch([p["pred"] for p in pairs], [p["gold"] for p in pairs])
    finally:
        verifier.close()
    equal = [bool(p["equal"]) for p in pairs]
    plain_pairs = [plain_math_verify(p["pred"], p["gold"]) for p in pairs]
    return {
        "items": len(responses),
        "workers": verifier.workers,
        "repeats": repeats,
        "plain_seconds": timed["plain_seconds"],
        "ours_seconds": timed["ours_seconds"],
        "speed_ratio": timed["plain_seconds"] / timed["ours_seconds"],
        "agree_ours_plain": agreement(timed["ours"], timed["plain"]),
        "agree_ours_score": agreement(timed["ours"], scores),
        "agree_plain_score": agreement(timed["plain"], scores),
        "pairs": len(pairs),
        "pairs_agree_ours": agreement([r.correct for r in pair_results], equal),
        "pairs_agree_plain": agreement(plain_pairs, equal),
        "counters": timed["counters"],
        "cpus": os.cpu_count(),
    }


def markdown(r: dict) -> str:
    n, p = r["items"], r["pairs"]
    rows = [
        ("plain math-verify, sequential (s)", f"{r['plain_seconds']:.3f}"),
        (f"verify_batch, {r['workers']} workers, cold cache (s)", f"{r['ours_seconds']:.3f}"),
        ("speed ratio", f"{r['speed_ratio']:.1f}x"),
        ("agreement verify_batch vs plain math-verify", f"{r['agree_ours_plain']:.2%} of {n}"),
        ("agreement verify_batch vs Qwen grader `score`", f"{r['agree_ours_score']:.2%} of {n}"),
        ("agreement plain math-verify vs Qwen grader `score`", f"{r['agree_plain_score']:.2%} of {n}"),
        ("pairs: verify_batch vs `equal`", f"{r['pairs_agree_ours']:.2%} of {p}"),
        ("pairs: plain math-verify vs `equal`", f"{r['pairs_agree_plain']:.2%} of {p}"),
    ]
    c = r["counters"]
    path = f"{c['fast_path']} fast path, {c['cache_hits']} cache hits, {c['worker_tasks']} worker tasks"
    lines = ["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join([*lines, "", f"verify_batch routing of the {n} items (timed pass): {path}."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: usable CPUs)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per side; the median counts")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    result = run(args.workers, args.repeats)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
