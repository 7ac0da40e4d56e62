"""The policy's side of a math problem, shared by training and evaluation: the user message built
from a problem, and the gold answer read from a data row. Knows nothing about models or rewards."""

from __future__ import annotations

from typing import Any

DEFAULT_PROMPT_TEMPLATE = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
"""The default user message; `{problem}` is replaced by the problem text (no other braces are interpreted)."""


def render_prompt(template: str, problem: str) -> list[dict[str, str]]:
    """The policy's chat request: one user message, `template` with `{problem}` replaced."""
    return [{"role": "user", "content": template.replace("{problem}", problem)}]


def gold_answer(value: Any) -> str:
    """The gold answer as a string; a GSM8K worked solution `... #### 1,200` gives `1200`."""
    text = str(value)
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    return text.strip()
