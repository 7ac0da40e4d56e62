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
