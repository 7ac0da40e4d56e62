"""A small OpenAI-compatible chat-completions server over a `CompletionBackend`, with dynamic batching.

Owns: HTTP (aiohttp.web), request validation and limits (API key → 401, body size → 413, malformed
request → 400, full queue → 429), dynamic batching (up to `max_batch` requests, or until the oldest has
waited `max_wait_ms`; one `backend.generate` call per batch, in a worker thread so the event loop stays
responsive), `/metrics`, and three ways to run a server: `serve` (the CLI's foreground loop, stops on
SIGINT/SIGTERM), `serve_in_thread` (in-process) and `launch_subprocess` (a `fapo serve-grm` child).

Must not: generate text (backends do: `fapo.grm.hf_backend`, the testbed's oracle), import torch or the
testbed unless asked, or be the production path. It is for CPUs, tests and the demo; production GenRMs
run on vLLM or SGLang behind `fapo.grm.client`, which speaks to both the same way.

The `model` field of a request is not checked: one server serves one model.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib
import json
import logging
import signal
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fapo.grm.backend import Completion, CompletionBackend, GenerationRequest

log = logging.getLogger(__name__)

LISTENING_PREFIX = "fapo serve-grm listening on "
"""Start of the line `serve` prints once it accepts connections; the URL follows."""

ORACLES: dict[str, str] = {"testbed": "fapo.testbed.oracle:OracleBackend"}
"""Programmatic judges `--oracle NAME` can serve: name → "module:attribute" (imported only when asked)."""

_UNSUPPORTED_FIELDS = ("stream", "stop", "logprobs", "top_logprobs", "tools", "response_format")


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens, batches and limits."""

    host: str = "127.0.0.1"
    """Interface to bind; the default keeps the server private to this machine."""
    port: int = 8000
    """TCP port; 0 picks a free one (the bound URL is printed and returned)."""
    max_batch: int = 8
    """Most requests in one `backend.generate` call."""
    max_wait_ms: float = 10.0
    """Longest the oldest waiting request waits for others to join its batch."""
    max_queue: int = 256
    """Most requests waiting for a batch (the one being generated not counted); one more answers 429."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body in bytes; a larger one answers 413."""
    api_key: str | None = None
    """When set, every /v1 route needs `Authorization: Bearer <api_key>`, else 401."""
    served_model_name: str | None = None
    """Model name in responses and /v1/models; None uses the backend's `model_name`."""
    default_max_tokens: int = 512
    """max_tokens of a request that gives neither `max_tokens` nor `max_completion_tokens`."""
    max_tokens_limit: int = 8192
    """Largest max_tokens a request may ask for; more answers 400."""
    max_n: int = 16
    """Most choices (`n`) per request; more answers 400."""

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_queue", "max_body_bytes", "default_max_tokens", "max_tokens_limit", "max_n")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0 (0: never wait for a fuller batch), got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 picks a free port), got {self.port}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit "
                             f"({self.max_tokens_limit}); lower it or raise the limit")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty; leave it unset to disable authentication")


class RequestError(Exception):
    """A request the server answers with an HTTP error status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------- parsing


def parse_chat_request(body: Any, config: ServerConfig) -> GenerationRequest:
    """Validate an OpenAI chat-completions body; raise RequestError(400, why) when it is not usable."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    for name in _UNSUPPORTED_FIELDS:
        if body.get(name):
            raise RequestError(400, f"'{name}' is not supported by this server")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(400, f"messages[{i}] must be an object with 'role' and 'content'")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise RequestError(400, f"messages[{i}].{key} must be a string")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    max_tokens = _int_field("max_tokens", max_tokens, config.default_max_tokens, 1, config.max_tokens_limit)
    temperature = _number_field("temperature", body.get("temperature"), 1.0, 0.0, 100.0)
    top_p = _number_field("top_p", body.get("top_p"), 1.0, 0.0, 1.0)
    if top_p == 0:
        raise RequestError(400, "'top_p' must be in (0, 1]")
    n = _int_field("n", body.get("n"), 1, 1, config.max_n)
    seed = body.get("seed")
    if seed is not None:
        seed = _int_field("seed", seed, 0, 0, 2**63 - 1 - config.max_n)
    return GenerationRequest(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n, seed=seed,
    )


def _int_field(name: str, value: Any, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"'{name}' must be an integer, got {json.dumps(value)[:40]}")
    if not low <= value <= high:
        raise RequestError(400, f"'{name}' must be in [{low}, {high}], got {value}")
    return value


def _number_field(name: str, value: Any, default: float, low: float, high: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"'{name}' must be a number, got {json.dumps(value)[:40]}")
    if not low <= value <= high:  # also rejects NaN
        raise RequestError(400, f"'{name}' must be in [{low}, {high}], got {value}")
    return float(value)


def chat_response(model: str, completions: list[Completion], prompt_tokens: int) -> dict[str, Any]:
    """The OpenAI `chat.completion` object for one request's choices."""
    completion_tokens = sum(c.completion_tokens for c in completions)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
            for i, c in enumerate(completions)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error(status: int, message: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


# ---------------------------------------------------------------------------------------------- server


@dataclass
class _Pending:
    request: GenerationRequest
    future: asyncio.Future  # result: (completions, prompt_tokens) or a RequestError
    enqueued: float  # loop.time()


@dataclass
class _Metrics:
    requests: int = 0
    completed: int = 0
    errors: int = 0
    batches: int = 0
    batched_requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {"400": 0, "401": 0, "413": 0, "429": 0})
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _generate_batch(backend: CompletionBackend, requests: list[GenerationRequest]) -> list[tuple[list[Completion], int]]:
    """Worker-thread side of a batch: one generate call, shape checks, prompt token counts."""
    results = backend.generate(requests)
    if len(results) != len(requests):
        raise RuntimeError(f"backend returned {len(results)} results for {len(requests)} requests")
    for request, choices in zip(requests, results, strict=True):
        if len(choices) != request.n:
            raise RuntimeError(f"backend returned {len(choices)} choices where n={request.n}")
    return [(choices, backend.count_prompt_tokens(r.messages)) for r, choices in zip(requests, results, strict=True)]


class GrmServer:
    """The aiohttp application, the waiting queue and the batcher for one backend."""

    def __init__(self, backend: CompletionBackend, config: ServerConfig) -> None:
        self.backend = backend
        self.config = config
        self.model_name = config.served_model_name or backend.model_name
        self.metrics = _Metrics()
        self.url: str | None = None
        self._waiting: deque[_Pending] = deque()
        self._running: list[_Pending] = []
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fapo-grm-generate")
        self._wakeup: asyncio.Event | None = None
        self._batcher: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=config.max_body_bytes)
        self.app.add_routes([
            web.post("/v1/chat/completions", self._chat),
            web.get("/v1/models", self._models),
            web.get("/health", self._health),
            web.get("/metrics", self._metrics),
        ])

    async def start(self) -> str:
        """Bind, start the batcher, and return the base URL (`http://HOST:PORT/v1`)."""
        self._wakeup = asyncio.Event()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        port = self._runner.addresses[0][1]
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self.url = f"http://{host}:{port}/v1"
        self._batcher = asyncio.create_task(self._batch_loop(), name="fapo-grm-batcher")
        return self.url

    async def stop(self) -> None:
        """Answer everything pending with 503, stop the batcher and close the listener."""
        self._closing = True
        for pending in [*self._waiting, *self._running]:
            _resolve(pending, RequestError(503, "the server is shutting down"))
        self._waiting.clear()
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------ batching

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait = self.config.max_wait_ms / 1000
        while True:
            while not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._waiting[0].enqueued + max_wait
            while len(self._waiting) < self.config.max_batch and (remaining := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            count = min(self.config.max_batch, len(self._waiting))
            self._running = [self._waiting.popleft() for _ in range(count)]
            await self._run_batch(self._running)
            self._running = []

    async def _run_batch(self, batch: list[_Pending]) -> None:
        self.metrics.batches += 1
        self.metrics.batched_requests += len(batch)
        requests = [p.request for p in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, _generate_batch, self.backend, requests)
        except Exception as err:  # a backend failure answers 500 to each request of the batch, and is counted
            log.exception("backend failed on a batch of %d requests", len(batch))
            for pending in batch:
                _resolve(pending, RequestError(500, f"generation failed: {type(err).__name__}: {err}"))
            return
        for pending, result in zip(batch, results, strict=True):
            _resolve(pending, result)

    # ------------------------------------------------------------------------------------ handlers

    async def _chat(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        self.metrics.requests += 1
        try:
            self._check_api_key(request)
            body = await self._read_json(request)
            generation = parse_chat_request(body, self.config)
            pending = self._enqueue(generation)
        except RequestError as err:
            return self._reject(err)
        outcome = await pending.future
        if isinstance(outcome, RequestError):
            self.metrics.errors += 1
            return _error(outcome.status, outcome.message)
        completions, prompt_tokens = outcome
        self.metrics.completed += 1
        self.metrics.prompt_tokens += prompt_tokens
        self.metrics.generated_tokens += sum(c.completion_tokens for c in completions)
        self.metrics.latencies.append(time.perf_counter() - started)
        return web.json_response(chat_response(self.model_name, completions, prompt_tokens))

    def _enqueue(self, generation: GenerationRequest) -> _Pending:
        if self._closing:
            raise RequestError(503, "the server is shutting down")
        if len(self._waiting) >= self.config.max_queue:
            raise RequestError(429, f"the queue is full ({self.config.max_queue} requests waiting); retry later")
        loop = asyncio.get_running_loop()
        pending = _Pending(generation, loop.create_future(), loop.time())
        self._waiting.append(pending)
        self._wakeup.set()
        return pending

    def _check_api_key(self, request: web.Request) -> None:
        if self.config.api_key is None:
            return
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.config.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise RequestError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')")

    async def _read_json(self, request: web.Request) -> Any:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RequestError(413, f"the request body is larger than {limit} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as err:
            raise RequestError(413, f"the request body is larger than {limit} bytes") from err
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(400, f"the request body is not valid JSON: {err}") from err

    def _reject(self, err: RequestError) -> web.Response:
        key = str(err.status)
        if key in self.metrics.rejected:
            self.metrics.rejected[key] += 1
        else:
            self.metrics.errors += 1
        return _error(err.status, err.message)

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._check_api_key(request)
        except RequestError as err:
            return self._reject(err)
        model = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "fapo"}
        return web.json_response({"object": "list", "data": [model]})

    async def _health(self, request: web.Request) -> web.Response:
        if self._closing:
            return web.json_response({"status": "shutting down"}, status=503)
        return web.json_response({"status": "ok", "model": self.model_name})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """Counters since start; latency is request arrival → response, over the last 4096 requests."""
        m = self.metrics
        latencies = list(m.latencies)
        return {
            "model": self.model_name,
            "requests": m.requests,
            "completed": m.completed,
            "errors": m.errors,
            "rejected": dict(m.rejected),
            "batches": m.batches,
            "mean_batch_size": m.batched_requests / m.batches if m.batches else 0.0,
            "queue_depth": len(self._waiting),
            "in_flight": len(self._running),
            "prompt_tokens": m.prompt_tokens,
            "generated_tokens": m.generated_tokens,
            "latency_s": {"p50": _percentile(latencies, 0.50), "p95": _percentile(latencies, 0.95)},
        }


def _resolve(pending: _Pending, outcome: Any) -> None:
    if not pending.future.done():
        pending.future.set_result(outcome)


# ---------------------------------------------------------------------------------------------- running


async def serve(backend: CompletionBackend, config: ServerConfig) -> None:
    """Run until SIGINT/SIGTERM; print `LISTENING_PREFIX + url` once connections are accepted."""
    server = GrmServer(backend, config)
    url = await server.start()
    print(f"{LISTENING_PREFIX}{url}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()


def load_oracle(name: str) -> CompletionBackend:
    """Build the oracle backend registered as `name` in ORACLES, importing its module only now.

    Raises ValueError for an unknown name and ImportError, saying which module, when it is missing.
    """
    if name not in ORACLES:
        raise ValueError(f"unknown oracle {name!r}; known: {', '.join(sorted(ORACLES))}")
    module_name, attribute = ORACLES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            raise ImportError(f"oracle {name!r} needs module {module_name}, which is not installed") from err
        raise
    return getattr(module, attribute)()


