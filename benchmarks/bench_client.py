"""Benchmark the GenRM client (`fapo.grm.client`) against stand-in endpoints in separate processes.

Each stand-in is an aiohttp server that reads the request, sleeps a fixed time (100 ms, or 300 ms
for the slow one) and answers a canned chat completion; it accepts any concurrency. Scenarios:

  equal   2 endpoints x 100 ms: wall time vs the ideal n / concurrency x 0.1 s (target <= 1.3x),
          load skew max/min requests (target <= 1.2), client CPU per request (target < 0.5 ms).
  skewed  100 ms and 300 ms: least-outstanding routing should give the fast one ~3x the requests.
  reference  the "equal" requests sent with a bare aiohttp loop, to compare client CPU per request.

Run: `python benchmarks/bench_client.py [--n 4000] [--concurrency 64] [--json OUT] [--no-reference]`.
Exit status 1 when a target is missed (the table says which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
from typing import Any

CANNED = [
    json.dumps(
        {
            "id": "bench",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": f"Checking each paragraph in turn. \\boxed{{{k}}}",
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 400, "completion_tokens": 12, "total_tokens": 412},
        }
    ).encode()
    for k in (-1, 0, 2, 5)
]


def serve(index: int, delay_s: float, ports: Any) -> None:
    """Stand-in endpoint process: report the bound port, then serve forever."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(delay_s)
        return web.Response(body=CANNED[len(body) % len(CANNED)], content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        ports.put((index, runner.addresses[0][1]))
        await asyncio.Event().wait()

    asyncio.run(main())


def start_endpoints(delays: list[float]) -> tuple[list[mp.process.BaseProcess], list[str], float]:
    """Spawn one stand-in per delay; returns the processes, their URLs and the start-up seconds."""
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    procs = [ctx.Process(target=serve, args=(i, d, ports), daemon=True) for i, d in enumerate(delays)]
    for p in procs:
        p.start()
    bound = dict(ports.get(timeout=60) for _ in procs)  # index -> port, in order of readiness
    urls = [f"http://127.0.0.1:{bound[i]}/v1" for i in range(len(procs))]
    return procs, urls, time.perf_counter() - t0


def make_items(n: int) -> list[Any]:
    """Distinct solutions of realistic size (a problem, 6 steps of ~150 characters, a gold answer)."""
    from fapo.grm.client import JudgeItem

    step = "We expand the product and collect like terms, so that the coefficient of x^2 is {k} + {i}; then we check it. "
    return [
        JudgeItem(
            f"Problem {i}: find the coefficient of x^2 in (x + {i})(x - {i + 1})(2x + 3).",
            tuple(step.format(k=k, i=i) for k in range(6)),
            str(i),
        )
        for i in range(n)
    ]


async def run_client(urls: list[str], n: int, concurrency: int) -> dict[str, Any]:
    from fapo.grm.client import GenRMClient, JudgeConfig

    items = make_items(n)
    config = JudgeConfig(endpoints=tuple(urls), concurrency=concurrency, timeout=30.0)
    async with GenRMClient(config) as client:
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = await client.judge_many(items)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        metrics = client.metrics()
    requests = [int(metrics[f"grm/endpoint/{i}/requests"]) for i in range(len(urls))]
    statuses = {s: sum(1 for j in results if j.status == s) for s in ("ok", "invalid", "error")}
    return {
        "wall_s": wall,
        "client_cpu_ms_per_request": 1000 * cpu / max(1, int(metrics["grm/requests"])),
        "requests": requests,
        "statuses": statuses,
        "latency_p50_s": metrics["grm/latency_p50"],
        "latency_p95_s": metrics["grm/latency_p95"],
    }


async def run_bare_aiohttp(urls: list[str], n: int, concurrency: int) -> dict[str, Any]:
    """Reference: the same requests with bare aiohttp (round-robin, no retries, cache or routing)."""
    import aiohttp

    from fapo.grm.prompt import grm_messages

    items = make_items(n)
    todo = iter(range(n))
    requests = [0] * len(urls)
    headers = {"Content-Type": "application/json"}

    async def work(session: aiohttp.ClientSession) -> None:
        for i in todo:
            item = items[i]
            body = json.dumps(
                {
                    "model": "genrm",
                    "messages": grm_messages(item.problem, list(item.steps), item.gold),
                    "n": 1,
                }
            )
            requests[i % len(urls)] += 1
            async with session.post(
                urls[i % len(urls)] + "/chat/completions", data=body, headers=headers
            ) as resp:
                json.loads(await resp.read())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(work(session) for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "wall_s": wall,
        "client_cpu_ms_per_request": 1000 * cpu / n,
        "requests": requests,
        "statuses": {"ok": n, "invalid": 0, "error": 0},
        "latency_p50_s": float("nan"),
        "latency_p95_s": float("nan"),
    }


def layer_cpu_us(n: int = 20_000) -> float:
    """Client CPU per judgement with the HTTP call stubbed out (prompt, JSON, cache, routing, parsing)."""
    from fapo.grm.client import GenRMClient, JudgeConfig

    class NoHttp(GenRMClient):
        async def _post(self, index: int, body: bytes) -> tuple[int, bytes, str | None]:
            return 200, CANNED[len(body) % len(CANNED)], None

    async def run() -> float:
        items = make_items(n)
        async with NoHttp(
            JudgeConfig(endpoints=("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"))
        ) as client:
            cpu0 = time.process_time()
            await client.judge_many(items)
            return 1e6 * (time.process_time() - cpu0) / n

    return min(asyncio.run(run()) for _ in range(3))


def scenario(name: str, delays: list[float], n: int, concurrency: int, bare: bool = False) -> dict[str, Any]:
    procs, urls, startup = start_endpoints(delays)
    try:
        runner = run_bare_aiohttp if bare else run_client
        result = asyncio.run(runner(urls, n, concurrency))
    finally:
        for p in procs:
            p.terminate()
            p.join(5)
    rates = [concurrency / len(delays) / d for d in delays]  # requests/s with in-flight split evenly
    ideal = n / sum(rates)
    requests = result["requests"]
    shares = [r / sum(requests) for r in requests]
    expected = [r / sum(rates) for r in rates]
    return {
        "scenario": name,
        "n": n,
        "concurrency": concurrency,
        "delays_s": delays,
        "startup_s": startup,
        "ideal_s": ideal,
        "wall_over_ideal": result["wall_s"] / ideal,
        "skew_max_over_min": max(requests) / max(1, min(requests)),
        "shares": shares,
        "expected_shares": expected,
        **result,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = "| scenario | endpoints (s) | n | conc. | wall s | ideal s | wall/ideal | requests per endpoint | shares (expected) | skew max/min | client CPU ms/request | p50/p95 s | statuses |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        shares = (
            " / ".join(f"{s:.2f}" for s in r["shares"])
            + " ("
            + " / ".join(f"{s:.2f}" for s in r["expected_shares"])
            + ")"
        )
        lines.append(
            f"| {r['scenario']} | {' + '.join(f'{d:g}' for d in r['delays_s'])} | {r['n']} | {r['concurrency']} "
            f"| {r['wall_s']:.2f} | {r['ideal_s']:.2f} | {r['wall_over_ideal']:.2f} | {' / '.join(map(str, r['requests']))} "
            f"| {shares} | {r['skew_max_over_min']:.2f} | {r['client_cpu_ms_per_request']:.3f} "
            f"| {r['latency_p50_s']:.3f} / {r['latency_p95_s']:.3f} | {r['statuses']} |".replace("nan", "-")
        )
    return "\n".join(lines)


def check(rows: list[dict[str, Any]]) -> list[str]:
    """Targets from issue 3; returns the ones missed."""
    equal, skewed = rows[:2]
    missed = []
    if equal["wall_over_ideal"] > 1.3:
        missed.append(f"equal: wall/ideal {equal['wall_over_ideal']:.2f} > 1.3")
    if equal["skew_max_over_min"] > 1.2:
        missed.append(f"equal: skew {equal['skew_max_over_min']:.2f} > 1.2")
    for r in rows[:2]:
        if r["client_cpu_ms_per_request"] >= 0.5:
            missed.append(
                f"{r['scenario']}: client CPU {r['client_cpu_ms_per_request']:.3f} ms/request >= 0.5"
            )
        if r["statuses"]["ok"] != r["n"]:
            missed.append(f"{r['scenario']}: statuses {r['statuses']}")
    fast_over_slow = skewed["requests"][0] / max(1, skewed["requests"][1])
    if not 2.4 <= fast_over_slow <= 3.6:
        missed.append(f"skewed: fast/slow requests {fast_over_slow:.2f}, expected about 3")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="judgements per scenario (default 4000)")
    parser.add_argument("--concurrency", type=int, default=64, help="client concurrency (default 64)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--no-reference", action="store_true", help="skip the bare-aiohttp reference run")
    args = parser.parse_args(argv)
    rows = [
        scenario("equal", [0.1, 0.1], args.n, args.concurrency),
        scenario("skewed", [0.1, 0.3], args.n, args.concurrency),
    ]
    if not args.no_reference:
        rows.append(
            scenario("equal, bare aiohttp (reference)", [0.1, 0.1], args.n, args.concurrency, bare=True)
        )
    print(table(rows))
    print(f"\nclient CPU per judgement with HTTP stubbed out (fapo's own layer): {layer_cpu_us():.0f} us")
    startup = " / ".join(f"{r['startup_s']:.2f} s" for r in rows)
    print(f"endpoint process start-up: {startup} (not in wall time)")
    missed = check(rows)
    print("targets: all met" if not missed else "targets missed: " + "; ".join(missed))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "missed": missed}, f, indent=2)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
