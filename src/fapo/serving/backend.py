"""What the local GenRM server asks of whatever produces completions.

The server (`fapo.serving.server`) owns HTTP, batching and limits; a backend owns text generation.
Two backends exist: a transformers causal LM (`fapo.serving.hf_backend`) and the testbed's oracle
(`fapo.testbed.oracle`), which computes the verdict with a program. Neither knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class GenerationRequest:
    """One chat-completion request as the server has validated it."""

    messages: list[dict[str, str]]
    """Chat messages, each {"role", "content"}."""
    max_tokens: int = 512
    """Upper bound on new tokens per choice."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    n: int = 1
    """Number of choices to return."""
    seed: int | None = None
    """Optional sampling seed."""
    chat_template_kwargs: dict[str, Any] | None = None
    """Extra arguments for the chat template (e.g. {"enable_thinking": False}); backends without one ignore them."""


@dataclass(frozen=True)
class Completion:
    """One generated choice."""

    text: str
    finish_reason: str  # "stop" | "length"
    completion_tokens: int


class CompletionBackend(Protocol):
    """Produces completions for a batch of requests. Called from a worker thread, one batch at a time."""

    model_name: str

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """Return, for each request, its `n` completions (same order as `requests`)."""
        ...

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Prompt length in tokens, for the response's `usage` field and the context check. A backend whose
        chat template takes arguments also accepts `chat_template_kwargs=` (the server passes it when a request
        has some)."""
        ...


PIECE_CHARS = 16_384
"""Characters per piece when an oversized prompt is counted piece by piece (`count_tokens_at_least`)."""


def count_tokens_at_least(backend: CompletionBackend, messages: list[dict[str, str]], bound: int) -> int:
    """The messages' tokens counted in pieces of about PIECE_CHARS characters (cut after whitespace),
    stopping as soon as `bound` is reached: work bounded by `bound`, not by the prompt's size. The chat
    template's own tokens are left out of each piece's count."""
    empty = backend.count_prompt_tokens([{"role": "user", "content": ""}])
    total = 0
    for message in messages:
        for piece in _pieces(message["content"], PIECE_CHARS):
            total += max(0, backend.count_prompt_tokens([{"role": "user", "content": piece}]) - empty)
            if total >= bound:
                return total
    return total


def _pieces(text: str, size: int) -> list[str]:
    """`text` in consecutive pieces of about `size` characters, each cut after whitespace where there is any."""
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = max(text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end))
            end = space + 1 if space >= 0 else end
        pieces.append(text[start:end])
        start = end
    return pieces
