"""The wire formats the GenRM client can speak: what one judging request and its answer look like.

`ChatCompletions` (the default) is the OpenAI-compatible `/chat/completions` route that vLLM,
SGLang and `fapo serve-grm` serve. `TokenGenerate` is SGLang's native `/generate` route with token
ids in and `output_ids` out, which verl's reward router forwards to its GenRM servers (the server
runs with `skip_tokenizer_init`, so the client applies the GenRM's chat template and decodes).

A protocol only renders requests and reads answers; routing, retries, the breaker and the cache
stay in `fapo.grm.client`. Reading an answer never raises, whatever the server sent (nesting deep
enough to exhaust Python's recursion, huge integers, wrong types): a body that is not an answer
is None, and a sample that was cut (`finish_reason` "length"), filtered ("content_filter") or whose
content is not a string is kept with the reason it cannot carry a verdict; one cut at `max_tokens` (OpenAI's
finish reason "length", SGLang's `meta_info.finish_reason.type`) is also marked truncated. Never imports
torch or transformers: `TokenGenerate` is handed a tokenizer object (anything with `apply_chat_template` and
`decode`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fapo.grm.types import JudgeConfig


@dataclass(frozen=True)
class Sample:
    """One sampled critique of an answer."""

    text: str
    unusable: str | None = None
    """Why this sample cannot carry a verdict (cut at max_tokens, filtered, not text); None when it can."""
    truncated: bool = False
    """Cut at max_tokens (finish_reason "length"): no verdict, and counted apart as a truncated critique."""


_USABLE_ENDINGS = frozenset({None, "stop", "eos", "end_turn", "stop_sequence"})
"""finish_reason values of a critique that ended by itself; anything else ("length", "content_filter",
"abort", ...) means the text is not the GenRM's whole critique, so a box in it is no verdict."""


def _ending(reason: Any) -> str | None:
    """Why a sample ended early, from a finish_reason (a string, or SGLang's {"type": ...}); None if it did not."""
    if isinstance(reason, Mapping):
        reason = reason.get("type")
    if (reason is None or isinstance(reason, str)) and reason in _USABLE_ENDINGS:
        return None
    shown = reason if isinstance(reason, str) else type(reason).__name__
    return f"the critique did not end by itself (finish_reason {shown[:40]!r})"


def _ended(text: str, reason: Any) -> Sample:
    """A sample of whole text that ended with `reason`: usable, or unusable (and truncated when cut at max_tokens)."""
    why = _ending(reason)
    cut = (reason.get("type") if isinstance(reason, Mapping) else reason) == "length"
    return Sample(text, why, truncated=cut)


def _loads(raw: bytes) -> Any:
    """The JSON of an answer body, or None when it is not JSON Python can hold (any reason)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError, MemoryError):  # RecursionError: nesting deeper than the stack
        return None


def decoding(config: JudgeConfig) -> dict[str, float]:
    """The sampling fields a request carries: temperature and top_p where set; None leaves them to the server."""
    fields = {"temperature": config.temperature, "top_p": config.top_p}
    return {name: value for name, value in fields.items() if value is not None}


class RequestProtocol(Protocol):
    """How a judging request is sent and its answer read."""

    route: str
    """Appended to each endpoint's base URL, e.g. "/chat/completions"."""

    def sampling(self, config: JudgeConfig) -> str:
        """The sampling settings as a JSON object fragment (no braces), made once per client (and again for a
        request whose `max_tokens` is fitted to an endpoint's context)."""
        ...

    async def prompt(self, messages: list[dict[str, Any]], messages_json: str) -> str:
        """The prompt as a JSON object fragment; raises ValueError when it cannot be rendered."""
        ...

    def body(self, model_json: str, prompt: str, sampling: str) -> bytes:
        """The request body for one attempt."""
        ...

    def samples(self, raw: bytes) -> list[Sample] | None:
        """The answer's samples, or None when the body is not an answer. Never raises."""
        ...


class ChatCompletions:
    """OpenAI-compatible chat completions: `{"model", "messages", "max_tokens", ..., "n"}` → choices."""

    route = "/chat/completions"

    def sampling(self, config: JudgeConfig) -> str:
        fields = {"max_tokens": config.max_tokens, **decoding(config), "n": config.votes}
        if config.chat_template_kwargs:
            fields["chat_template_kwargs"] = config.chat_template_kwargs
        return json.dumps(fields)[1:-1]

    async def prompt(self, messages: list[dict[str, Any]], messages_json: str) -> str:
        return '"messages":' + messages_json

    def body(self, model_json: str, prompt: str, sampling: str) -> bytes:
        return f'{{"model":{model_json},{prompt},{sampling}}}'.encode()

    def samples(self, raw: bytes) -> list[Sample] | None:
        answer = _loads(raw)
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or not choices:
            return None
        samples = []
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(message, dict):  # one bad choice abstains; the others still vote
                samples.append(Sample("", "the choice has no message object"))
            elif content is None:
                samples.append(Sample("", "the choice has no content"))
            elif not isinstance(content, str):
                samples.append(Sample("", f"the content is a {type(content).__name__}, not text"))
            else:
                samples.append(_ended(content, choice.get("finish_reason")))
        if all(s.unusable == "the choice has no message object" for s in samples):
            return None  # no choice at all: not an answer (retried elsewhere)
        return samples


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
        self.template_kwargs: dict[str, Any] = {}

    def sampling(self, config: JudgeConfig) -> str:
        if config.votes != 1:
            raise ValueError(f"the /generate protocol asks for one sample per request; set votes=1 (got {config.votes})")
        self.template_kwargs = dict(config.chat_template_kwargs or {})  # the client's: applied in `prompt`
        return '"sampling_params":' + json.dumps({"max_new_tokens": config.max_tokens, **decoding(config)})

    async def prompt(self, messages: list[dict[str, Any]], messages_json: str) -> str:
        ids = await asyncio.to_thread(self._encode, messages)
        return '"input_ids":' + json.dumps(ids)

    def _encode(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            ids = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                     **self.template_kwargs)
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
        answer = _loads(raw)
        if isinstance(answer, list) and len(answer) == 1:  # a batch-of-one answer
            answer = answer[0]
        if not isinstance(answer, dict):
            return None
        meta = answer.get("meta_info")
        reason = meta.get("finish_reason") if isinstance(meta, dict) else None
        ids = answer.get("output_ids")
        if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            try:
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
            except Exception:  # ids outside the vocabulary: the server and tokenizer disagree
                return None
            return [_ended(text, reason)] if isinstance(text, str) else None
        text = answer.get("text")
        return [_ended(text, reason)] if isinstance(text, str) else None
