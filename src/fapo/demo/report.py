"""The demo's report: report.json (numbers), report.md (what ran, the table, plots, real critiques)
and PNG plots. Reads the runs' metrics.jsonl and critiques.jsonl; computes nothing new."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from fapo.demo.checks import ARMS, LABELS, check_targets, fmt

COLORS = {"grpo": "tab:blue", "fapo": "tab:red", "fapo_oracle": "tab:green"}
SUMMARY_KEYS = ("accuracy", "flawed_ratio", "mean_length")
DIAGNOSTIC_KEYS = ("skip_share", "p_correct_skipped", "p_correct_computed", "p_clean_computed", "p_correct_no_pair")


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


def _arms_in(runs: list[dict[str, Any]]) -> list[str]:
    return [arm for arm in ARMS if any(r["arm"] == arm for r in runs)]


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(present) if present else None


def clip_fraction(run_dir: Path) -> float | None:
    """Mean share of tokens whose importance ratio TRL clipped (`clip_ratio/region_mean`) over a run's steps."""
    return _mean_or_none([r.get("clip_ratio/region_mean") for r in _records(run_dir / "metrics.jsonl") if "loss" in r])


def summarize_diagnostics(evals: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of the held-out diagnostics (`fapo.testbed.diagnose`), with per-seed values."""
    diags = [e["diagnostics"] for e in evals]
    out: dict[str, Any] = {"reasons": {reason: _mean_or_none([d["reasons"][reason] for d in diags])
                                       for reason in diags[0]["reasons"]}}
    for key in DIAGNOSTIC_KEYS:
        out[key] = _mean_or_none([d.get(key) for d in diags])
        out[f"{key}_per_seed"] = [d.get(key) for d in diags]
    out["skipped_pair_per_seed"] = [d["reasons"]["skipped_pair"] for d in diags]
    return out


def summarize_arms(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: the mean over seeds of each final number, with per-seed values and spread."""
    out = {}
    for arm in _arms_in(runs):
        chosen = [r for r in runs if r["arm"] == arm]
        entry: dict[str, Any] = {}
        for key in SUMMARY_KEYS:
            values = [r["eval"][key] for r in chosen]
            entry[key] = statistics.fmean(values)
            entry[f"{key}_per_seed"] = values
            entry[f"{key}_spread"] = _spread(values)
        entry["step_s"] = statistics.fmean(r["step_s"] for r in chosen)
        entry["step_s_per_seed"] = [r["step_s"] for r in chosen]
        entry["clip_fraction_per_seed"] = [clip_fraction(Path(r["output_dir"])) for r in chosen]
        entry["clip_fraction"] = _mean_or_none(entry["clip_fraction_per_seed"])
        out[arm] = entry
    return out


def judging_in_training(runs: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Over every FAPO step of every seed: the rollouts judged, the share of verified-correct rollouts the
    judge called flawed, the share the checker calls flawed, their agreement, and the share of judgements
    with no verdict. A share with nothing to average (e.g. a judge that never gave a verdict) is None."""
    records = [r for run in runs if run["arm"] == "fapo"
               for r in _records(Path(run["output_dir"]) / "metrics.jsonl") if "loss" in r]

    def mean(key: str) -> float | None:
        return _mean_or_none([r.get(key) for r in records])

    judged = int(sum(r.get("grm/judged") or 0 for r in records))
    not_ok = sum((r.get("grm/invalid") or 0) + (r.get("grm/errors") or 0) for r in records)
    return {"judged": judged, "judge_flawed_ratio": mean("grm/flawed_ratio"),
            "checker_flawed_ratio": mean("monitor/flawed_ratio"), "agreement": mean("monitor/judge_agreement"),
            "no_verdict_share": not_ok / judged if judged else None}


def _series(runs: list[dict[str, Any]], arm: str, key: str, smooth: int = 5) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean over seeds and std over seeds of a metric, as a moving average over the last `smooth` records
    that have it (rollout metrics are logged once per generation batch, loss metrics every optimizer step)."""
    per_seed, steps = [], []
    for run in (r for r in runs if r["arm"] == arm):
        records = [r for r in _records(Path(run["output_dir"]) / "metrics.jsonl")
                   if "loss" in r and r.get(key) is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
        values = [r[key] for r in records]
        per_seed.append([statistics.fmean(values[max(0, i - smooth + 1) : i + 1]) for i in range(len(values))])
        steps = [r["step"] for r in records] if not steps or len(records) < len(steps) else steps
    if not per_seed or not steps:
        return [], [], []
    n = min(len(s) for s in per_seed)
    means = [statistics.fmean(s[i] for s in per_seed) for i in range(n)]
    stds = [statistics.pstdev([s[i] for s in per_seed]) if len(per_seed) > 1 else 0.0 for i in range(n)]
    return steps[:n], means, stds


def _band(ax, runs: list[dict[str, Any]], arm: str, key: str, color: str, label: str) -> None:
    """One metric of one arm against step: the mean over seeds, with a ± std band."""
    steps, mean, std = _series(runs, arm, key)
    ax.plot(steps, mean, color=color, label=label)
    ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color, alpha=0.2)


def _save(fig, out: Path, name: str, written: list[str]) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    written.append(name)
    plt.close(fig)


def plot_training(runs: list[dict[str, Any]], grm_dir: Path | None, out: Path,
                  grm_held_out: dict[int, dict[str, Any]] | None = None) -> list[str]:
    """PNG plots against step: accuracy, flawed ratio and skip share of training rollouts; the flawed-positive
    ratio and its main classes per arm; response length; the GenRM's agreement with the checker on FAPO's training
    rollouts and its RL reward (when a GenRM was trained)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    arms = _arms_in(runs)
    panels = (("verify/accuracy", "accuracy of training rollouts"),
              ("monitor/flawed_ratio", "flawed-positive ratio (checker)"),
              ("monitor/skip_share", "share of pair problems skipped"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, (key, title) in zip(axes, panels):
        for arm in arms:
            _band(ax, runs, arm, key, COLORS[arm], LABELS[arm])
        ax.set(title=title, xlabel="optimizer step (mean ± std over seeds)")
        ax.legend()
    _save(fig, out, "accuracy_flawed.png", written)

    reasons = ("skipped_pair", "wrong_arithmetic", "merged_steps")
    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 3.6), sharey=True, squeeze=False)
    for ax, arm in zip(axes[0], arms):
        _band(ax, runs, arm, "monitor/flawed_ratio", "black", "all flawed positives")
        for reason, color in zip(reasons, ("tab:purple", "tab:orange", "tab:gray")):
            _band(ax, runs, arm, f"monitor/reason/{reason}", color, reason.replace("_", " "))
        ax.set(title=f"{LABELS[arm]}: flawed positives by class", xlabel="optimizer step",
               ylabel="share of correct training rollouts")
        ax.legend()
    _save(fig, out, "flaw_classes.png", written)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for arm in arms:
        _band(ax, runs, arm, "completions/mean_length", COLORS[arm], LABELS[arm])
    ax.set(title="response length (tokens)", xlabel="step")
    ax.legend()
    _save(fig, out, "length.png", written)

    if "fapo" in arms:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for key, color, label in (("monitor/judge_agreement", "tab:red", "agreement with the checker"),
                                  ("grm/flawed_ratio", "tab:orange", "GenRM calls flawed"),
                                  ("monitor/flawed_ratio", "black", "checker calls flawed")):
            _band(ax, runs, "fapo", key, color, label)
        ax.set(title="FAPO's GenRM on its training rollouts (verified-correct)", xlabel="optimizer step")
        ax.legend(fontsize=7)
        _save(fig, out, "judge_agreement.png", written)
    if grm_dir is not None:
        written += plot_grm_rl(grm_dir, out, grm_held_out or {})
    return written


def _moving_mean(values: list[float], window: int = 5) -> list[float]:
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot_grm_rl(grm_dir: Path, out: Path, held_out: dict[int, dict[str, Any]]) -> list[str]:
    """GenRM RL against step: mean reward, share of valid verdicts and outcome accuracy of the sampled critiques
    (moving mean over 5 steps); held-out F1 and false-alarm rate (fractions) at step 0, each scored checkpoint and
    the end."""
    import matplotlib.pyplot as plt

    records = [r for r in _records(grm_dir / "metrics.jsonl") if "loss" in r]
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, color, label in (("reward/mean", "tab:green", "mean reward (R_outcome + R_process)"),
                              ("grm/valid_rate", "tab:gray", "valid verdicts"),
                              ("grm/outcome_accuracy", "tab:olive", "right verdict (flawed or clean)")):
        values = [r.get(key) for r in records]
        if all(v is not None for v in values) and values:
            ax.plot(steps, _moving_mean(values), color=color, label=label)
    points = sorted(held_out.items())
    for key, color, label in (("f1", "tab:red", "held-out F1"), ("false_alarms", "tab:purple", "held-out false alarms")):
        marked = [(step, scores[key] / 100) for step, scores in points if scores.get(key) is not None]
        if marked:
            ax.plot(*zip(*marked), color=color, marker="o", linestyle="--", label=label)
    ax.set(title="GenRM RL", xlabel="step")
    ax.legend(fontsize=7)
    written: list[str] = []
    _save(fig, out, "grm_reward.png", written)
    return written


def pick_critiques(run_dir: Path, caught: int = 3, missed: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Real judged rollouts: flawed positives the GenRM caught, and one it missed (the checker is the truth)."""
    records = [r for r in _records(run_dir / "critiques.jsonl") if r.get("monitor_verdict") not in (None, -1)]
    records.reverse()  # latest first
    hits = [r for r in records if r.get("status") == "ok" and r.get("verdict") not in (None, -1)]
    misses = [r for r in records if r.get("status") == "ok" and r.get("verdict") == -1]
    return {"caught": hits[:caught], "missed": misses[:missed]}


def genrm_scores(result: dict[str, Any]) -> dict[str, Any]:
    """One GenRM evaluation (`fapo.eval.grm_bench`, percentages) as the report's row: held-out F1, acc_err,
    acc_corr, false alarms (100 - acc_corr: clean rows not called clean, i.e. flawed or no verdict),
    FlawedPositiveBench-style scores."""
    scores = _bench_scores(result)
    shown = result.get("shown")
    if shown is not None:
        scores["shown"] = {**_bench_scores(shown),
                           "differ_called_wrong": _share(shown["differ_called_wrong"], shown["differ"]),
                           "agree_called_wrong": _share(shown["agree_called_wrong"], shown["agree"])}
    return scores


def _bench_scores(result: dict[str, Any]) -> dict[str, Any]:
    subset = next(iter(result["subsets"].values()))
    fpb = result["flawed_positive_bench"]
    acc_corr = subset["acc_corr"]
    return {"rows": subset.get("n"), "f1": subset["f1"], "acc_err": subset["acc_err"], "acc_corr": acc_corr,
            "false_alarms": None if acc_corr is None else round(100 - acc_corr, 4), "fpb_f1": fpb["f1"],
            "fpb_precision": fpb["precision"], "fpb_recall": fpb["recall"]}


def _share(part: int, whole: int) -> float | None:
    return None if not whole else round(100 * part / whole, 4)


GRM_COLUMNS = ("f1", "acc_err", "acc_corr", "false_alarms", "fpb_precision", "fpb_recall", "fpb_f1")


def grm_table(report: dict[str, Any]) -> list[str]:
    """The GenRM before RL, at each scored checkpoint and after RL, on the same held-out rows (markdown lines)."""
    rl = report["config"]
    rows = [("warm-start (SFT only)", report.get("grm_before"))]
    rows += [(f"RL step {step}", scores) for step, scores in sorted(report.get("grm_checkpoints", {}).items(),
                                                                     key=lambda item: int(item[0]))]
    reward = "" if rl.get("grm_process_reward", True) else ", R_outcome alone"
    rows.append((f"after RL ({rl['grm_rl_steps']} steps, lr {rl['grm_rl_lr']:g}{reward})" if rl["grm_rl_steps"]
                 else "warm-start (no RL in this run)", report["grm"]))
    lines = ["| GenRM | rows | F1 | acc_err | acc_corr | false alarms | FPB precision | FPB recall | FPB F1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, scores in rows:
        if scores is not None:
            lines.append(f"| {name} | {scores['rows']} | " + " | ".join(fmt(scores[k]) for k in GRM_COLUMNS) + " |")
    shown = [(name, scores) for name, scores in rows if scores is not None and scores.get("shown")]
    if shown:
        lines += ["", "What the critiques compute against what they say: each critique sets a paragraph's expected "
                  "result beside its written one (\"= 4 vs 5\") before its verdict word. \"Shown\" is the verdict those "
                  "comparisons give (the first paragraph whose two results differ; `fapo.testbed.checker.shown_verdict`), "
                  "scored on the same rows; then how often the first paragraph whose two results differ was called wrong (per "
                  "critique with one), and how often a paragraph whose results agree was.", "",
                  "| GenRM | F1 said | F1 shown | FPB F1 said | FPB F1 shown | first difference called wrong | "
                  "agreeing paragraph called wrong |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {fmt(s['f1'])} | {fmt(s['shown']['f1'])} | {fmt(s['fpb_f1'])} | "
                  f"{fmt(s['shown']['fpb_f1'])} | {fmt(s['shown']['differ_called_wrong'])} | "
                  f"{fmt(s['shown']['agree_called_wrong'])} |" for name, s in shown]
    return lines


def _row(name: str, entry: dict[str, Any], per_seed: bool = True) -> str:
    acc, fl = fmt(entry["accuracy"], True), fmt(entry["flawed_ratio"], True)
    if per_seed and "accuracy_per_seed" in entry:
        acc += " [" + ", ".join(fmt(v, True) for v in entry["accuracy_per_seed"]) + "]"
        fl += " [" + ", ".join(fmt(v, True) for v in entry["flawed_ratio_per_seed"]) + "]"
    diag = entry.get("diagnostics") or {}
    return (f"| {name} | {acc} | {fl} | {fmt(diag.get('skip_share'), True)} | {fmt(entry['mean_length'])} | "
            f"{fmt(entry.get('step_s'))} | {fmt(entry.get('clip_fraction'), True)} |")


def _draw_lines(report: dict[str, Any]) -> list[str]:
    """The policy's warm-start draws: each one's held-out diagnostics and why it was refused, if it was."""
    draws = report.get("warmstart_draws") or []
    if not draws:
        return []
    lines = ["## The policy's warm-start draws", "",
             "Each draw is an SFT run on the same data with another seed. A draw is refused when its held-out rollouts "
             "say it cannot test FAPO's claim (`fapo.testbed.diagnose.untestable_reasons`: it skips more than half of "
             "the pairs, skipping pays less than 10 points over computing, or computing is right less than 55% of the "
             "time, where FAPO's penalised skip stays above the group's mean).", "",
             "| draw | seed | pair skipped | P(correct \\| skipped) | P(correct \\| computed) | P(clean \\| computed) "
             "| used | why refused |", "|---|---|---|---|---|---|---|---|"]
    for d in draws:
        used = "yes" if d is draws[-1] else "no"
        lines.append(f"| {d['draw']} | {d['seed']} | {fmt(d['skip_share'], True)} | {fmt(d['p_correct_skipped'], True)} "
                     f"| {fmt(d['p_correct_computed'], True)} | {fmt(d.get('p_clean_computed'), True)} | {used} | {'; '.join(d['refused']) or '—'} |")
    return lines + [""]


def _diagnostics_lines(report: dict[str, Any]) -> list[str]:
    from fapo.testbed.diagnose import REASONS

    names = ["initial"] + [a for a in ARMS if a in report]
    lines = ["## Why rollouts are flawed, and whether the shortcut pays", "",
             "Held-out rollouts. On problems with a cancelling pair \"Add K. Subtract K.\": the share of rollouts that "
             "skip it and the accuracy of each path; then each class of flawed positive as a share of correct rollouts.",
             "", "| | " + " | ".join(LABELS.get(n, "initial") for n in names) + " |",
             "|---|" + "---|" * len(names)]
    diags = [report["diagnostics"][n] for n in names]
    for key, label in (("skip_share", "pair skipped"), ("p_correct_skipped", "P(correct \\| skipped)"),
                       ("p_correct_computed", "P(correct \\| computed)"),
                       ("p_clean_computed", "P(clean and correct \\| computed)"),
                       ("p_correct_no_pair", "P(correct \\| no pair)")):
        lines.append(f"| {label} | " + " | ".join(fmt(d.get(key), True) for d in diags) + " |")
    for reason in REASONS:
        lines.append(f"| {reason.replace('_', ' ')} | " + " | ".join(fmt(d["reasons"][reason], True) for d in diags) + " |")
    return lines + [""]


def _grm_lines(report: dict[str, Any]) -> list[str]:
    grm, judging = report.get("grm"), report.get("judging")
    if grm is None:
        return ["## The GenRM", "", "Not trained in this run: the step checker is FAPO's only judge.", ""]
    return [
        "## The GenRM", "",
        "What it learned from: the step checker twice over, SFT on the checker's critiques of testbed solutions, then "
        "GenRM RL (R_outcome + R_process) against the checker's labels. Below, the GenRM before and after RL on the "
        "same held-out critic rows, which it never trained on (percentages; false alarms = 100 - acc_corr, the clean "
        "rows it did not call clean: flawed, or no verdict). \"FPB\" is FlawedPositiveBench's metric computed on testbed rows whose final "
        "answer is right, not the paper's benchmark. The checker-judged FAPO arm is judged by the same checker the "
        "evaluation uses.", "", *grm_table(report), "",
        f"While judging FAPO's rollouts (every step, every seed; {judging['judged']} judgements) the judge called "
        f"{fmt(judging['judge_flawed_ratio'], True)} of the verified-correct rollouts flawed, where the step checker "
        f"calls {fmt(judging['checker_flawed_ratio'], True)} flawed; they agreed on "
        f"{fmt(judging['agreement'], True)} of them, and {fmt(judging['no_verdict_share'], True)} of the "
        "judgements gave no verdict (no penalty).", ""]


def _genrm_warmstart_line(config: dict[str, Any]) -> list[str]:
    """The GenRM warm-start's settings that differ from the testbed preset (with the blank line after), or []."""
    heal, steps = config.get("critic_heal"), (config.get("grm_warmstart") or {}).get("max_steps")
    parts = [f"{heal} healed pair slips appended to its data, each followed by its clean twin (`--critic-heal`)"] if heal else []
    parts += [f"{steps} SFT steps"] if steps else []
    if not parts or config.get("judge") == "oracle":
        return []
    return ["The GenRM's warm-start: " + "; ".join(parts) + ".", ""]


def _markdown(report: dict[str, Any], critiques: dict[str, list[dict[str, Any]]], plots: list[str]) -> str:
    config = report["config"]
    lines = [
        "# fapo demo report", "",
        f"Data seed {config.get('data_seed', 0)}, RL seeds {report['seeds']}; {config['policy_rl_steps']} optimizer "
        f"steps per run at lr {config.get('policy_rl_lr', 1e-4):g}, "
        f"{config['policy_rl_steps'] // 4} generation batches of 8 prompts x 8 rollouts. Judges for FAPO: "
        f"{config['judge']}, each served by `fapo serve-grm` workers behind the client. Final numbers: "
        f"{config['eval_problems']} held-out testbed problems x {config['eval_samples']} samples at T = 1, the step "
        "checker as the judge of flaws; mean over seeds [per seed].", "",
    ]
    lines += _genrm_warmstart_line(config)
    lines += [f"![{plots[0]}]({plots[0]})", ""] if plots else []
    lines += ["| arm | accuracy | flawed-positive ratio | pair skipped | mean length | step time (s) | clip fraction |",
              "|---|---|---|---|---|---|---|", _row("initial (warm-start)", report["initial"], per_seed=False)]
    lines += [_row(LABELS[arm], {**report[arm], "diagnostics": report["diagnostics"][arm]})
              for arm in ARMS if arm in report]
    lines += ["", "## Checks", "", "| claim | seen | held |", "|---|---|---|"]
    lines += [f"| {c['claim']} | {c['seen']} | {'yes' if c['held'] else '**no**'} |" for c in report["checks"]]
    overhead = report["overhead"]
    lines += ["", "FAPO / GRPO step time: " + ", ".join(f"{LABELS[a]} **{fmt(v)}**" for a, v in overhead.items())
              + " (same machine, same run, median step after the first).", ""]
    lines += _draw_lines(report) + _diagnostics_lines(report) + _grm_lines(report) + ["## Plots", ""]
    lines += [f"![{p}]({p})" for p in plots[1:]]
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


def write_report(out: Path, *, config: dict[str, Any], warm: dict[str, Any], grm_dir: str | None,
                 grm_report: dict[str, Any] | None, initial: dict[str, Any], runs: list[dict[str, Any]],
                 timings: dict[str, float]) -> dict[str, Any]:
    """Write report.json, report.md and the plots into `out`; return report.json's content."""
    arms = summarize_arms(runs)
    seeds = sorted({r["seed"] for r in runs})
    report: dict[str, Any] = {
        **arms,
        "initial": initial,
        "diagnostics": {"initial": initial["diagnostics"],
                        **{arm: summarize_diagnostics([r["eval"] for r in runs if r["arm"] == arm]) for arm in arms}},
        "clip_fraction": {arm: arms[arm]["clip_fraction"] for arm in arms},
        "overhead": {arm: arms[arm]["step_s"] / arms["grpo"]["step_s"] for arm in arms if arm != "grpo"},
        "seeds": seeds,
        "config": config,
        "policy_warmstart_eval": warm["policy"].get("eval"),
        "warmstart_draws": warm.get("draws", []),
        "runs": runs,
        "timings": timings,
    }
    held_out: dict[int, dict[str, Any]] = {}
    if grm_report is not None:
        report["grm"] = genrm_scores(grm_report["after"])
        if "before" in grm_report:
            report["grm_before"] = held_out[0] = genrm_scores(grm_report["before"])
            report["grm_checkpoints"] = {str(step): genrm_scores(r) for step, r in grm_report["checkpoints"].items()}
            held_out.update({int(step): scores for step, scores in report["grm_checkpoints"].items()})
            held_out[config["grm_rl_steps"]] = report["grm"]
        report["judging"] = judging_in_training(runs)
    report["checks"] = check_targets(report)
    grm_rl_dir = None if grm_dir is None else (Path(grm_dir).parent if Path(grm_dir).name == "final" else Path(grm_dir))
    plots = plot_training(runs, grm_rl_dir, out, held_out)
    fapo_runs = [r for r in runs if r["arm"] == "fapo"]
    critiques = pick_critiques(Path(fapo_runs[0]["output_dir"])) if fapo_runs else {"caught": [], "missed": []}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(_markdown(report, critiques, plots))
    return report
