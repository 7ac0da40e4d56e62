"""Benchmark `fapo.verify.verify_batch` against plain math-verify, for speed and agreement.

Speed: the 800 real Qwen2.5-Math responses of shared/data/qwen25math_rollouts/math_cot_100.jsonl
(8 per problem, gold = `gt`), split by problem into `--repeats` + 1 disjoint slices. Both sides warm up on
the first slice (imports, regex compilation, the pool's start); each timed pass then runs on a slice
neither side has seen, as every batch in training is new: the headline is the summed time of those
passes. A timed `verify_batch` starts with an empty result cache. The two sides run each slice in
turn, so both see the same machine load. For comparison the script also times `--repeats` passes over
the warm-up slice again (items both sides have already checked; the median counts): math-verify's
and sympy's caches in the worker processes and in this process make those faster.

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


def _time_pair(verifier, responses: list[str], golds: list[str]) -> tuple[float, float, list, list[bool]]:
    """(plain seconds, ours seconds, our results, plain verdicts) of one pass over the items; cold result cache."""
    start = time.perf_counter()
    plain = [plain_math_verify(r, g) for r, g in zip(responses, golds, strict=True)]
    plain_s = time.perf_counter() - start
    verifier.clear_cache()
    start = time.perf_counter()
    ours = verifier.verify_batch(responses, golds)
    return plain_s, time.perf_counter() - start, ours, plain


def split_by_problem(n_items: int, per_problem: int, parts: int) -> list[range]:
    """`parts` consecutive, disjoint item ranges holding whole problems (the last takes the remainder)."""
    problems = n_items // per_problem
    if parts < 2 or problems < parts:
        raise ValueError(f"cannot split {problems} problems into {parts} slices")
    size = problems // parts
    bounds = [k * size * per_problem for k in range(parts)] + [n_items]
    return [range(bounds[k], bounds[k + 1]) for k in range(parts)]


def time_both(verifier, responses: list[str], golds: list[str], repeats: int) -> dict:
    """Warm up on slice 0; time both sides on each unseen slice, then `repeats` passes over slice 0 again."""
    verifier.start()
    warm, *unseen = split_by_problem(len(responses), 8, repeats + 1)

    def take(items: range) -> tuple[list[str], list[str]]:
        return [responses[i] for i in items], [golds[i] for i in items]

    ours_by_item: dict[int, bool] = {}
    plain_by_item: dict[int, bool] = {}
    _, _, ours, plain = _time_pair(verifier, *take(warm))  # warm-up
    ours_by_item.update(zip(warm, (r.correct for r in ours)))
    plain_by_item.update(zip(warm, plain))
    before = verifier.stats()
    plain_new = ours_new = 0.0
    for items in unseen:
        plain_s, ours_s, ours, plain = _time_pair(verifier, *take(items))
        plain_new, ours_new = plain_new + plain_s, ours_new + ours_s
        ours_by_item.update(zip(items, (r.correct for r in ours)))
        plain_by_item.update(zip(items, plain))
    after = verifier.stats()
    seen = [_time_pair(verifier, *take(warm))[:2] for _ in range(repeats)]
    order = sorted(ours_by_item)
    return {
        "unseen_items": sum(len(items) for items in unseen),
        "warmup_items": len(warm),
        "plain_seconds": plain_new,
        "ours_seconds": ours_new,
        "seen_plain_seconds": statistics.median(p for p, _ in seen),
        "seen_ours_seconds": statistics.median(o for _, o in seen),
        "plain": [plain_by_item[i] for i in order],
        "ours": [ours_by_item[i] for i in order],
        "counters": {k: getattr(after, k) - getattr(before, k) for k in after.__dataclass_fields__},
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
        "unseen_items": timed["unseen_items"],
        "warmup_items": timed["warmup_items"],
        "workers": verifier.workers,
        "repeats": repeats,
        "plain_seconds": timed["plain_seconds"],
        "ours_seconds": timed["ours_seconds"],
        "speed_ratio": timed["plain_seconds"] / timed["ours_seconds"],
        "seen_plain_seconds": timed["seen_plain_seconds"],
        "seen_ours_seconds": timed["seen_ours_seconds"],
        "seen_speed_ratio": timed["seen_plain_seconds"] / timed["seen_ours_seconds"],
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
    n, p, u, w = r["items"], r["pairs"], r["unseen_items"], r["warmup_items"]
    rows = [
        (f"plain math-verify, sequential, {u} unseen items (s)", f"{r['plain_seconds']:.3f}"),
        (f"verify_batch, {r['workers']} workers, cold cache, {u} unseen items (s)", f"{r['ours_seconds']:.3f}"),
        ("speed ratio on unseen items", f"**{r['speed_ratio']:.1f}x**"),
        (f"speed ratio on the {w} warm-up items, seen before (median of {r['repeats']})",
         f"{r['seen_speed_ratio']:.1f}x ({r['seen_plain_seconds']:.3f} s / {r['seen_ours_seconds']:.3f} s)"),
        ("agreement verify_batch vs plain math-verify", f"{r['agree_ours_plain']:.2%} of {n}"),
        ("agreement verify_batch vs Qwen grader `score`", f"{r['agree_ours_score']:.2%} of {n}"),
        ("agreement plain math-verify vs Qwen grader `score`", f"{r['agree_plain_score']:.2%} of {n}"),
        ("pairs: verify_batch vs `equal`", f"{r['pairs_agree_ours']:.2%} of {p}"),
        ("pairs: plain math-verify vs `equal`", f"{r['pairs_agree_plain']:.2%} of {p}"),
    ]
    c = r["counters"]
    path = f"{c['fast_path']} fast path, {c['cache_hits']} cache hits, {c['worker_tasks']} worker tasks"
    lines = ["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join([*lines, "", f"verify_batch routing of the {u} unseen items (timed passes): {path}."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: usable CPUs)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="unseen slices timed (the data is split into repeats + 1 slices by problem)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    result = run(args.workers, args.repeats)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
