"""Policy evaluation report files: REPORT.json, REPORT.md, samples.jsonl and three plots.

Owns the files' layout; the numbers come from `fapo.eval.policy`.
"""

from __future__ import annotations

from pathlib import Path

from fapo.eval.policy import PolicyReport
from fapo.eval.report import fmt_number, fmt_percent, markdown_table, write_json
from fapo.io import write_jsonl, write_text


def policy_markdown(report: PolicyReport) -> str:
    """The report as markdown: the run, the accuracy table, the flaw numbers, the counts."""
    s, k = report.scores, report.config.sampling.k
    sampling = report.config.sampling
    intro = (f"# Policy evaluation\n\nModel `{report.model}` on {report.data or 'the given problems'}: "
             f"{s.n_problems} problems × {k} samples (T = {sampling.temperature}, top-p = {sampling.top_p}, "
             f"max {sampling.max_tokens} tokens, {report.generation_backend}); judge: {report.judge}.")
    pass_cols = [f"pass@{j}" for j in s.pass_at]
    accuracy = markdown_table(
        [f"avg@{k}", *pass_cols, f"maj@{k}"],
        [[fmt_percent(s.avg_at_k), *(fmt_percent(v) for v in s.pass_at.values()), fmt_percent(s.maj_at_k)]],
    )
    flaws = markdown_table(
        ["flawed among correct", "flawed among all", "correct", "judged", "flawed", "judge status"],
        [[fmt_percent(s.flawed_among_correct), fmt_percent(s.flawed_among_all), s.n_correct, s.n_judged,
          s.n_flawed, ", ".join(f"{k} {v}" for k, v in s.judge_status.items()) or "—"]],
    )
    shape = markdown_table(
        ["mean length (tokens)", "mean steps", "truncated %", "verify status"],
        [[fmt_number(s.mean_length_tokens), fmt_number(s.mean_steps, 2), fmt_percent(s.truncated),
          ", ".join(f"{k} {v}" for k, v in sorted(s.verify_status.items()))]],
    )
    outcomes = markdown_table(["outcome", "rollouts"], [[name, n] for name, n in s.outcomes.items()])
    plots = "![pass@j](pass_at_k.png) ![outcomes](outcomes.png) ![lengths](lengths.png)"
    parts = [intro, "## Accuracy (%)", accuracy, "## Flawed positives (%)", flaws, "## Responses", shape,
             outcomes, plots]
    return "\n\n".join(parts) + "\n"


POLICY_REPORT_FILES = ("REPORT.json", "samples.jsonl", "REPORT.md", "pass_at_k.png", "outcomes.png", "lengths.png")
"""The files `write_policy_report` writes in its directory (checked against the command's other outputs first)."""


def write_policy_report(report: PolicyReport, report_dir: str | Path) -> dict[str, Path]:
    """Write the report files to `report_dir` (created); return their paths by kind."""
    from fapo.eval.plots import plot_lengths, plot_outcomes, plot_pass_at_k

    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = report.scores
    paths = {
        "json": write_json(out / "REPORT.json", report.to_json()),
        "samples": out / "samples.jsonl",
        "markdown": out / "REPORT.md",
    }
    write_jsonl(paths["samples"], (
        {"id": report.problems[r.problem_index].id, "sample": r.sample_index, "gold": report.problems[r.problem_index].answer,
         "pred": r.pred, "correct": r.correct, "verify_status": r.verify_status, "verdict": r.verdict,
         "judge_status": r.judge_status, "outcome": r.outcome, "num_tokens": r.num_tokens, "truncated": r.truncated,
         "num_steps": r.num_steps, "response": r.text}
        for r in report.rollouts
    ))
    write_text(paths["markdown"], policy_markdown(report))
    paths["pass_at_k"] = plot_pass_at_k(s.pass_at, s.maj_at_k, report.config.sampling.k, out / "pass_at_k.png")
    paths["outcomes"] = plot_outcomes(s.outcomes, out / "outcomes.png")
    lengths = {"correct": [r.num_tokens for r in report.rollouts if r.correct],
               "not correct": [r.num_tokens for r in report.rollouts if not r.correct]}
    paths["lengths"] = plot_lengths(lengths, out / "lengths.png")
    return paths
