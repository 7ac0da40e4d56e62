"""JSON Lines files: read with file:line error messages, write one object per line.

Owns: the line-level format (UTF-8, one JSON object per non-blank line, finite numbers only) and how
output files are written: checked before work starts (writable, not an input, no two outputs the same
file), replaced atomically, links followed, "-" for stdout; or appended to as work goes
(`JsonlAppender`, `ResumableJsonl`), where a line torn by a kill is dropped on the next open. Must not
know what the fields mean beyond the names a caller says are required; imports only the standard
library.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
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


def _not_a_number(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (give a finite number or a string)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows a float (give a finite number or a string)")
    return value


def parse_json(text: str | bytes) -> Any:
    """Strict JSON: NaN, Infinity and numbers that overflow a float (1e999) are refused, as are nesting
    deeper than Python's recursion limit and integers longer than Python converts (4300 digits): every
    failure is a ValueError (json.JSONDecodeError for syntax), never RecursionError or another exception."""
    try:
        return json.loads(text, parse_constant=_not_a_number, parse_float=_finite_float)
    except RecursionError as err:
        raise ValueError("nested too deeply") from err


def _parse_line(path: str | Path, lineno: int, line: str, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        row = parse_json(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg} at column {err.colno})") from err
    except ValueError as err:  # too deep, a huge integer, NaN or 1e999
        raise DataError(f"{path}:{lineno}: unusable JSON ({err})") from err
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
    """`row` as one line of strict JSON, non-ASCII text kept as is; a string that is not valid Unicode (a
    lone surrogate, which JSON's `\\ud800` escape can carry) stays escaped, so every line encodes as UTF-8;
    a float that is NaN or infinite is written as null (bare NaN is not JSON)."""
    try:
        line = json.dumps(row, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a non-finite float somewhere
        line = json.dumps(_finite(row), ensure_ascii=False, allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(_finite(row), allow_nan=False)
    return line


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def check_output_path(path: str | Path | None, inputs: Iterable[str | Path] = (), what: str = "output") -> None:
    """Raise DataError now, before any work, when `path` cannot take an output file.

    None and "-" (stdout) pass. A directory, a missing parent directory, a symbolic-link loop, a file or
    directory this process may not write (permissions, a read-only filesystem), or one of `inputs` (the
    same file under any name, links included) is refused.
    """
    if path is None or str(path) == "-":
        return
    target = Path(path)
    try:
        resolved = Path(os.path.realpath(target))
        with contextlib.suppress(FileNotFoundError):  # a new file, or a link to one
            os.stat(target)
    except (OSError, RuntimeError) as err:  # a symbolic-link loop, a path too long, no permission
        raise DataError(f"{what} {path}: cannot resolve the path ({getattr(err, 'strerror', None) or err})") from err
    if resolved.is_dir():
        raise DataError(f"{what} {path} is a directory; give a file name")
    if not resolved.parent.is_dir():
        raise DataError(f"{what} directory {target.parent} does not exist")
    _check_writable(path, resolved, what)
    for source in inputs:
        if source is not None and str(source) != "-" and _same_file(target, Path(source)):
            raise DataError(f"{what} {path} is also an input ({source}); write to another file")


def _check_writable(path: str | Path, resolved: Path, what: str) -> None:
    """A file that exists must be writable; its directory must take a new file (the temporary that replaces
    it). Tried for real, so that a read-only mount or an ACL is caught, not only the mode bits."""
    if resolved.exists() and not _is_device_path(path) and not os.access(resolved, os.W_OK):
        raise DataError(f"{what} {path}: no permission to write this file")
    if _is_device_path(path) or (resolved.exists() and not resolved.is_file()):
        return  # a stream (terminal, pipe, /dev/stdout): written in place
    try:
        fd, probe = tempfile.mkstemp(dir=resolved.parent, prefix=f".{resolved.name}.", suffix=".check")
    except OSError as err:
        raise DataError(f"{what} {path}: cannot write in {resolved.parent} ({err.strerror or err})") from err
    os.close(fd)
    os.unlink(probe)


def check_output_paths(outputs: Sequence[tuple[str, str | Path | None]], inputs: Iterable[str | Path | None] = ()
                       ) -> None:
    """`check_output_path` for each (what, path) of one command, and no two outputs the same file under
    any spelling (links, `..`, hard links) nor two on stdout ("-", /dev/stdout). DataError before any work."""
    sources = [i for i in inputs if i is not None]
    given = [(what, path) for what, path in outputs if path is not None]
    for what, path in given:
        check_output_path(path, sources, what)
    for k, (what, path) in enumerate(given):
        for other_what, other in given[:k]:
            if _same_output(path, other):
                raise DataError(f"{what} {path} and {other_what} {other} are the same file; give two names")


def _same_output(a: str | Path, b: str | Path) -> bool:
    def stdout(p: str | Path) -> bool:
        return str(p) == "-" or os.path.realpath(p) in ("/dev/stdout", "/proc/self/fd/1")
    if stdout(a) or stdout(b):
        return stdout(a) and stdout(b)
    return _same_file(Path(a), Path(b))


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


# ------------------------------------------------------------------------------------ appending as work goes


def complete_lines(path: str | Path) -> tuple[list[str], int]:
    """The complete lines of a JSONL file being appended to, and the bytes they span.

    A last line without its newline was torn by a kill (possibly inside a multi-byte character): it is
    left out, so that the caller can cut the file back to the returned length. Bytes that are not UTF-8
    in a complete line are replaced (U+FFFD), never an exception. A missing file has no lines.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    return data[:end].decode("utf-8", "replace").splitlines(), end


class JsonlAppender:
    """Appends JSON lines (`json_line`) to a file, flushing after each batch, so that a killed run loses at
    most the batch it was writing; None writes nothing. A lone surrogate stays escaped, never an error."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.path is None or not rows:
            return
        text = "".join(json_line(row) + "\n" for row in rows)  # serialised first: no half-written batch
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)


class ResumableJsonl:
    """An output JSONL written one row at a time, in input order, that an interrupted run can continue.

    `resume=False` starts the file afresh ("-": stdout). `resume=True` keeps the rows already there (`done`)
    and appends after them: a torn last line is cut off first, so the row it held is produced again; a
    complete line that is not a JSON object is a DataError naming `path:line`. Each row is flushed as it is
    written. Use as a context manager; OSError (disk full, closed pipe) reaches the caller.
    """

    def __init__(self, path: str | Path, resume: bool = False) -> None:
        self.path = path
        self.done: list[dict[str, Any]] = []
        self.written = 0
        if str(path) == "-":
            if resume:
                raise DataError("--resume needs an output file, not stdout ('-')")
            self._file: TextIO = sys.stdout
            return
        if resume:
            self.done = self._read_done(path)
        mode = "a" if resume else "w"
        self._file = open(path, mode, encoding="utf-8")  # noqa: SIM115 (closed by close())

    def _read_done(self, path: str | Path) -> list[dict[str, Any]]:
        lines, end = complete_lines(path)
        rows = []
        for lineno, line in enumerate(lines, 1):
            if line.strip():
                rows.append(_parse_line(path, lineno, line, ()))
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(path) > end and stat.S_ISREG(os.stat(path).st_mode):
                os.truncate(path, end)  # drop the torn line
        return rows

    def check_prefix(self, keys: Sequence[Any], field: str = "id") -> None:
        """DataError unless the rows already there are, in order, those of the first `keys` (their `field`):
        an output resumed against another input would otherwise mix two runs."""
        if len(self.done) > len(keys):
            raise DataError(f"{self.path} has {len(self.done)} rows but the input only {len(keys)}; is it another "
                            "run's output?")
        for k, (row, key) in enumerate(zip(self.done, keys)):
            if row.get(field) != key:
                raise DataError(f"row {k + 1} of {self.path} ({field} {row.get(field)!r}) is not the output for "
                                f"input row {k + 1} ({field} {key!r}); write to a new file or start afresh")

    def write(self, row: dict[str, Any]) -> None:
        line = json_line(row) + "\n"
        if self._file is sys.stdout:
            _write_stdout(line)  # a closed pipe: BrokenPipeError, and Python's exit stays quiet
        else:
            self._file.write(line)
            self._file.flush()
        self.written += 1

    def close(self) -> None:
        if self._file is not sys.stdout:
            self._file.close()

    def __enter__(self) -> ResumableJsonl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
