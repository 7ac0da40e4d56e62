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

import bisect
import re
from collections import defaultdict

from fapo.serving.backend import Completion, GenerationRequest
from fapo.steps import split_steps
from fapo.testbed.checker import critique, earliest_error
from fapo.testbed.diagnose import monitor_metrics  # noqa: F401 (this oracle's batch diagnostics, see fapo.oracles)
from fapo.testbed.task import Problem, parse_problem

MODEL_NAME = "testbed-oracle"
UNREADABLE = "The oracle cannot judge this request: it is not a GenRM prompt about a testbed problem."

_PROBLEM_HEADER = "[Math Problem]\n\n"
_SECTION_ENDS = ("\n\n[Ground Truth]", "\n\n[AI Solution]")
_OPEN = re.compile(r"<paragraph_(\d+)>\n")
_CLOSE = re.compile(r"\n</paragraph_(\d+)>")


def parse_grm_prompt(prompt: str) -> tuple[Problem, list[str]] | None:
    """The testbed problem and the steps of a GenRM prompt, or None if it is not one.

    Linear in the prompt's length whatever it holds (plain `str.find`, one pass per tag kind): a server
    parses prompts of megabytes, and a lazy `(.*?)` regex tried at every repeated header is quadratic.
    """
    start = prompt.find(_PROBLEM_HEADER)
    if start < 0:
        return None
    start += len(_PROBLEM_HEADER)
    ends = [i for i in (prompt.find(end, start) for end in _SECTION_ENDS) if i >= 0]
    if not ends:
        return None
    problem = parse_problem(prompt[start:min(ends)])
    if problem is None:
        return None
    steps = _paragraphs(prompt[min(ends):])
    return None if steps is None else (problem, steps)


def _paragraphs(solution: str) -> list[str] | None:
    """The `<paragraph_i>` blocks in order (i = 0, 1, ...), each up to its own closing tag; None when they
    are out of order. Closing tags are indexed once, so an opening tag without one costs a lookup, not a scan."""
    closes: dict[str, list[int]] = defaultdict(list)
    for match in _CLOSE.finditer(solution):
        closes[match.group(1)].append(match.start())
    steps: list[str] = []
    end = 0
    for match in _OPEN.finditer(solution):
        if match.start() < end:
            continue  # inside the paragraph just read
        positions = closes.get(match.group(1), [])
        k = bisect.bisect_left(positions, match.end())  # the close's own "\n" comes after the open's
        if k == len(positions):
            continue  # never closed: not a paragraph
        if match.group(1) != str(len(steps)):
            return None
        steps.append(solution[match.end():positions[k]])
        end = positions[k] + len(f"\n</paragraph_{match.group(1)}>")
    return steps


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
