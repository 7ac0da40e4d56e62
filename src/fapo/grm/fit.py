"""Fit a judging request to the endpoint's context, so that a server is never sent a request it must refuse.

A chat request whose prompt plus `max_tokens` exceeds the model's context is refused by vLLM (HTTP 400: "This
model's maximum context length is ..."), and a refused judgement is an error: no penalty, a FAPO run that
quietly pays flawed positives. `ContextFit` asks each endpoint once for its context (`max_model_len` of the
served model on `GET {url}/models`, as vLLM, SGLang and `fapo serve-grm` report it) and gives each request the
`max_tokens` that fits (docs/design.md §4.5):

- the context is unknown (the endpoint does not say): the configured budget, as is;
- an upper bound of the prompt's tokens (its UTF-8 bytes plus `TEMPLATE_TOKENS` for the chat template) plus the
  budget fits: the budget;
- otherwise the endpoint counts the prompt (`POST {root}/tokenize`, vLLM's route, also `fapo serve-grm`'s) and the
  request gets min(budget, context − prompt); an endpoint that cannot count gets the room the upper bound
  leaves; a prompt that leaves no room at all is an error for that endpoint (the client tries another).

Plain data and HTTP only: no torch, no tokenizer. The client (`fapo.grm.client`) owns routing and retries.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from fapo.grm.http import ConnectionPool
from fapo.grm.types import Endpoint, JudgeConfig

TEMPLATE_TOKENS = 256
"""Tokens a chat template may add around the messages (role markers, a default system prompt)."""

ASK_AGAIN_S = 30.0
"""An endpoint that did not answer `/models` is asked again after this many seconds."""


@dataclass(frozen=True)
class Fitted:
    """What a request may ask of one endpoint: `max_tokens`, or why it cannot be sent there (`error`)."""

    max_tokens: int
    error: str | None = None


class ContextFit:
    """Per endpoint: its reported context and whether it counts prompts; the `max_tokens` of each request."""

    def __init__(self, config: JudgeConfig, headers: list[dict[str, str]]) -> None:
        self.config = config
        self._headers = headers
        self._context: dict[int, asyncio.Future[int | None]] = {}
        self._asked_at: dict[int, float] = {}
        self._counters: dict[int, ConnectionPool | None] = {}
        self.fitted = 0
        """Requests sent with less than the configured max_tokens."""

    async def fit(self, index: int, messages_json: str) -> Fitted:
        """The `max_tokens` for this prompt (a chat request's messages, as JSON) on endpoint `index`."""
        budget = self.config.max_tokens
        context = await self.context(index)
        if context is None:
            return Fitted(budget)
        bound = len(messages_json.encode()) + TEMPLATE_TOKENS
        if bound + budget <= context:
            return Fitted(budget)
        prompt = await self._count(index, messages_json)
        room = context - (prompt if prompt is not None else bound)
        if room < 1:
            what = f"{prompt} tokens" if prompt is not None else f"up to {bound} tokens"
            return Fitted(0, f"the prompt has {what}; the endpoint's context is {context} tokens")
        if room < budget:
            self.fitted += 1
        return Fitted(min(budget, room))

    async def context(self, index: int) -> int | None:
        """The endpoint's `max_model_len` (asked once, shared by concurrent callers), or None when it does not say."""
        future = self._context.get(index)
        if future is None or (future.done() and future.result() is None
                              and time.monotonic() - self._asked_at[index] > ASK_AGAIN_S):
            self._asked_at[index] = time.monotonic()
            future = self._context[index] = asyncio.ensure_future(asyncio.to_thread(self._ask_models, index))
        return await asyncio.shield(future)

    def _ask_models(self, index: int) -> int | None:
        endpoint = self.config.endpoints[index]
        request = urllib.request.Request(endpoint.url + "/models", headers=self._headers[index])
        try:
            with urllib.request.urlopen(request, timeout=min(self.config.timeout, 10.0)) as response:
                listing = json.loads(response.read(1 << 20))
        except (OSError, ValueError, http.client.HTTPException):  # no answer, or not JSON: the context is unknown
            return None
        return reported_context(listing, endpoint)

    async def _count(self, index: int, messages_json: str) -> int | None:
        """The prompt's tokens as the endpoint counts them (`/tokenize`), or None when it cannot."""
        if index not in self._counters:
            url = self.config.endpoints[index].url.rsplit("/v1", 1)[0] + "/tokenize"
            self._counters[index] = ConnectionPool(url, self._headers[index], idle_timeout=4.0)
        pool = self._counters[index]
        if pool is None:
            return None
        body = {"model": self.config.endpoints[index].model, "add_generation_prompt": True}
        if self.config.chat_template_kwargs:
            body["chat_template_kwargs"] = self.config.chat_template_kwargs
        raw = json.dumps(body)[:-1] + ',"messages":' + messages_json + "}"
        try:
            response = await pool.post(raw.encode(), min(self.config.timeout, 30.0))
        except (OSError, asyncio.TimeoutError):
            return None  # this time only: the endpoint may be busy
        if response.status in (404, 405, 501):  # no such route: do not ask this endpoint again
            pool.close()
            self._counters[index] = None
            return None
        try:
            count = json.loads(response.body)["count"] if response.status == 200 else None
        except (ValueError, KeyError, TypeError):
            count = None
        return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None

    def close(self) -> None:
        for pool in self._counters.values():
            if pool is not None:
                pool.close()
        self._counters.clear()


def reported_context(listing: Any, endpoint: Endpoint) -> int | None:
    """`max_model_len` of the endpoint's model in a `/models` listing (the only model's when none matches)."""
    models = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(models, list):
        return None
    models = [m for m in models if isinstance(m, dict)]
    named = [m for m in models if m.get("id") == endpoint.model] or (models if len(models) == 1 else [])
    length = named[0].get("max_model_len") if named else None
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None
