"""Training configs: YAML whose top-level keys are TRL's GRPOConfig fields plus a `fapo:` section.

Unknown keys are errors that name the key and the closest valid one; a value of the wrong type or
out of range is an error naming the key and what it expects. `--set key=value` overrides (dotted for
the fapo section: `fapo.penalty=0`, `fapo.judge.tie_break=clean`) are applied before validation. Every value check runs before TRL
is imported (only the check for unknown TRL keys and building a GRPOConfig import it), so a bad config
fails in well under a second.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fapo.grm.types import JudgeConfig
from fapo.train.settings import ConfigError, FapoSettings


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-4` (no dot) as a float, as people write learning rates, and refuses a key
    given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (line {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _load_yaml(text: str):
    return yaml.load(text, Loader=_YamlLoader)


def _output_dir_usable(value: str | None) -> bool:
    """An output directory that exists as a directory we can write, or can be made where its nearest existing
    ancestor is a writable directory."""
    if value is None:
        return True
    path = Path(value).expanduser()
    for existing in (path, *path.parents):
        if existing.exists():
            return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    return False


def _describe(expected: Any) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
    args = typing.get_args(expected)
    if type(None) in args:
        return " or ".join(_describe(a) for a in args if a is not type(None)) + ", or null"
    if typing.get_origin(expected) is list:
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    if typing.get_origin(expected) is dict:
        return "a mapping"
    return names.get(expected, str(expected))


def _matches(value: Any, expected: Any) -> bool:
    args = typing.get_args(expected)
    if type(None) in args:
        return value is None or any(_matches(value, a) for a in args if a is not type(None))
    if typing.get_origin(expected) is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if typing.get_origin(expected) is dict:
        return isinstance(value, dict)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, expected)


def _check_fapo_types(fapo_raw: dict[str, Any]) -> None:
    hints = typing.get_type_hints(FapoSettings)
    for key, value in fapo_raw.items():
        if key != "judge" and not _matches(value, hints[key]):
            raise ConfigError(f"fapo.{key} must be {_describe(hints[key])}, got {value!r}")


MOVED_KEYS = {f"judge_{name}": f"judge.{name}" for name in (
    "endpoints", "model", "api_key", "concurrency", "timeout", "retries", "max_tokens", "temperature", "votes")}
"""Flat keys of earlier configs → their place in the `fapo.judge` section (an error names the new key)."""


def _judge_config(raw: Any) -> JudgeConfig | None:
    """The `fapo.judge` section as a JudgeConfig (None when absent); ConfigError naming the key otherwise."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"fapo.judge must be a mapping of GenRM client settings (endpoints: [...], model: ..., "
                          f"...), got {raw!r}; for an in-process judge write fapo.oracle: testbed, for none leave "
                          "fapo.judge out")
    hints = typing.get_type_hints(JudgeConfig)
    names = [f.name for f in dataclasses.fields(JudgeConfig)]
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"unknown key fapo.judge.{key}{_closest(key, names)}")
        if key == "endpoints":
            if not isinstance(value, list) or not value or not all(isinstance(v, (str, dict)) for v in value):
                raise ConfigError(f"fapo.judge.endpoints must be a non-empty list of URLs like http://host:8000/v1, "
                                  f"got {value!r}")
        elif key != "tie_break" and not _matches(value, hints[key]):
            raise ConfigError(f"fapo.judge.{key} must be {_describe(hints[key])}, got {value!r}")
    if "endpoints" not in raw:
        raise ConfigError("fapo.judge needs endpoints: a list of GenRM base URLs like http://host:8000/v1")
    try:
        return JudgeConfig(**{**raw, "endpoints": tuple(raw["endpoints"])})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"fapo.judge: {err}") from err


_TRL_CHECKS: dict[str, tuple[Any, typing.Callable[[Any], bool], str]] = {
    "max_steps": (int, lambda v: v >= 1 or v == -1, "a whole number >= 1 (or -1: train num_train_epochs)"),
    "learning_rate": (float, lambda v: v > 0, "a number > 0"),
    "num_train_epochs": (float, lambda v: v > 0, "a number > 0"),
    "per_device_train_batch_size": (int, lambda v: v >= 1, "a whole number >= 1"),
    "gradient_accumulation_steps": (int, lambda v: v >= 1, "a whole number >= 1"),
    "num_generations": (int, lambda v: v >= 2, "a whole number >= 2 (GRPO compares rollouts in a group)"),
    "max_completion_length": (int, lambda v: v >= 1, "a whole number >= 1"),
    "temperature": (float, lambda v: v > 0, "a number > 0"),
    "top_p": (float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "beta": (float, lambda v: v >= 0, "a number >= 0"),
    "epsilon": (float, lambda v: v >= 0, "a number >= 0"),
    "epsilon_high": (float | None, lambda v: v is None or v >= 0, "a number >= 0, or null"),
    "warmup_steps": (int, lambda v: v >= 0, "a whole number >= 0"),
    "warmup_ratio": (float, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "weight_decay": (float, lambda v: v >= 0, "a number >= 0"),
    "max_grad_norm": (float, lambda v: v >= 0, "a number >= 0"),
    "logging_steps": (float, lambda v: v > 0, "a number > 0"),
    "save_steps": (float, lambda v: v > 0, "a number > 0"),
    "seed": (int, lambda v: v >= 0, "a whole number >= 0"),
    "steps_per_generation": (int | None, lambda v: v is None or v >= 1, "a whole number >= 1, or null"),
    "generation_batch_size": (int | None, lambda v: v is None or v >= 1, "a whole number >= 1, or null"),
    "output_dir": (str | None, _output_dir_usable,
                   "a directory this user can write, or a new one in such a directory (not a file)"),
}
"""TRL keys checked here, before TRL is imported: (type, range check, what the message asks for)."""


FAPO_NOT_TRL = ("max_prompt_length", "max_position_embeddings")
"""Keys people write at the top level that TRL 1.16's GRPOConfig lacks and the fapo section has."""


def _check_trl_values(trl_keys: dict[str, Any]) -> None:
    for key, (expected, in_range, what) in _TRL_CHECKS.items():
        if key in trl_keys and not (_matches(trl_keys[key], expected) and in_range(trl_keys[key])):
            raise ConfigError(f"{key} must be {what}, got {trl_keys[key]!r}")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _in_hub_cache(model: str) -> bool:
    """Whether the hub's local cache holds `model`'s config (a name the hub would refuse counts as absent)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # an invalid repo id, or no huggingface_hub
        return False


def check_local_paths(settings: FapoSettings) -> None:
    """ConfigError when `fapo.model` looks like a local directory that is missing, or `fapo.train_data`
    is not a file. Hub names (`org/name`) are left to the loader."""
    model = settings.model
    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
        raise ConfigError(f"fapo.model: directory not found: {model}")
    if not Path(model).expanduser().exists() and _hub_offline() and not _in_hub_cache(model):
        raise ConfigError(f"fapo.model: {model} is neither a directory nor in the local hub cache, and "
                          "HF_HUB_OFFLINE is set; download it first (huggingface-cli download) or give a directory")
    data = settings.train_data
    if not Path(data).expanduser().is_file():
        raise ConfigError(f"fapo.train_data: file not found: {data}")


@dataclass(frozen=True)
class TrainConfig:
    """A validated training config: TRL's GRPOConfig keyword arguments and the fapo section."""

    trl: dict[str, Any]
    fapo: FapoSettings

    def grpo_config(self, **overrides: Any):
        """Build TRL's GRPOConfig from the TRL keys (imports TRL)."""
        from fapo.train.trl_classes import grpo_config_class

        return grpo_config_class()(**{**self.trl, **overrides})


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _grpo_field_names(trainer: str = "grpo") -> list[str]:
    """GRPOConfig's fields; for trainer "async" also AsyncGRPOConfig's (its own keys, e.g. `max_staleness`)."""
    from fapo.train.trl_classes import async_config_class, grpo_config_class

    names = [f.name for f in dataclasses.fields(grpo_config_class())]
    if trainer == "async":
        names += [f.name for f in dataclasses.fields(async_config_class()) if f.name not in names]
    return names


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides (value parsed as YAML; `fapo.x` targets the fapo section, `fapo.judge.x`
    the judge's)."""
    fapo = dict(raw.get("fapo") or {}) if isinstance(raw.get("fapo") or {}, dict) else raw.get("fapo")
    if isinstance(fapo, dict) and isinstance(fapo.get("judge"), dict):
        fapo["judge"] = dict(fapo["judge"])
    out = {**raw, "fapo": fapo}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        parsed = _load_yaml(value) if value else None
        if key.startswith("fapo.judge.") and isinstance(out["fapo"], dict):
            judge = out["fapo"].get("judge")
            out["fapo"]["judge"] = {**(judge if isinstance(judge, dict) else {}), key[len("fapo.judge.") :]: parsed}
        elif key.startswith("fapo.") and isinstance(out["fapo"], dict):
            out["fapo"][key[len("fapo.") :]] = parsed
        else:
            out[key] = parsed
    return out


def parse_config(raw: dict[str, Any], check_paths: bool = False) -> TrainConfig:
    """Validate a raw config dict (as read from YAML) into a TrainConfig; with `check_paths`, also that
    the model directory and the training data exist (`check_local_paths`)."""
    _check_mapping(raw)
    fapo_raw = raw.get("fapo") or {}
    if not isinstance(fapo_raw, dict):
        raise ConfigError(f"the fapo: section must be a mapping (key: value lines), got {type(fapo_raw).__name__}")
    fapo_fields = [f.name for f in dataclasses.fields(FapoSettings)]
    for key in fapo_raw:
        if key in MOVED_KEYS:
            raise ConfigError(f"fapo.{key} is now fapo.{MOVED_KEYS[key]} (the judge's settings are one section)")
        if key not in fapo_fields:
            raise ConfigError(f"unknown key fapo.{key}{_closest(key, fapo_fields)}")
    _check_fapo_types(fapo_raw)
    trl_keys = {k: v for k, v in raw.items() if k != "fapo"}
    _check_trl_values(trl_keys)
    try:
        settings = FapoSettings(**{**fapo_raw, "judge": _judge_config(fapo_raw.get("judge"))})
    except TypeError as err:
        raise ConfigError(str(err)) from err
    settings.require_run_inputs()
    if check_paths:
        check_local_paths(settings)
    valid = _grpo_field_names(settings.trainer)  # imports TRL: last, once every value has been checked
    for key in trl_keys:
        if key not in valid:
            hint = (f" (TRL's GRPOConfig has none: write fapo.{key})" if key in FAPO_NOT_TRL
                    else _closest(key, valid + ["fapo"]))
            raise ConfigError(f"unknown key {key!r}: not a TRL GRPOConfig field{hint}")
    return TrainConfig(trl=trl_keys, fapo=settings)


def load_config(path: str | Path, overrides: list[str] | None = None, check_paths: bool = False) -> TrainConfig:
    """Read a YAML training config, apply overrides, validate (`parse_config`)."""
    try:
        raw = _load_yaml(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    _check_mapping(raw)
    return parse_config(apply_overrides(raw, overrides or []), check_paths)


def _check_mapping(raw: Any) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"a training config must be a YAML mapping (key: value lines), got {type(raw).__name__}")
