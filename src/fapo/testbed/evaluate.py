"""Minimal measurements of testbed models: a policy's accuracy and flawed-positive ratio, a GenRM's F1.

`evaluate_policy` samples k rollouts per held-out problem (T = 1 by default), scores them with the
strict answer rule + `fapo.verify`, and asks the checker which correct ones are flawed.
`evaluate_grm` decodes a GenRM greedily on critic rows and scores it the ProcessBench way
(docs/design.md §1.3): acc_err, acc_corr, their harmonic mean F1, plus FlawedPositiveBench precision,
recall and F1 on the rows whose final answer is correct. Correctness is `fapo.outcome`'s (through
`fapo.testbed.answer`), the counting and the empty-case convention `fapo.metrics`' (an undefined ratio
is NaN); this module is the testbed's small version, decoding with `model.generate` directly, used after
warm-start. Must not train.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from fapo.grm.prompt import grm_messages, parse_verdict
from fapo.metrics import flawed_positive_scores, harmonic_mean, processbench_counts, ratio
from fapo.steps import split_steps
from fapo.testbed.answer import are_correct
from fapo.testbed.checker import earliest_error
from fapo.testbed.diagnose import diagnose
from fapo.testbed.task import parse_problem, policy_messages


@dataclass(frozen=True)
class PolicyEval:
    """A policy on held-out problems, k samples each."""

    accuracy: float
    """Share of rollouts correct under the strict answer rule (avg@k)."""
    flawed_positive_ratio: float
    """Share of correct rollouts that the checker calls flawed."""
    truncated_share: float
    """Share of rollouts cut at the length limit (they count as no answer)."""
    rollouts: int
    seconds: float
    diagnostics: dict[str, Any] | None = None
    """`fapo.testbed.diagnose.diagnose` of the rollouts: skip share, accuracy by path, flaw classes."""


@dataclass(frozen=True)
class GrmEval:
    """A GenRM on critic rows (ProcessBench metrics and FlawedPositiveBench metrics)."""

    acc_err: float
    """Share of erroneous rows whose exact earliest-error index is named."""
    acc_corr: float
    """Share of error-free rows judged -1."""
    f1: float
    """Harmonic mean of acc_err and acc_corr."""
    fpb_precision: float
    """On rows with a correct final answer: precision of "flawed"."""
    fpb_recall: float
    fpb_f1: float
    invalid_share: float
    """Share of critiques with no valid `\\boxed{k}` (counted as wrong, never as -1)."""
    rows: int
    seconds: float


def _generate(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int,
              samples: int, temperature: float, batch_size: int) -> list[tuple[str, bool]]:
    """(completion text, truncated) for each prompt x sample, prompt-major."""
    import torch

    out: list[tuple[str, bool]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in chunk]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=samples,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, use_cache=True,
                                 **sampling)
        for row in ids[:, batch["input_ids"].shape[1] :]:
            finished = bool((row == tokenizer.eos_token_id).any())
            out.append((tokenizer.decode(row, skip_special_tokens=True), not finished))
    return out


def evaluate_policy(model: Any, tokenizer: Any, problems: list[str], samples: int = 8, temperature: float = 1.0,
                    max_new_tokens: int = 128, batch_size: int = 256, seed: int = 0) -> PolicyEval:
    """Sample `samples` rollouts per problem text and measure accuracy and the flawed-positive ratio."""
    import torch

    start = time.perf_counter()
    torch.manual_seed(seed)
    model.eval()
    rollouts = _generate(model, tokenizer, [policy_messages(p) for p in problems], max_new_tokens, samples,
                         temperature, max(1, batch_size // samples))
    rollout_problems = [p for p in problems for _ in range(samples)]
    correct = are_correct(rollout_problems, [t for t, _ in rollouts], [cut for _, cut in rollouts])
    flawed = [
        earliest_error(parse_problem(p), split_steps(text)) != -1
        for p, (text, _), ok in zip(rollout_problems, rollouts, correct, strict=True)
        if ok
    ]
    return PolicyEval(
        accuracy=ratio(sum(correct), len(correct)),
        flawed_positive_ratio=ratio(sum(flawed), len(flawed)),
        truncated_share=ratio(sum(cut for _, cut in rollouts), len(rollouts)),
        rollouts=len(rollouts),
        seconds=time.perf_counter() - start,
        diagnostics=diagnose(rollout_problems, [t for t, _ in rollouts], correct),
    )


def score_verdicts(rows: list[dict[str, Any]], verdicts: list[int | None], seconds: float = 0.0) -> GrmEval:
    """ProcessBench and FlawedPositiveBench metrics of `verdicts` (None = no valid verdict) on `rows`, as
    fractions: `fapo.metrics`' counts, NaN for an empty class, precision/recall 0 with nothing to count."""
    labels = [r["label"] for r in rows]
    n_error, found, n_clean, cleared = processbench_counts(labels, verdicts)
    acc_err, acc_corr = ratio(found, n_error), ratio(cleared, n_clean)
    fpb = flawed_positive_scores(labels, [bool(r["final_answer_correct"]) for r in rows], verdicts)
    precision = fpb.true_positive / max(fpb.true_positive + fpb.false_positive, 1)
    recall = fpb.true_positive / max(fpb.true_positive + fpb.false_negative, 1)
    f1 = math.nan if math.isnan(acc_err) or math.isnan(acc_corr) else harmonic_mean(acc_err, acc_corr)
    return GrmEval(acc_err, acc_corr, f1, precision, recall,
                   harmonic_mean(precision, recall), ratio(sum(v is None for v in verdicts), len(verdicts)),
                   len(rows), seconds)


def evaluate_grm(model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_new_tokens: int = 320,
                 batch_size: int = 64) -> GrmEval:
    """Greedy critiques of critic rows (`problem, steps, ground_truth, label, final_answer_correct`)."""
    start = time.perf_counter()
    model.eval()
    prompts = [grm_messages(r["problem"], r["steps"], r.get("ground_truth")) for r in rows]
    critiques = _generate(model, tokenizer, prompts, max_new_tokens, 1, 0.0, batch_size)
    verdicts = [parse_verdict(text, len(r["steps"])) if not cut else None
                for r, (text, cut) in zip(rows, critiques, strict=True)]
    return score_verdicts(rows, verdicts, time.perf_counter() - start)
