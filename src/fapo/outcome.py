"""One rule for "is this rollout correct": the answer extracted, the answer rule, truncation, equivalence.

    outcomes = rollout_outcomes(texts, golds, truncated, rule="strict", truncation="wrong")
    [o.correct for o in outcomes]

A rollout is correct when the truncation rule lets it have an answer ("wrong": a rollout cut at the length
limit has none; "tail": verl-recipe fapo's rule, every rollout's answer is read from its last `TAIL_CHARS`
characters, cut or not, so a cut rollout whose tail holds the right answer counts and only DAPO's overlong
penalty, applied elsewhere, costs it), the answer rule accepts it ("last_boxed":
any response, the last `\\boxed{}` is its answer; "strict": exactly one box with nothing after it but
whitespace or a closer `.`, `$`, `\\]`: `fapo.boxed.single_final_box`), and `fapo.verify` finds its final answer equivalent to the gold.
Training rewards (`fapo.train.reward_funcs`), policy evaluation (`fapo.eval.policy`) and the testbed
(`fapo.testbed.answer`, warm-start evaluation) all decide it here. Truncation is the caller's to measure
(token ids and EOS in training, the generator's finish reason in evaluation): it arrives as a flag.

Owns the rule. Knows nothing about models, judges or rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fapo.boxed import single_final_box
from fapo.verify import Status as VerifyStatus
from fapo.verify import verify_batch

AnswerRule = Literal["last_boxed", "strict"]
ANSWER_RULES: tuple[AnswerRule, ...] = ("last_boxed", "strict")
TruncationRule = Literal["wrong", "tail"]
TRUNCATION_RULES: tuple[TruncationRule, ...] = ("wrong", "tail")
TAIL_CHARS = 300
"""Characters of a rollout the "tail" rule reads its answer from (verl-recipe fapo's `verify`: `solution_str[-300:]`)."""


@dataclass(frozen=True)
class RolloutOutcome:
    """What one rollout's final answer is and whether it counts as correct."""

    correct: bool
    """Answer counted (see `answer_counted`) and verified equivalent to the gold."""
    pred: str | None
    """The extracted final answer (`fapo.verify`'s), None when there is none."""
    verify_status: VerifyStatus
    """`fapo.verify`'s status: "ok", "no_answer", "timeout" or "error"."""
    answer_counted: bool
    """The rules accepted the rollout: not truncated (or the "tail" rule) and, with "strict", a single final box."""


def answer_text(text: str, truncation: TruncationRule) -> str:
    """The part of a rollout its answer is read from: all of it ("wrong"), or its last `TAIL_CHARS` ("tail")."""
    if truncation not in TRUNCATION_RULES:
        raise ValueError(f"truncation rule must be one of {TRUNCATION_RULES}, got {truncation!r}")
    return text[-TAIL_CHARS:] if truncation == "tail" else text


def answer_counted(text: str, truncated: bool, rule: AnswerRule, truncation: TruncationRule = "wrong") -> bool:
    """Whether the rules let `text` (already `answer_text`) have an answer at all (before equivalence is checked)."""
    if rule not in ANSWER_RULES:
        raise ValueError(f"answer rule must be one of {ANSWER_RULES}, got {rule!r}")
    cut_off = truncated and truncation == "wrong"
    return not cut_off and (rule != "strict" or single_final_box(text) is not None)


def rollout_outcomes(texts: Sequence[str], golds: Sequence[str], truncated: Sequence[bool] | None = None,
                     rule: AnswerRule = "last_boxed", *, truncation: TruncationRule = "wrong",
                     workers: int | None = None, timeout: float = 5.0) -> list[RolloutOutcome]:
    """The outcome of each rollout `texts[i]` against `golds[i]`; `truncated[i]`: cut at the length limit.

    Every answer text (`answer_text`) is verified (in `fapo.verify`'s worker processes, `workers` and `timeout`
    as there), so `pred` and `verify_status` describe it even when the rules do not count its answer.
    """
    if len(texts) != len(golds) or (truncated is not None and len(truncated) != len(texts)):
        raise ValueError(f"{len(texts)} texts, {len(golds)} golds and "
                         f"{len(truncated) if truncated is not None else len(texts)} truncation flags must match")
    cut = list(truncated) if truncated is not None else [False] * len(texts)
    read = [answer_text(t, truncation) for t in texts]
    counted = [answer_counted(t, c, rule, truncation) for t, c in zip(read, cut, strict=True)]
    results = verify_batch(read, list(golds), workers=workers, timeout=timeout) if texts else []
    return [RolloutOutcome(r.correct and ok, r.pred, r.status, ok) for r, ok in zip(results, counted, strict=True)]
