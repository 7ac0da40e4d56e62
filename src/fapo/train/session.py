"""What both policy trainers (GRPOTrainer in `fapo.train.runner`, AsyncGRPOTrainer in
`fapo.train.async_trainer`) and the async reward share: the judge factory, the monitor oracle, the tokenizer,
DAPO's overlong penalty, the run record, and running a built trainer to its final model.

Owns no trainer class and no reward logic; imports only `fapo.train.config` from this package.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fapo.train.config import ConfigError, FapoSettings, TrainConfig

if TYPE_CHECKING:
    from fapo.grm.judge import Judge


@dataclass(frozen=True)
class TrainResult:
    """Where a run wrote its artefacts and where it stopped."""

    output_dir: str
    global_step: int
    metrics_path: str
    critiques_path: str
    final_model_dir: str


def build_judge_factory(settings: FapoSettings) -> Callable[[], Judge] | None:
    """A zero-argument factory for the configured judge (`fapo.grm.judge.make_judge`, created lazily on TRL's
    event loop), or None without one. An unknown oracle is a ConfigError now, not at the first batch."""
    from fapo.grm.judge import make_judge, resolve_oracle

    if settings.judge is not None:
        config = settings.judge
        return lambda: make_judge(config)
    if settings.oracle is None:
        return None
    try:
        resolve_oracle(settings.oracle)
    except (ValueError, ImportError, AttributeError) as err:
        raise ConfigError(f"fapo.oracle: {err}") from err
    return lambda: make_judge(oracle=settings.oracle)


def resolve_monitor(settings: FapoSettings):
    """The monitor oracle's verdict function and its batch diagnostics (each None when absent)."""
    if settings.monitor_oracle is None:
        return None, None
    from fapo.grm.judge import resolve_oracle
    from fapo.oracles import has_oracle_part, oracle_part

    name = settings.monitor_oracle
    try:
        return resolve_oracle(name), oracle_part(name, "monitor_metrics") if has_oracle_part(name, "monitor_metrics") else None
    except (ValueError, ImportError, AttributeError) as err:
        raise ConfigError(f"fapo.monitor_oracle: {err}") from err


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` that was written to the end (its trainer_state.json exists).

    A run killed while saving leaves a partial directory; resuming skips it instead of crashing.
    """
    if not output_dir.is_dir():
        return None
    candidates = []
    for path in output_dir.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[1]
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            candidates.append((int(suffix), path))
    return str(max(candidates)[1]) if candidates else None


def run_trainer(trainer, output_dir: Path, resume: bool, on_close=None, callbacks: Sequence[Any] = ()) -> TrainResult:
    from transformers import PrinterCallback, ProgressCallback

    from fapo.train.callbacks import KeyNumbersProgressCallback, MetricsFileCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(MetricsFileCallback(output_dir))
    trainer.add_callback(KeyNumbersProgressCallback())
    for callback in callbacks:
        trainer.add_callback(callback)
    checkpoint = last_complete_checkpoint(output_dir) if resume else None
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if on_close is not None and getattr(trainer, "async_loop", None) is not None:
            asyncio.run_coroutine_threadsafe(on_close(), trainer.async_loop).result(timeout=30)
    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))
    return TrainResult(str(output_dir), trainer.state.global_step, str(output_dir / "metrics.jsonl"),
                       str(output_dir / "critiques.jsonl"), str(final_dir))


def set_threads(settings: FapoSettings) -> None:
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)


def write_run_config(config: TrainConfig, output_dir: Path, kind: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "trl": config.trl, "fapo": config.fapo.record()}
    (output_dir / "fapo_config.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def reward_funcs_with_overlong(reward_funcs: list[Any], settings: FapoSettings, args) -> list[Any]:
    """Append DAPO's soft overlong penalty (TRL's reward function) when a buffer is configured."""
    if settings.overlong_buffer:
        from trl.rewards import get_soft_overlong_punishment

        reward_funcs.append(get_soft_overlong_punishment(args.max_completion_length, settings.overlong_buffer))
    return reward_funcs
