"""The GenRM prompt and verdict protocol (docs/design.md §1.2).

The prompt is the FAPO authors' critic template (their FAPO-Critic data): the problem, the ground
truth when known (left out, as in ProcessBench, when it is not), and the solution's steps tagged
`<paragraph_i>` from 0. The GenRM answers with a critique ending in `\\boxed{k}`: k is the earliest
wrong step, or -1. `parse_verdict` reads that k strictly and never evaluates anything.
Does no I/O.
"""

from __future__ import annotations

import re

from fapo.boxed import last_boxed
from fapo.steps import render_steps

_INTRO_WITH_GOLD = (
    "The following is a math problem with its ground truth answer, along with an AI solution "
    "(split into paragraphs, enclosed with tags and indexed from 0):"
)
_INTRO_NO_GOLD = (
    "The following is a math problem and an AI solution "
    "(split into paragraphs, enclosed with tags and indexed from 0):"
)
_TASK = (
    "Your task is to review and critique the solution paragraph by paragraph. Once you identify an "
    "error in a paragraph, return the index of the paragraph where the earliest error occurs. "
    "Otherwise, return the index of -1 (which typically denotes 'not found').\n\n"
    "Please reason step by step, put your final answer (i.e., the index) in \\boxed{}."
)

_INTEGER = re.compile(r"[+-]?\d{1,9}")


def build_grm_prompt(problem: str, steps: list[str], gold: str | None = None) -> str:
    """Render the GenRM's user message. `problem` appears verbatim; `gold=None` drops its section."""
    intro = _INTRO_NO_GOLD if gold is None else _INTRO_WITH_GOLD
    parts = [intro, "[Math Problem]", problem]
    if gold is not None:
        parts += ["[Ground Truth]", str(gold)]
    parts += ["[AI Solution]", render_steps(steps), _TASK]
    return "\n\n".join(parts)


def grm_messages(problem: str, steps: list[str], gold: str | None = None) -> list[dict[str, str]]:
    """The chat request for one judgement: a single user message (as the authors' data has)."""
    return [{"role": "user", "content": build_grm_prompt(problem, steps, gold)}]


_STEP_COUNT = re.compile(r"<paragraph_(\d+)>")


def count_prompt_steps(prompt: str) -> int:
    """Number of `<paragraph_i>` steps in a rendered prompt (1 + the largest index; 0 if none)."""
    indices = [int(m) for m in _STEP_COUNT.findall(prompt)]
    return max(indices) + 1 if indices else 0


def parse_verdict(text: str, num_steps: int | None = None) -> int | None:
    """The earliest wrong step the GenRM names, or None when it names no valid one.

    Reads the content of the LAST `\\boxed{...}` (balanced braces); surrounding whitespace and `$`
    are ignored; the rest must be an integer literal. Valid: -1, and 0..num_steps-1 when
    `num_steps` is given (any k >= 0 otherwise). No box, unbalanced braces, `2.5`, `1+1`, `two`,
    out of range: None. Never evaluates the text; O(len(text)).
    """
    if not isinstance(text, str):
        return None
    content = last_boxed(text)
    if content is None:
        return None
    content = content.strip().strip("$").strip()
    if not _INTEGER.fullmatch(content):
        return None
    k = int(content)
    if k < -1:
        return None
    if num_steps is not None and k >= num_steps:
        return None
    return k
