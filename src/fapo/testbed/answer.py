"""The testbed's strict answer rule: when does a rollout's final answer count?

A completion has an answer only if (1) it was not cut at the length limit, (2) it contains exactly
one `\\boxed{...}`, and (3) nothing but whitespace follows that box. Then `fapo.verify` decides
whether the boxed answer equals the problem's answer, as for any real task. The rule is strict on
purpose: with "any last box counts", GRPO learned within ~30 steps never to stop and to pad the
completion with `}}}}` up to the length limit (issue 4, prototype evidence).

Owns the rule. Equivalence belongs to `fapo.verify`; reasoning quality to `fapo.testbed.checker`.
"""

from __future__ import annotations

from fapo.boxed import count_boxed, last_boxed
from fapo.testbed.task import Problem, parse_problem


def strict_final_answer(completion: str, truncated: bool = False) -> str | None:
    """The content of the completion's single final box, or None when the rule gives no answer."""
    if truncated or count_boxed(completion) != 1:
        return None
    content = last_boxed(completion)
    if content is None:
        return None
    tail = completion.rstrip()
    if not tail.endswith("{" + content + "}"):
        return None
    return content


def _as_problem(problem: Problem | str) -> Problem:
    if isinstance(problem, Problem):
        return problem
    parsed = parse_problem(problem)
    if parsed is None:
        raise ValueError(f"not a testbed problem: {problem[:80]!r}")
    return parsed


def are_correct(problems: list[Problem | str], completions: list[str], truncated: list[bool] | None = None) -> list[bool]:
    """For each rollout: strict rule satisfied and the boxed answer verified equal to the gold answer.

    `problems` are `Problem`s or problem texts; `truncated[i]` says completion i hit the length limit.
    """
    from fapo.verify import verify_batch

    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    truncated = truncated or [False] * len(completions)
    golds = [str(_as_problem(p).answer) for p in problems]
    answered = [i for i, c in enumerate(completions) if strict_final_answer(c, truncated[i]) is not None]
    results = verify_batch([completions[i] for i in answered], [golds[i] for i in answered]) if answered else []
    correct = [False] * len(completions)
    for i, result in zip(answered, results, strict=True):
        correct[i] = result.correct is True
    return correct


def is_correct(problem: Problem | str, completion: str, truncated: bool = False) -> bool:
    """One rollout's correctness under the strict rule (see `are_correct` for batches)."""
    return are_correct([problem], [completion], [truncated])[0]
