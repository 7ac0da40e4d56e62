"""Trainer callbacks: metrics.jsonl, a progress bar with the key numbers, and resume hygiene.

Metrics reach every `report_to` logger through TRL's own logging path; this module only mirrors
each log record to OUTPUT/metrics.jsonl and shows a bar. On resume, records (and critiques) past
the restored checkpoint are dropped, so the files have no duplicated or missing steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from fapo.io import complete_lines, parse_json

PROGRESS_KEYS = {"verify/accuracy": "acc", "grm/flawed_ratio": "flawed", "reward/mean": "reward", "time/step_s": "s/step"}


def truncate_jsonl_after(path: Path, step: int) -> int:
    """Keep only records with `step` <= step (and drop a torn last line); return how many were dropped."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    lines, end = complete_lines(path)  # a last line torn by a kill (even inside a character) is dropped
    dropped += path.stat().st_size > end
    for line in lines:
        try:
            record = parse_json(line)
        except ValueError:  # not JSON, or JSON nested too deeply to read back
            dropped += 1
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    return dropped


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsFileCallback(TrainerCallback):
    """Appends every log record as {"step", ...} to metrics.jsonl; trims files past a resumed step."""

    def __init__(self, output_dir: Path,
                 trimmed_files: tuple[str, ...] = ("metrics.jsonl", "critiques.jsonl", "counters.jsonl")):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / "metrics.jsonl"
        self.trimmed = trimmed_files

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for name in self.trimmed:
                truncate_jsonl_after(self.output_dir / name, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **{k: _jsonable(v) for k, v in logs.items()}}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class KeyNumbersProgressCallback(TrainerCallback):
    """A tqdm bar over training steps showing accuracy, flawed ratio, reward and step time."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        shown = {label: f"{logs[key]:.3g}" for key, label in PROGRESS_KEYS.items()
                 if isinstance(logs.get(key), (int, float)) and math.isfinite(logs[key])}
        self.bar.set_postfix(shown, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
