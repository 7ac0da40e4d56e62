"""PNG plots for the evaluation reports, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Owns how reports look; computes no metric (its inputs are finished numbers). matplotlib is
imported inside each function, so importing `fapo.eval` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fapo.metrics import FlawedPositiveScores


def _figure(width: float, height: float, panels: int = 1, rows: int = 1) -> tuple[Any, list[Any]]:
    """A Figure on an Agg canvas and its axes (a flat list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    cols = -(-panels // rows)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    return fig, axes


def _heatmap(ax: Any, counts: list[list[int]], rows: Sequence[str], cols: Sequence[str], title: str) -> None:
    """Row-normalised shading with the raw counts written in each cell."""
    shares = [[c / max(sum(row), 1) for c in row] for row in counts]
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if shares[i][j] > 0.6 else "black")
    ax.set_xticks(range(len(cols)), labels=list(cols), fontsize=8)
    ax.set_yticks(range(len(rows)), labels=list(rows), fontsize=8)
    ax.set_title(title, fontsize=10)


def plot_grm_confusion(
    confusion: Mapping[str, Mapping[str, Mapping[str, int]]], fpb: FlawedPositiveScores, path: str | Path,
    no_verdict: Mapping[str, int] | None = None,
) -> Path:
    """One panel per subset (label class × what the verdict said) and one for FlawedPositiveBench, where
    items without a verdict (`no_verdict`: class → count; scored as "said clean") get their own column."""
    fig, axes = _figure(4.2 * (len(confusion) + 1), 3.0, panels=len(confusion) + 1)
    for ax, (name, table) in zip(axes, confusion.items()):
        classes = list(table)
        columns = list(next(iter(table.values())))
        _heatmap(ax, [[table[c][col] for col in columns] for c in classes], classes, columns, name)
    missing = no_verdict or {}
    flawed_nv, clean_nv = missing.get("flawed", 0), missing.get("clean", 0)
    counts = [[fpb.true_positive, fpb.false_negative - flawed_nv, flawed_nv],
              [fpb.false_positive, fpb.true_negative - clean_nv, clean_nv]]
    _heatmap(axes[-1], counts, ["flawed", "clean"], ["said flawed", "said clean", "no verdict"], "FlawedPositiveBench")
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_pass_at_k(pass_at: Mapping[int, float], maj_at_k: float, k: int, path: str | Path) -> Path:
    """pass@j against j (log scale), with maj@k as a reference line."""
    fig, (ax,) = _figure(4.5, 3.2)
    ks = sorted(pass_at)
    ax.plot(ks, [pass_at[j] for j in ks], marker="o", label="pass@j")
    ax.axhline(maj_at_k, color="tab:orange", linestyle="--", label=f"maj@{k}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, labels=[str(j) for j in ks])
    ax.set(xlabel="j (samples)", ylabel="%", ylim=(0, 100), title="pass@j")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_outcomes(outcomes: Mapping[str, int], path: str | Path) -> Path:
    """Bar chart of rollout outcomes (clean correct, flawed correct, unjudged correct, wrong, ...)."""
    fig, (ax,) = _figure(5.5, 3.2)
    names = list(outcomes)
    total = max(sum(outcomes.values()), 1)
    bars = ax.bar(range(len(names)), [100 * outcomes[n] / total for n in names],
                  color=["tab:green", "tab:red", "tab:gray", "tab:blue", "tab:purple"][: len(names)])
    ax.bar_label(bars, labels=[str(outcomes[n]) for n in names], fontsize=8)
    ax.set_xticks(range(len(names)), labels=names, fontsize=8, rotation=15)
    ax.set(ylabel="% of rollouts", title="rollout outcomes")
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_lengths(lengths: Mapping[str, Sequence[int]], path: str | Path) -> Path:
    """Histogram of response lengths (tokens), one series per outcome group."""
    fig, (ax,) = _figure(4.5, 3.2)
    for name, values in lengths.items():
        if values:
            ax.hist(values, bins=20, alpha=0.6, label=f"{name} ({len(values)})")
    ax.set(xlabel="response length (tokens)", ylabel="rollouts", title="response lengths")
    if any(lengths.values()):
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_series(
    series: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str, ylabel: str, path: str | Path
) -> Path:
    """Lines of (step, value) per run on one axis."""
    fig, (ax,) = _figure(5.0, 3.2)
    _draw_series(ax, series, title, ylabel)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_series_grid(panels: Sequence[tuple[str, str, Mapping[str, tuple[Sequence[int], Sequence[float]]]]],
                     path: str | Path) -> Path:
    """Several (title, ylabel, series) panels in one figure, two per row."""
    rows = -(-len(panels) // 2)
    fig, axes = _figure(10.0, 3.0 * rows, panels=len(panels), rows=rows)
    for ax, (title, ylabel, series) in zip(axes, panels):
        _draw_series(ax, series, title, ylabel)
    fig.savefig(path, dpi=110)
    return Path(path)


def _draw_series(ax: Any, series: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str, ylabel: str) -> None:
    for run, (steps, values) in series.items():
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, label=run)
    ax.set(xlabel="training step", ylabel=ylabel, title=title)
    if len(series) > 1:
        ax.legend(fontsize=8)


def plot_audit(by_group_source: Mapping[str, Mapping[str, Mapping[str, Any]]], by_group: Mapping[str, Mapping[str, Any]],
               group_by: str, path: str | Path) -> Path:
    """The audit's two panels, accuracy and flawed-positive ratio per group (training step), one line per
    data source and one for all (bars when there is a single group); the second panel also shows, dashed, the
    share of correct rollouts without a verdict, which the ratio leaves out."""
    sources = sorted({s for cells in by_group_source.values() for s in cells})
    series: dict[str, dict[str, Mapping[str, Any]]] = {s: {g: c[s] for g, c in by_group_source.items() if s in c}
                                                       for s in sources}
    if len(sources) > 1:
        series["all"] = dict(by_group)
    fig, axes = _figure(10.0, 3.4, panels=2)
    for ax, key, title in zip(axes, ("accuracy", "flawed_positive_ratio"), ("accuracy", "flawed-positive ratio")):
        if len(by_group) == 1:
            names = list(series)
            values = [next(iter(series[n].values()))[key] for n in names]
            ax.bar(range(len(names)), [v if v is not None else 0.0 for v in values], color="tab:blue")
            ax.set_xticks(range(len(names)), labels=names, fontsize=8, rotation=15)
        else:
            for name, cells in series.items():
                points = [(g, c[key]) for g, c in cells.items() if c[key] is not None]
                ax.plot([g for g, _ in points], [v for _, v in points], marker=".", label=name)
            if key == "flawed_positive_ratio":
                missing = [(g, 100.0 * c["no_verdict"] / c["correct"]) for g, c in by_group.items() if c["correct"]]
                ax.plot([g for g, _ in missing], [v for _, v in missing], color="gray", linestyle="--",
                        label="no verdict (% of correct)")
            ax.set_xlabel(group_by)
            ax.tick_params(axis="x", labelsize=7, rotation=45)
            ax.legend(fontsize=7)
        ax.set(ylabel="%", ylim=(0, 103), title=title)
    fig.savefig(path, dpi=110)
    return Path(path)
