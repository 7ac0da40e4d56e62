"""The OpenAI chat-completions wire format of the local GenRM server: request validation and responses.

Owns what a request body may hold (`parse_chat_request` raises `RequestError(400, why)`) and the shape
of a `chat.completion` answer. Must not know about queues, batching or HTTP handling
(`fapo.serving.server` does) or generate anything.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Protocol

from fapo.serving.backend import Completion, GenerationRequest

_UNSUPPORTED_FIELDS = ("stream", "stop", "logprobs", "top_logprobs", "tools", "response_format")

MAX_MESSAGES = 1024
"""Most messages in one request: each is rendered by the chat template before its tokens are counted, so their
number (not only their characters) is bounded before that work. A GenRM request has one."""

GREEDY_BELOW = 1e-5
"""A temperature under this is greedy decoding (vLLM's rule too): logits divided by a temperature near
zero overflow to infinities, whose softmax is NaN and cannot be sampled."""


class ChatLimits(Protocol):
    """The limits `parse_chat_request` applies (a `fapo.serving.server.ServerConfig` has them)."""

    default_max_tokens: int
    max_tokens_limit: int | None
    max_n: int
    max_request_tokens: int


class RequestError(Exception):
    """A request the server answers with an HTTP error status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------- parsing


def parse_chat_request(body: Any, config: ChatLimits) -> GenerationRequest:
    """Validate an OpenAI chat-completions body; raise RequestError(400, why) when it is not usable."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    for name in _UNSUPPORTED_FIELDS:
        if body.get(name):
            raise RequestError(400, f"'{name}' is not supported by this server")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects")
    if len(messages) > MAX_MESSAGES:
        raise RequestError(400, f"'messages' holds {len(messages)} messages; this server takes at most {MAX_MESSAGES}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(400, f"messages[{i}] must be an object with 'role' and 'content'")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise RequestError(400, f"messages[{i}].{key} must be a string")
            if not _is_unicode(message[key]):
                raise RequestError(400, f"messages[{i}].{key} is not valid Unicode (it holds a lone surrogate)")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    limit = config.max_tokens_limit if config.max_tokens_limit is not None else 2**31 - 1  # None: the context's
    max_tokens = _int_field("max_tokens", max_tokens, config.default_max_tokens, 1, limit)
    temperature = _number_field("temperature", body.get("temperature"), 1.0, 0.0, 100.0)
    if temperature < GREEDY_BELOW:
        temperature = 0.0
    top_p = _number_field("top_p", body.get("top_p"), 1.0, 0.0, 1.0)
    if top_p == 0:
        raise RequestError(400, "'top_p' must be in (0, 1]")
    n = _int_field("n", body.get("n"), 1, 1, config.max_n)
    if max_tokens * n > config.max_request_tokens:
        raise RequestError(400, f"max_tokens × n = {max_tokens} × {n} = {max_tokens * n} exceeds this server's "
                                f"{config.max_request_tokens} tokens per request; ask for fewer tokens or choices")
    seed = body.get("seed")
    if seed is not None:
        seed = _int_field("seed", seed, 0, 0, 2**63 - 1 - config.max_n)
    return GenerationRequest(
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n, seed=seed,
        chat_template_kwargs=_template_kwargs(body.get("chat_template_kwargs")),
    )


def _template_kwargs(value: Any) -> dict[str, Any] | None:
    """`chat_template_kwargs`: an object of named arguments for the chat template (None when absent or empty)."""
    if value is None:
        return None
    if not isinstance(value, dict) or any(k in ("messages", "add_generation_prompt", "tokenize") for k in value):
        raise RequestError(400, "'chat_template_kwargs' must be an object of chat template arguments other than "
                                "messages, add_generation_prompt and tokenize")
    return value or None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
