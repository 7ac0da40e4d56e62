"""GenRM benchmarks: ProcessBench per subset and FlawedPositiveBench, from verdicts to a report.

    rows = load_critic_sets(["processbench/gsm8k.jsonl", "processbench/math.jsonl"])
    verdicts, judgements, _ = judge_critic_rows(rows, JudgeSpec(JudgeConfig(endpoints=("http://h:8000/v1",))))
    report = evaluate_grm(rows, verdicts, judgements=judgements)
    write_grm_report(report, "reports/grm")      # REPORT.json, REPORT.md, confusion.png

Metric definitions live in `fapo.metrics`; FlawedPositiveBench pools every subset's items with
a correct final answer. Owns the report's shape. Must not train, and does not import torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fapo.eval.critic_data import CriticRow
from fapo.eval.judges import JudgeSpec, judge_items
from fapo.eval.report import fmt_percent, markdown_table, rounded, write_json
from fapo.grm.client import JudgeItem, Judgement
from fapo.io import write_jsonl, write_text
from fapo.metrics import (
    FlawedPositiveScores,
    SubsetScores,
    flawed_positive_scores,
    mean_defined,
    processbench_scores,
)

CONFUSION_COLUMNS = ("-1", "labelled step", "other step", "no verdict")
"""What a verdict said, relative to the label (columns of the confusion counts)."""


@dataclass(frozen=True)
class GrmReport:
    """A GenRM's ProcessBench and FlawedPositiveBench scores."""

    subsets: dict[str, SubsetScores]
    average_f1: float | None
    """Mean of the subsets' F1 (over subsets where F1 is defined)."""
    flawed_positive_bench: FlawedPositiveScores
    confusion: dict[str, dict[str, dict[str, int]]]
    """subset → {"erroneous" | "error-free"} → CONFUSION_COLUMNS → count."""
    source: str = ""
    """Where the verdicts came from (a predictions file, endpoints, a model, an oracle)."""
    coverage: float = 100.0
    """Percent of rows with a valid verdict. The others count as wrong on ProcessBench and as "clean"
    on FlawedPositiveBench, so every score above is only as good as this number."""
    judge_status: dict[str, int] = field(default_factory=dict)
    """Verdict statuses: ok / invalid / error when a judge ran, plus missing for a predictions file."""
    judge_metrics: dict[str, float] = field(default_factory=dict)
    fpb_no_verdict: dict[str, int] = field(default_factory=dict)
    """FlawedPositiveBench items without a valid verdict, by class ("flawed", "clean"): counted with "said
    clean" in the scores, shown apart in the plot."""
    truncated: int = 0
    """Judgements whose critique was cut at the critique budget (max_tokens): no verdict."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The judge's sampling settings and the sample drawn (for the report)."""

    def to_json(self) -> dict[str, Any]:
        """The REPORT.json object (percentages 0–100, rounded to 4 decimals)."""
        return rounded({
            "subsets": {name: asdict(scores) for name, scores in self.subsets.items()},
            "average_f1": self.average_f1,
            "flawed_positive_bench": asdict(self.flawed_positive_bench),
            "confusion": self.confusion,
            "source": self.source,
            "coverage": self.coverage,
            "judge_status": self.judge_status,
            "judge_metrics": self.judge_metrics,
            "fpb_no_verdict": self.fpb_no_verdict,
            "truncated": self.truncated,
            "settings": self.settings,
        })


def confusion_counts(labels: Sequence[int], verdicts: Sequence[int | None]) -> dict[str, dict[str, int]]:
    """Counts of what the verdicts said (CONFUSION_COLUMNS) on erroneous and error-free items."""
    out = {"erroneous": dict.fromkeys(CONFUSION_COLUMNS, 0), "error-free": dict.fromkeys(CONFUSION_COLUMNS, 0)}
    for label, verdict in zip(labels, verdicts, strict=True):
        if verdict is None:
            said = "no verdict"
        elif verdict == -1:
            said = "-1"
        else:
            said = "labelled step" if verdict == label else "other step"
        out["erroneous" if label != -1 else "error-free"][said] += 1
    return out


def evaluate_grm(
    rows: Sequence[CriticRow],
    verdicts: Sequence[int | None],
    source: str = "",
    judgements: Sequence[Judgement] | None = None,
    judge_metrics: dict[str, float] | None = None,
    statuses: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> GrmReport:
    """Score `verdicts` (None = no valid verdict) on `rows`, per subset and on FlawedPositiveBench.

    `statuses` (one per row, e.g. from `read_predictions`) are counted when no `judgements` are given.
    """
    if len(rows) != len(verdicts):
        raise ValueError(f"{len(rows)} rows but {len(verdicts)} verdicts")
    if not rows:
        raise ValueError("no rows to score")
    by_subset: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_subset.setdefault(row.subset, []).append(i)
    subsets: dict[str, SubsetScores] = {}
    confusion: dict[str, dict[str, dict[str, int]]] = {}
    for name, indices in by_subset.items():
        labels = [rows[i].label for i in indices]
        chosen = [verdicts[i] for i in indices]
        subsets[name] = processbench_scores(labels, chosen)
        confusion[name] = confusion_counts(labels, chosen)
    fpb = flawed_positive_scores([r.label for r in rows], [r.final_answer_correct for r in rows], verdicts)
    no_verdict = {"flawed": 0, "clean": 0}
    for row, verdict in zip(rows, verdicts, strict=True):
        if row.final_answer_correct is True and verdict is None:
            no_verdict["flawed" if row.label != -1 else "clean"] += 1
    if judgements is not None:
        status = Counter(j.status for j in judgements)
        judge_status = {k: status.get(k, 0) for k in ("ok", "invalid", "error")}
    elif statuses is not None:
        status = Counter(statuses)
        judge_status = {k: status.get(k, 0) for k in ("ok", "invalid", "error", "missing")}
    else:
        judge_status = {}
    return GrmReport(
        subsets=subsets,
        average_f1=mean_defined([s.f1 for s in subsets.values()]),
        flawed_positive_bench=fpb,
        confusion=confusion,
        source=source,
        coverage=100.0 * sum(v is not None for v in verdicts) / len(verdicts),
        judge_status=judge_status,
        judge_metrics=dict(judge_metrics or {}),
        fpb_no_verdict=no_verdict,
        truncated=sum(bool(getattr(j, "truncated", False)) for j in judgements or ()),
        settings=dict(settings or {}),
    )


def judge_critic_rows(
    rows: Sequence[CriticRow], spec: JudgeSpec, with_gold: bool = True, progress: bool = False
) -> tuple[list[int | None], list[Judgement], dict[str, float]]:
    """Ask the judge about every row: (verdicts, judgements, judge metrics).

    The GenRM sees the row's `ground_truth` when present and `with_gold` is True (the FAPO critic
    prompt); ProcessBench rows have none, so they are judged from the problem and steps alone.
    """
    items = [JudgeItem(r.problem, r.steps, r.ground_truth if with_gold else None) for r in rows]
    judgements, metrics = judge_items(items, spec, progress=progress)
    return [j.verdict if j.status == "ok" else None for j in judgements], judgements, metrics


def grm_markdown(report: GrmReport) -> str:
    """The report as markdown: one row per subset, the average F1, then FlawedPositiveBench."""
    rows = [
        [name, s.n, s.n_error, s.n_correct, fmt_percent(s.acc_err), fmt_percent(s.acc_corr), fmt_percent(s.f1), s.n_invalid]
        for name, s in report.subsets.items()
    ]
    rows.append(["**average**", "", "", "", "", "", f"**{fmt_percent(report.average_f1)}**", ""])
    head = ["subset", "n", "erroneous", "error-free", "acc_err", "acc_corr", "F1", "no verdict"]
    fpb = report.flawed_positive_bench
    fpb_table = markdown_table(
        ["n", "precision", "recall", "F1", "accuracy", "TP", "FP", "FN", "TN"],
        [[fpb.n, fmt_percent(fpb.precision), fmt_percent(fpb.recall), fmt_percent(fpb.f1),
          fmt_percent(fpb.accuracy), fpb.true_positive, fpb.false_positive, fpb.false_negative, fpb.true_negative]],
    )
    parts = [f"# GenRM evaluation\n\nVerdicts: {report.source or 'given'}."]
    if report.settings:
        parts.append("Settings: " + ", ".join(f"{k} {v}" for k, v in report.settings.items()) + ".")
    if report.judge_status:
        parts.append("Judge status: " + ", ".join(f"{k} {v}" for k, v in report.judge_status.items()) + "."
                     + (f" {report.truncated} critiques were cut at the critique budget (counted as no verdict)."
                        if report.truncated else ""))
    parts.append(f"Coverage: {fmt_percent(report.coverage)}% of rows have a valid verdict."
                 + ("" if report.coverage == 100 else " **The rest count as wrong on ProcessBench and as "
                    "'clean' on FlawedPositiveBench: these scores are not the GenRM's alone.**"))
    parts += ["## ProcessBench", markdown_table(head, rows),
              "## FlawedPositiveBench (items with a correct final answer; positive = has an error)", fpb_table]
    return "\n\n".join(parts) + "\n"


GRM_REPORT_FILES = ("REPORT.json", "REPORT.md", "confusion.png")
"""The files `write_grm_report` writes in its directory (checked against the command's other outputs first)."""


def write_grm_report(report: GrmReport, report_dir: str | Path) -> dict[str, Path]:
    """Write REPORT.json, REPORT.md and confusion.png to `report_dir` (created); return their paths."""
    from fapo.eval.plots import plot_grm_confusion

    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "REPORT.json", "markdown": out / "REPORT.md", "confusion": out / "confusion.png"}
    write_json(paths["json"], report.to_json())
    write_text(paths["markdown"], grm_markdown(report))
    plot_grm_confusion(report.confusion, report.flawed_positive_bench, paths["confusion"], report.fpb_no_verdict)
    return paths


def write_predictions(path: str, rows: Sequence[CriticRow], verdicts: Sequence[int | None], statuses: Sequence[str],
                      judgements: Sequence[Judgement] | None) -> None:
    """Write {subset, id, verdict, status} per row to `path` ('-': stdout), and the judge's truncated flag and
    critique when a judge ran; OSError when it cannot be written."""
    said = judgements or [None] * len(rows)
    write_jsonl(path, ({"subset": r.subset, "id": r.id, "verdict": v, "status": s}
                       | ({} if j is None else {"truncated": j.truncated, "critique": j.critique})
                       for r, v, s, j in zip(rows, verdicts, statuses, said, strict=True)))
