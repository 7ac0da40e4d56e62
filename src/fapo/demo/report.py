"""The demo's report: report.json (numbers), report.md (what ran, the table, plots, real critiques)
and PNG plots. Reads the runs' metrics.jsonl and critiques.jsonl; computes nothing new."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

ARMS = ("grpo", "fapo")
SUMMARY_KEYS = ("accuracy", "flawed_ratio", "mean_length")


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())]


def step_times(run_dir: Path) -> float:
    """Median `time/step_s` of a run, the first (warm-up) step left out (a median, because on a shared
    CPU a few steps stall for seconds on other processes)."""
    times = [r["time/step_s"] for r in _records(run_dir / "metrics.jsonl") if r.get("time/step_s") is not None]
    times = times[1:] if len(times) > 1 else times
    return statistics.median(times) if times else math.nan


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarize_arms(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: the mean over seeds of each final number, with per-seed values and spread."""
    out = {}
    for arm in ARMS:
        chosen = [r for r in runs if r["arm"] == arm]
        entry: dict[str, Any] = {}
        for key in SUMMARY_KEYS:
            values = [r["eval"][key] for r in chosen]
            entry[key] = statistics.fmean(values)
            entry[f"{key}_per_seed"] = values
            entry[f"{key}_spread"] = _spread(values)
        entry["step_s"] = statistics.fmean(r["step_s"] for r in chosen)
        entry["step_s_per_seed"] = [r["step_s"] for r in chosen]
        out[arm] = entry
    return out


def judging_in_training(runs: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Over every FAPO step of every seed: the rollouts judged, the share of verified-correct rollouts the
    judge called flawed, the share the checker calls flawed, their agreement, and the share of judgements
    with no verdict. A share with nothing to average (e.g. a judge that never gave a verdict) is None."""
    records = [r for run in runs if run["arm"] == "fapo"
               for r in _records(Path(run["output_dir"]) / "metrics.jsonl") if "loss" in r]

    def mean(key: str) -> float | None:
        values = [r[key] for r in records if r.get(key) is not None and not math.isnan(r[key])]
        return statistics.fmean(values) if values else None

    judged = int(sum(r.get("grm/judged") or 0 for r in records))
    not_ok = sum((r.get("grm/invalid") or 0) + (r.get("grm/errors") or 0) for r in records)
    return {"judged": judged, "judge_flawed_ratio": mean("grm/flawed_ratio"),
            "checker_flawed_ratio": mean("monitor/flawed_ratio"), "agreement": mean("monitor/judge_agreement"),
            "no_verdict_share": not_ok / judged if judged else None}


def _series(runs: list[dict[str, Any]], arm: str, key: str, smooth: int = 5) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean over seeds and std over seeds of a metric (moving average over `smooth` steps)."""
    per_seed = []
    for run in (r for r in runs if r["arm"] == arm):
        records = [r for r in _records(Path(run["output_dir"]) / "metrics.jsonl") if "loss" in r]
        values = [r.get(key) for r in records]
        smoothed = []
        for i in range(len(values)):
            window = [v for v in values[max(0, i - smooth + 1) : i + 1] if v is not None]
            smoothed.append(statistics.fmean(window) if window else math.nan)
        per_seed.append(smoothed)
    if not per_seed:
        return [], [], []
    n = min(len(s) for s in per_seed)
    means = [statistics.fmean(s[i] for s in per_seed) for i in range(n)]
    stds = [statistics.pstdev([s[i] for s in per_seed]) if len(per_seed) > 1 else 0.0 for i in range(n)]
    return list(range(1, n + 1)), means, stds


def plot_training(runs: list[dict[str, Any]], grm_dir: Path, out: Path) -> list[str]:
    """PNG plots: accuracy and flawed ratio, response length, and the GenRM's RL reward, against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = (("verify/accuracy", "training accuracy"), ("monitor/flawed_ratio", "flawed-positive ratio (checker)"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (key, title) in zip(axes, panels):
        for arm, color in zip(ARMS, ("tab:blue", "tab:red")):
            steps, mean, std = _series(runs, arm, key)
            ax.plot(steps, mean, color=color, label=arm.upper())
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2)
        ax.set(title=title, xlabel="step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_flawed.png", dpi=110)
    written.append("accuracy_flawed.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for arm, color in zip(ARMS, ("tab:blue", "tab:red")):
        steps, mean, std = _series(runs, arm, "completions/mean_length")
        ax.plot(steps, mean, color=color, label=arm.upper())
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color, alpha=0.2)
    ax.set(title="response length (tokens)", xlabel="step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "length.png", dpi=110)
    written.append("length.png")
    plt.close(fig)

    grm_records = [r for r in _records(grm_dir / "metrics.jsonl") if "loss" in r]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot([r["step"] for r in grm_records], [r.get("reward/mean") for r in grm_records], color="tab:green",
            label="R_outcome + R_process")
    ax.plot([r["step"] for r in grm_records], [r.get("grm/valid_rate") for r in grm_records], color="tab:gray",
            label="valid verdict rate")
    ax.set(title="GenRM RL", xlabel="step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "grm_reward.png", dpi=110)
    written.append("grm_reward.png")
    plt.close(fig)
    return written


def pick_critiques(run_dir: Path, caught: int = 3, missed: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Real judged rollouts: flawed positives the GenRM caught, and one it missed (the checker is the truth)."""
    records = [r for r in _records(run_dir / "critiques.jsonl") if r.get("monitor_verdict") not in (None, -1)]
    records.reverse()  # latest first
    hits = [r for r in records if r.get("status") == "ok" and r.get("verdict") not in (None, -1)]
    misses = [r for r in records if r.get("status") == "ok" and r.get("verdict") == -1]
    return {"caught": hits[:caught], "missed": misses[:missed]}


def _fmt(value: float, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.1f}%" if percent else f"{value:.3g}"


def _warmstart_line(report: dict[str, Any]) -> str:
    warm = report.get("grm_warmstart_eval")
    if not warm:
        return ""
    return (f" After warm-start only ({warm['rows']} critic rows): F1 {100 * warm['f1']:.1f} (acc_err "
            f"{100 * warm['acc_err']:.1f}, acc_corr {100 * warm['acc_corr']:.1f}); FlawedPositiveBench F1 "
            f"{100 * warm['fpb_f1']:.1f} (precision {100 * warm['fpb_precision']:.1f}, recall {100 * warm['fpb_recall']:.1f}).")


def _markdown(report: dict[str, Any], critiques: dict[str, list[dict[str, Any]]], plots: list[str]) -> str:
    g, f, grm, judging = report["grpo"], report["fapo"], report["grm"], report["judging"]
    lines = [
        "# fapo demo report", "",
        f"Seeds: {report['seeds']}. Judge for FAPO: {report['config']['judge']} GenRM, served by "
        f"{report['config']['workers']} `fapo serve-grm` workers behind the client. Final numbers: held-out "
        f"testbed problems × {report['config']['eval_samples']} samples at T = 1, the step checker as judge; "
        "mean over seeds (per-seed values in brackets).", "",
        "| arm | accuracy | flawed-positive ratio | mean length (tokens) | step time (s) |",
        "|---|---|---|---|---|",
        f"| initial (warm-start) | {_fmt(report['initial']['accuracy'], True)} | "
        f"{_fmt(report['initial']['flawed_ratio'], True)} | {_fmt(report['initial']['mean_length'])} | — |",
    ]
    for name, entry in (("GRPO", g), ("FAPO", f)):
        seeds_acc = ", ".join(_fmt(v, True) for v in entry["accuracy_per_seed"])
        seeds_fl = ", ".join(_fmt(v, True) for v in entry["flawed_ratio_per_seed"])
        lines.append(f"| {name} | {_fmt(entry['accuracy'], True)} [{seeds_acc}] | {_fmt(entry['flawed_ratio'], True)} "
                     f"[{seeds_fl}] | {_fmt(entry['mean_length'])} | {_fmt(entry['step_s'])} |")
    lines += [
        "", f"FAPO / GRPO step time: **{_fmt(report['overhead']['fapo_over_grpo_step_time'])}** "
        "(same machine, same run, steps after the first).", "",
        "## The GenRM", "",
        f"After GenRM RL, on held-out critic rows: F1 {_fmt(grm['f1'])} (acc_err {_fmt(grm['acc_err'])}, "
        f"acc_corr {_fmt(grm['acc_corr'])}); FlawedPositiveBench F1 {_fmt(grm['fpb_f1'])}.{_warmstart_line(report)}", "",
        f"While judging FAPO's rollouts (every step, every seed; {judging['judged']} judgements) the judge called "
        f"{_fmt(judging['judge_flawed_ratio'], True)} of the verified-correct rollouts flawed, where the step checker "
        f"calls {_fmt(judging['checker_flawed_ratio'], True)} flawed; they agreed on "
        f"{_fmt(judging['agreement'], True)} of them, and {_fmt(judging['no_verdict_share'], True)} of the "
        "judgements gave no verdict (no penalty).", "",
        "## Plots", "",
    ]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", "## What a flawed positive looks like", ""]
    for title, rows in (("Caught by the GenRM", critiques["caught"]), ("Missed by the GenRM", critiques["missed"])):
        for row in rows:
            lines += [f"### {title} (step {row['step']})", "", f"Problem: {row['problem']} (answer {row['answer']})", "",
                      "```", row["completion"], "```", "", "The GenRM's critique:", "",
                      "```", row["critique"], "```", "",  # fenced: critiques span lines and quote <paragraph_i> tags
                      f"Verdict {row['verdict']}; the checker says step {row['monitor_verdict']}; "
                      f"reward {row['reward']}.", ""]
    lines += ["## Timings", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in report["timings"].items()]
    return "\n".join(lines) + "\n"


def write_report(out: Path, *, config: dict[str, Any], warm: dict[str, Any], grm_dir: str,
                 grm_report: dict[str, Any], initial: dict[str, Any], runs: list[dict[str, Any]],
                 timings: dict[str, float]) -> dict[str, Any]:
    """Write report.json, report.md and the plots into `out`; return report.json's content."""
    arms = summarize_arms(runs)
    subset = next(iter(grm_report["subsets"].values()))
    report = {
        **arms,
        "grm": {"f1": subset["f1"], "acc_err": subset["acc_err"], "acc_corr": subset["acc_corr"],
                "fpb_f1": grm_report["flawed_positive_bench"]["f1"]},
        "overhead": {"fapo_over_grpo_step_time": arms["fapo"]["step_s"] / arms["grpo"]["step_s"]},
        "judging": judging_in_training(runs),
        "seeds": config["seeds"],
        "config": config,
        "initial": initial,
        "grm_warmstart_eval": warm["grm"].get("eval"),
        "policy_warmstart_eval": warm["policy"].get("eval"),
        "runs": [{k: v for k, v in r.items()} for r in runs],
        "timings": timings,
    }
    grm_rl_dir = Path(grm_dir).parent if Path(grm_dir).name == "final" else Path(grm_dir)
    plots = plot_training(runs, grm_rl_dir, out)
    fapo_runs = [r for r in runs if r["arm"] == "fapo"]
    critiques = pick_critiques(Path(fapo_runs[0]["output_dir"])) if fapo_runs else {"caught": [], "missed": []}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(_markdown(report, critiques, plots))
    return report
