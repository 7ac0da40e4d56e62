"""What a launch needs from outside the config: the servers it will talk to and the packages it will import.

Owns: asking an OpenAI-compatible server what it serves (`GET {base}/models`: the model names, the context
each reports — vLLM's and SGLang's `max_model_len`, which `fapo serve-grm` reports too — and serve-grm's
largest `max_tokens`), several at once with a short timeout; reading an accelerate config; and the optional
packages a config needs (deepspeed, wandb, tensorboard, vllm). Used by `fapo.train.preflight`.
Must not: import torch, TRL or any of the packages it looks for (it only finds them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_MODELS_BYTES = 1 << 20
"""Largest /v1/models answer read (a real one is a few hundred bytes)."""


@dataclass(frozen=True)
class ServedModels:
    """What one server said at `GET {base}/models`, or why it said nothing."""

    url: str
    names: tuple[str, ...] = ()
    """Every model id it serves (vLLM also answers to `root`, the path it loaded)."""
    context: Mapping[str, int] = field(default_factory=dict)
    """model id → the context it reports (`max_model_len`), for those that report one."""
    max_tokens_limit: int | None = None
    """The largest `max_tokens` it accepts, where it says (`fapo serve-grm`)."""
    error: str | None = None
    """Why the probe failed (unreachable, HTTP status, not JSON); None when it answered."""


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""No proxy from the environment: the servers are asked directly, as fapo's GenRM client (`fapo.grm.http`) asks them."""


def _get_json(url: str, api_key: str | None, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    with _DIRECT.open(request, timeout=timeout) as response:
        return json.loads(response.read(MAX_MODELS_BYTES))


def probe_models(base_url: str, api_key: str | None = None, timeout: float = 5.0) -> ServedModels:
    """Ask `base_url` (ending in /v1) what it serves; never raises."""
    url = base_url.rstrip("/")
    try:
        answer = _get_json(f"{url}/models", api_key, timeout)
    except urllib.error.HTTPError as err:
        return ServedModels(url, error=f"HTTP {err.code} at {url}/models")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, socket.gaierror):
            return ServedModels(url, error=f"unknown host ({reason})")
        return ServedModels(url, error=f"unreachable ({reason})")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ServedModels(url, error=f"{url}/models did not answer JSON")
    entries = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        return ServedModels(url, error=f"{url}/models has no 'data' list")
    names: list[str] = []
    context: dict[str, int] = {}
    limit = None
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        aliases = [entry["id"]] + ([entry["root"]] if isinstance(entry.get("root"), str) else [])
        names += aliases
        if isinstance(entry.get("max_model_len"), int):
            context.update({alias: entry["max_model_len"] for alias in aliases})
        if isinstance(entry.get("max_tokens_limit"), int):
            limit = entry["max_tokens_limit"]
    return ServedModels(url, tuple(dict.fromkeys(names)), context, limit)


def probe_many(targets: Sequence[tuple[str, str | None]], timeout: float = 5.0, wait_s: float = 0.0,
               on_wait: Callable[[list[str]], None] | None = None) -> list[ServedModels]:
    """`probe_models` for each (base_url, api_key), all at once. With `wait_s`, the unreachable ones are asked
    again every 2 s until they answer or `wait_s` has passed (servers that are still starting; a host name
    that does not resolve is not waited for); `on_wait`
    hears their URLs once, when the waiting starts."""
    if not targets:
        return []
    deadline = time.monotonic() + wait_s
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        answers = list(pool.map(lambda t: probe_models(t[0], t[1], timeout), targets))
        waiting = [i for i, a in enumerate(answers) if a.error and a.error.startswith("unreachable")]
        if waiting and wait_s > 0 and on_wait is not None:
            on_wait([answers[i].url for i in waiting])
        while waiting and time.monotonic() + 2.0 < deadline:
            time.sleep(2.0)
            again = list(pool.map(lambda i: probe_models(targets[i][0], targets[i][1], timeout), waiting))
            for i, answer in zip(waiting, again):
                answers[i] = answer
            waiting = [i for i in waiting if answers[i].error and answers[i].error.startswith("unreachable")]
    return answers


def read_accelerate_config(path: str | Path) -> dict[str, Any]:
    """An accelerate config file as a dict; ValueError naming the file when it cannot be read."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read accelerate config {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"accelerate config {path} is not a mapping")
    return data


def uses_deepspeed(trl: Mapping[str, Any], accelerate: Mapping[str, Any] | None) -> str | None:
    """Why this launch imports DeepSpeed (None: it does not): the accelerate config, the `deepspeed` key, or
    `accelerate launch`'s environment in a running launch."""
    if accelerate is not None and str(accelerate.get("distributed_type", "")).upper() == "DEEPSPEED":
        return "the accelerate config's distributed_type: DEEPSPEED"
    if trl.get("deepspeed"):
        return "the config's deepspeed key"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "accelerate launch's DeepSpeed setting"
    return None


REPORTERS = {"wandb": ("wandb",), "tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",),
             "comet_ml": ("comet_ml",), "trackio": ("trackio",), "clearml": ("clearml",)}
"""report_to name → the modules transformers accepts for it (any one)."""


def required_packages(trl: Mapping[str, Any], accelerate: Mapping[str, Any] | None, use_vllm: bool,
                      ) -> list[tuple[tuple[str, ...], str]]:
    """(modules, why) for every optional package this launch imports; any one module of each satisfies it."""
    needed: list[tuple[tuple[str, ...], str]] = []
    why = uses_deepspeed(trl, accelerate)
    if why:
        needed.append((("deepspeed",), why))
    report_to = trl.get("report_to", "none")
    for name in [report_to] if isinstance(report_to, str) else list(report_to or []):
        if name in REPORTERS:
            needed.append((REPORTERS[name], f"report_to: {name}"))
    if use_vllm:
        needed.append((("vllm",), "use_vllm: true"))
    return needed


def missing(modules: tuple[str, ...]) -> bool:
    """True when none of `modules` can be imported here (found without importing it)."""
    return all(importlib.util.find_spec(m) is None for m in modules)
