"""Answer verification: is a rollout's final answer equivalent to the gold answer?

Owns: equivalence by math-verify, a result cache in the calling process and the math-verify call that
the workers of a `fapo.process_pool.ProcessPool` make under a hard per-item timeout (math-verify's own timeout uses
`signal.alarm`: main thread only; the pool's holds in any thread). The final answer's source (the last
`\\boxed{...}`, else math-verify's own extraction) and the fast path (identical answers, plain numbers)
are `fapo.answers`'.

Must not: import torch or transformers, and not even math-verify in the calling process (only the
workers import it); manage processes (that is `fapo.process_pool`'s); know about rewards, trainers
or HTTP. A failure is a status, never an exception.

The reference it is measured against (benchmarks/bench_verify.py) is plain math-verify called the
usual way, `verify(parse(gold_src), parse(response))` with default configs, `gold_src` being the
gold wrapped in `$...$` unless it holds `$` or `\\boxed`. The workers make that same call, on
`\\boxed{answer}` when the answer is a box; they also read `\\$10` as money rather than math, and a
short bare formula (`\\tfrac83`) in which math-verify finds nothing as its own answer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fapo.answers import answer_source, fast_verdict, fast_verdict_normalized, gold_answer, normalize_answer  # noqa: F401 (public here too)
from fapo.bounds import check_number
from fapo.process_pool import ProcessPool, TaskFailure

logger = logging.getLogger(__name__)

Status = Literal["ok", "no_answer", "timeout", "memory", "error"]
STATUSES: tuple[Status, ...] = ("ok", "no_answer", "timeout", "memory", "error")

MAX_TIMEOUT_S = 600.0
"""Longest math-verify time one item may be given (a worker's CPU is bounded by it, also when orphaned)."""

WORKER_MEMORY_BYTES = 2**30
"""Address-space limit of each math-verify worker: an answer whose evaluation needs more (a power tower
like `2^{2^{2^{2^{2^{2}}}}}`) ends as status "memory" instead of taking the machine's memory."""


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on one response."""

    correct: bool
    """True only when the final answer was extracted and math-verify found it equivalent to the gold."""
    pred: str | None
    """The extracted final answer (the last box's content, or math-verify's extracted text); None if none."""
    status: Status
    """"ok" (a verdict was reached), "no_answer" (nothing to extract), "timeout" (the item's math-verify
    work ran past `timeout` and its worker was replaced), "memory" (it needed more than
    `WORKER_MEMORY_BYTES`; its worker was replaced) or "error" (math-verify failed, a worker died,
    a non-string input, or a gold with no parseable answer). `correct` is False unless "ok"."""


@dataclass(frozen=True)
class VerifyStats:
    """Cumulative counters of one `Verifier` since it was made; diff two snapshots for one step."""

    items: int = 0
    """Responses verified."""
    fast_path: int = 0
    """Verdicts reached by the exact-match / integer fast path, without math-verify."""
    cache_hits: int = 0
    """Verdicts taken from the (answer, gold) cache, including repeats inside one batch."""
    worker_tasks: int = 0
    """Items sent to a math-verify worker."""
    no_answer: int = 0
    timeouts: int = 0
    memory_limits: int = 0
    """Items that hit the worker's address-space limit (status "memory")."""
    errors: int = 0
    worker_restarts: int = 0
    """Workers killed (timeout) or found dead and replaced."""

    def as_metrics(self, prefix: str = "verify/") -> dict[str, float]:
        """Namespaced metric keys for a trainer's logger, e.g. `verify/timeouts`."""
        return {prefix + name: float(value) for name, value in self.__dict__.items()}


# ---------------------------------------------------------------------------------------------------
# Worker side: runs in the pool's processes only; the only code here that imports math-verify.

_MATH_DOLLAR = re.compile(r"(?<!\\)\$")  # `\$10` is money, not math
_BARE_FORMULA = re.compile(r"[^$\n]{1,100}")
_Task = tuple[str, str, str]  # (mode "boxed" | "text", answer content or whole response, gold)
_Outcome = tuple[str, bool, "str | None", str]  # (status, correct, pred, detail for the log)

# Run by each new worker before it reports ready, so that sympy's lazily loaded code paths
# (numeric, symbolic, sets, intervals, matrices, units, text) do not land on the first real items.
_WARM_UP: tuple[_Task, ...] = (
    ("boxed", "\\frac{1}{2}", "0.5"),
    ("boxed", "\\sqrt{34} + 3\\sqrt{10}", "28"),
    ("boxed", "x^2 + 2x + 1", "(x+1)^2"),
    ("boxed", "1\\frac{1}{9}", "\\frac{10}{9}"),
    ("boxed", "(1, 2]", "[1, 2)"),
    ("boxed", "\\{1, 2\\}", "\\{2, 1\\}"),
    ("boxed", "x = 3", "3"),
    ("boxed", "4:30 \\text{ p.m.}", "4:30"),
    ("boxed", "30^\\circ", "\\frac{\\pi}{6}"),
    ("boxed", "25\\%", "0.25"),
    ("boxed", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
    ("text", "so the final answer is 12.", "12"),
)


def _gold_source(gold: str) -> str:
    """The gold as math-verify should read it: in `$...$` unless it has its own math or box."""
    return gold if (_MATH_DOLLAR.search(gold) or "\\boxed" in gold) else f"${gold}$"


def _parse_response(mode: str, answer: str) -> list:
    """math-verify's parse of the answer; a short bare formula with nothing else found is its own answer."""
    from math_verify import parse

    if mode == "boxed":
        return parse(f"\\boxed{{{answer}}}", parsing_timeout=None, raise_on_error=True)
    parsed = parse(answer, parsing_timeout=None, raise_on_error=True)
    if not parsed and _BARE_FORMULA.fullmatch(answer.strip()):  # e.g. `\\tfrac83` or `\\frac34i`
        parsed = parse(f"${answer.strip()}$", parsing_timeout=None, raise_on_error=True)
    return parsed


def _extracted_text(parsed: list) -> str:
    strings = [item for item in parsed if isinstance(item, str)]
    return strings[0] if strings else str(parsed[0])


def _check_with_math_verify(task: _Task) -> _Outcome:
    """Parse and compare one item with math-verify, no timeout (the caller enforces one).

    `task` = (mode, answer, gold): mode "boxed" parses `\\boxed{answer}`, mode "text" lets
    math-verify extract the answer from the whole response.
    """
    from math_verify import parse
    from math_verify import verify as math_verify_verify

    mode, answer, gold = task
    try:
        gold_parsed = parse(_gold_source(gold), parsing_timeout=None, raise_on_error=True)
        if not gold_parsed:
            return ("error", False, None, "the gold has no parseable answer")
        pred_parsed = _parse_response(mode, answer)
        if not pred_parsed:
            return ("no_answer", False, None, "")
        pred = answer.strip() if mode == "boxed" else _extracted_text(pred_parsed)
        correct = math_verify_verify(gold_parsed, pred_parsed, timeout_seconds=None)
        return ("ok", bool(correct), pred, "")
    except MemoryError:  # the worker's address-space limit: the pool reports it and replaces the worker
        raise
    except Exception as err:  # reported as the item's status, never swallowed
        return ("error", False, None, f"{type(err).__name__}: {str(err)[:200]}")


def prepare_worker() -> Callable[[_Task], _Outcome]:
    """Run once in each new pool worker (`fapo.process_pool.serve`): warm up, return the task handler."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": the pool enforces it
    for task in _WARM_UP:
        _check_with_math_verify(task)
    return _check_with_math_verify


# ---------------------------------------------------------------------------------------------------
# The verifier: fast path, cache, pool.


def default_workers() -> int:
    """Worker processes when none is asked for: the usable CPUs, at most 8."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, usable or 1))


def _key_part(text: str) -> str | bytes:
    if len(text) <= 256:
        return text
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _triage(
    response: object, gold: object, golds_seen: dict[str, str]
) -> tuple[VerifyResult | None, _Task | None]:
    """Decide in this process when that is cheap and safe; else say what a worker must check.

    `golds_seen` memoises each gold's normalised answer (the rollouts of one prompt share it).
    """
    if not isinstance(response, str) or not isinstance(gold, str):
        return VerifyResult(False, None, "error"), None
    mode, content = answer_source(response)
    if mode == "text":
        if not response.strip():
            return VerifyResult(False, None, "no_answer"), None
        return None, ("text", response, gold)
    if not content.strip():
        return VerifyResult(False, None, "no_answer"), None
    if gold not in golds_seen:
        golds_seen[gold] = normalize_answer(gold_answer(gold))
    verdict = fast_verdict_normalized(normalize_answer(content), golds_seen[gold])
    if verdict is not None:
        return VerifyResult(verdict, content.strip(), "ok"), None
    return None, ("boxed", content, gold)


class Verifier:
    """Verifies batches of responses; owns a result cache, counters and (lazily) a worker pool.

    Thread-safe: concurrent calls are served one batch at a time. Module-level `verify_batch`
    uses one shared instance; a trainer may keep its own to read its own counters.
    """

    def __init__(self, workers: int | None = None, cache_size: int = 100_000,
                 memory_bytes: int = WORKER_MEMORY_BYTES) -> None:
        self.workers = default_workers() if workers is None else _check_workers(workers)
        self.cache_size = cache_size
        self.memory_bytes = memory_bytes
        """Each worker's address-space limit (bytes)."""
        self._cache: OrderedDict[tuple, VerifyResult] = OrderedDict()
        self._counts = dict.fromkeys(VerifyStats.__dataclass_fields__, 0)
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()

    def verify_batch(
        self, responses: list[str], golds: list[str], *, workers: int | None = None, timeout: float = 5.0
    ) -> list[VerifyResult]:
        """One `VerifyResult` per (response, gold) pair, in order; see the module-level function."""
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses but {len(golds)} golds: pass one gold per response")
        check_number("timeout", timeout, 0, MAX_TIMEOUT_S, low_open=True)
        with self._lock:
            if workers is not None:
                self.workers = _check_workers(workers)
            results: list[VerifyResult | None] = [None] * len(responses)
            hard: dict[tuple, tuple[_Task, list[int]]] = {}
            golds_seen: dict[str, str] = {}
            for i, (response, gold) in enumerate(zip(responses, golds, strict=True)):
                results[i] = self._quick(response, gold, i, hard, golds_seen)
            self._run_hard(hard, results, timeout)
            for result in results:
                self._count_status(result)
            self._counts["items"] += len(results)
            return results  # type: ignore[return-value]  # every slot is filled above

    def _quick(self, response: str, gold: str, i: int, hard: dict, golds_seen: dict) -> VerifyResult | None:
        result, task = _triage(response, gold, golds_seen)
        if result is not None:
            self._counts["fast_path"] += 1
            return result
        key = (task[0], _key_part(task[1]), _key_part(task[2]))
        if key in self._cache:
            self._cache.move_to_end(key)
            self._counts["cache_hits"] += 1
            return self._cache[key]
        if key in hard:
            self._counts["cache_hits"] += 1
        hard.setdefault(key, (task, []))[1].append(i)
        return None

    def _run_hard(self, hard: dict, results: list[VerifyResult | None], timeout: float) -> None:
        if not hard:
            return
        tasks = [task for task, _ in hard.values()]
        try:
            answers = self._ensure_pool().run(tasks, timeout)
        except OSError as err:  # cannot start a process at all (no memory, no file descriptors)
            logger.error("fapo.verify: cannot run the worker pool: %s", err)
            answers = [TaskFailure("error", str(err))] * len(tasks)
        self._counts["worker_tasks"] += len(hard)
        for (key, (_, indices)), answer in zip(hard.items(), answers, strict=True):
            if isinstance(answer, TaskFailure):  # timed out, or its worker died: no verdict
                answer = (answer.kind, False, None, answer.detail)
            status, correct, pred, detail = answer
            result = VerifyResult(correct and status == "ok", pred, status)
            if detail:
                logger.debug("fapo.verify: %s: %s", status, detail)
            if status in ("ok", "no_answer"):  # only verdicts are cached, never failures
                self._cache[key] = result
            for i in indices:
                results[i] = result
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _count_status(self, result: VerifyResult) -> None:
        if result.status == "no_answer":
            self._counts["no_answer"] += 1
        elif result.status == "timeout":
            self._counts["timeouts"] += 1
        elif result.status == "memory":
            self._counts["memory_limits"] += 1
        elif result.status == "error":
            self._counts["errors"] += 1

    def _ensure_pool(self) -> ProcessPool:
        if self._pool is not None and self._pool.pid != os.getpid():
            self._pool = None  # inherited through fork: those workers belong to the parent
        if self._pool is None:
            self._pool = ProcessPool(self.workers, setup="fapo.verify:prepare_worker", memory_bytes=self.memory_bytes)
        self._pool.size = self.workers
        return self._pool

    def start(self) -> None:
        """Start the workers now and wait until they are warm (otherwise the first hard item does)."""
        with self._lock:
            self._ensure_pool().start()

    def stats(self) -> VerifyStats:
        """Counters so far (a snapshot)."""
        with self._lock:
            restarts = self._pool.restarts if self._pool is not None else 0
            return VerifyStats(**{**self._counts, "worker_restarts": restarts})

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Stop the workers (a later call starts new ones)."""
        with self._lock:
            if self._pool is not None and self._pool.pid == os.getpid():
                self._pool.close()
            self._pool = None


def _check_workers(workers: int) -> int:
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


_default_verifier: Verifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> Verifier:
    """The shared `Verifier` behind the module-level functions (made on first use)."""
    global _default_verifier
    with _default_lock:
        if _default_verifier is None:
            _default_verifier = Verifier()
        return _default_verifier


def verify_batch(
    responses: list[str], golds: list[str], *, workers: int | None = None, timeout: float = 5.0
) -> list[VerifyResult]:
    """Verify each response's final answer against its gold answer, never raising on bad data.

    Final answer = the content of the last `\\boxed{...}` when there is one (balanced braces), else
    math-verify's own extraction from the whole response (also when the last box ends a list of
    boxes, or a Minerva "The final answer is X. I hope it is correct." line is present: see
    `answer_source`). Identical answers (after a normalisation that cannot change meaning) and
    plain numbers are decided here (`fast_verdict`); the rest go, once per distinct
    (answer, gold), to a persistent pool of `workers` processes (default: usable CPUs, at most 8;
    the shared pool keeps the size asked for last) where math-verify's `parse` + `verify` get at
    most `timeout` seconds per item. A worker that overruns is killed and replaced ("timeout"); any
    failure is status "error". Verdicts are cached. A call is at most about
    ceil(hard items / workers) * timeout, plus ~1-3 s for each worker (re)started meanwhile.
    Raises ValueError only for misuse: unequal lengths, timeout not in (0, MAX_TIMEOUT_S], workers < 1.
    """
    return default_verifier().verify_batch(responses, golds, workers=workers, timeout=timeout)


def verify(response: str, gold: str, *, timeout: float = 5.0) -> VerifyResult:
    """`verify_batch` for one response."""
    return verify_batch([response], [gold], timeout=timeout)[0]


def verify_stats() -> VerifyStats:
    """Counters of the shared verifier, e.g. `verify_stats().as_metrics()` -> {"verify/timeouts": ...}."""
    return default_verifier().stats()
