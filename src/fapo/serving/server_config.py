"""`ServerConfig`: the settings and limits of one `fapo serve-grm` server (`fapo.serving.server`), one docstring
per field, validated when made. Plain data; imports nothing of the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from fapo.bounds import check_number
from fapo.serving import DEFAULT_MAX_BATCH


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens, batches and limits."""

    host: str = "127.0.0.1"
    """Interface to bind; the default keeps the server private to this machine."""
    port: int = 8000
    """TCP port; 0 picks a free one (the bound URL is printed and returned)."""
    max_batch: int = DEFAULT_MAX_BATCH
    """Most requests in one `backend.generate` call."""
    max_wait_ms: float = 10.0
    """Longest the oldest waiting request waits for others to join its batch."""
    max_queue: int = 256
    """Most requests waiting for a batch (those being generated not counted); one more answers 429."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body in bytes; a larger one answers 413."""
    api_key: str | None = None
    """When set, every /v1 route needs `Authorization: Bearer <api_key>`, else 401."""
    served_model_name: str | None = None
    """Model name in responses and /v1/models; None uses the backend's `model_name`."""
    default_max_tokens: int = 512
    """max_tokens of a request that gives neither `max_tokens` nor `max_completion_tokens`."""
    max_tokens_limit: int | None = None
    """Largest max_tokens a request may ask for, more answers 400; None (the default) bounds it by the model's
    context only: a request's max_tokens is cut to the room its prompt leaves."""
    max_n: int = 16
    """Most choices (`n`) per request; more answers 400."""
    max_request_tokens: int = 32768
    """Largest `max_tokens × n` of one request; more answers 400."""
    long_request_tokens: int = 4096
    """Requests whose `max_tokens × n` exceeds this are batched and generated in a lane of their own,
    so that short requests never wait behind them."""
    max_connections: int = 512
    """Most open client connections; one more is answered 503 and closed."""
    header_timeout_s: float = 10.0
    """Seconds a connection may stay without a complete request head (new or idle keep-alive) before
    it is closed."""
    body_timeout_s: float = 30.0
    """Seconds to receive a request's whole body once its head has arrived; slower answers 408."""

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_queue", "max_body_bytes", "default_max_tokens", "max_tokens_limit", "max_n",
                    "max_request_tokens", "long_request_tokens", "max_connections")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s"):
            check_number(name, getattr(self, name), 0, 3600, low_open=True)
        check_number("max_wait_ms", self.max_wait_ms, 0, 60_000)  # 0: never wait for a fuller batch
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 picks a free port), got {self.port}")
        if self.max_tokens_limit is not None and self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit "
                             f"({self.max_tokens_limit}); lower it or raise the limit")
        if self.api_key is not None and not (self.api_key.strip() and self.api_key.isascii()
                                             and self.api_key.isprintable()):
            raise ValueError("api_key must be one line of printable ASCII, not empty (is the variable that should "
                             "hold it unset?); leave it out to disable authentication")
