"""JSON Lines files: read with file:line error messages, write one object per line.

Owns: the line-level format (UTF-8, one JSON object per non-blank line) and how output files are
written (checked before work starts, replaced atomically, links followed, "-" for stdout). Must not
know what the fields mean beyond the names a caller says are required; imports only the standard
library.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
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


def json_line(row: Any) -> str:
    """`row` as one line of JSON, non-ASCII text kept as is; a string that is not valid Unicode (a lone
    surrogate, which JSON's `\\ud800` escape can carry) stays escaped, so every line encodes as UTF-8."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row)
    return line


def check_output_path(path: str | Path | None, inputs: Iterable[str | Path] = (), what: str = "output") -> None:
    """Raise DataError now, before any work, when `path` cannot take an output file.

    None and "-" (stdout) pass. A directory, a missing parent directory, or one of `inputs` (the
    same file under any name, links included) is refused.
    """
    if path is None or str(path) == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise DataError(f"{what} {path} is a directory; give a file name")
    parent = Path(os.path.realpath(target)).parent
    if not parent.is_dir():
        raise DataError(f"{what} directory {target.parent} does not exist")
    for source in inputs:
        if source is not None and str(source) != "-" and _same_file(target, Path(source)):
            raise DataError(f"{what} {path} is also an input ({source}); write to another file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def write_text(dest: str | Path, text: str) -> None:
    """Write `text` to a path ("-" is stdout) so that no reader ever sees part of it.

    A regular file (or a new one) is replaced in one rename once the whole text is on disk; a
    symbolic link is followed, so the link stays and its target is replaced. Something that is not
    a regular file (a terminal, a pipe, /dev/stdout) is written in place, as a stream. Raises
    OSError; a closed pipe (BrokenPipeError) leaves stdout pointing at /dev/null so that Python's
    own flush at exit stays quiet.
    """
    if str(dest) == "-":
        _write_stdout(text)
        return
    try:
        mode = os.stat(dest).st_mode  # follows links
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(dest))
    if (mode is not None and not stat.S_ISREG(mode)) or _is_device_path(dest):
        with open(dest, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        return
    _replace_file(Path(os.path.realpath(dest)), text, mode)


def _is_device_path(dest: str | Path) -> bool:
    """/dev/stdout, /dev/fd/N, /proc/self/fd/N: a stream, even when the shell pointed it at a file."""
    return str(dest).startswith(("/dev/", "/proc/")) or os.path.realpath(dest).startswith("/proc/")


def _replace_file(target: Path, text: str, mode: int | None) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        raise


def write_jsonl(dest: str | Path | TextIO, rows: Iterable[dict[str, Any]]) -> int:
    """Write `rows` one per line to a path ("-" is stdout) or an open text stream; returns the count.

    Every row is serialised before anything is written (`json_line`), and a path is written with
    `write_text`: an error leaves the destination as it was, never half-written.
    """
    lines = [json_line(row) + "\n" for row in rows]
    if isinstance(dest, (str, Path)):
        write_text(dest, "".join(lines))
    else:
        dest.write("".join(lines))
    return len(lines)
