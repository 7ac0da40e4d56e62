"""Diagnostics of testbed rollouts: why a correct rollout is flawed, and whether the shortcut pays.

Two questions decide whether the testbed can show FAPO's mechanism (docs/design.md §3):
- *What are the flawed positives?* `flaw_reason` puts each rollout into one class, from the
  checker's finding and the path the rollout took: "clean", "skipped_pair" (the shortcut: a
  cancelling pair left out), "merged_steps" (another operation skipped, merged or reordered),
  "early_answer" (stops and states an answer before the operations are done), "wrong_arithmetic"
  (a step with a wrong result: slips that cancel, in a correct rollout), "broken_chain" (a step that
  does not start from the previous result), "answer_guess" (a boxed answer the steps do not reach),
  "extra_step" (a step after the operations or the answer), "unreadable" (a step the checker
  cannot read: a format quirk, which would be a bug in the experiment if it were common).
- *Does the shortcut pay?* On problems with a cancelling pair, `pair_path` says whether a rollout
  skipped the pair or computed it, and `diagnose` reports P(correct | skipped) against
  P(correct | computed) and the share of pair rollouts that skip.

Owns these classifications. Knows nothing about models, training or files.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from fapo.steps import split_steps
from fapo.testbed.checker import check_steps
from fapo.testbed.task import Problem, parse_problem

REASONS = ("clean", "skipped_pair", "merged_steps", "early_answer", "wrong_arithmetic", "broken_chain",
           "answer_guess", "extra_step", "unreadable")
"""Every class `flaw_reason` returns, "clean" first."""

_STEP_OP = re.compile(r"\(\d{1,9}\) -?\d{1,9}([+*-])(\d{1,9}) = -?\d{1,9}")


def pair_path(problem: Problem, steps: Sequence[str]) -> str:
    """How a rollout treats the problem's cancelling pair "Add K. Subtract K." (the one with the largest K).

    "none" (the problem has no pair), "computed" (a step adds K and a later step subtracts K),
    "skipped" (no step adds or subtracts K, and there is an operation step for every other operation),
    or "other" (one of the two only, or a rollout that stops before the other operations are done).
    """
    pairs = problem.cancelling_pairs()
    if not pairs:
        return "none"
    k = max(problem.ops[i].operand for i in pairs)
    ops = [(m[1], int(m[2])) for m in (_STEP_OP.fullmatch(s.strip()) for s in steps) if m is not None]
    adds = [i for i, op in enumerate(ops) if op == ("+", k)]
    subtracts = [i for i, op in enumerate(ops) if op == ("-", k)]
    if adds and any(j > adds[0] for j in subtracts):
        return "computed"
    return "skipped" if not adds and not subtracts and len(ops) >= len(problem.ops) - 2 else "other"


def flaw_reason(problem: Problem, steps: Sequence[str]) -> str:
    """The class (one of REASONS) of the rollout's earliest wrong step; "clean" if none."""
    found = check_steps(problem, list(steps))
    if found.index < 0:
        return "clean"
    if pair_path(problem, steps) == "skipped":
        return "skipped_pair"
    reason = found.reason
    if reason.startswith("it does not do the next operation"):
        return "merged_steps"
    if reason.startswith("the answer comes before"):
        return "early_answer"
    if reason.startswith("it does not continue"):
        return "broken_chain"
    if reason.startswith("the answer does not follow"):
        return "answer_guess"
    if reason.startswith(("all operations are already done", "nothing may follow")):
        return "extra_step"
    if reason == "the step cannot be read":
        return "unreadable"
    return "wrong_arithmetic"


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def diagnose(problems: Sequence[Problem | str], completions: Sequence[str], correct: Sequence[bool]) -> dict[str, Any]:
    """Breakdown of rollouts (`correct[i]` under the strict answer rule) as plain JSON.

    Keys: `rollouts`, `correct`, `reasons` (share of correct rollouts in each REASONS class),
    `pair_rollouts` (rollouts on problems with a cancelling pair), `skip_share` (share of those that
    skipped it), `p_correct_skipped`, `p_correct_computed` (accuracy on each path; None when a path
    was never taken), `p_clean_computed` (share of computed rollouts that are correct and clean) and
    the paths' counts. Shares are None when their denominator is empty.
    """
    if not len(problems) == len(completions) == len(correct):
        raise ValueError(f"{len(problems)} problems, {len(completions)} completions, {len(correct)} flags")
    reasons: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    path_correct: Counter[str] = Counter()
    path_clean: Counter[str] = Counter()
    for problem, completion, ok in zip(problems, completions, correct):
        parsed = parse_problem(problem) if isinstance(problem, str) else problem
        if parsed is None:
            raise ValueError(f"not a testbed problem: {str(problem)[:80]!r}")
        steps = split_steps(completion)
        path = pair_path(parsed, steps)
        paths[path] += 1
        path_correct[path] += bool(ok)
        if ok:
            reason = flaw_reason(parsed, steps)
            reasons[reason] += 1
            path_clean[path] += reason == "clean"
    n_correct = sum(reasons.values())
    pair_rollouts = sum(paths[p] for p in ("computed", "skipped", "other"))
    return {
        "rollouts": len(completions),
        "correct": n_correct,
        "reasons": {r: _share(reasons[r], n_correct) for r in REASONS},
        "pair_rollouts": pair_rollouts,
        "skip_share": _share(paths["skipped"], pair_rollouts),
        "skipped": paths["skipped"],
        "computed": paths["computed"],
        "p_correct_skipped": _share(path_correct["skipped"], paths["skipped"]),
        "p_correct_computed": _share(path_correct["computed"], paths["computed"]),
        "p_clean_computed": _share(path_clean["computed"], paths["computed"]),
        "p_correct_no_pair": _share(path_correct["none"], paths["none"]),
    }


TESTABLE_WARMSTART = {"max_skip_share": 0.5, "min_shortcut_edge": 0.10, "min_p_correct_computed": 0.55}
"""What a warm-started policy needs for the testbed to show FAPO's mechanism in a short RL run, on its held-out
rollouts of pair problems: it skips at most half of the pairs (GRPO has room to spread the skip, and it is
measurable); skipping is right at least 10 points more often than computing (the shortcut pays, so GRPO has a
reason to spread it); and computing is right at least 55% of the time.

The last is docs/design.md §3 on a pair problem. FAPO pays a skipped (or healed) correct rollout 1 - λ = 0 and
pushes it down only once the group's mean is above 0, i.e. once clean-correct rollouts outnumber wrong ones. At
the warm-start they need not on the computed path even in a good draw, because most of its correct rollouts can
be healed slips (data seed 21's first draw: 10% clean-correct, 36% wrong, BENCHMARKS.md "The demo across draws"); what RL can change in a short run is the wrong share, as it sharpens
the pair's addition and clean rollouts (reward +1) grow. Where computing is wrong more often than not, the groups'
mean stays below 0 for long and even a perfect judge leaves the penalised skip the better bet (the draw at 41% in
BENCHMARKS.md spread the skip under FAPO in every seed). 55% leaves 5 points for the sampling noise of ~200
computed rollouts. The thresholds were set before the draws that test them (data seeds 21-23) were run."""


def untestable_reasons(found: dict[str, Any], limits: dict[str, float] = TESTABLE_WARMSTART) -> list[str]:
    """Why a warm-start with these diagnostics (`diagnose`'s output) cannot test FAPO's claim; [] when it can."""
    skip, p_skip, p_comp = found.get("skip_share"), found.get("p_correct_skipped"), found.get("p_correct_computed")
    if skip is None or p_skip is None or p_comp is None:
        return ["no pair rollouts on one of the two paths: the shortcut cannot be measured"]
    reasons = []
    if skip > limits["max_skip_share"]:
        reasons.append(f"it already skips {100 * skip:.0f}% of pairs (> {100 * limits['max_skip_share']:.0f}%): "
                       "nothing left for GRPO to spread")
    if p_skip - p_comp < limits["min_shortcut_edge"]:
        reasons.append(f"the shortcut does not pay: skipping is right {100 * p_skip:.0f}%, computing "
                       f"{100 * p_comp:.0f}% (needs {100 * limits['min_shortcut_edge']:.0f} points more for skipping)")
    if p_comp < limits["min_p_correct_computed"]:
        reasons.append(f"computing is right only {100 * p_comp:.0f}% of the time (< "
                       f"{100 * limits['min_p_correct_computed']:.0f}%): FAPO's penalised skip (reward 0) stays above "
                       "the group's mean (docs/design.md §3)")
    return reasons


def monitor_metrics(problems: Sequence[str], completions: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    """`diagnose` of one training batch as flat metrics (NaN where a denominator is empty).

    Keys: `monitor/reason/<class>` (share of the batch's correct rollouts), `monitor/skip_share`,
    `monitor/p_correct_skipped`, `monitor/p_correct_computed`.
    """
    found = diagnose(problems, completions, correct)
    nan = float("nan")
    out = {f"monitor/reason/{r}": nan if v is None else v for r, v in found["reasons"].items()}
    for key in ("skip_share", "p_correct_skipped", "p_correct_computed"):
        out[f"monitor/{key}"] = nan if found[key] is None else found[key]
    return out
