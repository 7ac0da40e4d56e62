"""The wire formats the GenRM client can speak: what one judging request and its answer look like.

`ChatCompletions` (the default) is the OpenAI-compatible `/chat/completions` route that vLLM,
SGLang and `fapo serve-grm` serve. `TokenGenerate` is SGLang's native `/generate` route with token
ids in and `output_ids` out, which verl's reward router forwards to its GenRM servers (the server
runs with `skip_tokenizer_init`, so the client applies the GenRM's chat template and decodes).

A protocol only renders requests and reads answers; routing, retries, the breaker and the cache
stay in `fapo.grm.client`. Never imports torch or transformers: `TokenGenerate` is handed a
tokenizer object (anything with `apply_chat_template` and `decode`). Both report a sample the server cut at
`max_tokens` (OpenAI's finish reason "length", SGLang's `meta_info.finish_reason.type`) as truncated.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from fapo.grm.types import JudgeConfig


class Sample(NamedTuple):
    """One sampled critique and whether the server cut it at `max_tokens` (finish reason "length")."""

    text: str
    truncated: bool = False


class RequestProtocol(Protocol):
    """How a judging request is sent and its answer read."""

    route: str
    """Appended to each endpoint's base URL, e.g. "/chat/completions"."""

    def sampling(self, config: JudgeConfig) -> str:
        """The sampling settings as a JSON object fragment (no braces), made once per client."""
        ...

    async def prompt(self, messages: list[dict[str, Any]], messages_json: str) -> str:
        """The prompt as a JSON object fragment; raises ValueError when it cannot be rendered."""
        ...

    def body(self, model_json: str, prompt: str, sampling: str) -> bytes:
        """The request body for one attempt."""
        ...

    def samples(self, raw: bytes) -> list[Sample] | None:
        """The answer's samples (text, cut at max_tokens?), or None when the body is not an answer."""
        ...


class ChatCompletions:
    """OpenAI-compatible chat completions: `{"model", "messages", "max_tokens", ..., "n"}` → choices."""

    route = "/chat/completions"

    def sampling(self, config: JudgeConfig) -> str:
        fields = {"max_tokens": config.max_tokens, "temperature": config.temperature, "top_p": config.top_p}
        return json.dumps(fields | {"n": config.votes})[1:-1]

    async def prompt(self, messages: list[dict[str, Any]], messages_json: str) -> str:
        return '"messages":' + messages_json

    def body(self, model_json: str, prompt: str, sampling: str) -> bytes:
        return f'{{"model":{model_json},{prompt},{sampling}}}'.encode()

    def samples(self, raw: bytes) -> list[Sample] | None:
        try:
            choices = json.loads(raw)["choices"]
            if not isinstance(choices, list) or not choices:
                return None
            return [Sample(str(c["message"].get("content") or ""), c.get("finish_reason") == "length")
                    for c in choices]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class TokenGenerate:
    """SGLang's native `/generate`: `{"input_ids", "sampling_params"}` → `{"output_ids": [...]}`.

    The prompt is the GenRM's chat template applied to the messages (with the generation prompt),
    tokenized in a worker thread; the answer's `output_ids` are decoded without special tokens (a
    `text` field is read when the server sends no ids). One sample per request: `votes` must be 1.
    """

    route = "/generate"

    def __init__(self, tokenizer: Any) -> None:
        for method in ("apply_chat_template", "decode"):
            if not callable(getattr(tokenizer, method, None)):
                raise TypeError(f"TokenGenerate needs a tokenizer with .{method}(), got {type(tokenizer).__name__}")
        self.tokenizer = tokenizer

    def sampling(self, config: JudgeConfig) -> str:
        if config.votes != 1:
            raise ValueError(f"the /generate protocol asks for one sample per request; set votes=1 (got {config.votes})")
        params = {"max_new_tokens": config.max_tokens, "temperature": config.temperature, "top_p": config.top_p}
        return '"sampling_params":' + json.dumps(params)

    async def prompt(self, messages: list[dict[str, Any]], messages_json: str) -> str:
        ids = await asyncio.to_thread(self._encode, messages)
        return '"input_ids":' + json.dumps(ids)

    def _encode(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            ids = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        except Exception as err:  # a tokenizer's own failure (no chat template, bad message): no request
            raise ValueError(f"cannot apply the GenRM's chat template: {type(err).__name__}: {err}") from err
        if isinstance(ids, Mapping):  # transformers >= 5 returns a BatchEncoding by default
            ids = ids["input_ids"]
        ids = list(ids)
        if not ids or not all(isinstance(i, int) for i in ids):
            raise ValueError("the GenRM's chat template gave no token ids")
        return ids

    def body(self, model_json: str, prompt: str, sampling: str) -> bytes:
        return f"{{{prompt},{sampling}}}".encode()

    def samples(self, raw: bytes) -> list[Sample] | None:
        try:
            answer = json.loads(raw)
        except ValueError:
            return None
        if isinstance(answer, list) and len(answer) == 1:  # a batch-of-one answer
            answer = answer[0]
        if not isinstance(answer, dict):
            return None
        reason = (answer.get("meta_info") or {}).get("finish_reason") if isinstance(answer.get("meta_info"), dict) else None
        truncated = (reason.get("type") if isinstance(reason, dict) else reason) == "length"
        ids = answer.get("output_ids")
        if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            try:
                return [Sample(str(self.tokenizer.decode(ids, skip_special_tokens=True)), truncated)]
            except Exception:  # ids outside the vocabulary: the server and tokenizer disagree
                return None
        text = answer.get("text")
        return [Sample(text, truncated)] if isinstance(text, str) else None
