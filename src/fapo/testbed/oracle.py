"""The oracle judge: the step checker answering as a GenRM.

`OracleBackend` implements `fapo.serving.backend.CompletionBackend`, so `fapo serve-grm --oracle testbed`
serves it through the same HTTP path and client as a model: it reads the GenRM prompt built by
`fapo.grm.prompt.build_grm_prompt` (problem text and `<paragraph_i>` steps), runs the checker and
answers with the checker's critique ending in `\\boxed{k}`. A request that is not a testbed GenRM
prompt gets a reply with no box, which `parse_verdict` reads as no verdict (an error, counted by the
client), never as "clean". `oracle_verdict` is the same judgement in-process, for the trainer.
Deterministic, pure Python, tens of thousands of requests per second.

Knows nothing about HTTP (the server owns it) or models.
"""

from __future__ import annotations

import re

from fapo.serving.backend import Completion, GenerationRequest
from fapo.steps import split_steps
from fapo.testbed.checker import critique, earliest_error
from fapo.testbed.diagnose import monitor_metrics  # noqa: F401 (this oracle's batch diagnostics, see fapo.oracles)
from fapo.testbed.task import Problem, parse_problem

MODEL_NAME = "testbed-oracle"
UNREADABLE = "The oracle cannot judge this request: it is not a GenRM prompt about a testbed problem."

_PROBLEM_SECTION = re.compile(r"\[Math Problem\]\n\n(.*?)\n\n\[(?:Ground Truth|AI Solution)\]", re.DOTALL)
_PARAGRAPH = re.compile(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", re.DOTALL)


def parse_grm_prompt(prompt: str) -> tuple[Problem, list[str]] | None:
    """The testbed problem and the steps of a GenRM prompt, or None if it is not one."""
    section = _PROBLEM_SECTION.search(prompt)
    if section is None:
        return None
    problem = parse_problem(section.group(1))
    if problem is None:
        return None
    solution = prompt[section.end():]
    steps, expected = [], 0
    for match in _PARAGRAPH.finditer(solution):
        if int(match.group(1)) != expected:
            return None
        steps.append(match.group(2))
        expected += 1
    return problem, steps


def oracle_verdict(problem: Problem | str, steps: list[str] | str) -> int:
    """The earliest wrong step (or -1) of a solution, given as steps or as the raw completion.

    `problem` is a `Problem` or its text; a text that is not a testbed problem raises ValueError.
    A raw completion is split with `fapo.steps.split_steps` (blank-line paragraphs), as the GenRM
    prompt would split it.
    """
    if isinstance(problem, str):
        parsed = parse_problem(problem)
        if parsed is None:
            raise ValueError(f"not a testbed problem: {problem[:80]!r}")
        problem = parsed
    if isinstance(steps, str):
        steps = split_steps(steps)
    return earliest_error(problem, steps)


def oracle_reply(prompt: str) -> str:
    """The oracle's critique of one GenRM prompt (UNREADABLE, with no box, if it cannot judge it)."""
    parsed = parse_grm_prompt(prompt)
    if parsed is None:
        return UNREADABLE
    return critique(*parsed)


def _last_user_message(messages: list[dict[str, str]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


class OracleBackend:
    """A `CompletionBackend` whose completions are the checker's critiques.

    Tokens are counted as whitespace-separated words (the oracle has no tokenizer); a critique
    longer than `max_tokens` words is cut and reported with finish_reason "length".
    """

    model_name = MODEL_NAME

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        out = []
        for request in requests:
            text = oracle_reply(_last_user_message(request.messages))
            words = text.split()
            completion = Completion(text, "stop", len(words))
            if len(words) > request.max_tokens:
                completion = Completion(" ".join(words[: request.max_tokens]), "length", request.max_tokens)
            out.append([completion] * request.n)
        return out

    def count_prompt_tokens(self, messages: list[dict[str, str]], chat_template_kwargs: object = None) -> int:
        return sum(len(str(m.get("content", "")).split()) for m in messages)
