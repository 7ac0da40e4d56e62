"""JSON Lines files: read with file:line error messages, write one object per line.

Owns: the line-level format (UTF-8, one JSON object per non-blank line). Must not know what the
fields mean beyond the names a caller says are required; imports only the standard library.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO


class DataError(ValueError):
    """A data file that cannot be used as given; the message names the file and line to fix."""


def iter_jsonl(path: str | Path, required: Iterable[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of `path`, 1-based.

    Raises DataError for an unreadable file, a line that is not valid JSON or not an object, or an
    object without one of the `required` fields.
    """
    required = tuple(required)
    try:
        with open(path, "rb") as f:  # decoded per line, so that a bad byte has a line number
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM is not data
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not UTF-8 text ({err.reason})") from err
                if line.strip():
                    yield lineno, _parse_line(path, lineno, line, required)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from err


def _parse_line(path: str | Path, lineno: int, line: str, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(row, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    missing = [name for name in required if name not in row]
    if missing:
        raise DataError(
            f"{path}:{lineno}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        )
    return row


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """All objects of `path` (blank lines skipped); DataError naming `path:line` on the first bad one."""
    return [row for _, row in iter_jsonl(path, required)]


def write_jsonl(dest: str | Path | TextIO, rows: Iterable[dict[str, Any]]) -> int:
    """Write `rows` one per line to a path ("-" is stdout) or an open text stream; returns the count.

    Non-ASCII text is written as is (UTF-8), not escaped.
    """
    if dest == "-":
        dest = sys.stdout
    if isinstance(dest, (str, Path)):
        with open(dest, "w", encoding="utf-8") as f:
            return write_jsonl(f, rows)
    count = 0
    for row in rows:
        dest.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count
