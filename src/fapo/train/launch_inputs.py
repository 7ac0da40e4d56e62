"""What a launch reads before any weight: the model's config.json (with `fapo.max_position_embeddings`
applied) and the token length of each chat prompt against `fapo.max_prompt_length`.

Owns: reading a model's config.json (local directory or hub cache), the overridden model directory a run
trains from (config.json rewritten, every other file linked), and dropping prompts over the limit (counted,
as verl's `data.filter_overlong_prompts`). Used by the dry run (`fapo.train.preflight`) and by both
trainers. Must not: load weights or import torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fapo.train.config import ConfigError, FapoSettings

OVERRIDE_DIR = "model-overrides"
"""Directory under the run's output that holds the overridden config.json and links to the model's files."""


def model_files(model: str, download: bool = False) -> Path:
    """The directory holding `model`'s files: the path itself, or its hub snapshot (config.json only, or
    everything with `download`). ConfigError naming the fix when neither is there."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model.startswith(("/", ".", "~")):
        raise ConfigError(f"fapo.model: directory not found: {model}")
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        if download:
            return Path(snapshot_download(repo_id=model))
        return Path(hf_hub_download(repo_id=model, filename="config.json")).parent
    except Exception as err:  # offline, unknown repo, no network: one line, whatever the hub library raised
        raise ConfigError(f"fapo.model: cannot read {model}/config.json ({type(err).__name__}): download the "
                          f"model first (huggingface-cli download {model}) or point fapo.model at its "
                          "directory") from err


def read_model_config(model: str) -> dict[str, Any]:
    """The model's config.json as a dict (ConfigError naming the fix when unreadable)."""
    path = model_files(model) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"fapo.model: cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"fapo.model: {path} is not a JSON object")
    return data


def model_context(settings: FapoSettings, model_config: dict[str, Any]) -> tuple[int | None, str]:
    """The positions the trained model will have and where that number comes from."""
    own = model_config.get("max_position_embeddings")
    if settings.max_position_embeddings is not None:
        return settings.max_position_embeddings, f"fapo.max_position_embeddings (config.json says {own})"
    return own, "config.json max_position_embeddings"


def overridden_model(settings: FapoSettings, output_dir: str | Path) -> FapoSettings:
    """`settings` with `model` pointing at OUTPUT/model-overrides: the model's files linked, config.json
    with `max_position_embeddings` overridden, so that the trainer, the reference model and colocated vLLM
    (which reads the directory the trainer loaded from) all see it. Unchanged without an override.
    Every process of a launch may call it at once: each link and the config are written atomically."""
    if settings.max_position_embeddings is None:
        return settings
    source = model_files(settings.model, download=True)
    target = Path(output_dir) / OVERRIDE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name != "config.json" and not (target / item.name).exists():
            try:
                (target / item.name).symlink_to(item.resolve())
            except FileExistsError:
                pass
    config = read_model_config(str(source))
    config["max_position_embeddings"] = settings.max_position_embeddings
    scratch = target / f".config.json.{os.getpid()}.{threading.get_ident()}"
    scratch.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(scratch, target / "config.json")
    return dataclasses.replace(settings, model=str(target))


def prompt_text(tokenizer: Any, prompt: Any) -> str:
    """A row's prompt as the model sees it: a chat list through the chat template, a string as is."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return str(prompt)


def prompt_lengths(tokenizer: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Token count of each row's rendered prompt (no special tokens added beyond the template's)."""
    texts = [prompt_text(tokenizer, row["prompt"]) for row in rows]
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def drop_long_prompts(rows: list[dict[str, Any]], tokenizer: Any, limit: int | None,
                      announce: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The rows whose prompt fits `limit` tokens; the count dropped goes to `announce`. ConfigError when none
    fits (training on nothing is never what was meant)."""
    if limit is None:
        return rows
    lengths = prompt_lengths(tokenizer, rows)
    kept = [row for row, n in zip(rows, lengths) if n <= limit]
    if not kept:
        raise ConfigError(f"fapo.max_prompt_length: every one of {len(rows)} prompts is longer than {limit} tokens "
                          f"(shortest {min(lengths)}): raise the limit")
    if announce is not None:
        announce(f"prompts over {limit} tokens dropped: {len(rows) - len(kept)} of {len(rows)} "
                 f"(longest kept {max(n for n in lengths if n <= limit)} tokens)")
    return kept
