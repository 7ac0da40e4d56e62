"""The audit's numbers: counts per (group, data source) cell, added up from the audited rows, and the report.

    tally = AuditTally(examples=5)
    for row in audited_rows: tally.add(row)             # each row's `audit` object (and its text, for examples)
    report = tally.report(source="...", judge="...", throughput={...})
    write_audit_report(report, "reports/audit")        # REPORT.json, REPORT.md, audit.png

A cell counts rollouts, skipped ones (no problem / response / gold), correct ones, judged ones (a valid
verdict), flawed ones (a verdict naming a step), and the correct ones without a verdict (invalid, of which
truncated, and error). accuracy = correct / audited; flawed-positive ratio = flawed / judged, the paper's
measure, over correct rollouts with a verdict — so the report always says how many had none. A ratio over
nothing is None (JSON null, `—` in markdown), never 0. Memory: one cell per (group, source) pair and the
first `examples` flawed positives, whatever the number of rows. Owns the report's shape; judges nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fapo.eval.report import fmt_percent, markdown_table, rounded, write_json
from fapo.eval.rollout_rows import NO_GROUP
from fapo.io import write_text
from fapo.metrics import ratio

EXCERPT_CHARS = 1200
"""Longest problem, response or critique excerpt kept for the report's examples."""


@dataclass
class Cell:
    """Counts for one set of rollouts."""

    rollouts: int = 0
    skipped: int = 0
    correct: int = 0
    judged: int = 0
    flawed: int = 0
    invalid: int = 0
    truncated: int = 0
    errors: int = 0
    not_judged: int = 0
    """Correct rollouts no judge was asked about (`--judge none`)."""

    def add(self, audit: dict[str, Any]) -> None:
        self.rollouts += 1
        if audit.get("skipped"):
            self.skipped += 1
            return
        if not audit.get("correct"):
            return
        self.correct += 1
        status = audit.get("judge_status")
        self.judged += status == "ok"
        self.flawed += bool(status == "ok" and audit.get("flawed"))
        self.invalid += status == "invalid"
        self.truncated += bool(status == "invalid" and audit.get("truncated"))
        self.errors += status == "error"
        self.not_judged += status is None

    def merge(self, other: Cell) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def scores(self) -> dict[str, Any]:
        """The counts and the two ratios (percent, None when undefined)."""
        audited = self.rollouts - self.skipped
        return asdict(self) | {"accuracy": _percent(self.correct, audited),
                               "flawed_positive_ratio": _percent(self.flawed, self.judged),
                               "no_verdict": self.invalid + self.errors}


def _percent(part: int, whole: int) -> float | None:
    value = ratio(part, whole)
    return None if value != value else 100.0 * value  # NaN (nothing to divide) → None


def _sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1 if name != NO_GROUP else 2, 0.0, name)


@dataclass(frozen=True)
class AuditReport:
    """The audit of a set of rollouts: totals, per group (training step), per data source, both, examples."""

    total: dict[str, Any]
    by_group: dict[str, dict[str, Any]]
    by_source: dict[str, dict[str, Any]]
    by_group_source: dict[str, dict[str, dict[str, Any]]]
    examples: list[dict[str, Any]]
    group_by: str = "step"
    source: str = ""
    judge: str = ""
    throughput: dict[str, Any] = field(default_factory=dict)
    judge_metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return rounded(asdict(self))


class AuditTally:
    """Adds audited rows up into cells; see the module docstring."""

    def __init__(self, examples: int = 5) -> None:
        self.cells: dict[tuple[str, str], Cell] = {}
        self.examples: list[dict[str, Any]] = []
        self.max_examples = examples

    def add(self, audit: dict[str, Any], texts: dict[str, Any] | None = None) -> None:
        """Count one audited rollout (`audit`: the row's audit object); `texts` (problem, response) makes
        a flawed positive an example while fewer than `examples` are kept."""
        key = (str(audit.get("group", NO_GROUP)), str(audit.get("source", NO_GROUP)))
        self.cells.setdefault(key, Cell()).add(audit)
        if (audit.get("correct") and audit.get("flawed") and len(self.examples) < self.max_examples
                and texts is not None):
            self.examples.append({
                "key": audit.get("key"), "group": key[0], "source": key[1], "verdict": audit.get("verdict"),
                "problem": _excerpt(texts.get("problem")), "named_step": _excerpt(_step(texts, audit.get("verdict"))),
                "response": _excerpt(texts.get("response")), "critique": _excerpt(audit.get("critique")),
            })

    def report(self, group_by: str = "step", **fields: Any) -> AuditReport:
        total, by_group, by_source = Cell(), {}, {}
        by_group_source: dict[str, dict[str, Any]] = {}
        for (group, source), cell in sorted(self.cells.items(), key=lambda kv: (_sort_key(kv[0][0]), kv[0][1])):
            total.merge(cell)
            by_group.setdefault(group, Cell()).merge(cell)
            by_source.setdefault(source, Cell()).merge(cell)
            by_group_source.setdefault(group, {})[source] = cell.scores()
        return AuditReport(
            total=total.scores(),
            by_group={g: c.scores() for g, c in by_group.items()},
            by_source={s: c.scores() for s, c in sorted(by_source.items(), key=lambda kv: _sort_key(kv[0]))},
            by_group_source=by_group_source,
            examples=list(self.examples),
            group_by=group_by,
            **fields,
        )


def _step(texts: dict[str, Any], verdict: Any) -> str | None:
    """The paragraph the verdict names, as the GenRM was shown it (`fapo.steps.split_steps`)."""
    from fapo.steps import split_steps

    steps = split_steps(texts["response"]) if isinstance(texts.get("response"), str) else []
    return steps[verdict] if isinstance(verdict, int) and 0 <= verdict < len(steps) else None


def _excerpt(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + " […]"


# ------------------------------------------------------------------------------------------- output

_HEAD = ["n", "skipped", "accuracy", "correct", "judged", "flawed", "flawed-positive ratio", "no verdict",
         "of which truncated"]


def _cells_row(scores: dict[str, Any]) -> list[Any]:
    return [scores["rollouts"], scores["skipped"], fmt_percent(scores["accuracy"]), scores["correct"],
            scores["judged"], scores["flawed"], fmt_percent(scores["flawed_positive_ratio"]),
            scores["no_verdict"], scores["truncated"]]


def audit_markdown(report: AuditReport) -> str:
    """The report as markdown: totals, per group, per source, group × source, examples, throughput."""
    t = report.total
    parts = [f"# Flawed-positive audit\n\nRollouts: {report.source}. Judge: {report.judge or 'none'}.",
             f"Accuracy {fmt_percent(t['accuracy'])}% of {t['rollouts'] - t['skipped']} audited rollouts; "
             f"flawed-positive ratio {fmt_percent(t['flawed_positive_ratio'])}% of the {t['judged']} correct "
             f"rollouts with a verdict. {t['no_verdict']} correct rollouts have no verdict ({t['invalid']} invalid, "
             f"of which {t['truncated']} truncated at the critique budget; {t['errors']} errors)"
             + (f"; {t['not_judged']} were not judged" if t["not_judged"] else "")
             + (f"; {t['skipped']} rows skipped (no problem, response or gold)" if t["skipped"] else "") + ".",
             "## Total", markdown_table(_HEAD, [_cells_row(t)])]
    if len(report.by_group) > 1 or NO_GROUP not in report.by_group:
        parts += [f"## Per {report.group_by}",
                  markdown_table([report.group_by, *_HEAD], [[g, *_cells_row(s)] for g, s in report.by_group.items()])]
    if len(report.by_source) > 1 or NO_GROUP not in report.by_source:
        parts += ["## Per data source",
                  markdown_table(["data source", *_HEAD], [[s, *_cells_row(c)] for s, c in report.by_source.items()])]
    if len(report.by_group) > 1 and len(report.by_source) > 1:
        sources = list(report.by_source)
        rows = [[g, *(_pair(cells.get(s)) for s in sources)] for g, cells in report.by_group_source.items()]
        parts += [f"## Accuracy / flawed-positive ratio per {report.group_by} and data source",
                  markdown_table([report.group_by, *sources], rows)]
    parts += _examples_markdown(report.examples)
    if report.throughput:
        tp = report.throughput
        parts.append(f"Throughput: {tp.get('rows')} rows in {tp.get('seconds')} s this run "
                     f"({tp.get('rows_per_s')} rows/s; {tp.get('judged_per_s')} judged/s)"
                     + (f", {tp['resumed_rows']} rows taken from an earlier run" if tp.get("resumed_rows") else "")
                     + ".")
    return "\n\n".join(parts) + "\n"


def _pair(scores: dict[str, Any] | None) -> str:
    if scores is None:
        return ""
    return f"{fmt_percent(scores['accuracy'])} / {fmt_percent(scores['flawed_positive_ratio'])}"


def _examples_markdown(examples: list[dict[str, Any]]) -> list[str]:
    if not examples:
        return []
    parts = ["## Flawed positives the judge named (first few)"]
    for ex in examples:
        problem = " ".join((ex.get("problem") or "").split())[:300]
        step = " ".join((ex.get("named_step") or "").split())[:400]
        parts.append(f"**{ex['key']}** ({ex['group']}, {ex['source']}): {problem}\n\n"
                     f"Step {ex['verdict']}, named wrong: {step}\n\nCritique:\n\n"
                     + "\n".join("> " + line for line in (ex.get("critique") or "").splitlines()[:20]))
    return parts


AUDIT_REPORT_FILES = ("REPORT.json", "REPORT.md", "audit.png")
"""What `write_audit_report` writes in its directory (the CLI checks them as outputs before any work)."""


def write_audit_report(report: AuditReport, report_dir: str | Path) -> dict[str, Path]:
    """AUDIT_REPORT_FILES in `report_dir` (created); their paths."""
    from fapo.eval.plots import plot_audit

    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(zip(("json", "markdown", "plot"), (out / name for name in AUDIT_REPORT_FILES), strict=True))
    write_json(paths["json"], report.to_json())
    write_text(paths["markdown"], audit_markdown(report))
    plot_audit(report.by_group_source, report.by_group, report.group_by, paths["plot"])
    return paths
