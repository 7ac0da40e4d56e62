"""The testbed's answer rule: when does a rollout's final answer count?

The testbed uses the "strict" rule of `fapo.outcome` (the one rule training, evaluation and the testbed
share): a completion has an answer only if it was not cut at the length limit and it contains exactly one
`\\boxed{...}` with nothing after it but whitespace or a closer (`.`, `$`, `\\]`: `fapo.boxed.single_final_box`);
then `fapo.verify` decides whether the boxed answer
equals the problem's answer, as for any real task. The rule is strict on purpose: with "any last box
counts", GRPO learned within ~30 steps never to stop and to pad the completion with `}}}}` up to the length
limit.

Owns nothing but the testbed's choice of rule. Equivalence belongs to `fapo.verify`; reasoning quality to
`fapo.testbed.checker`.
"""

from __future__ import annotations

from fapo.boxed import single_final_box
from fapo.testbed.task import Problem, parse_problem

ANSWER_RULE = "strict"
"""The `fapo.outcome` answer rule the testbed trains and evaluates with."""


def strict_final_answer(completion: str, truncated: bool = False) -> str | None:
    """The content of the completion's single final box, or None when the rule gives no answer."""
    return None if truncated else single_final_box(completion)


def _as_problem(problem: Problem | str) -> Problem:
    if isinstance(problem, Problem):
        return problem
    parsed = parse_problem(problem)
    if parsed is None:
        raise ValueError(f"not a testbed problem: {problem[:80]!r}")
    return parsed


def are_correct(problems: list[Problem | str], completions: list[str], truncated: list[bool] | None = None) -> list[bool]:
    """For each rollout: `fapo.outcome`'s verdict under the strict rule against the problem's answer.

    `problems` are `Problem`s or problem texts; `truncated[i]` says completion i hit the length limit.
    """
    from fapo.outcome import rollout_outcomes

    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    golds = [str(_as_problem(p).answer) for p in problems]
    return [o.correct for o in rollout_outcomes(completions, golds, truncated, rule=ANSWER_RULE)]


def is_correct(problem: Problem | str, completion: str, truncated: bool = False) -> bool:
    """One rollout's correctness under the strict rule (see `are_correct` for batches)."""
    return are_correct([problem], [completion], [truncated])[0]
