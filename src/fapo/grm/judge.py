"""The one place a judge is built from settings, the `Judge` protocol, and the one judge-and-collect helper.

A judge is either the HTTP client over GenRM endpoints (`JudgeConfig` → `fapo.grm.client.GenRMClient`) or an
in-process verdict function (a named oracle from `fapo.oracles`, or your own function →
`fapo.grm.local.LocalJudge`). Training, evaluation, the CLI and the verl adapter all build theirs with
`make_judge` and run a batch with `judge_and_collect` (async) or `judge_and_collect_sync` (scripts).
No torch, no model serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from fapo.grm.local import LocalJudge, VerdictFn
from fapo.grm.protocols import RequestProtocol
from fapo.grm.types import JudgeConfig, JudgeItem, Judgement
from fapo.oracles import oracle_part


@runtime_checkable
class Judge(Protocol):
    """What the trainer, evaluation and the CLI need of a judge. Failures are `Judgement`s, never exceptions."""

    async def judge_many(self, items: Sequence[JudgeItem], progress: bool = False) -> list[Judgement]:
        """One `Judgement` per item, in order."""
        ...

    def metrics(self) -> dict[str, float]:
        """Cumulative counters under `grm/` keys (see `GenRMClient.metrics`)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the judge may not be used afterwards."""
        ...


def resolve_oracle(name: str) -> VerdictFn:
    """The verdict function of the oracle registered as `name` (ValueError naming the choices otherwise)."""
    return oracle_part(name, "oracle_verdict")


def make_judge(config: JudgeConfig | None = None, oracle: str | None = None,
               verdict_fn: VerdictFn | None = None, name: str | None = None,
               protocol: RequestProtocol | None = None) -> Judge:
    """A judge from exactly one of: `config` (GenRM endpoints), `oracle` (a registered name) or `verdict_fn`.

    `protocol` is the client's wire format (`fapo.grm.protocols`; default OpenAI chat completions).

    Raises ValueError when none or several are given, or for an unknown oracle. The HTTP client opens its
    connections lazily, so the judge may be made outside the event loop that will use it only if that loop
    is the one it is first used in (one client lives in one loop).
    """
    given = [x for x in (config, oracle, verdict_fn) if x is not None]
    if len(given) != 1:
        raise ValueError("make_judge needs exactly one of: config (GenRM endpoints), oracle (a name), verdict_fn")
    if config is not None:
        from fapo.grm.client import GenRMClient

        return GenRMClient(config, protocol)
    if oracle is not None:
        return LocalJudge(resolve_oracle(oracle), name=name or f"oracle:{oracle}")
    return LocalJudge(verdict_fn, name=name or f"oracle:{getattr(verdict_fn, '__name__', 'function')}")


async def judge_and_collect(judge: Judge, items: Sequence[JudgeItem],
                            progress: bool = False) -> tuple[list[Judgement], dict[str, float]]:
    """(one Judgement per item, in order; the judge's metrics after the batch)."""
    judgements = await judge.judge_many(list(items), progress=progress) if items else []
    return judgements, judge.metrics()


def judge_and_collect_sync(make: Callable[[], Judge], items: Sequence[JudgeItem],
                           progress: bool = False) -> tuple[list[Judgement], dict[str, float]]:
    """`judge_and_collect` from synchronous code: the judge is made, used and closed in a fresh event loop."""
    if asyncio._get_running_loop() is not None:  # public low-level API despite the underscore
        raise RuntimeError("cannot judge synchronously inside an event loop; await judge_and_collect instead")

    async def run() -> tuple[list[Judgement], dict[str, float]]:
        judge = make()
        try:
            return await judge_and_collect(judge, items, progress)
        finally:
            await judge.aclose()

    return asyncio.run(run())


def judge_sync(items: Sequence[JudgeItem], config: JudgeConfig, progress: bool = False) -> list[Judgement]:
    """Judge `items` with the GenRM endpoints of `config` from synchronous code (scripts, notebooks)."""
    from fapo.grm.client import GenRMClient

    return judge_and_collect_sync(lambda: GenRMClient(config), items, progress)[0]
