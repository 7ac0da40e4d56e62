"""Who judges solutions during evaluation: GenRM endpoints, a local model directory, or an oracle.

A `JudgeSpec` is made once, at the edge (the CLI, a script, the demo), with the client's settings already a
`fapo.grm.types.JudgeConfig`, and handed down as it is; `judge_items` runs it over `JudgeItem`s and returns one
`Judgement` each (order kept) plus the judge's metrics. Endpoints go through `fapo.grm.client`; a model directory
is served in-process by `fapo.serving.server` over loopback and judged through the same client with the same
settings (so evaluation measures what training would get); an oracle is `fapo.grm.local.LocalJudge`. Every judge
is built by `fapo.grm.judge.make_judge` and run by `judge_and_collect_sync`, as training and the CLI do.
torch and transformers are imported only for a model directory. Knows nothing about benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fapo.grm.judge import judge_and_collect_sync, make_judge
from fapo.grm.local import VerdictFn
from fapo.grm.types import JudgeConfig, JudgeItem, Judgement
from fapo.oracles import ORACLES

SERVED_HERE = "http://127.0.0.1:1/v1"
"""The endpoint a model directory's client settings carry until the model is served; `judge_items` replaces it
with the served URL."""


@dataclass(frozen=True)
class JudgeSpec:
    """A judge and how to talk to it: exactly one of `config` (GenRM endpoints), `model_dir` (a model served
    here, talked to with `config`'s settings), `oracle` (a registered name) or `verdict_fn`."""

    config: JudgeConfig | None = None
    """The GenRM client: endpoints and every setting. With `model_dir`, the settings the served model is
    judged with (its endpoints are replaced by the served URL); default `served_config()`."""
    model_dir: str | None = None
    """A transformers model directory, served in this process."""
    device: str | None = None
    """Device for a model directory (default: CUDA when available, else CPU)."""
    oracle: str | None = None
    """Oracle name (`fapo.oracles.ORACLES`)."""
    verdict_fn: VerdictFn | None = None
    """A verdict function (problem, steps) -> earliest wrong step, -1, or None (no verdict) — e.g. a
    programmatic checker for your own task."""

    def __post_init__(self) -> None:
        if self.model_dir is not None and self.config is None:
            object.__setattr__(self, "config", served_config())
        sources = [self.config is not None and self.model_dir is None, self.model_dir is not None,
                   self.oracle is not None, self.verdict_fn is not None]
        if sum(sources) != 1:
            raise ValueError("a judge is exactly one of: config (GenRM endpoints), model_dir, oracle, verdict_fn")
        if self.config is not None and not isinstance(self.config, JudgeConfig):
            raise TypeError(f"config must be a fapo.grm.types.JudgeConfig, not {type(self.config).__name__}")
        if self.oracle is not None and self.oracle not in ORACLES:
            raise ValueError(f"unknown oracle {self.oracle!r}; choose one of {sorted(ORACLES)}")

    @property
    def kind(self) -> str:
        """"endpoint", "model_dir" or "oracle" (a verdict function is an oracle)."""
        return "model_dir" if self.model_dir is not None else "endpoint" if self.config is not None else "oracle"

    @property
    def name(self) -> str:
        """A short description for reports."""
        if self.kind == "endpoint":
            return "endpoint " + " ".join(e.url for e in self.config.endpoints)
        if self.kind == "model_dir":
            return f"model {self.model_dir}"
        if self.verdict_fn is not None:
            return f"oracle {getattr(self.verdict_fn, '__name__', 'function')}"
        return f"oracle {self.oracle}"


def served_config(**settings: object) -> JudgeConfig:
    """Client settings for a model served here (`SERVED_HERE` until it is): a local model on a CPU may take
    minutes per batch, so the timeout is an hour unless `settings` say otherwise."""
    return JudgeConfig(endpoints=(SERVED_HERE,), **{"timeout": 3600.0, **settings})


@contextlib.contextmanager
def _served_model(spec: JudgeSpec) -> Iterator[str]:
    """Serve `spec.model_dir` in a thread of this process, sized for `spec.config`'s requests; yields its URL."""
    from fapo.serving.hf_backend import TransformersBackend
    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import ServerConfig

    backend = TransformersBackend.load(spec.model_dir, device=spec.device)
    config = spec.config
    budget = max(ServerConfig.max_request_tokens, config.max_tokens * config.votes)
    with serve_in_thread(backend, default_max_tokens=config.max_tokens, max_request_tokens=budget) as server:
        yield server.url


def judge_items(
    items: Sequence[JudgeItem], spec: JudgeSpec, progress: bool = False
) -> tuple[list[Judgement], dict[str, float]]:
    """Judge `items` with the judge `spec` names: (one Judgement per item, in order; judge metrics).

    Judge failures are Judgements with status "invalid" or "error", never exceptions.
    """
    if not items:
        return [], {}
    if spec.model_dir is None:
        return judge_and_collect_sync(
            lambda: make_judge(spec.config, spec.oracle, spec.verdict_fn, name=spec.name), items, progress)
    with _served_model(spec) as url:
        config = dataclasses.replace(spec.config, endpoints=(url,))
        return judge_and_collect_sync(lambda: make_judge(config), items, progress)
