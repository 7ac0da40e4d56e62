"""GenRM client over real loopback HTTP: stand-in OpenAI-compatible endpoints (aiohttp.web) that
inject latency, 500s, 429s, garbage, hangs and a server stopped mid-run; plus `fapo judge`."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from fapo.cli import main as cli_main
from fapo.grm.client import (
    Endpoint,
    GenRMClient,
    JudgeConfig,
    JudgeItem,
    Judgement,
    majority_verdict,
)
from fapo.grm.judge import judge_sync
from fapo.grm.prompt import count_prompt_steps
from fapo.grm.routing import Router


@dataclass
class StandIn:
    """One stand-in endpoint; tests change `mode`, `delay` or `answers` while it runs.

    mode: ok | 500 | 429 | 400 | garbage | malformed | hang. `answers=None` flags the last step
    of the prompt (so a verdict shows which item it belongs to); otherwise choice i answers
    `answers[i % len(answers)]`.
    """

    mode: str = "ok"
    delay: float = 0.0
    answers: list[str] | None = None
    fail_first: int = 0
    finish_reason: str = "stop"
    raw: bytes | None = None
    """When set, every answer is this body (status 200), whatever was asked."""
    requests: int = 0
    bodies: list[dict] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        self.bodies.append(body)
        self.auth.append(request.headers.get("Authorization"))
        if self.requests <= self.fail_first:
            return web.Response(status=500, text="warming up")
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode in ("500", "429", "400"):
            return web.Response(
                status=int(self.mode), text=f"injected {self.mode}", headers={"Retry-After": "0"}
            )
        if self.mode == "malformed":
            return web.Response(text="<html>not json</html>")
        n = body.get("n", 1)
        if self.mode == "garbage":
            texts = ["I am not sure about this one."] * n
        elif self.answers is None:
            last = count_prompt_steps(body["messages"][-1]["content"]) - 1
            texts = [f"Step {last} is wrong. \\boxed{{{last}}}"] * n
        else:
            texts = [self.answers[i % len(self.answers)] for i in range(n)]
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": self.finish_reason}
            for i, t in enumerate(texts)
        ]
        return web.json_response({"id": "c", "object": "chat.completion", "choices": choices})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


async def start_all(*behaviours: StandIn) -> list[str]:
    return [await b.start() for b in behaviours]


async def stop_all(*behaviours: StandIn) -> None:
    for b in behaviours:
        await b.stop()


def config(*urls: str, **overrides) -> JudgeConfig:
    """Fast settings for tests: short timeouts, tiny backoff, short breaker cooldown."""
    fast = dict(timeout=2.0, backoff_base=0.005, backoff_max=0.02, breaker_cooldown=0.3, concurrency=8)
    return JudgeConfig(endpoints=tuple(Endpoint(u) for u in urls), **(fast | overrides))


def items(n: int) -> list[JudgeItem]:
    """Item i has 1 + i % 5 steps, so the default stand-in's verdict is i % 5."""
    return [
        JudgeItem(f"Problem {i}: compute {i} + 1.", tuple(f"step {k}" for k in range(1 + i % 5)), str(i + 1))
        for i in range(n)
    ]


def assert_complete(results: list[Judgement], expected_n: int) -> None:
    """Exactly one result per item, and each ok verdict belongs to its own item."""
    assert len(results) == expected_n
    for i, j in enumerate(results):
        assert isinstance(j, Judgement)
        if j.status == "ok":
            assert j.verdict == i % 5, (i, j)


# --- configuration, types and voting (no HTTP) -------------------------------------------------


def test_client_imports_no_torch():
    code = "import sys, fapo.grm.client, fapo.cli.judge; bad = {'torch', 'transformers'} & set(sys.modules); print(bad); sys.exit(bool(bad))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"concurrency": 0}, r"concurrency must be an integer in \[1, 65536\]"),
        ({"timeout": 0}, r"timeout must be a number in \(0, 86400\]"),
        ({"timeout": float("inf")}, "timeout must be a number in"),
        ({"breaker_cooldown": float("nan")}, "breaker_cooldown must be a number in"),
        ({"backoff_max": 1e300}, "backoff_max must be a number in"),
        ({"retries": -1}, r"retries must be an integer in \[0, 100\]"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer"),
        ({"votes": 3, "temperature": 0.0}, "set temperature > 0"),
        ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs must be a mapping"),
        ({"top_p": 0}, "top_p"),
        ({"tie_break": "coin"}, "tie_break must be 'flawed' or 'clean'"),
        ({"cache_size": -1}, "cache_size"),
        ({"breaker_failures": 0}, "breaker_failures"),
        ({"backoff_base": 1.0, "backoff_max": 0.5}, "backoff_max"),
        ({"endpoints": ()}, "at least one Endpoint"),
    ],
)
def test_config_validation_says_how_to_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        JudgeConfig(**({"endpoints": ("http://127.0.0.1:1/v1",)} | overrides))


def test_endpoint_normalises_and_rejects_bad_urls():
    assert Endpoint("http://h:1/v1/").url == "http://h:1/v1"
    assert JudgeConfig(endpoints=["http://h:1/v1"]).endpoints == (Endpoint("http://h:1/v1"),)
    for bad, message in [("h:1/v1", "must look like"), ("http://h:1/v1/chat/completions", "base URL")]:
        with pytest.raises(ValueError, match=message):
            Endpoint(bad)
    with pytest.raises(ValueError, match="api_key"):
        Endpoint("http://h:1/v1", api_key="key\r\nX-Injected: 1")  # would forge a header


@pytest.mark.parametrize(
    "verdicts, tie_break, expected",
    [
        ([2], "flawed", 2),
        ([-1], "flawed", -1),
        ([None, None], "flawed", None),
        ([1, -1], "flawed", 1),
        ([1, -1], "clean", -1),
        ([2, -1, 2], "clean", 2),
        ([3, 1, -1], "clean", 1),  # flawed wins 2:1; steps tie, the earliest is named
        ([3, 3, 1, -1, -1], "flawed", 3),
        ([None, -1, 0], "clean", -1),  # invalid samples abstain
        ([-1, -1, 0], "flawed", -1),
    ],
)
def test_majority_verdict(verdicts, tie_break, expected):
    assert majority_verdict(verdicts, tie_break) == expected


def test_non_ok_judgement_never_carries_a_verdict():
    with pytest.raises(ValueError):
        Judgement(1, True, "error", None, None, 1, 0.0)
    with pytest.raises(ValueError):
        Judgement(1, False, "ok", None, None, 1, 0.0)
    assert Judgement(-1, False, "ok", "fine", None, 1, 0.0).flawed is False


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_router_least_outstanding_with_round_robin_ties_and_exclusion():
    router = Router(3, breaker_failures=2, breaker_cooldown=5.0, clock=FakeClock())
    first = [router.pick() for _ in range(3)]
    assert sorted(p.index for p in first) == [0, 1, 2]  # ties spread round-robin
    router.succeed(first[1], 0.1)  # endpoint first[1].index now has nothing in flight
    assert router.pick().index == first[1].index
    assert router.pick(exclude=[0]).index != 0
    assert router.states[0].in_flight + router.states[1].in_flight + router.states[2].in_flight == 4


def test_router_breaker_opens_fails_fast_probes_and_closes():
    clock = FakeClock()
    router = Router(1, breaker_failures=2, breaker_cooldown=5.0, clock=clock)
    for _ in range(2):
        router.fail(router.pick(), 0.1)
    assert not router.healthy(0) and router.pick() is None
    assert "next probe in 5.0 s" in router.describe_unavailable()
    clock.now += 5.0
    probe = router.pick()
    assert probe.probe and router.pick() is None  # one probe at a time
    router.fail(probe, 0.1)
    assert router.pick() is None  # failed probe: another cooldown
    clock.now += 5.0
    probe = router.pick()
    router.succeed(probe, 0.1)
    assert router.healthy(0) and not router.pick().probe
    router.fail(router.pick(), 0.1, breaker=False)  # e.g. a 429: health unchanged
    assert router.healthy(0)


# --- one endpoint: request shape, verdicts, retries ---------------------------------------------


def test_ok_verdict_and_request_shape():
    async def scenario():
        ep = StandIn(answers=["Paragraph 1 divides by zero. \\boxed{1}"])
        [url] = await start_all(ep)
        cfg = JudgeConfig(
            endpoints=(Endpoint(url, model="critic", api_key="sekret"),), max_tokens=77, timeout=2
        )
        try:
            async with GenRMClient(cfg) as grm:
                flawed = await grm.judge("What is 1/0? $x^2$ {braces}", ["a", "b", "c"], "undefined")
                ep.answers = ["All good. \\boxed{-1}"]
                clean = await grm.judge("Another problem", ["a", "b"])
        finally:
            await stop_all(ep)
        return ep, url, flawed, clean

    ep, url, flawed, clean = asyncio.run(scenario())
    assert (flawed.status, flawed.verdict, flawed.flawed, flawed.attempts, flawed.endpoint) == (
        "ok",
        1,
        True,
        1,
        url,
    )
    assert flawed.critique.startswith("Paragraph 1") and not flawed.cached and flawed.error is None
    assert (clean.status, clean.verdict, clean.flawed) == ("ok", -1, False)
    body = ep.bodies[0]
    assert (
        body["model"] == "critic"
        and body["n"] == 1
        and body["max_tokens"] == 77
        and "temperature" not in body and "top_p" not in body  # the defaults: the server's decoding, as in the recipe
        and "chat_template_kwargs" not in body
    )
    assert "What is 1/0? $x^2$ {braces}" in body["messages"][0]["content"]
    assert ep.auth[0] == "Bearer sekret"


def test_garbage_and_out_of_range_are_invalid_and_not_retried():
    async def scenario():
        ep = StandIn(mode="garbage")
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url)) as grm:
                garbage = await grm.judge("p", ["a", "b"])
                ep.mode, ep.answers = "ok", ["\\boxed{7}"]
                out_of_range = await grm.judge("q", ["a", "b"])
                return garbage, out_of_range, ep.requests
        finally:
            await stop_all(ep)

    garbage, out_of_range, requests = asyncio.run(scenario())
    for j in (garbage, out_of_range):
        assert (j.status, j.verdict, j.flawed, j.attempts) == ("invalid", None, None, 1)
        assert "no valid" in j.error
    assert garbage.critique == "I am not sure about this one."
    assert requests == 2


def test_retries_500_then_succeeds_and_gives_up_on_persistent_429_and_400():
    async def scenario():
        ep = StandIn(fail_first=2)
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url, retries=2, breaker_failures=10)) as grm:
                recovered = await grm.judge("p", ["a"])
                ep.mode = "429"
                busy = await grm.judge("q", ["a"])
                ep.mode = "400"
                rejected = await grm.judge("r", ["a"])
                return recovered, busy, rejected, grm.metrics()
        finally:
            await stop_all(ep)

    recovered, busy, rejected, m = asyncio.run(scenario())
    assert (recovered.status, recovered.verdict, recovered.attempts) == ("ok", 0, 3)
    assert (busy.status, busy.verdict, busy.attempts) == ("error", None, 3) and "HTTP 429" in busy.error
    assert (rejected.status, rejected.attempts) == ("error", 1) and "HTTP 400" in rejected.error
    assert m["grm/retries"] == 4 and m["grm/errors"] == 2 and m["grm/requests"] == 7


# --- several endpoints: failover, routing, breaker, fail-fast -----------------------------------


def test_hang_times_out_and_retries_elsewhere():
    async def scenario():
        hang, good = StandIn(mode="hang"), StandIn()
        urls = await start_all(hang, good)
        try:
            async with GenRMClient(config(*urls, timeout=0.3, breaker_failures=100)) as grm:
                t0 = time.perf_counter()
                results = await grm.judge_many(items(16))
                return results, time.perf_counter() - t0, urls, hang.requests
        finally:
            await stop_all(hang, good)

    results, elapsed, urls, hung = asyncio.run(scenario())
    assert_complete(results, 16)
    assert all(j.status == "ok" and j.endpoint == urls[1] for j in results)
    assert hung >= 1 and sum(j.attempts == 2 for j in results) == hung
    assert elapsed < 2.0


def test_malformed_body_is_retried_on_another_endpoint():
    async def scenario():
        bad, good = StandIn(mode="malformed"), StandIn()
        urls = await start_all(bad, good)
        try:
            async with GenRMClient(config(*urls)) as grm:
                return await grm.judge_many(items(10)), urls
        finally:
            await stop_all(bad, good)

    results, urls = asyncio.run(scenario())
    assert_complete(results, 10)
    assert all(j.status == "ok" and j.endpoint == urls[1] for j in results)


def test_nothing_lost_when_a_server_stops_mid_run():
    async def scenario():
        a, b = StandIn(delay=0.05), StandIn(delay=0.01)
        await start_all(a, b)
        try:
            async with GenRMClient(config(a.url, b.url, concurrency=16, retries=3)) as grm:
                run = asyncio.ensure_future(grm.judge_many(items(400)))
                await asyncio.sleep(0.1)
                await a.stop()  # in-flight requests to `a` are dropped
                return await run, a.requests, b.requests, grm.metrics()
        finally:
            await stop_all(a, b)

    results, a_requests, b_requests, m = asyncio.run(scenario())
    assert_complete(results, 400)
    assert all(j.status == "ok" for j in results)
    assert a_requests > 0 and b_requests > 200
    assert (
        m["grm/endpoint/0/errors"] >= 1 and m["grm/retries"] >= 1
    )  # requests cut off and refused, then retried
    assert m["grm/ok"] == 400 and m["grm/in_flight"] == 0


def test_routing_prefers_the_faster_endpoint():
    async def scenario():
        fast, slow = StandIn(delay=0.005), StandIn(delay=0.05)
        await start_all(fast, slow)
        try:
            async with GenRMClient(config(fast.url, slow.url, concurrency=8)) as grm:
                results = await grm.judge_many(items(300))
                return results, fast.requests, slow.requests, grm.metrics()
        finally:
            await stop_all(fast, slow)

    results, fast_n, slow_n, m = asyncio.run(scenario())
    assert_complete(results, 300)
    assert fast_n > 2.5 * slow_n, (fast_n, slow_n)
    assert m["grm/endpoint/0/latency_p50"] < m["grm/endpoint/1/latency_p50"]


def test_equal_endpoints_share_round_robin():
    async def scenario():
        a, b = StandIn(), StandIn()
        await start_all(a, b)
        try:
            async with GenRMClient(config(a.url, b.url, concurrency=1)) as grm:
                await grm.judge_many(items(20))
                return a.requests, b.requests
        finally:
            await stop_all(a, b)

    assert asyncio.run(scenario()) == (10, 10)


def test_breaker_opens_probes_and_recovers():
    async def scenario():
        broken, good = StandIn(mode="500"), StandIn()
        await start_all(broken, good)
        cfg = config(broken.url, good.url, concurrency=4, breaker_failures=3, breaker_cooldown=0.3)
        try:
            async with GenRMClient(cfg) as grm:
                first = await grm.judge_many(items(60))
                opened = (broken.requests, grm.metrics()["grm/endpoint/0/healthy"])
                await asyncio.sleep(0.35)
                await grm.judge_many(items(80)[60:])  # one probe, which fails: stays open
                probed = (broken.requests, grm.metrics()["grm/endpoint/0/healthy"])
                broken.mode = "ok"
                await asyncio.sleep(0.35)
                await grm.judge_many(items(140)[80:])
                return first, opened, probed, broken.requests, grm.metrics()
        finally:
            await stop_all(broken, good)

    first, (opened_n, opened_healthy), (probed_n, probed_healthy), final_n, m = asyncio.run(scenario())
    assert_complete(first, 60)
    assert all(j.status == "ok" for j in first)
    assert 3 <= opened_n <= 3 + 4 and opened_healthy == 0.0  # at most the requests already in flight
    assert probed_n == opened_n + 1 and probed_healthy == 0.0
    assert final_n > probed_n + 10 and m["grm/endpoint/0/healthy"] == 1.0


def test_every_endpoint_down_fails_each_request_at_its_own_deadline():
    async def scenario():
        dead = [StandIn(), StandIn()]
        urls = await start_all(*dead)
        await stop_all(*dead)  # nothing listens on these ports now
        cfg = config(*urls, timeout=0.05, concurrency=16, retries=1, breaker_failures=2, breaker_cooldown=30)
        async with GenRMClient(cfg) as grm:
            t0 = time.perf_counter()
            results = await grm.judge_many(items(160))
            many_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            single = await grm.judge("p", ["a"])
            return results, many_s, single, time.perf_counter() - t0, grm.metrics()

    results, many_s, single, single_s, m = asyncio.run(scenario())
    assert len(results) == 160 and all(j.status == "error" and j.verdict is None for j in results)
    # each request waits for a probe up to its deadline, timeout × (1 + retries) = 0.1 s, then gives up
    assert 0.09 <= single_s < 0.3 and many_s < 160 / 16 * 0.1 + 2.0, (many_s, single_s)
    assert single.attempts == 0 and "circuit breakers are open" in single.error and "deadline" in single.error
    assert m["grm/requests"] <= 2 * 16 + 4  # no piling up: roughly what was in flight when they opened
    assert m["grm/fail_fast"] >= 140 and m["grm/errors"] == 161


@dataclass
class Flaky(StandIn):
    """Answers a share of requests with a transient 500, drawn from its own seeded generator."""

    failure_rate: float = 0.3
    burst: range = range(100, 112)
    """Arrivals that fail whatever the draw (an outage of a moment), so that the breaker surely opens."""
    rng: random.Random = field(default_factory=lambda: random.Random(27))
    arrivals: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals += 1
        await asyncio.sleep(0.02)
        if self.rng.random() < self.failure_rate or self.arrivals in self.burst:
            await request.read()
            return web.Response(status=500, text="transient")
        return await super().handle(request)


def test_a_flaky_only_endpoint_judges_nearly_every_row():
    """One endpoint failing 30% of requests at random, and 12 in a row once: its breaker opens (3 failures in a
    row), and requests then wait for the half-open probe instead of failing at once."""
    async def scenario():
        flaky = Flaky()
        [url] = await start_all(flaky)
        cfg = config(url, concurrency=16, retries=3, breaker_failures=3, breaker_cooldown=0.2, backoff_base=0.01, backoff_max=0.2)
        try:
            async with GenRMClient(cfg) as grm:
                return await grm.judge_many(items(500)), grm.metrics()
        finally:
            await stop_all(flaky)

    results, m = asyncio.run(scenario())
    assert_complete(results, 500)
    judged = sum(j.status == "ok" for j in results)
    assert judged >= 0.95 * 500, (judged, m)
    assert m["grm/breaker_waits"] > 0  # the breaker did open: the case this test is about


def _choice_body(content: object, finish_reason: object = "stop") -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
    return json.dumps({"choices": [choice]}).encode()


@pytest.mark.parametrize("raw, status, why", [
    (b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "error", "malformed chat completion"),
    (b'{"choices": [{"message": {"content": "\\\\boxed{-1}"}, "n": 1' + b"0" * 5000 + b"}]}", "error", "malformed"),
    (_choice_body("Step 0 may be wrong \\boxed{-1} then I ran out", "length"), "invalid", "'length'"),
    (_choice_body("\\boxed{-1}", "content_filter"), "invalid", "'content_filter'"),
    (_choice_body("\\boxed{-1}", ["length"]), "invalid", "'list'"),
    (_choice_body([{"type": "text", "text": "\\boxed{-1}"}]), "invalid", "a list, not text"),
    (b'{"choices": [1, 2]}', "error", "malformed chat completion"),
])
def test_a_reply_that_is_no_whole_critique_is_never_a_verdict(raw, status, why):
    """Deep nesting (RecursionError in json), huge integers, a cut or filtered critique, content as parts."""
    async def scenario():
        ep = StandIn(raw=raw)
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url, retries=1, max_response_bytes=2**20)) as grm:
                return await grm.judge("p", ["a", "b"])
        finally:
            await stop_all(ep)

    j = asyncio.run(scenario())
    assert j.status == status and j.verdict is None and why in j.error, j


def test_a_sample_says_why_it_is_no_verdict_and_whether_it_was_cut():
    """One Sample shape for both protocols: cut at max_tokens is unusable and truncated; filtered or given as
    parts is unusable, not truncated; a whole critique is usable."""
    from fapo.grm.protocols import ChatCompletions, TokenGenerate

    chat = ChatCompletions()
    [cut] = chat.samples(_choice_body("Step 0 \\boxed{0} and then", "length"))
    [filtered] = chat.samples(_choice_body("\\boxed{0}", "content_filter"))
    [parts] = chat.samples(_choice_body([{"type": "text", "text": "\\boxed{0}"}]))
    [whole] = chat.samples(_choice_body("\\boxed{0}"))
    assert cut.truncated and "'length'" in cut.unusable
    assert filtered.unusable and not filtered.truncated and parts.unusable and not parts.truncated
    assert whole.unusable is None and not whole.truncated

    class Tokenizer:
        def apply_chat_template(self, *args, **kwargs):
            return [1]

        def decode(self, ids, skip_special_tokens=True):
            return "Step 0 \\boxed{0}"

    sglang = TokenGenerate(Tokenizer())
    meta = {"finish_reason": {"type": "length", "length": 7}}
    [cut] = sglang.samples(json.dumps({"output_ids": [5, 6], "meta_info": meta}).encode())
    [whole] = sglang.samples(json.dumps({"text": "\\boxed{0}", "meta_info": {"finish_reason": {"type": "stop"}}}).encode())
    assert cut.truncated and cut.unusable and whole.unusable is None and not whole.truncated


def test_one_bad_choice_abstains_and_the_others_vote():
    body = {"choices": [7, {"message": {"content": "Step 1 \\boxed{1}"}, "finish_reason": "stop"}]}

    async def scenario():
        ep = StandIn(raw=json.dumps(body).encode())
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url, votes=2, temperature=0.7)) as grm:
                return await grm.judge("p", ["a", "b"])
        finally:
            await stop_all(ep)

    j = asyncio.run(scenario())
    assert j.status == "ok" and j.verdict == 1


# --- voting, cache, metrics, cancellation ---------------------------------------------------------


@pytest.mark.parametrize(
    "answers, votes, tie_break, expected",
    [
        (["\\boxed{1}", "\\boxed{-1}"], 2, "flawed", 1),
        (["\\boxed{1}", "\\boxed{-1}"], 2, "clean", -1),
        (["\\boxed{2}", "\\boxed{-1}", "\\boxed{2}"], 3, "clean", 2),
        (["no box", "\\boxed{-1}", "garbage"], 3, "flawed", -1),
    ],
)
def test_voting_over_n_samples(answers, votes, tie_break, expected):
    async def scenario():
        ep = StandIn(answers=answers)
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url, votes=votes, temperature=0.7, tie_break=tie_break)) as grm:
                return await grm.judge("p", ["a", "b", "c"]), ep.bodies[0]
        finally:
            await stop_all(ep)

    j, body = asyncio.run(scenario())
    assert body["n"] == votes and body["temperature"] == 0.7
    assert (j.status, j.verdict) == ("ok", expected)
    assert f"\\boxed{{{expected}}}" in j.critique


def test_cache_hits_lru_eviction_and_shared_in_flight_requests():
    async def scenario():
        ep = StandIn(delay=0.05)
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url, cache_size=2)) as grm:
                first = await grm.judge("a", ["x"])
                again = await grm.judge("a", ["x"])
                counts = [ep.requests]
                await grm.judge("b", ["x"])
                await grm.judge("c", ["x"])  # evicts "a"
                await grm.judge("a", ["x"])
                counts.append(ep.requests)
                together = await asyncio.gather(*(grm.judge("d", ["x", "y"]) for _ in range(10)))
                counts.append(ep.requests)
                return first, again, together, counts, grm.metrics()
        finally:
            await stop_all(ep)

    first, again, together, counts, m = asyncio.run(scenario())
    assert not first.cached and again.cached and again.attempts == 0 and again.verdict == first.verdict
    assert counts == [1, 4, 5]
    assert [j.cached for j in together].count(False) == 1 and {j.verdict for j in together} == {1}
    assert m["grm/cache_hits"] == 1 and m["grm/coalesced"] == 9 and m["grm/cache_size"] == 2


def test_errors_are_not_cached():
    async def scenario():
        ep = StandIn(mode="500")
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url, retries=0, breaker_failures=10)) as grm:
                failed = await grm.judge("a", ["x"])
                ep.mode = "ok"
                return failed, await grm.judge("a", ["x"])
        finally:
            await stop_all(ep)

    failed, retried = asyncio.run(scenario())
    assert failed.status == "error" and retried.status == "ok" and not retried.cached


def test_metrics_keys():
    async def scenario():
        a, b = StandIn(), StandIn(answers=["\\boxed{-1}"])  # b calls everything clean
        await start_all(a, b)
        try:
            async with GenRMClient(config(a.url, b.url)) as grm:
                await grm.judge_many(items(10))
                return grm.metrics()
        finally:
            await stop_all(a, b)

    m = asyncio.run(scenario())
    expected = {
        "grm/requests",
        "grm/errors",
        "grm/invalid",
        "grm/ok",
        "grm/cache_hits",
        "grm/flawed_ratio",
        "grm/retries",
        "grm/fail_fast",
        "grm/latency_p95",
        "grm/in_flight",
    }
    for i in (0, 1):
        expected |= {
            f"grm/endpoint/{i}/{k}"
            for k in ("requests", "errors", "in_flight", "latency_p50", "latency_p95", "healthy")
        }
    assert expected <= set(m) and all(isinstance(v, float) for v in m.values())
    assert m["grm/requests"] == 10 and m["grm/endpoint/0/requests"] + m["grm/endpoint/1/requests"] == 10
    assert m["grm/flawed_ratio"] == pytest.approx(m["grm/endpoint/0/requests"] / 10)


def test_cancelled_caller_leaves_nothing_in_flight():
    async def scenario():
        ep = StandIn(mode="hang")
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url, timeout=30)) as grm:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(grm.judge("p", ["a"]), 0.2)
                await asyncio.sleep(0.01)
                return grm.metrics(), dict(grm._pending)
        finally:
            await stop_all(ep)

    m, pending = asyncio.run(scenario())
    assert m["grm/in_flight"] == 0 and m["grm/endpoint/0/errors"] == 0 and pending == {}


def test_identical_caller_takes_over_when_the_first_caller_is_cancelled():
    async def scenario():
        ep = StandIn(delay=0.2)
        [url] = await start_all(ep)
        try:
            async with GenRMClient(config(url)) as grm:
                first = asyncio.ensure_future(grm.judge("p", ["a", "b"]))
                await asyncio.sleep(0.05)
                second = asyncio.ensure_future(grm.judge("p", ["a", "b"]))
                await asyncio.sleep(0.05)
                first.cancel()
                return await second, first.cancelled(), ep.requests
        finally:
            await stop_all(ep)

    second, first_cancelled, requests = asyncio.run(scenario())
    assert first_cancelled and (second.status, second.verdict, second.cached) == ("ok", 1, False)
    assert requests == 2


def test_closing_the_client_mid_run_ends_requests_as_errors():
    async def scenario():
        ep = StandIn(delay=0.3)
        await start_all(ep)
        try:
            grm = GenRMClient(config(ep.url))
            run = asyncio.ensure_future(grm.judge_many(items(20)))
            await asyncio.sleep(0.1)
            await grm.aclose()
            return await run, grm.metrics()
        finally:
            await stop_all(ep)

    results, m = asyncio.run(scenario())
    assert len(results) == 20 and all(
        j.status == "error" and j.error == "the client was closed" for j in results
    )
    assert m["grm/endpoint/0/healthy"] == 1.0 and m["grm/in_flight"] == 0


# --- sync wrapper and CLI (the endpoint runs in a background thread's loop) -----------------------


class ThreadedEndpoint:
    """A StandIn served from its own event loop in a background thread."""

    def __init__(self, behaviour: StandIn) -> None:
        self.behaviour = behaviour
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.behaviour.start(), self.loop).result(10)

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.behaviour.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_judge_sync_outside_and_inside_a_loop():
    with ThreadedEndpoint(StandIn()) as url:
        results = judge_sync(items(12), config(url))
    assert_complete(results, 12)
    assert all(j.status == "ok" for j in results)

    async def inside():
        with pytest.raises(RuntimeError, match="inside an event loop"):
            judge_sync(items(1), config("http://127.0.0.1:1/v1"))

    asyncio.run(inside())


def write_jsonl(path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_cli_judge_end_to_end(tmp_path, capsys):
    rows = [
        {"id": "s", "problem": "1+1?", "steps": ["1+1=2", "so 2"], "ground_truth": "2"},
        {"id": 7, "problem": "2+2?", "response": "2+2=4\n\nso 4\n\nanswer 4", "ground_truth": 4},
        {"id": "one", "problem": "3+3?", "steps": ["6"]},
    ]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, rows)
    standin = StandIn()
    with ThreadedEndpoint(standin) as url:
        code = cli_main(
            ["judge", str(src), "-o", str(out), "--endpoint", url, "--concurrency", "4", "--timeout", "5",
             "--chat-template-kwargs", '{"enable_thinking": false}']
        )
    assert code == 0
    assert [b["chat_template_kwargs"] for b in standin.bodies] == [{"enable_thinking": False}] * 3
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written] == ["s", 7, "one"]
    assert [r["verdict"] for r in written] == [1, 2, 0]  # the stand-in flags the last step
    assert set(written[0]) == {
        "id",
        "verdict",
        "flawed",
        "status",
        "critique",
        "endpoint",
        "attempts",
        "latency_s",
        "error",
    }
    assert all(r["status"] == "ok" and r["flawed"] is True and r["endpoint"] == url for r in written)
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["rows"] == 3 and summary["status"] == {"ok": 3, "invalid": 0, "error": 0}
    assert summary["flawed_ratio"] == 1.0 and summary["metrics"]["grm/requests"] == 3
    with pytest.raises(SystemExit):  # argparse: a usage error naming the flag
        cli_main(["judge", str(src), "-o", str(out), "--endpoint", url, "--chat-template-kwargs", "[1]"])
    assert "--chat-template-kwargs" in capsys.readouterr().err


def test_cli_judge_exits_nonzero_when_every_row_fails(tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, [{"id": 1, "problem": "p", "steps": ["a"]}])
    dead = StandIn()
    url = asyncio.run(dead.start())  # started and stopped in one loop: the port is closed
    asyncio.run(dead.stop())
    code = cli_main(["judge", str(src), "-o", str(out), "--endpoint", url, "--retries", "0"])
    assert code == 1
    assert json.loads(out.read_text())["status"] == "error"


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ('{"id": 2, "problem": "p", "steps": ["a"]', "in.jsonl:2: invalid JSON"),
        ({"id": 2, "problem": "p"}, "in.jsonl:2: give 'steps'"),
        ({"id": 2, "problem": "p", "steps": [1, 2]}, "in.jsonl:2: field 'steps' must be a list of strings"),
        ({"id": 3, "steps": ["a"]}, "in.jsonl:2: no problem field (looked for problem, question"),
        ([1, 2], "in.jsonl:2: expected a JSON object"),
    ],
)
def test_cli_judge_rejects_bad_rows_with_file_and_line(tmp_path, capsys, bad_row, message):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"id": 1, "problem": "p", "steps": ["a"]}, bad_row])
    code = cli_main(
        ["judge", str(src), "-o", str(tmp_path / "out.jsonl"), "--endpoint", "http://127.0.0.1:1/v1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_judge_malformed_line_in_a_subprocess(tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"id": 1, "problem": "p", "steps": ["a"]}, "{not json"])
    argv = [
        sys.executable,
        "-m",
        "fapo.cli",
        "judge",
        str(src),
        "-o",
        str(tmp_path / "o.jsonl"),
        "--endpoint",
        "http://127.0.0.1:1/v1",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{src}:2: invalid JSON" in done.stderr and "Traceback" not in done.stderr


def test_cli_judge_exits_nonzero_when_no_row_gets_a_verdict(tmp_path, capsys):
    """Every row 'invalid' (the oracle cannot read these problems) is a failed run, not a result."""
    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import load_oracle

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, [{"id": i, "problem": "not a testbed problem", "steps": ["a"]} for i in range(3)])
    with serve_in_thread(load_oracle("testbed")) as server:
        code = cli_main(["judge", str(src), "-o", str(out), "--endpoint", server.url])
    assert code == 1 and "no valid verdict in 3 rows (3 invalid, 0 error)" in capsys.readouterr().err
    assert [json.loads(line)["status"] for line in out.read_text().splitlines()] == ["invalid"] * 3


def test_a_response_over_the_size_cap_is_an_error_not_read_whole():
    huge = "x" * 1_500_000 + " \\boxed{0}"
    with ThreadedEndpoint(StandIn(answers=[huge])) as url:
        capped = judge_sync(items(1), config(url, retries=0, timeout=60, max_response_bytes=1024 * 1024))
        by_default = judge_sync(items(1), config(url, retries=0, timeout=60, max_tokens=2048))  # 192 KiB
        allowed = judge_sync(items(1), config(url, retries=0, timeout=60, max_response_bytes=4 * 1024 * 1024))
    assert capped[0].status == "error" and "larger than 1048576 bytes" in capped[0].error
    assert by_default[0].status == "error" and "larger than 196608 bytes" in by_default[0].error
    assert allowed[0].status == "ok" and allowed[0].verdict == 0
    assert JudgeConfig(endpoints=(url,), max_tokens=16384, concurrency=256).max_response_bytes == 64 * 1024 * 17
    with pytest.raises(ValueError, match="max_response_bytes"):
        config(url, max_response_bytes=10)


def test_a_critique_cut_at_max_tokens_is_no_verdict_even_with_a_box():
    """finish_reason "length": the unfinished critique's box (here a valid step index) is not a verdict."""

    async def run() -> list[Judgement]:
        cut, whole = StandIn(finish_reason="length"), StandIn()
        urls = await start_all(cut, whole)
        try:
            async with GenRMClient(config(urls[0], max_tokens=7)) as client_cut:
                first = await client_cut.judge_many(items(3))
            async with GenRMClient(config(urls[1])) as client_whole:
                second = await client_whole.judge_many(items(3))
            return first + second
        finally:
            await stop_all(cut, whole)

    results = asyncio.run(run())
    assert [j.status for j in results] == ["invalid"] * 3 + ["ok"] * 3
    assert all(j.truncated and j.verdict is None and "truncated" in j.error and "max_tokens (7)" in j.error
               for j in results[:3])
    assert not any(j.truncated for j in results[3:])
