"""The GenRM judging vocabulary: endpoints, client settings, items to judge, typed judgements, voting.

Plain data and pure functions shared by the HTTP client (`fapo.grm.client`), the in-process judge
(`fapo.grm.local`) and evaluation. No I/O, no torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from yarl import URL

from fapo.bounds import check_number

Status = Literal["ok", "invalid", "error"]

RECIPE_MAX_TOKENS = 16384
"""The judge's critique budget in new tokens: the FAPO recipe's (verl-recipe `fapo/reward_fn_reasoning.py`,
`GRM_SAMPLING_PARAMS = {"max_new_tokens": 16384}`; the remote variant sends `max_tokens=16384`). Every verb and
path defaults to it through `JudgeConfig.max_tokens`."""


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible server (vLLM, SGLang, `fapo serve-grm`)."""

    url: str
    """Base URL up to the API version, e.g. "http://127.0.0.1:8000/v1"; requests go to {url}/chat/completions."""
    model: str = "genrm"
    """The model name the server expects in the request body (vLLM: the served model name)."""
    api_key: str | None = None
    """Sent as `Authorization: Bearer <api_key>` when set."""

    def __post_init__(self) -> None:
        url = str(self.url).strip().rstrip("/")
        if not url.startswith(("http://", "https://")) or len(URL(url).host or "") == 0:
            raise ValueError(f"endpoint url {self.url!r} must look like http://HOST:PORT/v1")
        if url.endswith("/chat/completions"):
            raise ValueError(f"endpoint url {self.url!r}: give the base URL (ending in /v1), not the route")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("endpoint model must be a non-empty string (the name the server serves)")
        if self.api_key and not (self.api_key.isascii() and self.api_key.isprintable()):
            raise ValueError("endpoint api_key must be one line of printable ASCII (no line breaks)")
        object.__setattr__(self, "url", url)


@dataclass(frozen=True)
class JudgeConfig:
    """How the client talks to the GenRM endpoints. Field names match `configs/*.yaml`."""

    endpoints: tuple[Endpoint, ...]
    """The servers to spread requests over. A plain URL string becomes `Endpoint(url, model, api_key)` with
    the two fields below; a mapping `{url, model, api_key}` becomes that Endpoint."""
    model: str = "genrm"
    """Model name sent to endpoints given as URL strings (vLLM: the served model name)."""
    api_key: str | None = None
    """Bearer token for endpoints given as URL strings, if they need one."""
    concurrency: int = 64
    """Most HTTP requests in flight at once, over all endpoints (each holds one open connection)."""
    timeout: float = 60.0
    """Seconds one HTTP attempt may take, connect to last byte; a timeout is retried elsewhere."""
    retries: int = 3
    """Extra attempts after the first on connection errors, timeouts, 5xx, 429 (so at most 1 + retries)."""
    max_tokens: int = RECIPE_MAX_TOKENS
    """Upper bound on the critique's length in tokens (the recipe's 16,384 by default); where an endpoint
    reports its context, a request is fitted to the room its prompt leaves (`fapo.grm.fit`). A critique cut
    here is "invalid" whatever box its unfinished text holds: no verdict, `Judgement.truncated`."""
    temperature: float | None = None
    """Sampling temperature; None sends none, so the server's default decoding samples (the recipe's: it sends
    none). 0 (greedy) makes a verdict reproducible and the cache exact; voting needs a temperature that samples."""
    top_p: float | None = None
    """Nucleus sampling mass; None sends none (the server's default, as in the recipe)."""
    chat_template_kwargs: dict[str, Any] | None = dataclasses.field(default=None, hash=False)
    """Extra arguments for the GenRM's chat template, sent with every chat request (vLLM, SGLang and
    `fapo serve-grm` apply them), e.g. {"enable_thinking": false} for a Qwen3 critic."""
    votes: int = 1
    """Samples per request (`n`); the verdict is their majority (see `majority_verdict`)."""
    tie_break: Literal["flawed", "clean"] = "flawed"
    """Which way a tied flawed/clean vote goes."""
    cache_size: int = 100_000
    """Judgements kept in the LRU cache, keyed by the exact prompt (also when sampling); 0 turns it off."""
    breaker_failures: int = 5
    """Consecutive failures that take an endpoint out of rotation (its circuit breaker opens)."""
    breaker_cooldown: float = 10.0
    """Seconds an open breaker waits before one probe request may try the endpoint again."""
    backoff_base: float = 0.2
    """Delay before the first retry in seconds; doubles per retry, with jitter (a random 50-100%)."""
    backoff_max: float = 5.0
    """Cap on one retry delay (also on a server's Retry-After)."""
    max_response_bytes: int | None = None
    """Largest HTTP response accepted; a larger one is dropped unread and the attempt is an error. None (the
    default): 64 KiB + votes × max_tokens × 64 bytes (every token as a JSON-escaped string, with room to spare),
    at most 16 MiB, so that the responses in flight hold what the critiques need, not concurrency × 16 MiB."""

    def __post_init__(self) -> None:
        endpoints = self.endpoints
        if isinstance(endpoints, (str, Endpoint)):
            endpoints = (endpoints,)
        endpoints = tuple(self._endpoint(e) for e in endpoints)
        if not endpoints or not all(isinstance(e, Endpoint) for e in endpoints):
            raise ValueError("endpoints: give at least one Endpoint(url=...) or URL string")
        object.__setattr__(self, "endpoints", endpoints)
        if self.max_response_bytes is None and isinstance(self.max_tokens, int) and isinstance(self.votes, int):
            needed = 64 * 1024 + self.votes * min(self.max_tokens, 2**20) * 64
            object.__setattr__(self, "max_response_bytes", min(16 * 1024 * 1024, needed))
        for name, low, high, integer in _BOUNDS:
            if getattr(self, name) is not None or name not in ("temperature", "top_p"):  # None: the server's
                check_number(name, getattr(self, name), low, high, integer=integer,
                             low_open=name in ("timeout", "top_p"))
        object.__setattr__(self, "chat_template_kwargs", _template_kwargs(self.chat_template_kwargs))
        _check(
            self.votes == 1 or self.temperature != 0,
            f"votes={self.votes} with temperature=0 samples the same critique {self.votes} times; "
            "set temperature > 0 (e.g. 0.7) or votes=1",
        )
        _check(
            self.tie_break in ("flawed", "clean"),
            f"tie_break must be 'flawed' or 'clean': {self.tie_break!r}",
        )
        _check(self.backoff_max >= self.backoff_base, "backoff_max must be >= backoff_base")

    def _endpoint(self, spec: object) -> object:
        if isinstance(spec, str):
            return Endpoint(spec, self.model, self.api_key)
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"url", "model", "api_key"})
            _check(not unknown and "url" in spec, f"an endpoint mapping has keys url, model, api_key: {spec!r}")
            return Endpoint(spec["url"], spec.get("model", self.model), spec.get("api_key", self.api_key))
        return spec

    def safe_dict(self) -> dict[str, object]:
        """The settings as plain data with every API key replaced by "***" (for run records and logs)."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["endpoints"] = [{"url": e.url, "model": e.model, "api_key": "***" if e.api_key else None}
                            for e in self.endpoints]
        out["api_key"] = "***" if self.api_key else None
        return out


_BOUNDS: tuple[tuple[str, float, float, bool], ...] = (
    ("concurrency", 1, 65536, True), ("timeout", 0, 86400, False), ("retries", 0, 100, True),
    ("max_tokens", 1, 2**20, True), ("temperature", 0, 100, False), ("top_p", 0, 1, False),
    ("votes", 1, 1024, True), ("cache_size", 0, 10**8, True), ("max_response_bytes", 1024, 2**30, True),
    ("breaker_failures", 1, 10**6, True), ("breaker_cooldown", 0, 3600, False), ("backoff_base", 0, 600, False),
    ("backoff_max", 0, 600, False),
)
"""(field, low, high, integer) of JudgeConfig's numbers: finite, and none so large it means "never"
(timeout and top_p exclude their low end)."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _template_kwargs(kwargs: object) -> dict[str, Any] | None:
    """A copy of `chat_template_kwargs` as a JSON object, or None; ValueError when it is not one."""
    if kwargs is None:
        return None
    _check(isinstance(kwargs, Mapping) and all(isinstance(k, str) for k in kwargs),
           f"chat_template_kwargs must be a mapping of names to values, e.g. {{enable_thinking: false}}: {kwargs!r}")
    try:
        json.dumps(dict(kwargs), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"chat_template_kwargs must hold JSON values only: {err}") from err
    return dict(kwargs)


@dataclass(frozen=True)
class Judgement:
    """The GenRM's verdict on one solution, or why there is none.

    status "ok": `verdict` is the earliest wrong step (0-based) or -1, `flawed` is `verdict >= 0`.
    status "invalid": the server answered but named no valid step index. status "error": no
    answer after the retries (or no healthy endpoint). A non-ok judgement never carries a verdict.
    """

    verdict: int | None
    flawed: bool | None
    status: Status
    critique: str | None
    """The GenRM's text (the winning sample's when voting; the raw answer when invalid)."""
    endpoint: str | None
    """URL of the endpoint that answered (or was tried last)."""
    attempts: int
    """HTTP attempts this call made (0 when served from the cache or a shared in-flight request)."""
    latency_s: float
    cached: bool = False
    error: str | None = None
    """What went wrong, for "invalid" and "error"."""
    truncated: bool = False
    """An "invalid" judgement whose critique was cut at max_tokens before a verdict (counted as no verdict)."""

    def __post_init__(self) -> None:
        if self.status == "ok":
            if not isinstance(self.verdict, int) or self.verdict < -1 or self.flawed != (self.verdict >= 0):
                raise ValueError(f"an ok judgement needs verdict >= -1 and flawed == (verdict >= 0): {self}")
        elif self.verdict is not None or self.flawed is not None:
            raise ValueError(f"a {self.status!r} judgement must not carry a verdict")


@dataclass(frozen=True)
class JudgeItem:
    """One solution to judge: the problem (verbatim), its steps, and the gold answer when known."""

    problem: str
    steps: tuple[str, ...]
    gold: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.problem, str):
            raise TypeError(f"problem must be a str, not {type(self.problem).__name__}")
        if isinstance(self.steps, str) or not all(isinstance(s, str) for s in self.steps):
            raise TypeError("steps must be a sequence of str (use fapo.steps.split_steps on a response)")
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.gold is not None:
            object.__setattr__(self, "gold", str(self.gold))


def majority_verdict(verdicts: Sequence[int | None], tie_break: str = "flawed") -> int | None:
    """Majority vote over sampled verdicts; None when no sample named a valid step.

    Invalid samples (None) abstain. Flawed (k >= 0) against clean (-1) is decided first, a tie
    going to `tie_break`; a flawed outcome then names the most-voted step, the earliest on a tie.
    """
    if len(verdicts) == 1:
        return verdicts[0]
    valid = [v for v in verdicts if v is not None]
    if not valid:
        return None
    flawed = [v for v in valid if v >= 0]
    clean = len(valid) - len(flawed)
    if len(flawed) > clean or (flawed and len(flawed) == clean and tie_break == "flawed"):
        counts = Counter(flawed)
        return min(counts, key=lambda k: (-counts[k], k))
    return -1
