"""Report helpers shared by the GenRM, policy and curve reports: JSON files and markdown tables.

Owns formatting only (rounding, `—` for an undefined value, atomic writes); computes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fapo.io import write_text


def rounded(value: Any, digits: int = 4) -> Any:
    """`value` with every float rounded to `digits` (NaN and infinities become None), recursively."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON, replacing `path` only once the whole file is written (a link is
    followed; text that is not valid Unicode stays \\u-escaped)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, indent=2)
    write_text(path, text + "\n")
    return Path(path)


def fmt_percent(value: float | None) -> str:
    """A percentage with one decimal, or `—` when undefined."""
    return "—" if value is None else f"{value:.1f}"


def fmt_number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; `|` inside a cell is escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
