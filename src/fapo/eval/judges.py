"""Who judges solutions during evaluation: GenRM endpoints, a local model directory, or an oracle.

`JudgeSpec` names the judge; `judge_items` runs it over `JudgeItem`s and returns one `Judgement`
each (order kept) plus the judge's metrics. Endpoints go through `fapo.grm.client`; a model
directory is served in-process by `fapo.serving.server` over loopback and judged through the same
client (so evaluation measures what training would get); an oracle is `fapo.grm.local.LocalJudge`. Every
judge is built by `fapo.grm.judge.make_judge` and run by `judge_and_collect_sync`, as training and the CLI do.
torch and transformers are imported only for a model directory. Knows nothing about benchmarks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from fapo.grm.judge import Judge, judge_and_collect_sync, make_judge
from fapo.grm.types import JudgeConfig, JudgeItem, Judgement
from fapo.oracles import ORACLES

JudgeKind = Literal["endpoint", "model_dir", "oracle"]


@dataclass(frozen=True)
class JudgeSpec:
    """A judge and how to talk to it."""

    kind: JudgeKind
    """"endpoint" (OpenAI-compatible servers), "model_dir" (serve a local model here) or "oracle"."""
    endpoints: tuple[str, ...] = ()
    """Base URLs (`http://HOST:PORT/v1`) when kind is "endpoint"."""
    model: str = "genrm"
    """Model name sent to the endpoints."""
    api_key: str | None = None
    """Bearer token for the endpoints."""
    model_dir: str | None = None
    """A transformers model directory when kind is "model_dir"."""
    oracle: str = "testbed"
    """Oracle name (`fapo.oracles.ORACLES`) when kind is "oracle"."""
    verdict_fn: Callable[[str, list[str]], int | None] | None = None
    """When kind is "oracle": a verdict function (problem, steps) -> earliest wrong step, -1, or None
    (no verdict), used instead of the named oracle — e.g. a programmatic checker for your own task."""
    device: str | None = None
    """Device for a model directory (default: CUDA when available, else CPU)."""
    client: dict[str, Any] = field(default_factory=dict)
    """Extra `JudgeConfig` fields (concurrency, timeout, retries, max_tokens, temperature, votes)."""

    def __post_init__(self) -> None:
        endpoints = (self.endpoints,) if isinstance(self.endpoints, str) else tuple(self.endpoints)
        object.__setattr__(self, "endpoints", endpoints)
        if self.kind == "endpoint" and not self.endpoints:
            raise ValueError("an endpoint judge needs at least one URL (--endpoint http://HOST:PORT/v1)")
        if self.kind == "model_dir" and not self.model_dir:
            raise ValueError("a model_dir judge needs model_dir (--model-dir DIR)")
        if self.kind not in ("endpoint", "model_dir", "oracle"):
            raise ValueError(f"judge kind must be endpoint, model_dir or oracle, got {self.kind!r}")
        if self.kind != "oracle":  # check URLs and client fields now, before a model is loaded
            judge_config(self, self.endpoints or ("http://127.0.0.1:1/v1",))
        elif self.verdict_fn is None and self.oracle not in ORACLES:
            raise ValueError(f"unknown oracle {self.oracle!r}; choose one of {sorted(ORACLES)}")

    @property
    def name(self) -> str:
        """A short description for reports."""
        if self.kind == "endpoint":
            return "endpoint " + " ".join(self.endpoints)
        if self.kind == "model_dir":
            return f"model {self.model_dir}"
        if self.verdict_fn is not None:
            return f"oracle {getattr(self.verdict_fn, '__name__', 'function')}"
        return f"oracle {self.oracle}"


def judge_config(spec: JudgeSpec, urls: Sequence[str]) -> JudgeConfig:
    """The client config for `urls`; raises ValueError (with the fix) on a bad client field."""
    own = {"endpoints", "model", "api_key"}
    unknown = sorted(set(spec.client) - {f.name for f in fields(JudgeConfig)} - own)
    if unknown:
        known = ", ".join(f.name for f in fields(JudgeConfig) if f.name not in own)
        raise ValueError(f"unknown client field(s) {', '.join(unknown)}; JudgeConfig has: {known}")
    return JudgeConfig(endpoints=tuple(urls), model=spec.model, api_key=spec.api_key, **spec.client)


@contextlib.contextmanager
def _served_model(spec: JudgeSpec) -> Iterator[str]:
    """Serve `spec.model_dir` in a thread of this process; yields its base URL."""
    from fapo.serving.hf_backend import TransformersBackend
    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import ServerConfig

    backend = TransformersBackend.load(spec.model_dir, device=spec.device)
    max_tokens = max(int(spec.client.get("max_tokens", JudgeConfig.max_tokens)), 1)
    votes = max(int(spec.client.get("votes", JudgeConfig.votes)), 1)
    budget = max(ServerConfig.max_request_tokens, max_tokens * votes)
    with serve_in_thread(backend, max_tokens_limit=max_tokens, default_max_tokens=max_tokens,
                         max_request_tokens=budget) as server:
        yield server.url


def build_judge(spec: JudgeSpec, urls: Sequence[str] = ()) -> Judge:
    """The judge `spec` names (`fapo.grm.judge.make_judge`); `urls` replace its endpoints (a served model dir)."""
    if spec.kind == "oracle":
        if spec.verdict_fn is not None:
            return make_judge(verdict_fn=spec.verdict_fn, name=spec.name)
        return make_judge(oracle=spec.oracle, name=spec.name)
    return make_judge(judge_config(spec, urls or spec.endpoints))


def judge_items(
    items: Sequence[JudgeItem], spec: JudgeSpec, progress: bool = False
) -> tuple[list[Judgement], dict[str, float]]:
    """Judge `items` with the judge `spec` names: (one Judgement per item, in order; judge metrics).

    Judge failures are Judgements with status "invalid" or "error", never exceptions. Raises
    ValueError for a bad spec (unknown oracle, malformed URL, bad client field).
    """
    if not items:
        return [], {}
    with contextlib.ExitStack() as stack:
        urls: Sequence[str] = ()
        if spec.kind == "model_dir":
            urls = (stack.enter_context(_served_model(spec)),)
        return judge_and_collect_sync(lambda: build_judge(spec, urls), items, progress)
