"""A small OpenAI-compatible chat-completions server over a `CompletionBackend`, with dynamic batching.

Owns: HTTP (aiohttp.web) and the limits that keep one client from tying the server up — API key
(401), body size (413), malformed JSON or fields (400, `fapo.serving.chat_api`), a prompt longer than the
model's context (400 with the token counts), `max_tokens × n` per request (400), a full queue (429 with
Retry-After), too many connections (503), a request head or body that does not arrive in time
(connection closed, 408) — plus `/metrics` and `serve`, the CLI's foreground loop (stops within a
bounded time on SIGINT/SIGTERM). Batching lives in `fapo.serving.batcher`, the wire format in
`fapo.serving.chat_api`, the other ways to start a server (`serve_in_thread`, `launch_subprocess`) in
`fapo.serving.launch`, and the registry of oracles `--oracle NAME` serves in `fapo.oracles`.

Must not: generate text (backends do: `fapo.serving.hf_backend`, the testbed's oracle), import torch or the
testbed unless asked, or be the production path. It is for CPUs, tests and the demo; production GenRMs
run on vLLM or SGLang behind `fapo.grm.client`, which speaks to both the same way.

The `model` field of a request is not checked: one server serves one model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import logging
import math
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fapo.metrics import percentile
from fapo.oracles import oracle_part
from fapo.serving.backend import Completion, CompletionBackend, GenerationRequest, count_tokens_at_least
from fapo.serving.batcher import CLIENT_GONE, Lane, LaneCounters, Pending
from fapo.serving.chat_api import RequestError, chat_response, parse_chat_request  # noqa: F401 (public here too)
from fapo.serving.server_config import ServerConfig  # noqa: F401 (public here too)

log = logging.getLogger(__name__)

LISTENING_PREFIX = "fapo serve-grm listening on "
"""Start of the line `serve` prints once it accepts connections; the URL follows."""

RETRY_AFTER_S = 1
"""Seconds a 429 or 503 answer tells the client to wait (`Retry-After`)."""

STOP_TIMEOUT_S = 5.0
"""After SIGINT/SIGTERM, how long `serve` waits for an interrupted generation to return."""


def _error(status: int, message: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    response = web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)
    if status in (429, 503):
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


@dataclass
class _Metrics:
    requests: int = 0
    completed: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    rejected: dict[str, int] = field(
        default_factory=lambda: {"400": 0, "401": 0, "408": 0, "413": 0, "429": 0, "503": 0})
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))


def _percentile(values: list[float], q: float) -> float | None:
    """`fapo.metrics.percentile`, None (JSON null) when there are no values."""
    value = percentile(values, q)
    return None if math.isnan(value) else value


class _Refusal(asyncio.Protocol):
    """A connection over `max_connections`: answered 503 and closed at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = json.dumps({"error": {"message": f"too many connections (limit {self.limit}); retry later",
                                     "type": "server_error", "code": 503}}).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER_S}\r\nConnection: close\r\n\r\n")
        transport.write(head.encode() + body)  # type: ignore[attr-defined]  # a stream transport
        transport.close()


class GrmServer:
    """The aiohttp application, the lanes (short and long requests) and the limits for one backend."""

    def __init__(self, backend: CompletionBackend, config: ServerConfig) -> None:
        self.backend = backend
        self.config = config
        self.model_name = config.served_model_name or backend.model_name
        self.context_tokens: int | None = getattr(backend, "context_tokens", None)
        self.metrics = _Metrics()
        self.counters = LaneCounters()
        self.url: str | None = None
        self._closing = False
        self._lanes: dict[str, Lane] = {}
        self._counting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fapo-grm-tokens")
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self.app = web.Application(client_max_size=config.max_body_bytes)
        self.app.add_routes([
            web.post("/v1/chat/completions", self._chat),
            web.get("/v1/models", self._models),
            web.post("/tokenize", self._tokenize),
            web.get("/health", self._health),
            web.get("/metrics", self._metrics),
        ])

    async def start(self) -> str:
        """Bind, start the lanes, and return the base URL (`http://HOST:PORT/v1`)."""
        cfg = self.config
        # aiohttp's keep-alive timer also runs from a connection's start: it closes a connection that has
        # not delivered a complete request head within header_timeout_s (new, or idle after a response).
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0,
                                     keepalive_timeout=cfg.header_timeout_s)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(self._accept, cfg.host, cfg.port, reuse_address=True)
        except OSError:
            await self._runner.cleanup()
            raise
        port = self._listener.sockets[0].getsockname()[1]
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.url = f"http://{host}:{port}/v1"
        for name in ("short", "long"):
            self._lanes[name] = Lane(name, self.backend, cfg.max_batch, cfg.max_wait_ms, self.counters)
            self._lanes[name].start()
        return self.url

    def _accept(self) -> asyncio.Protocol:
        assert self._runner is not None and self._runner.server is not None
        if len(self._runner.server.connections) >= self.config.max_connections:
            self.metrics.rejected["503"] += 1
            return _Refusal(self.config.max_connections)
        return self._runner.server()

    async def stop(self) -> None:
        """Answer everything pending with 503, interrupt generation, close the listener and connections."""
        self._closing = True
        interrupt = getattr(self.backend, "interrupt", None)
        if interrupt is not None:
            interrupt()
        for lane in self._lanes.values():
            await lane.stop(RequestError(503, "the server is shutting down"))
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._counting.shutdown(wait=False, cancel_futures=True)

    async def wait_generation_ended(self, timeout: float) -> bool:
        """After `stop`: wait up to `timeout` s for every lane's generation thread to finish its batch,
        interrupting again meanwhile (a batch may have started after the first interrupt); whether it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interrupt = getattr(self.backend, "interrupt", None)
        while any(lane.submitted for lane in self._lanes.values()):
            if loop.time() >= deadline:
                return False
            if interrupt is not None:
                interrupt()
            await asyncio.sleep(0.05)
        return True

    # ------------------------------------------------------------------------------------ handlers

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        self.metrics.requests += 1
        try:
            return await self._answer_chat(request, started)
        except RequestError as err:
            response = self._reject(err)
            if err.status == 408:  # the rest of the body may never come: answer, then close the connection
                await response.prepare(request)
                await response.write_eof()
                if request.transport is not None:
                    request.transport.close()
            return response
        except Exception as err:  # a bug, not a bad request: a JSON 500, logged and counted
            log.exception("unexpected error while answering a chat request")
            self.metrics.errors += 1
            return _error(500, f"internal error: {type(err).__name__}")

    async def _answer_chat(self, request: web.Request, started: float) -> web.Response:
        generation = await self._read_request(request)
        generation, prompt_tokens = await self._fit_context(generation)
        pending = self._enqueue(generation, request)
        outcome = await pending.future
        if isinstance(outcome, RequestError):
            if outcome.status != CLIENT_GONE:
                self.metrics.errors += 1
            return _error(outcome.status, outcome.message)
        completions: list[Completion] = outcome
        self.metrics.completed += 1
        self.metrics.prompt_tokens += prompt_tokens
        self.metrics.generated_tokens += sum(c.completion_tokens for c in completions)
        self.metrics.latencies.append(time.perf_counter() - started)
        return web.json_response(chat_response(self.model_name, completions, prompt_tokens))

    async def _read_request(self, request: web.Request) -> GenerationRequest:
        """Everything the client sent, checked: key, body, JSON, fields. Whatever fails here is the request's
        fault (a header or body that cannot be decoded, say), so it is a 4xx, never a 500."""
        try:
            self._check_api_key(request)
            if self._closing:
                raise RequestError(503, "the server is shutting down")
            return parse_chat_request(await self._read_json(request), self.config)
        except (RequestError, asyncio.CancelledError):
            raise
        except Exception as err:  # e.g. a Content-Encoding the body does not follow
            raise RequestError(400, f"the request cannot be read: {type(err).__name__}: {err}"[:300]) from err

    async def _fit_context(self, generation: GenerationRequest) -> tuple[GenerationRequest, int]:
        """Count the prompt's tokens (in a thread); 400 when it does not fit the model's context, and
        max_tokens cut to the room left when prompt plus max_tokens would not. A prompt of over 2 × context
        characters is first counted in pieces, stopping (400) once they hold 2 × context tokens: the work
        one request makes the counting thread do is bounded by the context, not by the body size."""
        loop = asyncio.get_running_loop()
        context = self.context_tokens
        chars = sum(len(m["content"]) for m in generation.messages)
        if context is not None and chars > 2 * context:
            bound = 2 * context
            seen = await loop.run_in_executor(self._counting, count_tokens_at_least, self.backend,
                                              generation.messages, bound)
            if seen >= bound:
                raise RequestError(400, f"the prompt has more than {bound} tokens ({chars} characters); this "
                                        f"model's context is {context} tokens")
        prompt_tokens = await self.count_tokens(generation.messages, generation.chat_template_kwargs)
        if context is None:
            return generation, prompt_tokens
        if prompt_tokens >= context:
            raise RequestError(400, f"the prompt has {prompt_tokens} tokens; this model's context is {context} "
                                    f"tokens (prompt plus at least one generated token)")
        room = context - prompt_tokens
        if generation.max_tokens > room:
            generation = dataclasses.replace(generation, max_tokens=room)
        return generation, prompt_tokens

    async def count_tokens(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any] | None) -> int:
        """The prompt's tokens as the backend renders it, counted in a thread."""
        count = self.backend.count_prompt_tokens
        if template_kwargs:
            count = functools.partial(count, chat_template_kwargs=template_kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._counting, count, messages)

    def _enqueue(self, generation: GenerationRequest, request: web.Request) -> Pending:
        if self._closing:
            raise RequestError(503, "the server is shutting down")
        waiting = sum(len(lane.waiting) for lane in self._lanes.values())
        if waiting >= self.config.max_queue:
            raise RequestError(429, f"the queue is full ({self.config.max_queue} requests waiting); retry later")
        long = generation.max_tokens * generation.n > self.config.long_request_tokens
        loop = asyncio.get_running_loop()
        pending = Pending(generation, loop.create_future(), loop.time(), lambda: _client_gone(request))
        self._lanes["long" if long else "short"].add(pending)
        return pending

    def _check_api_key(self, request: web.Request) -> None:
        if self.config.api_key is None:
            return
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")  # any bytes sent
        expected = f"Bearer {self.config.api_key}"
        if not hmac.compare_digest(given, expected.encode()):
            raise RequestError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')")

    async def _read_json(self, request: web.Request) -> Any:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RequestError(413, f"the request body is larger than {limit} bytes")
        try:
            raw = await asyncio.wait_for(request.read(), self.config.body_timeout_s)
        except web.HTTPRequestEntityTooLarge as err:
            raise RequestError(413, f"the request body is larger than {limit} bytes") from err
        except asyncio.TimeoutError as err:
            raise RequestError(408, f"the request body did not arrive within {self.config.body_timeout_s:g} s") from err
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(400, f"the request body is not valid JSON: {err}") from err
        except RecursionError as err:
            raise RequestError(400, "the request body is not usable JSON: nested too deeply") from err
        except ValueError as err:  # e.g. an integer with more digits than Python converts
            raise RequestError(400, f"the request body is not usable JSON: {err}") from err

    def _reject(self, err: RequestError) -> web.Response:
        key = str(err.status)
        if err.status < 500 or key in self.metrics.rejected:  # every client error is counted as one
            self.metrics.rejected[key] = self.metrics.rejected.get(key, 0) + 1
        else:
            self.metrics.errors += 1
        return _error(err.status, err.message)

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._check_api_key(request)
        except RequestError as err:
            return self._reject(err)
        model: dict[str, Any] = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "fapo"}
        if self.config.max_tokens_limit is not None:  # --max-tokens-limit: a bound below the context's
            model["max_tokens_limit"] = self.config.max_tokens_limit
        if self.context_tokens is not None:
            model["max_model_len"] = self.context_tokens  # as vLLM and SGLang report their context
        return web.json_response({"object": "list", "data": [model]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        """vLLM's `/tokenize` for chat messages: {"count", "max_model_len"} (no token ids), for clients that fit
        a request's max_tokens to the room its prompt leaves."""
        try:
            self._check_api_key(request)
            body = await self._read_json(request)
            generation = parse_chat_request({k: body.get(k) for k in ("messages", "chat_template_kwargs")}
                                            if isinstance(body, dict) else body, self.config)
            count = await self.count_tokens(generation.messages, generation.chat_template_kwargs)
        except RequestError as err:
            return self._reject(err)
        return web.json_response({"count": count, "max_model_len": self.context_tokens})

    async def _health(self, request: web.Request) -> web.Response:
        if self._closing:
            return web.json_response({"status": "shutting down"}, status=503)
        return web.json_response({"status": "ok", "model": self.model_name})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """Counters since start; latency is request arrival → response, over the last 4096 requests."""
        m, c = self.metrics, self.counters
        latencies = list(m.latencies)
        lanes = self._lanes.values()
        return {
            "model": self.model_name,
            "requests": m.requests,
            "completed": m.completed,
            "errors": m.errors,
            "rejected": dict(m.rejected),
            "dropped_disconnected": c.dropped_disconnected,
            "batches": c.batches,
            "mean_batch_size": c.batched_requests / c.batches if c.batches else 0.0,
            "queue_depth": sum(len(lane.waiting) for lane in lanes),
            "in_flight": sum(len(lane.running) for lane in lanes),
            "connections": len(self._runner.server.connections) if self._runner and self._runner.server else 0,
            "prompt_tokens": m.prompt_tokens,
            "generated_tokens": m.generated_tokens,
            "latency_s": {"p50": _percentile(latencies, 0.50), "p95": _percentile(latencies, 0.95)},
        }


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


# ---------------------------------------------------------------------------------------------- running


async def serve(backend: CompletionBackend, config: ServerConfig, stop_timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Run until SIGINT/SIGTERM; print `LISTENING_PREFIX + url` once connections are accepted.

    On a signal: pending requests are answered 503, generation is interrupted (backends with an
    `interrupt()` stop at the next token), and the return value says whether generation ended within
    `stop_timeout_s` — when False, the caller should exit without waiting for the generation thread.
    """
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
    return await server.wait_generation_ended(stop_timeout_s)


def load_oracle(name: str) -> CompletionBackend:
    """The `OracleBackend` of the oracle registered as `name` (`fapo.oracles`), importing its module only now.

    Raises ValueError for an unknown name and ImportError, saying which module, when it is missing.
    """
    return oracle_part(name, "OracleBackend")()
