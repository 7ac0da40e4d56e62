"""Split a solution into steps and render steps for a GenRM prompt.

Steps are what the GenRM indexes when it names the earliest wrong one, so the split and the
rendering must agree: step i of `split_steps` is `<paragraph_i>` in the prompt (ProcessBench's
format). Knows nothing about HTTP, models or rewards.
"""

from __future__ import annotations

import re

_BLANK_LINE = re.compile(r"\n[ \t\r]*\n[\r\n]*")  # a line of spaces, tabs or CR: LF and CRLF text alike


def split_steps(solution: str, mode: str = "paragraph") -> list[str]:
    """Split `solution` into non-empty, stripped steps.

    mode:
      - "paragraph" (default): blocks separated by one or more blank lines (LF or CRLF line ends).
      - "line": every non-empty line is a step.
      - any other string: a regular expression used as the separator.
    An empty or whitespace-only solution has no steps.
    """
    if mode == "paragraph":
        parts = _BLANK_LINE.split(solution)
    elif mode == "line":
        parts = solution.splitlines()
    else:
        parts = re.split(mode, solution)
    return [p.strip() for p in parts if p and p.strip()]


def render_steps(steps: list[str]) -> str:
    """Render steps with explicit 0-based indices: `<paragraph_i>\\n...\\n</paragraph_i>`."""
    return "\n\n".join(f"<paragraph_{i}>\n{step}\n</paragraph_{i}>" for i, step in enumerate(steps))
