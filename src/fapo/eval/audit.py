"""`fapo eval rollouts`: verify → judge the verified-correct → count, streamed over any number of rollouts.

    report = audit_rollouts(["runs/verl/rollout_dumps"], AuditConfig(rows_path="audit/rows.jsonl"),
                            judge=JudgeSpec(JudgeConfig(endpoints=("http://genrm:8001/v1",))))

Rollouts come from `fapo.eval.rollout_rows` (any dump, under the row schema). They are verified in chunks
(`fapo.outcome`, in a worker thread, so the next chunk verifies while the judge works on this one) and each
verified-correct rollout goes to the judge at once; up to `window` rollouts are in flight, so the GenRM
client always holds more requests than its concurrency and the servers' batches stay full. Rows are
written to `rows_path` in input order as soon as the rows before them are done: the input row and an
`audit` object {key, group, source, correct, pred, verify_status, judge_status, verdict, flawed, truncated,
critique, judge_error, latency_s, skipped}. `resume=True` continues a rows file: the rows in it are counted
(never judged again) and the input is read on from the next rollout (a rows file that does not match the
input's keys is an error). Memory holds the window and the report's cells, not the rows: so the rows file is
its own streamed writer, not `fapo.io.ResumableJsonl` (which keeps every written row to resume against).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fapo.bounds import check_number
from fapo.eval.audit_report import AuditReport, AuditTally
from fapo.eval.judges import JudgeSpec
from fapo.eval.rollout_files import iter_rows
from fapo.eval.rollout_rows import Rollout, RowSettings, to_rollouts
from fapo.grm.judge import make_judge
from fapo.grm.types import JudgeItem, Judgement
from fapo.io import DataError, json_line, parse_json
from fapo.outcome import AnswerRule, RolloutOutcome, rollout_outcomes
from fapo.schema import lookup, problem_text
from fapo.steps import split_steps
from fapo.verify import MAX_TIMEOUT_S

MAX_WINDOW = 1_000_000
"""Most rollouts in flight (and verified per call, and examples shown): beyond it memory, not speed, grows."""


@dataclass(frozen=True)
class AuditConfig:
    """How rollouts are audited."""

    rows_path: str
    """JSONL of the audited rows, written as they are done."""
    rows: RowSettings = RowSettings()
    resume: bool = False
    """Continue `rows_path` (rows already there are counted, not judged again); else it must not exist."""
    with_gold: bool = True
    """Show the gold answer to the GenRM (the FAPO critic prompt does)."""
    answer_rule: AnswerRule = "last_boxed"
    verify_timeout: float = 5.0
    verify_chunk: int = 256
    """Most rollouts verified per call (one worker-pool batch); the first calls take 16, 32, ... so that the
    judge has work while the verifier's workers start."""
    window: int = 2048
    """Most rollouts in flight (read, verified, waiting for the judge or for the rows before them)."""
    examples: int = 5
    """Flawed positives whose critiques the report shows."""
    progress: bool = False

    def __post_init__(self) -> None:
        for name, low in (("verify_chunk", 1), ("window", 1), ("examples", 0)):
            check_number(name, getattr(self, name), low, MAX_WINDOW, integer=True)
        check_number("verify_timeout", self.verify_timeout, 0, MAX_TIMEOUT_S, low_open=True)


def _audit_object(r: Rollout, o: RolloutOutcome | None, j: Judgement | None) -> dict[str, Any]:
    out: dict[str, Any] = {"key": r.key, "group": r.group, "source": r.source, "skipped": r.skipped}
    if o is not None:
        out |= {"correct": o.correct, "pred": o.pred, "verify_status": o.verify_status}
    if j is not None:
        out |= {"judge_status": j.status, "verdict": j.verdict, "flawed": j.flawed, "truncated": j.truncated,
                "critique": j.critique, "judge_error": j.error, "latency_s": round(j.latency_s, 4)}
    return out


class RowsFile:
    """The audited rows, appended line by line and flushed per batch (a killed run keeps what it wrote). Unlike
    `fapo.io.ResumableJsonl` it never starts an existing file afresh (that is hours of judging: --resume or
    remove it) and keeps no rows in memory; `read_done` streams an earlier run's rows into the report."""

    def __init__(self, path: str, resume: bool) -> None:
        if str(path) == "-":
            raise DataError("the audited rows go to a file that --resume can continue, not stdout ('-')")
        self.path = Path(path)
        if not resume and self.path.exists() and self.path.stat().st_size > 0:
            raise DataError(f"{path} already holds audited rows; pass --resume to continue it, or remove it")
        self.file = self.path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(json_line(row) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_done(path: str, tally: AuditTally, settings: RowSettings) -> tuple[int, str | None]:
    """Count the rows of an earlier run into `tally`: (rows, last key). A last line cut mid-write is removed."""
    file = Path(path)
    if not file.exists():
        return 0, None
    done, last_key, good_bytes = 0, None, 0
    with file.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # cut mid-write: dropped below, its rollout is audited again
            try:
                row = parse_json(raw)  # strict: NaN, deep nesting, bad UTF-8 are a line's error, never a crash
                audit = row["audit"]
                if not isinstance(audit, dict):
                    raise TypeError("its `audit` is not an object")
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(f"{path}:{done + 1}: not an audited row ({err}); is it the rows file of an audit?") from err
            good_bytes += len(raw)
            done += 1
            last_key = audit.get("key")
            tally.add(audit, _texts(row, settings))
    if good_bytes < file.stat().st_size:
        os.truncate(file, good_bytes)
    return done, last_key


def _texts(row: dict[str, Any], settings: RowSettings) -> dict[str, Any]:
    problem, response = lookup(row, "problem", settings.mapping), lookup(row, "response", settings.mapping)
    return {"problem": problem_text(problem.value) if problem else None,
            "response": response.value if response else None}


class _Progress:
    """Rows audited and their rate on stderr: a rich line on a terminal, else a line every 10 s."""

    def __init__(self, enabled: bool, every_s: float = 10.0) -> None:
        self.enabled, self.every_s = enabled, every_s
        self.rows = self.judged = 0
        self.t0 = self.last = time.monotonic()
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task("auditing")
            self._bar.start()

    def text(self) -> str:
        seconds = max(time.monotonic() - self.t0, 1e-9)
        return (f"audited {self.rows} rows ({self.judged} judged) in {seconds:.0f} s: "
                f"{self.rows / seconds:.1f} rows/s, {self.judged / seconds:.1f} judged/s")

    def advance(self, judged: bool) -> None:
        self.rows += 1
        self.judged += judged
        if not self.enabled:
            return
        now = time.monotonic()
        if self._bar is not None:
            if now - self.last >= 0.2:
                self.last = now
                self._bar.update(self._task, description=self.text())
        elif now - self.last >= self.every_s:
            self.last = now
            print(self.text(), file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self.enabled:
            print(self.text(), file=sys.stderr)


async def _judge_one(judge: Any, rollout: Rollout, with_gold: bool) -> Judgement:
    item = JudgeItem(rollout.problem or "", tuple(split_steps(rollout.response or "")),
                     rollout.gold if with_gold else None)
    return (await judge.judge_many([item]))[0]


def _verify(chunk: list[Rollout], config: AuditConfig) -> list[RolloutOutcome | None]:
    usable = [i for i, r in enumerate(chunk) if r.skipped is None]
    outcomes = rollout_outcomes([chunk[i].response for i in usable], [chunk[i].gold for i in usable],  # type: ignore[misc]
                                rule=config.answer_rule, timeout=config.verify_timeout)
    out: list[RolloutOutcome | None] = [None] * len(chunk)
    for i, o in zip(usable, outcomes, strict=True):
        out[i] = o
    return out


async def _run(rollouts: Iterator[Rollout], judge: Any, config: AuditConfig, writer: RowsFile,
               tally: AuditTally, progress: _Progress) -> None:
    pending: deque[tuple[Rollout, RolloutOutcome | None, asyncio.Task[Judgement] | None]] = deque()

    def flush_done() -> None:
        while pending and (pending[0][2] is None or pending[0][2].done()):
            rollout, outcome, task = pending.popleft()
            audit = _audit_object(rollout, outcome, task.result() if task is not None else None)
            writer.write({**rollout.row, "audit": audit})
            tally.add(audit, {"problem": rollout.problem, "response": rollout.response})
            progress.advance(task is not None)
        writer.flush()

    size = min(16, config.verify_chunk)  # small first chunks: the judge starts while the verifier warms up
    while chunk := list(itertools.islice(rollouts, size)):
        size = min(2 * size, config.verify_chunk)
        outcomes = await asyncio.to_thread(_verify, chunk, config)
        for rollout, outcome in zip(chunk, outcomes, strict=True):
            ask = judge is not None and outcome is not None and outcome.correct
            task = asyncio.create_task(_judge_one(judge, rollout, config.with_gold)) if ask else None
            pending.append((rollout, outcome, task))
        flush_done()
        while len(pending) > config.window:
            head = pending[0][2]
            if head is not None:
                await asyncio.wait([head])
            flush_done()
    while pending:
        head = pending[0][2]
        if head is not None:
            await asyncio.wait([head])
        flush_done()


def audit_rollouts(paths: list[str], config: AuditConfig, judge: JudgeSpec | None,
                   settings: dict[str, Any] | None = None) -> AuditReport:
    """Audit every rollout of `paths` (see the module docstring) and return the report of all rows in the
    rows file, earlier runs' included. Raises DataError for unreadable input or a rows file that does not
    continue this input, ValueError for a bad judge spec."""
    if judge is not None and judge.kind == "model_dir":
        raise ValueError("eval rollouts asks GenRM servers or an oracle; serve the model with "
                         "`fapo serve-grm --model DIR` and pass --endpoint")
    tally = AuditTally(config.examples)
    done, last_key = read_done(config.rows_path, tally, config.rows) if config.resume else (0, None)
    rollouts = to_rollouts(iter_rows(paths), config.rows)
    if done:
        deque(itertools.islice(rollouts, done - 1), maxlen=0)  # read past, nothing kept
        nth = next(rollouts, None)
        if nth is None or nth.key != last_key:
            raise DataError(f"{config.rows_path}: its row {done} is {last_key!r} but the input's rollout {done} is "
                            f"{nth.key if nth else 'missing'!r}; it is not this input's rows file")
    writer = RowsFile(config.rows_path, config.resume)
    progress = _Progress(config.progress)
    t0 = time.perf_counter()
    metrics: dict[str, float] = {}

    async def main() -> None:
        made = make_judge(judge.config, judge.oracle, judge.verdict_fn, name=judge.name) if judge else None
        try:
            await _run(rollouts, made, config, writer, tally, progress)
        finally:
            if made is not None:
                metrics.update(made.metrics())
                await made.aclose()

    try:
        asyncio.run(main())
    finally:
        writer.close()
        progress.close()
    seconds = time.perf_counter() - t0
    throughput = {"rows": progress.rows, "judged": progress.judged, "seconds": round(seconds, 3),
                  "rows_per_s": round(progress.rows / seconds, 2) if seconds > 0 else None,
                  "judged_per_s": round(progress.judged / seconds, 2) if seconds > 0 else None,
                  "resumed_rows": done}
    group_by = config.rows.group_by or "step"
    return tally.report(group_by=group_by, source=" ".join(map(str, paths)),
                        judge=judge.name if judge is not None else "", throughput=throughput,
                        judge_metrics=metrics, settings={"answer_rule": config.answer_rule,
                                                         "with_gold": config.with_gold, **(settings or {})})
