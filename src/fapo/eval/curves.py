"""Training curves: read runs' `metrics.jsonl` and plot accuracy, flawed ratio, reward, length, step time.

    runs = [read_run("out/grpo"), read_run("out/fapo")]      # a run directory or its metrics.jsonl
    write_curves(runs, "reports/curves")                     # <name>.png per metric, curves.png, CURVES.md

A metrics record is one JSON object per trainer log (`fapo.train.callbacks.MetricsFileCallback`):
`step` plus namespaced keys; null (NaN) values and records without a key are skipped, and when
several records share a step the last one wins. Must not train; reads nothing but the files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fapo.eval.report import fmt_number, markdown_table, rounded, write_json
from fapo.io import DataError, iter_jsonl


@dataclass(frozen=True)
class CurveMetric:
    key: str
    """The metrics.jsonl key."""
    name: str
    """File stem of its plot."""
    title: str


CURVE_METRICS = (
    CurveMetric("verify/accuracy", "accuracy", "verified accuracy"),
    CurveMetric("grm/flawed_ratio", "flawed_ratio", "flawed-positive ratio (GenRM)"),
    CurveMetric("reward/mean", "reward", "mean reward"),
    CurveMetric("completions/mean_length", "response_length", "mean response length (tokens)"),
    CurveMetric("time/step_s", "step_time", "step time (s)"),
)
"""The metrics `eval curves` draws by default."""


@dataclass(frozen=True)
class RunCurves:
    """One training run's series: key → (steps, values), steps increasing."""

    label: str
    path: str
    series: dict[str, tuple[tuple[int, ...], tuple[float, ...]]]


def _metrics_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "metrics.jsonl" if path.is_dir() else path


def read_run(path: str | Path, label: str | None = None, keys: Sequence[str] | None = None) -> RunCurves:
    """A run's curves from its directory or metrics.jsonl; DataError naming file:line on a bad record.

    `keys` (default: every numeric key) limits what is kept; `label` defaults to the run directory's name.
    """
    file = _metrics_path(path)
    points: dict[str, dict[int, float]] = {}
    for lineno, record in iter_jsonl(file, required=("step",)):
        step = record["step"]
        if isinstance(step, bool) or not isinstance(step, int):
            raise DataError(f"{file}:{lineno}: 'step' must be an integer, got {step!r}")
        for key, value in record.items():
            if key == "step" or (keys is not None and key not in keys):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                points.setdefault(key, {})[step] = float(value)
    series = {
        key: (tuple(sorted(by_step)), tuple(by_step[s] for s in sorted(by_step))) for key, by_step in points.items()
    }
    return RunCurves(label or file.resolve().parent.name, str(file), series)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Labels made distinct by suffixing repeats with #2, #3, ..."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def summarize_runs(runs: Sequence[RunCurves], metrics: Sequence[CurveMetric] = CURVE_METRICS) -> dict[str, Any]:
    """Per run and metric: points, last and mean value; plus each run's mean step time over the first run's."""
    summary: dict[str, Any] = {"runs": {}}
    for run in runs:
        entry = {}
        for metric in metrics:
            steps, values = run.series.get(metric.key, ((), ()))
            entry[metric.key] = {"points": len(values), "last_step": steps[-1] if steps else None,
                                 "last": values[-1] if values else None,
                                 "mean": sum(values) / len(values) if values else None}
        summary["runs"][run.label] = {"path": run.path, "metrics": entry}
    base = _mean(runs[0], "time/step_s") if runs else None
    summary["step_time_ratio"] = {
        run.label: (_mean(run, "time/step_s") / base if base and _mean(run, "time/step_s") is not None else None)
        for run in runs
    }
    return rounded(summary)


def _mean(run: RunCurves, key: str) -> float | None:
    values = run.series.get(key, ((), ()))[1]
    return sum(values) / len(values) if values else None


def curves_markdown(summary: dict[str, Any], metrics: Sequence[CurveMetric], drawn: Sequence[str]) -> str:
    head = ["run", *(f"{m.key} (last)" for m in metrics), "step time / first run"]
    rows = [
        [label, *(fmt_number(entry["metrics"][m.key]["last"], 4) for m in metrics),
         fmt_number(summary["step_time_ratio"][label], 3)]
        for label, entry in summary["runs"].items()
    ]
    images = " ".join(f"![{name}]({name}.png)" for name in drawn)
    return "# Training curves\n\n" + markdown_table(head, rows) + "\n\n" + images + "\n"


def write_curves(runs: Sequence[RunCurves], out_dir: str | Path,
                 metrics: Sequence[CurveMetric] = CURVE_METRICS) -> dict[str, Path]:
    """One PNG per metric that some run has, curves.png with all of them, curves.json and CURVES.md."""
    from fapo.eval.plots import plot_series, plot_series_grid

    if not runs:
        raise ValueError("no runs to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    panels = []
    for metric in metrics:
        series = {run.label: run.series[metric.key] for run in runs if metric.key in run.series}
        if series:
            paths[metric.name] = plot_series(series, metric.title, metric.key, out / f"{metric.name}.png")
            panels.append((metric.title, metric.key, series))
    if panels:
        paths["curves"] = plot_series_grid(panels, out / "curves.png")
    summary = summarize_runs(runs, metrics)
    summary["missing"] = [m.key for m in metrics if m.name not in paths]
    paths["json"] = write_json(out / "curves.json", summary)
    paths["markdown"] = out / "CURVES.md"
    drawn = [m.name for m in metrics if m.name in paths]
    paths["markdown"].write_text(curves_markdown(summary, metrics, drawn), encoding="utf-8")
    return paths
