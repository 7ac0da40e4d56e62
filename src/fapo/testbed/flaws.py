"""Flaw injection: solutions of testbed problems with one known kind of flaw, seeded.

The kinds, each an analogue of what the FAPO paper describes:
- `skip` (the shortcut): the solution leaves out a cancelling pair "Add K. Subtract K." and goes on
  from the value before it. The answer stays right and the solution avoids two error-prone
  two-digit steps, so for a tiny model *taking the shortcut raises the chance of a right answer*:
  GRPO rewards it and spreads it, FAPO can hold it back.
- `pair_slip`: the cancelling pair computed with a slip in its two-digit addition, carried to the end
  (the answer is wrong). In the policy's SFT mix it makes the warm-started policy unreliable at the
  pair, the way a model imitating a teacher that slips on carries is: computing the pair is the
  honest path, right most of the time but not always, while skipping it cannot slip. RL can sharpen
  the slips away (the right sum is the policy's most likely one), so the honest path stays learnable.
- `jump`: one step silently merges two adjacent operations ("(1) 7+9 = 16" for
  "(1) Add 4. (2) Add 5.");
  right value, invalid step.
- `compensate`: two arithmetic mistakes that cancel; the answer is right.
- `guess`: the solution stops early and states the right answer, which its steps do not reach.
- `mistake`: an arithmetic slip carried to the end; the answer is wrong.
- `heal`: the cancelling pair computed with a slip in its addition that its subtraction undoes (both
  steps wrong, the answer right): the *healed slip*, the flawed positive that RL grows out of
  `pair_slip` (docs/design.md §6.4). Not in the policy's SFT mix; the GenRM's data can hold it
  (`fapo.testbed.data.GenerateConfig.n_critic_heal`).
`clean` is the correct solution. Every `Solution` carries the checker's label and whether its
final answer is right, computed from its text, never from the flaw's intent.

Owns flaw construction and the flaw mix. Must not decide what is wrong (the checker does).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from fapo.testbed.answer import strict_final_answer
from fapo.testbed.checker import earliest_error
from fapo.testbed.task import Op, Problem, answer_step, clean_steps, op_step, render_solution

FLAW_KINDS = ("skip", "pair_slip", "jump", "compensate", "guess", "mistake", "heal")


@dataclass(frozen=True)
class FlawRates:
    """Probability of each flaw on a problem where it applies; the rest of the mass is clean.

    Rates are tried in the order of FLAW_KINDS; their sum must be <= 1.
    """

    skip: float = 0.0
    """Skip a cancelling pair (the shortcut; applies to problems that have one)."""
    pair_slip: float = 0.0
    """Compute the cancelling pair with a slip in its addition (applies to problems that have one)."""
    jump: float = 0.0
    """Merge two adjacent operations into one step (applies when two adjacent ops can merge)."""
    compensate: float = 0.0
    """Two mistakes that cancel (applies with >= 2 operations)."""
    guess: float = 0.0
    """Stop early and state the right answer."""
    mistake: float = 0.0
    """An arithmetic slip that makes the final answer wrong."""
    heal: float = 0.0
    """Compute the cancelling pair with a slip in its addition that the subtraction undoes (applies to problems
    that have one). Last in the order, so a mix without it draws what it drew before the kind existed."""

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        if any(not 0.0 <= v <= 1.0 for v in values) or sum(values) > 1.0 + 1e-9:
            raise ValueError(f"flaw rates must each be in [0, 1] and sum to <= 1; got {self}")

    @classmethod
    def parse(cls, text: str) -> FlawRates:
        """Read "skip=0.5,jump=0.05" (unnamed kinds are 0)."""
        rates: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep or name.strip() not in FLAW_KINDS:
                raise ValueError(f"bad flaw rate {item!r}: write kind=rate with kind in {', '.join(FLAW_KINDS)}")
            try:
                rates[name.strip()] = float(value)
            except ValueError as err:
                raise ValueError(f"bad flaw rate {item!r}: {value!r} is not a number") from err
        return cls(**rates)


SFT_RATES = FlawRates(skip=0.35, pair_slip=0.1, jump=0.05, compensate=0.03, guess=0.02)
"""Default flaw mix of the policy's SFT data. On problems with a cancelling pair: 35% skip it (the
shortcut, taken at a rate RL can amplify or suppress), 10% slip while computing it (so the computed path
pays less than the skip at the warm-start), the rest compute it right or carry a rarer flaw. Measured at a
warm-start (BENCHMARKS.md): P(correct | skipped) 0.74 vs P(correct | computed) 0.60 with 10%, 0.73 vs 0.27 with
20%; at 20% FAPO with a perfect judge spread the skip as GRPO did, since a flawed positive's reward 1 - λ = 0
beat computing while computing was right less than half as often as skipping (docs/design.md §3)."""

CRITIC_RATES = FlawRates(skip=0.25, pair_slip=0.05, jump=0.1, compensate=0.05, guess=0.05, mistake=0.2)
"""Default flaw mix of the critic data: about half of the rows are flawed, every kind present."""


@dataclass(frozen=True)
class Solution:
    """A solution of `problem` as steps, with its flaw kind and the checker's verdict."""

    problem: Problem
    steps: tuple[str, ...]
    flaw: str
    """"clean" or one of FLAW_KINDS."""
    label: int
    """Earliest wrong step by the checker, -1 if none."""
    final_answer_correct: bool
    """The final boxed answer equals the problem's answer."""


def _slip(rng: random.Random, value: int) -> int:
    """A plausible wrong result near `value` (off by 1, 2 or 10), kept non-negative."""
    candidates = [value + d for d in (-10, -2, -1, 1, 2, 10) if value + d >= 0]
    return rng.choice(candidates)


def _merge(first: Op, second: Op) -> Op | None:
    """One operation with the effect of `first` then `second`, or None if there is none (or it is a no-op)."""
    signed = {"add": 1, "subtract": -1}
    if first.kind in signed and second.kind in signed:
        net = signed[first.kind] * first.operand + signed[second.kind] * second.operand
        return None if net == 0 else Op("add" if net > 0 else "subtract", abs(net))
    if first.kind == second.kind == "multiply":
        return Op("multiply", first.operand * second.operand)
    return None


def _steps_with(problem: Problem, result_at: dict[int, int], skip: set[int] | None = None,
                merged: tuple[int, Op] | None = None, stop_at: int | None = None) -> list[str]:
    """Write a solution: `result_at[i]` overrides step i's result; ops in `skip` are left out;
    `merged=(i, op)` writes op in place of ops i and i+1; `stop_at=m` stops after m ops and boxes the
    true answer. Later steps continue correctly from whatever was written."""
    steps, value, i = [], problem.start, 0
    while i < len(problem.ops):
        if stop_at is not None and i == stop_at:
            return steps + [answer_step(problem.answer)]
        if skip and i in skip:
            i += 1
            continue
        op, width = (merged[1], 2) if merged and merged[0] == i else (problem.ops[i], 1)
        result = result_at.get(i, op.apply(value))
        steps.append(op_step(i + 1, value, op, result))
        value, i = result, i + width
    return steps + [answer_step(value)]


def _flawed_steps(problem: Problem, flaw: str, rng: random.Random) -> list[str] | None:
    """Steps of `problem` with `flaw`, or None when the flaw does not apply to this problem."""
    n = len(problem.ops)
    if flaw == "skip":
        pairs = problem.cancelling_pairs()
        return _steps_with(problem, {}, skip={(p := rng.choice(pairs)), p + 1}) if pairs else None
    if flaw == "pair_slip":
        pairs = problem.cancelling_pairs()
        return _steps_with(problem, {(p := rng.choice(pairs)): _slip(rng, problem.values[p])}) if pairs else None
    if flaw == "jump":
        spots = [i for i in range(n - 1) if _merge(problem.ops[i], problem.ops[i + 1])]
        if not spots:
            return None
        i = rng.choice(spots)
        return _steps_with(problem, {}, merged=(i, _merge(problem.ops[i], problem.ops[i + 1])))
    if flaw == "compensate":
        if n < 2:
            return None
        i, j = sorted(rng.sample(range(n), 2))
        return _steps_with(problem, {i: _slip(rng, problem.values[i]), j: problem.values[j]})
    if flaw == "guess":
        return _steps_with(problem, {}, stop_at=rng.randrange(n))
    if flaw == "mistake":
        i = rng.randrange(n)
        return _steps_with(problem, {i: _slip(rng, problem.values[i])})
    if flaw == "heal":
        pairs = problem.cancelling_pairs()
        if not pairs:
            return None
        p = rng.choice(pairs)
        return _steps_with(problem, {p: _slip(rng, problem.values[p]), p + 1: problem.values[p + 1]})
    raise ValueError(f"unknown flaw {flaw!r}; expected one of {FLAW_KINDS}")


def make_solution(problem: Problem, flaw: str, rng: random.Random) -> Solution | None:
    """A solution with `flaw` ("clean" or a FLAW_KINDS member); None if the flaw does not apply."""
    steps = clean_steps(problem) if flaw == "clean" else _flawed_steps(problem, flaw, rng)
    if steps is None:
        return None
    answer = strict_final_answer(render_solution(steps))
    return Solution(problem, tuple(steps), flaw, earliest_error(problem, steps), answer == str(problem.answer))


def flaw_applies(problem: Problem, flaw: str) -> bool:
    """Whether `make_solution(problem, flaw, ...)` can build that flaw for this problem."""
    n = len(problem.ops)
    if flaw in ("skip", "pair_slip", "heal"):
        return bool(problem.cancelling_pairs())
    if flaw == "jump":
        return any(_merge(problem.ops[i], problem.ops[i + 1]) for i in range(n - 1))
    if flaw == "compensate":
        return n >= 2
    return flaw in ("clean", "guess", "mistake") and n >= 1


def sample_solution(problem: Problem, rates: FlawRates, rng: random.Random) -> Solution:
    """Draw a solution from the flaw mix: each applicable flaw with its rate, else clean."""
    u, cumulative, chosen = rng.random(), 0.0, "clean"
    for flaw in FLAW_KINDS:
        if flaw_applies(problem, flaw):
            cumulative += getattr(rates, flaw)
            if u < cumulative:
                chosen = flaw
                break
    solution = make_solution(problem, chosen, rng)
    if solution is None:
        raise AssertionError(f"flaw {chosen!r} applies to {problem.text!r} but was not built")
    return solution
