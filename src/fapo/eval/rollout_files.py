"""Rollout files as one stream of rows: JSONL, JSON, parquet, and the directories RL frameworks dump them in.

    for row in iter_rows(["runs/verl/rollout_dumps", "trl-out", "critiques.jsonl"]):
        row.where, row.row          # "runs/verl/rollout_dumps/10.jsonl:3", {"input": ..., "output": ...}

A directory is read as the framework left it:
- TRL's output directory (`GRPOConfig(log_completions=True)`): `completions/completions_<step>.parquet`, one file
  per logging step, rows {step, prompt, completion, <one column per reward function>, <log_extra columns>,
  advantage} (trl 1.16, `GRPOTrainer.log`).
- fapo's training output directory: its `critiques.jsonl` (the judged, verified-correct rollouts).
- verl's `trainer.rollout_data_dir` / `trainer.validation_data_dir`: `<step>.jsonl` per step, rows {input,
  output, gts, score, step, <the reward function's extra fields>} (`RayPPOTrainer._dump_generations`).
- any other directory: its .jsonl, .json and .parquet files.
Files are read in step order (a numeric stem, or the number at its end, sorts numerically) and streamed: JSONL
line by line, parquet in record batches; a JSON file (an array of objects, or an object holding one) is
loaded whole. Every problem is a `DataError` naming the file (and line). Owns file formats; knows no field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fapo.io import DataError, iter_jsonl

SUFFIXES = (".jsonl", ".json", ".parquet")
PARQUET_BATCH = 512
"""Rows per parquet record batch: what one read holds in memory."""


@dataclass(frozen=True)
class SourceRow:
    """One row and where it came from: `file:line` (JSONL) or `file:#n` (JSON, parquet; n from 1)."""

    where: str
    row: dict[str, Any]


def _step_order(path: Path) -> tuple[float, str]:
    number = re.search(r"(\d+)$", path.stem)
    return (float(number.group(1)) if number else float("inf"), path.name)


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The data files `paths` name (directories expanded as the module docstring says), in reading order."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            files.append(path)
            continue
        if not path.is_dir():
            raise DataError(f"{path}: no such file or directory")
        if (path / "completions").is_dir():  # TRL's output directory
            found = sorted((path / "completions").glob("*.parquet"), key=_step_order)
        elif (path / "critiques.jsonl").is_file():  # fapo's training output directory
            found = [path / "critiques.jsonl"]
        else:
            found = sorted((p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES), key=_step_order)
        if not found:
            raise DataError(f"{path}: no rollout files in this directory (looked for {', '.join(SUFFIXES)})")
        files += found
    return files


def iter_rows(paths: Sequence[str | Path]) -> Iterator[SourceRow]:
    """Every row of every file `paths` name, streamed, in order."""
    for path in expand_paths(paths):
        if path.suffix == ".parquet":
            yield from _parquet_rows(path)
        elif path.suffix == ".json":
            yield from _json_rows(path)
        else:
            yield from (SourceRow(f"{path}:{lineno}", row) for lineno, row in iter_jsonl(path))


def _parquet_rows(path: Path) -> Iterator[SourceRow]:
    try:
        import pyarrow.parquet as pq

        batches: Iterable[Any] = pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH)
    except ImportError as err:
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from err
    except Exception as err:  # pyarrow's own errors (not parquet, truncated file) are not OSErrors
        raise DataError(f"{path}: not a readable parquet file ({err})") from err
    n = 0
    for batch in batches:
        for row in batch.to_pylist():
            n += 1
            yield SourceRow(f"{path}:#{n}", row)


def _json_rows(path: Path) -> Iterator[SourceRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read JSON ({err})") from err
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON array of objects (or an object holding one); "
                        "for one object per line name the file .jsonl")
    yield from (SourceRow(f"{path}:#{n}", row) for n, row in enumerate(data, 1))
