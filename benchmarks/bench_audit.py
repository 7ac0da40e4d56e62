"""Audit throughput: `fapo eval rollouts` against a plain benchmark client on the same `fapo serve-grm` server.

One `serve-grm --model` server (a random tiny Qwen3 unless --model) is started; the real Qwen2.5-Math
rollouts of the first --problems problems of shared/data's math_cot_100.jsonl are verified, and the GenRM
prompts of the verified-correct ones (distinct prompts: the audit's client sends an identical prompt once)
are timed twice at the same --concurrency:
- "benchmark client": a closed loop like vLLM's `benchmark_serving --max-concurrency C` (aiohttp, C workers,
  each sends its next request as soon as one returns), requests only, no verification;
- "fapo eval rollouts": the whole audit (read, verify, judge, write rows) in this process, with `--window`.
The audit's judged requests per second over the benchmark client's (the mean of a run before and one after
the audits) is how well it keeps the server's batch full. vLLM's CPU build is not measured here (see BENCHMARKS.md).

    python benchmarks/bench_audit.py [--problems 10] [--concurrency 16] [--max-batch 16] [--max-tokens 16]
                                     [--window 2048 64] [--model DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from fapo.eval.audit import AuditConfig, audit_rollouts
from fapo.eval.judges import JudgeSpec
from fapo.eval.rollout_files import iter_rows
from fapo.eval.rollout_rows import to_rollouts
from fapo.grm.prompt import grm_messages
from fapo.grm.types import JudgeConfig
from fapo.outcome import rollout_outcomes
from fapo.serving.launch import launch_subprocess
from fapo.steps import split_steps

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qwen25math_rollouts" / "math_cot_100.jsonl"


def correct_prompts(path: Path) -> list[list[dict]]:
    """The distinct GenRM messages of the verified-correct rollouts of `path`, in file order."""
    rollouts = list(to_rollouts(iter_rows([path])))
    outcomes = rollout_outcomes([r.response for r in rollouts], [r.gold for r in rollouts])
    seen: dict[str, list[dict]] = {}
    for r, o in zip(rollouts, outcomes, strict=True):
        if o.correct:
            messages = grm_messages(r.problem, split_steps(r.response), r.gold)
            seen.setdefault(messages[-1]["content"], messages)
    return list(seen.values())


async def closed_loop(url: str, prompts: list[list[dict]], concurrency: int, max_tokens: int) -> tuple[float, int]:
    """vLLM-benchmark-style client: (wall s, failed requests)."""
    queue = list(reversed(prompts))
    failed = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        while queue:
            body = {"model": "genrm", "messages": queue.pop(), "max_tokens": max_tokens, "temperature": 0.0}
            async with session.post(url + "/chat/completions", json=body) as response:
                await response.read()
                failed += response.status != 200

    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - t0, failed


def reference(url: str, prompts: list[list[dict]], args: argparse.Namespace) -> dict:
    wall, failed = asyncio.run(closed_loop(url, prompts, args.concurrency, args.max_tokens))
    return {"client": "benchmark client (closed loop)", "wall_s": round(wall, 2), "requests": len(prompts),
            "requests_per_s": round(len(prompts) / wall, 3), "rows_per_s": None, "failed": failed}


def audit(url: str, path: Path, out: Path, args: argparse.Namespace, window: int) -> dict:
    config = JudgeConfig(endpoints=(url,), concurrency=args.concurrency, max_tokens=args.max_tokens, timeout=3600.0,
                         temperature=0.0)  # greedy, as the benchmark client asks
    spec = JudgeSpec(config)
    t0 = time.perf_counter()
    report = audit_rollouts([str(path)], AuditConfig(str(out), window=window), spec)
    wall = time.perf_counter() - t0
    requests = int(report.judge_metrics.get("grm/requests", 0))
    return {"client": f"fapo eval rollouts (window {window})", "wall_s": round(wall, 2), "requests": requests,
            "requests_per_s": round(requests / wall, 3), "rows_per_s": round(report.throughput["rows"] / wall, 2),
            "failed": report.total["errors"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="GenRM model directory (default: a random tiny Qwen3)")
    parser.add_argument("--problems", type=int, default=10, help="problems of math_cot_100.jsonl (8 rollouts each)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, nargs="+", default=[2048])
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                        help="the GenRM server: serve-grm's transformers backend, or vLLM (needs `make vllm`)")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rollouts.jsonl"
        data.write_text("".join(DATA.open(encoding="utf-8").readlines()[: args.problems]), encoding="utf-8")
        model = args.model or _tiny_model(Path(tmp) / "model")
        prompts = correct_prompts(data)
        server_args = ["--model", model, "--port", "0", "--max-batch", str(args.max_batch)] + (
            ["--threads", str(args.threads), "--device", "cpu"] if args.engine == "hf" else
            ["--engine", "vllm", "--dtype", "float32", "--max-model-len", "16384", "--vllm-arg=--optimization-level=0"])
        with launch_subprocess(server_args, timeout=900) as server:
            asyncio.run(closed_loop(server.url, prompts[:4], 4, args.max_tokens))  # warm-up
            rows = [reference(server.url, prompts, args)]
            for i, window in enumerate(args.window):
                rows.append(audit(server.url, data, Path(tmp) / f"rows{i}.jsonl", args, window))
            rows.append(reference(server.url, prompts, args))  # again: the machine's drift shows
    base = (rows[0]["requests_per_s"] + rows[-1]["requests_per_s"]) / 2
    print(f"{args.problems} problems x 8 rollouts, {len(prompts)} distinct correct ones judged; concurrency "
          f"{args.concurrency}, serve-grm --engine {args.engine} --max-batch {args.max_batch}, max_tokens "
          f"{args.max_tokens}\n")
    print("| client | wall s | requests | requests/s | vs benchmark client (mean of its two runs) | rows/s | failed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['client']} | {r['wall_s']} | {r['requests']} | {r['requests_per_s']} | "
              f"{r['requests_per_s'] / base:.2f} | {r['rows_per_s'] or '—'} | {r['failed']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _tiny_model(out: Path) -> str:
    from fapo.models import TinyModelConfig, make_tiny_model

    make_tiny_model(out, TinyModelConfig(layers=3, hidden=128, heads=4, vocab_size=660, phrase_tokens=True,
                                         max_positions=16384))
    return str(out)


if __name__ == "__main__":
    sys.exit(main())
