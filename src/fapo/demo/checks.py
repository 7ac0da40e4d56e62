"""The demo's claims, each checked on the report's held-out numbers (per seed where the claim is per seed)."""

from __future__ import annotations

import math
import statistics
from typing import Any

ARMS = ("grpo", "fapo", "fapo_oracle")
LABELS = {"grpo": "GRPO", "fapo": "FAPO, trained GenRM", "fapo_oracle": "FAPO, oracle judge"}


def fmt(value: float | None, percent: bool = False) -> str:
    """A number for a table: a percentage with one decimal (fractions), else 3 significant digits; "—" if undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.1f}%" if percent else f"{value:.3g}"


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _points(values: list[float]) -> str:
    return ", ".join(f"{100 * v:+.1f}" for v in values)


def _policy_checks(report: dict[str, Any], add) -> None:
    """The policy arms' claims (per seed, with every seed's value shown)."""
    initial, grpo = report["initial"], report["grpo"]
    for arm in (a for a in ARMS if a in report):
        gains = [a - initial["accuracy"] for a in report[arm]["accuracy_per_seed"]]
        add(f"{LABELS[arm]}: accuracy >= 5 points above the warm-start in every seed", _points(gains) + " points",
            all(100 * g >= 5 for g in gains))
    rises = [f - initial["flawed_ratio"] for f in grpo["flawed_ratio_per_seed"]]
    add("GRPO spreads the shortcut: flawed-positive ratio >= 10 points above the warm-start in every seed",
        _points(rises) + " points", all(100 * r >= 10 for r in rises))
    start_shortcut = (report["diagnostics"].get("initial") or {}).get("reasons", {}).get("skipped_pair")
    grpo_shortcut = (report["diagnostics"].get("grpo") or {}).get("skipped_pair_per_seed") or []
    if start_shortcut is not None and grpo_shortcut:
        add("GRPO raises the shortcut (skipped-pair flawed positives, share of correct) above the warm-start's in "
            "every seed", f"{fmt(start_shortcut, True)} -> " + ", ".join(fmt(g, True) for g in grpo_shortcut),
            all(g is not None and g > start_shortcut for g in grpo_shortcut))
    for arm in ("fapo_oracle", "fapo"):
        if arm not in report:
            continue
        fapo = report[arm]
        pairs = list(zip(fapo["flawed_ratio_per_seed"], grpo["flawed_ratio_per_seed"]))
        add(f"{LABELS[arm]}: flawed ratio <= 0.5 x GRPO's in every seed",
            ", ".join(f"{100 * f:.1f}% vs {100 * g:.1f}%" for f, g in pairs), all(f <= 0.5 * g for f, g in pairs))
        deltas = [fa - ga for fa, ga in zip(fapo["accuracy_per_seed"], grpo["accuracy_per_seed"])]
        mean_delta = statistics.fmean(deltas)
        add(f"{LABELS[arm]}: mean accuracy >= GRPO's - 2 points",
            f"{100 * mean_delta:+.1f} points (per seed {_points(deltas)})", 100 * mean_delta >= -2)
        add(f"{LABELS[arm]}: no seed more than 3 points under its GRPO twin", _points(deltas),
            all(100 * d >= -3 for d in deltas))
        add(f"{LABELS[arm]}: per-seed flawed ratios do not overlap GRPO's",
            f"max {100 * max(fapo['flawed_ratio_per_seed']):.1f}% < min {100 * min(grpo['flawed_ratio_per_seed']):.1f}%",
            max(fapo["flawed_ratio_per_seed"]) < min(grpo["flawed_ratio_per_seed"]))
        shortcut = list(zip(report["diagnostics"][arm]["skipped_pair_per_seed"], grpo_shortcut))
        add(f"{LABELS[arm]}: the shortcut alone (skipped-pair flawed positives, share of correct) <= 0.5 x GRPO's "
            "in every seed", ", ".join(f"{fmt(f, True)} vs {fmt(g, True)}" for f, g in shortcut),
            all(f is not None and g is not None and f <= 0.5 * g for f, g in shortcut))
    if "fapo" in report and "fapo_oracle" in report:
        gap = grpo["flawed_ratio"] - report["fapo_oracle"]["flawed_ratio"]
        closed = (grpo["flawed_ratio"] - report["fapo"]["flawed_ratio"]) / gap if gap > 0 else math.nan
        add("FAPO with the trained GenRM closes >= 70% of the GRPO to FAPO-oracle flawed-ratio gap (seed means)",
            f"{100 * closed:.0f}% of the gap" if math.isfinite(closed) else "no gap", math.isfinite(closed) and closed >= 0.7)


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The demo's claims, each measured on held-out numbers: what was required, what was seen (every seed's value
    where the claim is per seed), whether it held.

    Accuracy and flawed ratios are fractions; "points" are percentage points.
    """
    checks = []

    def add(claim: str, seen: str, held: bool) -> None:
        checks.append({"claim": claim, "seen": seen, "held": bool(held)})

    draws = report.get("warmstart_draws")
    if draws:
        add("the policy's warm-start can test the claim (held-out diagnostics; refused draws are redrawn)",
            f"draw {draws[-1]['draw']} of {len(draws)} tried" + ("" if not draws[-1]["refused"] else
                                                                 ": " + "; ".join(draws[-1]["refused"])),
            not draws[-1]["refused"])
    _policy_checks(report, add)
    before, after = report.get("grm_before"), report.get("grm")
    if before is not None and after is not None:
        gain = _difference(after["f1"], before["f1"])
        add("GenRM RL: held-out F1 >= 15 points above the warm-start's", f"{fmt(before['f1'])} -> {fmt(after['f1'])}",
            gain is not None and gain >= 15)
        add("GenRM after RL: false alarms <= 10% of clean held-out rows",
            f"{fmt(before['false_alarms'])}% -> {fmt(after['false_alarms'])}%",
            after["false_alarms"] is not None and after["false_alarms"] <= 10)
        add("GenRM after RL: FlawedPositiveBench-style F1 >= 85 (testbed rows)",
            f"{fmt(before['fpb_f1'])} -> {fmt(after['fpb_f1'])}", after["fpb_f1"] is not None and after["fpb_f1"] >= 85)
    clips = {arm: report[arm].get("clip_fraction_per_seed") or [report[arm]["clip_fraction"]]
             for arm in ARMS if arm in report}
    add("the clip binds (clip fraction > 0 in every run)",
        "; ".join(f"{a} " + ", ".join("—" if c is None else f"{100 * c:.2f}%" for c in cs) for a, cs in clips.items()),
        all(c is not None and c > 0 for cs in clips.values() for c in cs))
    return checks
