"""The programmatic step checker: the exact earliest wrong step of a testbed solution.

Rules, applied to the steps in order (the first step that breaks one is the earliest error):
- An operation step must read `(i) a<op>b = c` ("(1) 7+3 = 10"; integers, op one of + - *).
  Anything else that is not an answer step is unparseable, hence wrong.
- `a` must be the previous result (the start value for the first operation step): otherwise the
  step does not continue from the previous result.
- The step's operation, `(i)` with `<op>b`, must be the problem's next one, (i) included: a step
  that skips, merges or reorders operations does some other one and is wrong, even when its value
  is right.
- `c` must equal `a <op> b` (arithmetic).
- An operation step after all the problem's operations are done is wrong (an extra operation).
- The answer step `The answer is \\boxed{x}` must come after all operations, and x must be the last
  result. An answer step that comes early (the solution stops and states an answer) or whose x does
  not follow from the steps (an answer guess) is wrong *at the answer step*: that is where the
  solution departs from its own reasoning. When an earlier step is already wrong, that earlier
  step is the earliest error, whatever the answer says.
- Any step after the answer step is wrong.
A solution that stops before an answer, with every written step valid, has no wrong step (-1):
the checker judges reasoning, the answer rule (`fapo.testbed.answer`) judges the answer.

The critique (the oracle judge's output and the learned GenRM's training target) walks the
paragraphs up to the first wrong one: for each, the result it wrote, then the step it should be with
that result set beside it ("written 5 / expected (2) 19-15 = 4 vs 5, wrong."), so that judging a step
is a copy, a step the policy itself knows how to write and a comparison of two adjacent numbers; the
wrong one ends in the verdict's box.

Owns these rules and the critique text. Knows nothing about models, files or HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fapo.testbed.task import ANSWER_PREFIX, SYMBOLS, Op, Problem, op_step

_OP_STEP = re.compile(r"\((\d{1,9})\) (-?\d{1,9})([+*-])(\d{1,9}) = (-?\d{1,9})")
_ANSWER_STEP = re.compile(re.escape(ANSWER_PREFIX) + r"\\boxed\{(-?\d{1,9})\}")
_KIND_OF_SYMBOL = {symbol: kind for kind, symbol in SYMBOLS.items()}


@dataclass(frozen=True)
class StepCheck:
    """The checker's finding: the earliest wrong step (or -1) and why it is wrong."""

    index: int
    """0-based index of the earliest wrong step, -1 if none."""
    reason: str
    """Short explanation ("" when index is -1)."""
    expected: tuple[str, ...] = ()
    """What each step up to `index` (all steps if none is wrong) should be, in a critique's words:
    "(2) 19-15 = 4", "answer 12" or "nothing"."""


def _check_op_step(match: re.Match[str], value: int, number: int, expected: Op) -> str:
    """Reason the operation step is wrong given the previous result and the expected op; "" if valid."""
    step_number, a, symbol, b, c = (int(match[1]), int(match[2]), match[3], int(match[4]), int(match[5]))
    if a != value:
        return f"it does not continue from the previous result {value}"
    if (step_number, Op(_KIND_OF_SYMBOL[symbol], b)) != (number, expected):
        return f"it does not do the next operation ({number}) {expected.name}"
    if c != expected.apply(a):
        return f"{a}{symbol}{b} is {expected.apply(a)}, not {c}"
    return ""


def _expectation(problem: Problem, value: int, done: int, answered: bool) -> str:
    """What the next step should be, given the result so far and the operations done."""
    if answered:
        return "nothing"
    if done < len(problem.ops):
        return op_step(done + 1, value, problem.ops[done])
    return f"answer {value}"


def _judge_step(problem: Problem, step: str, value: int, done: int, answered: bool) -> tuple[str, int, int, bool]:
    """(reason the step is wrong or "", then the result, operations done and answered after it)."""
    if answered:
        return "nothing may follow the answer", value, done, answered
    op_match = _OP_STEP.fullmatch(step)
    if op_match is not None:
        if done == len(problem.ops):
            return "all operations are already done", value, done, answered
        reason = _check_op_step(op_match, value, done + 1, problem.ops[done])
        return reason, int(op_match[5]), done + 1, answered
    answer_match = _ANSWER_STEP.fullmatch(step)
    if answer_match is None:
        return "the step cannot be read", value, done, answered
    if done < len(problem.ops):
        return "the answer comes before all operations are done", value, done, answered
    if int(answer_match[1]) != value:
        return f"the answer does not follow from the steps ({value})", value, done, answered
    return "", value, done, True


def check_steps(problem: Problem, steps: list[str]) -> StepCheck:
    """Apply the module's rules to `steps` (as `fapo.steps.split_steps` returns them)."""
    value, done, answered = problem.start, 0, False
    expected: list[str] = []
    for index, step in enumerate(steps):
        expected.append(_expectation(problem, value, done, answered))
        reason, value, done, answered = _judge_step(problem, step.strip(), value, done, answered)
        if reason:
            return StepCheck(index, reason, tuple(expected))
    return StepCheck(-1, "", tuple(expected))


def earliest_error(problem: Problem, steps: list[str]) -> int:
    """0-based index of the earliest invalid step of `steps`, or -1 if every step is valid."""
    return check_steps(problem, steps).index


def _written(step: str) -> str:
    """What a critique reads from a step: its result, "answer x", or "unreadable"."""
    step = step.strip()
    op_match = _OP_STEP.fullmatch(step)
    if op_match:
        return op_match[5]
    answer = _ANSWER_STEP.fullmatch(step)
    return f"answer {answer[1]}" if answer else "unreadable"


def _walk(problem: Problem, steps: list[str], block) -> str:
    """A critique: `block(i, step, expected, wrong)` for each paragraph up to the earliest wrong one, then, when
    none is wrong, the -1 verdict."""
    found = check_steps(problem, steps)
    last = len(steps) if found.index < 0 else found.index + 1
    blocks = [block(i, steps[i].strip(), found.expected[i], i == found.index) for i in range(last)]
    if found.index < 0:
        blocks.append("No paragraph is wrong. \\boxed{-1}")
    return "\n\n".join(blocks)


def tokenizer_critique(problem: Problem, steps: list[str]) -> str:
    """The critique text that the testbed tokenizer's corpus holds: the first critique format (each paragraph
    quoted whole, then "expected (2) 19-15 = 4, wrong."), pinned.

    The tokenizer is trained on policy and GenRM text, and its vocabulary decides the tiny policy's embedding
    table, hence the policy's random initialisation: a corpus that follows `critique` would make every change
    of the critique format a different policy warm-start (one such draw started at 55% accuracy instead of 65%
    and gained nothing from RL; BENCHMARKS.md, "GenRM critique format"). With this text pinned, the policy
    stays the same and the GenRM reads the words the format adds ("written", "vs") as smaller tokens."""
    def block(i: int, step: str, expected: str, wrong: bool) -> str:
        quoted = step if _OP_STEP.fullmatch(step) else _written(step)
        verdict = f"wrong. \\boxed{{{i}}}" if wrong else "correct."
        return f"<paragraph_{i}>\n{quoted}\n</paragraph_{i}>\nexpected {expected}, {verdict}"

    return _walk(problem, steps, block)


def critique(problem: Problem, steps: list[str]) -> str:
    """A step-by-step critique ending in `\\boxed{k}` (k = earliest error or -1).

    One block per paragraph up to the first wrong one, in the prompt's own tags: the result the
    paragraph wrote (an answer step as "answer x", so that no box appears before the verdict's), then
    the step it should be, worked out from the problem and the previous written result as the policy
    would write it, with the written result repeated beside it, then the verdict:

        <paragraph_1>
        written 5
        expected (2) 19-15 = 4 vs 5, wrong. \\boxed{1}
        </paragraph_1>

    The order is what a ~1M-parameter GenRM can learn. Quoting the whole step ("(2) 19-15 = 5") made it
    write the result its own arithmetic gives, 4, instead of the paragraph's; reading the result
    *after* the expected step made it copy its own line; and with the two results several tokens apart
    it called almost every slip correct. Written first, then the expected step, then the written
    result again next to the computed one, the comparison is of two adjacent numbers
    (BENCHMARKS.md, "GenRM critique format").
    """
    def block(i: int, step: str, expected: str, wrong: bool) -> str:
        written = _written(step)
        verdict = f"wrong. \\boxed{{{i}}}" if wrong else "correct."
        return f"<paragraph_{i}>\nwritten {written}\nexpected {expected} vs {written}, {verdict}\n</paragraph_{i}>"

    return _walk(problem, steps, block)


_CRITIQUE_BLOCK = re.compile(r"<paragraph_(\d{1,9})>(.*?)(?=<paragraph_\d|\Z)", re.S)
_COMPARISON = re.compile(r"expected (.+?) vs (.+?), (correct|wrong)")


@dataclass(frozen=True)
class Comparison:
    """One paragraph of a `critique`-format text: the expected result set beside the written one, and the word
    the text said of them."""

    paragraph: int
    expected: str
    """The expected step's result ("4" of "(2) 19-15 = 4"; "answer 12" and "nothing" whole)."""
    written: str
    said_wrong: bool

    @property
    def differ(self) -> bool:
        return self.expected != self.written


def comparisons(text: str) -> list[Comparison]:
    """The comparisons a `critique`-format text makes, paragraph by paragraph (a block without one is skipped)."""
    found = []
    for block in _CRITIQUE_BLOCK.finditer(text):
        match = _COMPARISON.search(block[2])
        if match:
            expected = match[1].strip()
            if "= " in expected and not expected.startswith("answer "):
                expected = expected.rsplit("= ", 1)[1]
            found.append(Comparison(int(block[1]), expected, match[2].strip(), match[3] == "wrong"))
    return found


def shown_verdict(text: str) -> int | None:
    """The verdict a `critique`-format text's own comparisons show, whatever its box says: the first paragraph
    whose expected result differs from the written one, -1 when every compared pair agrees, None when it compares
    nothing. It reads results only, so a step that does the wrong operation and lands on the right value (a
    skipped pair followed by a step numbered past it) shows as right: on the checker's own critiques of the demo's
    4,000 critic training rows it gives the checker's verdict in all but 8."""
    return verdict_shown_by(comparisons(text))


def verdict_shown_by(found: list[Comparison]) -> int | None:
    """`shown_verdict` of a text whose `comparisons` are `found`."""
    if not found:
        return None
    return next((c.paragraph for c in found if c.differ), -1)
