"""Async GenRM client: judge solutions over any number of OpenAI-compatible (or SGLang `/generate`) endpoints.

Owns the HTTP side of judging (docs/design.md §4.4): keep-alive connections per endpoint
(`fapo.grm.http`), a global concurrency limit, least-outstanding routing and circuit breakers
(`fapo.grm.routing`), retries with exponential backoff and jitter, majority voting over n samples,
an LRU cache keyed by the exact prompt (with identical concurrent requests sharing one in-flight
request), and metrics for the trainer's logger.
Every failure is a value: a `Judgement` with status "invalid" or "error", never an exception and
never a verdict. Must not import torch or transformers, and holds no prompt logic of its own
(`fapo.grm.prompt` renders and parses).

    async with GenRMClient(JudgeConfig(endpoints=(Endpoint("http://127.0.0.1:8000/v1"),))) as grm:
        j = await grm.judge(problem, steps, gold)     # Judgement(verdict=2, flawed=True, status="ok", ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import sys
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from fapo.grm.fit import ContextFit
from fapo.grm.http import ConnectionPool
from fapo.grm.prompt import grm_messages, parse_verdict
from fapo.grm.protocols import ChatCompletions, RequestProtocol, Sample
from fapo.grm.routing import LATENCY_WINDOW, Pick, Router, percentiles
from fapo.grm.types import Endpoint, JudgeConfig, JudgeItem, Judgement, majority_verdict  # noqa: F401 (public here too)
from fapo.metrics import ratio


@dataclass(slots=True)
class _Outcome:
    """What one HTTP attempt produced: samples (an answer), or an error that may be retried."""

    samples: list[Sample] | None = None
    error: str | None = None
    retry: bool = False
    retry_after: float | None = None


_ENDPOINT_FAULTS = frozenset({401, 403, 404})  # misconfigured endpoint: try another, count for the breaker
_NO_BREAKER = frozenset({408, 429})  # alive but busy: retry, endpoint health unchanged


_JSON = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps(**kw) builds one per call


def _prompt_key(messages_json: str, num_steps: int) -> bytes:
    """Cache key of one request: a 128-bit digest of the exact prompt, so the cache holds no prompts."""
    return hashlib.blake2b(f"{num_steps}\n{messages_json}".encode(), digest_size=16).digest()


class GenRMClient:
    """Judge solutions with a GenRM served behind OpenAI-compatible endpoints.

    Use as `async with GenRMClient(config) as grm:`; connections open lazily and `aclose()`
    closes them. A client lives in one event loop (its connections do). Methods never raise on
    network or server failures: they return a `Judgement`. `protocol` is the wire format
    (`fapo.grm.protocols`): OpenAI chat completions unless told otherwise.
    """

    def __init__(self, config: JudgeConfig, protocol: RequestProtocol | None = None) -> None:
        self.config = config
        self.protocol = protocol if protocol is not None else ChatCompletions()
        self._router = Router(len(config.endpoints), config.breaker_failures, config.breaker_cooldown)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._models = [json.dumps(e.model) for e in config.endpoints]
        self._sampling = self.protocol.sampling(config)
        # Requests are fitted to each endpoint's context (chat completions; `fapo.grm.fit`).
        self._fit = ContextFit(config, [_auth_header(e) for e in config.endpoints]) \
            if isinstance(self.protocol, ChatCompletions) else None
        self._pools: list[ConnectionPool] | None = None
        self._closed = False
        self._cache: OrderedDict[bytes, Judgement] = OrderedDict()
        # Requests in flight, by cache key: identical callers await the same future.
        self._pending: dict[bytes, asyncio.Future[Judgement]] = {}
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._health_changed = asyncio.Event()
        """Set (and replaced) whenever an attempt ends: requests waiting for an open breaker look again."""

    async def __aenter__(self) -> GenRMClient:
        self._closed = False
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _open(self) -> list[ConnectionPool]:
        if self._pools is None:
            # Idle connections are dropped after 4 s, before uvicorn's (vLLM's) 5 s keep-alive closes
            # them server-side: reusing a connection the server is closing fails a POST for no reason.
            self._pools = [
                ConnectionPool(e.url + self.protocol.route, _auth_header(e), idle_timeout=4.0,
                               max_response_bytes=self.config.max_response_bytes)
                for e in self.config.endpoints
            ]
        return self._pools

    async def aclose(self) -> None:
        """Close the connections; requests still in flight end as "error" judgements, none are retried."""
        self._closed = True
        if self._fit is not None:
            self._fit.close()
        if self._pools is not None:
            for pool in self._pools:
                pool.close()
            self._pools = None

    async def judge(self, problem: str, steps: Sequence[str], gold: str | None = None) -> Judgement:
        """Judge one solution: render the GenRM prompt (`fapo.grm.prompt`) and ask an endpoint."""
        try:
            messages = grm_messages(problem, list(steps), gold)
        except TypeError as err:
            return self._count(_failure(f"cannot render the prompt: {err}", None, 0, 0.0))
        return await self.judge_prompt(messages, len(steps))

    async def judge_prompt(self, messages: list[dict[str, Any]], num_steps: int) -> Judgement:
        """Judge an already-rendered chat request whose solution has `num_steps` steps."""
        t0 = time.perf_counter()
        try:
            messages_json = _JSON.encode(messages)
        except (TypeError, ValueError) as err:
            return self._count(_failure(f"messages are not JSON-serialisable: {err}", None, 0, 0.0))
        key = _prompt_key(messages_json, num_steps)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self._counts["grm/cache_hits"] += 1
            return self._count(replace(hit, cached=True, attempts=0, latency_s=time.perf_counter() - t0))
        while (pending := self._pending.get(key)) is not None:
            try:  # an identical request is in flight: share its result
                result = await asyncio.shield(pending)
            except asyncio.CancelledError:
                if pending.cancelled() and not _cancelling():
                    continue  # its caller was cancelled, not this one: send the request ourselves
                raise
            self._counts["grm/coalesced"] += 1
            return self._count(replace(result, cached=True, attempts=0, latency_s=time.perf_counter() - t0))
        return self._count(await self._request(key, messages, messages_json, num_steps, t0))

    async def judge_many(self, items: Sequence[JudgeItem], progress: bool = False) -> list[Judgement]:
        """Judge every item, at most `config.concurrency` at a time; one result per item, in order.

        `progress=True` shows a bar on a terminal, and a line every 10 s otherwise.
        """
        for item in items:
            if not isinstance(item, JudgeItem):
                raise TypeError(f"judge_many takes JudgeItem objects, got {type(item).__name__}")
        results: list[Judgement | None] = [None] * len(items)
        todo = iter(range(len(items)))
        bar = JudgeProgress(len(items)) if progress and items else None

        async def work() -> None:
            for i in todo:
                item = items[i]
                results[i] = judgement = await self.judge(item.problem, item.steps, item.gold)
                if bar is not None:
                    bar.advance(judgement)

        try:
            await asyncio.gather(*(work() for _ in range(min(len(items), self.config.concurrency))))
        finally:
            if bar is not None:
                bar.close()
        return results  # type: ignore[return-value]  # every slot was filled

    async def _request(
        self, key: bytes, messages: list[dict[str, Any]], messages_json: str, num_steps: int, t0: float
    ) -> Judgement:
        """Send one prompt, retrying as configured; shares the result with identical callers and caches it."""
        pending = self._pending[key] = asyncio.get_running_loop().create_future()
        try:
            try:
                prompt = await self.protocol.prompt(messages, messages_json)
            except ValueError as err:
                result = _failure(str(err), None, 0, time.perf_counter() - t0)
            else:
                result = await self._attempts(prompt, num_steps, t0)
        except BaseException:  # cancelled: callers waiting on `pending` will send the request themselves
            pending.cancel()
            raise
        finally:
            del self._pending[key]
        pending.set_result(result)
        if result.status != "error" and self.config.cache_size > 0:
            self._cache[key] = result
            if len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return result

    async def _attempts(self, prompt: str, num_steps: int, t0: float) -> Judgement:
        """Up to 1 + retries attempts, each on the least-loaded healthy endpoint not yet tried.

        When every breaker is open the request waits for one to let traffic through again (its half-open
        probe), until its deadline: `timeout × (1 + retries)` seconds after it started. Only then does it
        fail as "no healthy endpoint" (`grm/fail_fast`).
        """
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout * (cfg.retries + 1)
        tried: list[int] = []
        error = "not attempted"
        attempt = 0
        while True:
            async with self._slots:
                pick = self._router.pick(tried)
                if pick is not None:
                    tried.append(pick.index)
                    outcome = await self._send(pick, prompt)
            if pick is None:
                if await self._wait_for_endpoint(deadline):
                    continue
                self._counts["grm/fail_fast"] += 1
                reason = self._router.describe_unavailable() + " until this request's deadline"
                if tried:
                    reason += f" (last error: {error})"
                url = cfg.endpoints[tried[-1]].url if tried else None
                return _failure(reason, url, attempt, time.perf_counter() - t0)
            attempt += 1
            url = cfg.endpoints[pick.index].url
            if outcome.samples is not None:
                return self._answer(outcome.samples, num_steps, url, attempt, t0)
            error = outcome.error or "unknown error"
            if not outcome.retry or attempt > cfg.retries:
                return _failure(error, url, attempt, time.perf_counter() - t0)
            self._counts["grm/retries"] += 1
            await asyncio.sleep(min(self._backoff(attempt, outcome.retry_after), max(0.0, deadline - time.monotonic())))

    async def _wait_for_endpoint(self, deadline: float) -> bool:
        """Wait until a breaker may let a request through (its cooldown is over, or an attempt ended and
        changed the endpoints' health); False once `deadline` has passed. A random extra part of the
        wait keeps the waiting requests from all arriving at the probe at once."""
        self._counts["grm/breaker_waits"] += 1
        left = deadline - time.monotonic()
        if left <= 0 or self._closed:
            return False
        next_probe = self._router.next_probe_in()
        wait = left if next_probe is None else min(left, next_probe * random.uniform(1.0, 1.1) + 0.001)
        changed = self._health_changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), wait)
        return True

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        delay = min(cfg.backoff_max, cfg.backoff_base * 2 ** min(attempt - 1, 60))
        delay *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cfg.backoff_max))
        return delay

    async def _send(self, pick: Pick, prompt: str) -> _Outcome:
        """One HTTP attempt; reports the outcome to the router and wakes requests waiting for an endpoint.
        Never raises but CancelledError."""
        try:
            return await self._send_once(pick, prompt)
        finally:
            self._health_changed.set()
            self._health_changed = asyncio.Event()

    async def _send_once(self, pick: Pick, prompt: str) -> _Outcome:
        i = pick.index
        if self._closed:
            self._router.release(pick)
            return _Outcome(error="the client was closed")
        sampling = self._sampling
        if self._fit is not None:
            fitted = await self._fit.fit(i, prompt.removeprefix('"messages":'))
            if fitted.error is not None:  # no room on this endpoint: another may have a longer context
                self._router.release(pick)
                return _Outcome(error=fitted.error, retry=True)
            if fitted.max_tokens != self.config.max_tokens:
                sampling = self.protocol.sampling(replace(self.config, max_tokens=fitted.max_tokens))
        body = self.protocol.body(self._models[i], prompt, sampling)
        self._counts["grm/requests"] += 1
        t = time.perf_counter()
        try:
            status, raw, retry_after = await self._post(i, body)
        except asyncio.CancelledError:
            self._router.release(pick)
            raise
        except (OSError, asyncio.TimeoutError) as err:  # fapo.grm.http's errors are OSErrors
            if self._closed:  # our own connections were closed: says nothing about the endpoint
                self._router.release(pick)
                return _Outcome(error="the client was closed")
            self._router.fail(pick, time.perf_counter() - t)
            self._counts["grm/request_errors"] += 1
            kind = "timeout" if isinstance(err, asyncio.TimeoutError) else type(err).__name__
            return _Outcome(error=f"{kind}: {err}" if str(err) else kind, retry=True)
        latency = time.perf_counter() - t
        if status == 200:
            samples = self.protocol.samples(raw)
            if samples is not None:
                self._router.succeed(pick, latency)
                return _Outcome(samples=samples)
            self._router.fail(pick, latency)
            self._counts["grm/request_errors"] += 1
            return _Outcome(error=f"malformed chat completion: {_snippet(raw)}", retry=True)
        breaker = status >= 500 or status in _ENDPOINT_FAULTS
        self._router.fail(pick, latency, breaker=breaker)
        self._counts["grm/request_errors"] += 1
        retry = breaker or status in _NO_BREAKER
        return _Outcome(
            error=f"HTTP {status}: {_snippet(raw)}", retry=retry, retry_after=_seconds(retry_after)
        )

    async def _post(self, index: int, body: bytes) -> tuple[int, bytes, str | None]:
        """POST a chat request to endpoint `index`: (HTTP status, body, Retry-After header)."""
        response = await self._open()[index].post(body, self.config.timeout)
        return response.status, response.body, response.headers.get("retry-after")

    def _answer(self, samples: list[Sample], num_steps: int, url: str, attempts: int, t0: float) -> Judgement:
        """The verdict of an answer: the majority over its usable samples. A cut or filtered sample abstains,
        whatever box its unfinished text may hold; an answer with no verdict whose samples were cut at
        max_tokens is `truncated`."""
        latency = time.perf_counter() - t0
        verdicts = [parse_verdict(s.text, num_steps) if s.unusable is None else None for s in samples]
        verdict = majority_verdict(verdicts, self.config.tie_break)
        if verdict is None:
            shown = samples[0].text if samples else None
            why = f"no valid \\boxed{{k}} (k in -1..{num_steps - 1}) in {len(samples)} sample(s)"
            cut = sum(s.truncated for s in samples)
            if cut:
                why = (f"truncated: {cut} of {len(samples)} critique(s) reached max_tokens ({self.config.max_tokens}) "
                       f"or the room the server's context left; {why}")
            unusable = sorted({s.unusable for s in samples if s.unusable})
            if unusable:
                why += ": " + "; ".join(unusable)
            return Judgement(None, None, "invalid", shown, url, attempts, latency, error=why, truncated=cut > 0)
        critique = samples[verdicts.index(verdict)].text
        return Judgement(verdict, verdict >= 0, "ok", critique, url, attempts, latency)

    def _count(self, j: Judgement) -> Judgement:
        c = self._counts
        c["grm/judgements"] += 1
        c[_STATUS_KEY[j.status]] += 1
        if j.flawed:
            c["grm/flawed"] += 1
        if not j.cached:
            self._latencies.append(j.latency_s)
        return j

    def metrics(self) -> dict[str, float]:
        """Counters since the client was made, namespaced for the trainer's logger.

        Judgements: grm/judgements, grm/ok, grm/invalid, grm/errors, grm/flawed, grm/flawed_ratio
        (flawed / ok), grm/latency_p50|p95 (uncached, seconds); ratios and percentiles over nothing are NaN
        (`fapo.metrics`). HTTP: grm/requests,
        grm/request_errors, grm/retries, grm/breaker_waits (waits for an open breaker's probe), grm/fail_fast
        (no healthy endpoint until the request's deadline), grm/in_flight,
        grm/healthy_endpoints. Cache: grm/cache_hits, grm/coalesced (joined an identical
        in-flight request), grm/cache_size. Context: grm/fitted (requests sent with less than max_tokens, to
        fit the endpoint's context; `fapo.grm.fit`). Per endpoint i: grm/endpoint/<i>/requests, errors,
        in_flight, healthy (0/1), latency_p50, latency_p95 (seconds, last 1024 attempts).
        """
        m = {k: float(v) for k, v in self._counts.items()}
        m["grm/flawed_ratio"] = ratio(m["grm/flawed"], m["grm/ok"])
        m["grm/latency_p50"], m["grm/latency_p95"] = percentiles(self._latencies, (0.50, 0.95))
        m["grm/cache_size"] = float(len(self._cache))
        m["grm/in_flight"] = float(sum(s.in_flight for s in self._router.states))
        m["grm/healthy_endpoints"] = float(sum(map(self._router.healthy, range(len(self._router.states)))))
        m["grm/fitted"] = float(self._fit.fitted if self._fit is not None else 0)
        m.update(self._router.metrics())
        return m


_COUNTERS = (
    "grm/judgements", "grm/ok", "grm/invalid", "grm/errors", "grm/flawed", "grm/requests",
    "grm/request_errors", "grm/retries", "grm/fail_fast", "grm/breaker_waits", "grm/cache_hits", "grm/coalesced",
)  # fmt: skip
_STATUS_KEY = {"ok": "grm/ok", "invalid": "grm/invalid", "error": "grm/errors"}


def _cancelling() -> bool:
    """Whether the current task is being cancelled (Python >= 3.11; assumed not on 3.10)."""
    task = asyncio.current_task()
    return bool(task is not None and getattr(task, "cancelling", lambda: 0)())


def _failure(error: str, url: str | None, attempts: int, latency_s: float) -> Judgement:
    return Judgement(None, None, "error", None, url, attempts, latency_s, error=error)


def _auth_header(endpoint: Endpoint) -> dict[str, str]:
    return {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}


def _snippet(raw: bytes, limit: int = 200) -> str:
    text = raw[: limit * 4].decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit else "") if text else "(empty body)"


def _seconds(header: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is ignored)."""
    try:
        return max(0.0, float(header)) if header else None
    except ValueError:
        return None


class JudgeProgress:
    """Progress of judging on stderr: a rich bar on a terminal, else a line every 10 s. `advance` per judgement."""

    def __init__(self, total: int, every_s: float = 10.0) -> None:
        self.total, self.done, self.every_s = total, 0, every_s
        self.status: Counter[str] = Counter()
        self.t0 = self.last = time.monotonic()
        self._bar: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(
                *Progress.get_default_columns(), console=Console(stderr=True), transient=True
            )
            self._task = self._bar.add_task("judging", total=total)
            self._bar.start()

    def advance(self, judgement: Judgement) -> None:
        self.done += 1
        self.status[judgement.status] += 1
        if self._bar is not None:
            self._bar.advance(self._task)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.status.items()))
            print(f"judged {self.done}/{self.total} in {now - self.t0:.0f} s ({counts})", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
