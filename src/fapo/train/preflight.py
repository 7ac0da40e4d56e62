"""`fapo train ... --dry-run`: everything a launch needs, checked in seconds on any machine, no weights loaded.

Owns `run_preflight`: TRL's schedule for the launch's process count, the model's config.json and tokenizer
(context ≥ prompt + completion, a chat template), the first rows of the data (fields, the prompt as rendered,
prompt lengths against `fapo.max_prompt_length`), the policy's vLLM (colocated or a server, whose context it
asks), every judge endpoint (reachable, serving the configured name, room for the GenRM prompt of a longest
rollout plus `max_tokens` where the server reports its context) and the packages the launch imports. Each
finding is one line; a failing one names the fix. A real `fapo train` runs the same checks before the model
loads (`fapo.cli.train`). Must not: load weights or import torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fapo.train.config import ConfigError, TrainConfig
from fapo.train.launch_inputs import model_context, prompt_lengths, prompt_text, read_model_config
from fapo.train.launch_probes import (
    ServedModels,
    missing,
    probe_many,
    read_accelerate_config,
    required_packages,
)

Status = Literal["ok", "note", "fail"]


@dataclass(frozen=True)
class Finding:
    """One check's result: `fail` findings name the fix; `note` ones are worth reading but stop nothing."""

    check: str
    status: Status
    text: str

    def line(self) -> str:
        return f"{self.status.upper():4} {self.check}: {self.text}"


@dataclass(frozen=True)
class Preflight:
    """Every finding of a dry run, in the order checked."""

    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when a launch would start: no finding failed."""
        return not self.failures

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]


@dataclass(frozen=True)
class LaunchSpec:
    """What the dry run checks the config against besides the config itself."""

    kind: Literal["policy", "grm"]
    world_size: int
    """Training processes (GPUs) of the launch."""
    accelerate_config: dict[str, Any] | None = None
    """The accelerate config the launch uses (read for DeepSpeed)."""
    sample_rows: int = 64
    """Rows read from the start of the data to render and measure."""
    check_packages: bool = True
    """Also check that this machine has the packages the launch imports."""
    timeout: float = 5.0
    """Seconds each server may take to answer GET /models."""
    wait_s: float = 0.0
    """How long to keep asking servers that are unreachable (a real launch: TRL's `vllm_server_timeout`, as
    servers started with it may still be loading); 0 for a dry run."""
    on_wait: Callable[[list[str]], None] | None = None
    """Hears the URLs waited for, once."""


@dataclass(frozen=True)
class PromptStats:
    """The sampled prompts: how many, the longest problem (for the GenRM prompt) and token lengths."""

    count: int
    longest: int
    over_limit: int
    longest_problem: str
    gold: str | None


def _trl_value(config: TrainConfig, key: str) -> Any:
    if key in config.trl:
        return config.trl[key]
    from fapo.train.trl_classes import grpo_config_class

    fields = {f.name: f for f in dataclasses.fields(grpo_config_class())}
    return fields[key].default


def check_schedule(config: TrainConfig, world_size: int) -> Finding:
    if config.fapo.trainer == "async":
        from fapo.train.async_trainer import async_refusals

        refused = async_refusals(config.trl)
        if refused:
            return Finding("trainer", "fail", "--trainer async would drop " + "; ".join(refused)
                           + ": set them to what it does (e.g. --set delta=null) or use --trainer grpo")
        from fapo.train.trl_classes import async_config_class

        defaults = {f.name: f.default for f in dataclasses.fields(async_config_class())}
        staleness = config.trl.get("max_staleness", defaults["max_staleness"])
        return Finding("trainer", "ok", f"AsyncGRPOTrainer, {world_size} processes; trains on rollouts up to "
                                        f"max_staleness = {staleness} optimizer steps old")
    from fapo.train.schedule import effective_schedule

    try:
        return Finding("schedule", "ok", effective_schedule(config.trl, world_size).describe())
    except ValueError as err:
        return Finding("schedule", "fail", f"{err}: README's 'Launch layouts' gives a schedule per GPU count")


def _first_rows(config: TrainConfig, kind: str, limit: int) -> list[dict[str, Any]]:
    from fapo.train.data import grm_rows, policy_rows

    settings = config.fapo
    sample = min(limit, settings.max_train_samples or limit)
    return (policy_rows if kind == "policy" else grm_rows)(dataclasses.replace(settings, max_train_samples=sample))


def _fields(config: TrainConfig) -> str:
    from fapo.train.data import read_rows

    row = read_rows(config.fapo.train_data, limit=1)[0]
    names = []
    for key, value in row.items():
        names += [f"{key}.{sub}" for sub in value] if isinstance(value, dict) else [key]
    return ", ".join(names)


def check_data(config: TrainConfig, spec: LaunchSpec, tokenizer: Any, findings: list[Finding]) -> PromptStats | None:
    """Read and render the first rows; their prompt lengths against fapo.max_prompt_length."""
    if not Path(config.fapo.train_data).expanduser().is_file():
        findings.append(Finding("data", "fail", f"fapo.train_data: file not found: {config.fapo.train_data} (the "
                                                "recipe's training file: fapo data prepare writes it)"))
        return None
    try:
        fields = _fields(config)
        rows = _first_rows(config, spec.kind, spec.sample_rows)
    except (ConfigError, IndexError) as err:
        findings.append(Finding("data", "fail", str(err) or f"{config.fapo.train_data}: no rows"))
        return None
    if tokenizer is None:
        findings.append(Finding("data", "ok", f"{config.fapo.train_data}: fields {fields}; first {len(rows)} rows "
                                              "read (prompt lengths not measured: no tokenizer)"))
        return None
    lengths = prompt_lengths(tokenizer, rows)
    limit = config.fapo.max_prompt_length
    over = sum(n > limit for n in lengths) if limit is not None else 0
    rule = (f"limit fapo.max_prompt_length {limit}: {over} of {len(rows)} over, dropped at launch" if limit
            else "no fapo.max_prompt_length: none dropped")
    findings.append(Finding("data", "ok", f"{config.fapo.train_data}: fields {fields}; first {len(rows)} rows: "
                                          f"prompts {min(lengths)}-{max(lengths)} tokens ({rule})"))
    findings.append(Finding("prompt", "note", "row 1 as the model sees it: "
                            + json.dumps(prompt_text(tokenizer, rows[0]["prompt"]), ensure_ascii=False)[:600]))
    if over == len(rows):
        findings.append(Finding("data", "fail", f"every sampled prompt is over fapo.max_prompt_length {limit}: "
                                                "raise it or check fapo.problem_field / the prompt template"))
    longest = max(rows, key=lambda r: len(str(r.get("problem", ""))))
    return PromptStats(len(rows), max(lengths), over, str(longest.get("problem", "")),
                       None if longest.get("answer") is None else str(longest["answer"]))


def _load_tokenizer(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def _rope_theta(model_config: dict[str, Any]) -> Any:
    rope = model_config.get("rope_parameters") or model_config.get("rope_scaling") or {}
    return model_config.get("rope_theta", rope.get("rope_theta") if isinstance(rope, dict) else None)


def check_model(config: TrainConfig, findings: list[Finding]) -> tuple[int | None, Any]:
    """config.json (context after the override) and the tokenizer with its chat template."""
    settings = config.fapo
    try:
        model_config = read_model_config(settings.model)
    except ConfigError as err:
        findings.append(Finding("model", "fail", str(err)))
        return None, None
    context, source = model_context(settings, model_config)
    arch = ",".join(model_config.get("architectures") or [str(model_config.get("model_type"))])
    try:
        tokenizer = _load_tokenizer(settings.model)
    except Exception as err:  # transformers raises many kinds here; the line names the model and what it said
        findings.append(Finding("tokenizer", "fail", f"cannot load the tokenizer of {settings.model}: "
                                                     f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"))
        return context, None
    findings.append(Finding("model", "ok", f"{settings.model}: {arch}, context {context} tokens ({source}), "
                                           f"rope_theta {_rope_theta(model_config)}"))
    if not getattr(tokenizer, "chat_template", None):
        findings.append(Finding("tokenizer", "fail", f"{settings.model} has no chat template: add one to its "
                                                     "tokenizer_config.json (prompts are chat messages)"))
        return context, None
    return context, tokenizer


def needed_context(config: TrainConfig, stats: PromptStats | None) -> tuple[int, str]:
    """Tokens one sequence needs: the prompt limit (or the longest sampled prompt) plus max_completion_length."""
    completion = _trl_value(config, "max_completion_length")
    limit = config.fapo.max_prompt_length
    prompt, what = (limit, "fapo.max_prompt_length") if limit else ((stats.longest, "longest sampled prompt")
                                                                     if stats else (0, "no prompt read"))
    return prompt + completion, f"{prompt} prompt ({what}) + {completion} completion (max_completion_length)"


def check_context(context: int | None, need: int, why: str) -> Finding:
    if context is None:
        return Finding("context", "fail", "config.json has no max_position_embeddings: set "
                                          "fapo.max_position_embeddings to the model's context")
    if context < need:
        return Finding("context", "fail", f"the model's context is {context} tokens, a sequence needs {need} = "
                                          f"{why}: set fapo.max_position_embeddings: 32768 (the recipe's "
                                          "override_config) or lower max_completion_length")
    return Finding("context", "ok", f"{context} tokens >= {need} = {why}")


def rollout_url(config: TrainConfig) -> str | None:
    """The policy's vLLM server base URL (TRL's server mode), or None when it generates otherwise."""
    if config.fapo.trainer != "async" and (not _trl_value(config, "use_vllm")
                                           or _trl_value(config, "vllm_mode") == "colocate"):
        return None
    return (_trl_value(config, "vllm_server_base_url")
            or f"http://{_trl_value(config, 'vllm_server_host')}:{_trl_value(config, 'vllm_server_port')}")


def check_rollout_vllm(config: TrainConfig, need: int, served_by: dict[str, ServedModels]) -> list[Finding]:
    """The policy's vLLM: colocated (its max_model_len) or a server (asked for its context)."""
    if not _trl_value(config, "use_vllm") and config.fapo.trainer != "async":
        return []
    findings = []
    if _trl_value(config, "vllm_importance_sampling_correction") and config.fapo.trainer != "async":
        findings.append(Finding("vllm", "note", "TRL's importance-sampling correction is on (mode "
                                f"{_trl_value(config, 'vllm_importance_sampling_mode')}, cap "
                                f"{_trl_value(config, 'vllm_importance_sampling_clip_max')}); the recipe has none: "
                                "vllm_importance_sampling_correction: false matches it"))
    if _trl_value(config, "vllm_mode") == "colocate" and config.fapo.trainer != "async":
        length = _trl_value(config, "vllm_max_model_length")
        if length is not None and length < need:
            return findings + [Finding("vllm", "fail", f"vllm_max_model_length {length} < {need}: raise it")]
        return findings + [Finding("vllm", "ok", f"colocated, max_model_len {length or 'the model context'}")]
    url = rollout_url(config)
    served = served_by[url.rstrip("/") + "/v1"]
    serve = (f"trl vllm-serve --model {config.fapo.model} --max-model-len {need}"
             + (f" --hf-overrides '{{\"max_position_embeddings\": {config.fapo.max_position_embeddings}}}'"
                if config.fapo.max_position_embeddings else ""))
    if served.error:
        return findings + [Finding("vllm", "fail", f"rollout server {url}: {served.error}: start it first "
                                                   f"({serve})")]
    lengths = sorted(set(served.context.values()))
    if lengths and lengths[0] < need:
        return findings + [Finding("vllm", "fail", f"rollout server {url} has max_model_len {lengths[0]} < {need}: "
                                                   f"restart it: {serve}")]
    return findings + [Finding("vllm", "ok", f"rollout server {url} serves {', '.join(served.names)}, "
                                             f"max_model_len {lengths[0] if lengths else 'not reported'}")]


def grm_prompt_tokens(tokenizer: Any, stats: PromptStats, settings) -> int:
    """Tokens of the GenRM prompt around a rollout (the longest sampled problem, gold), counted with the
    policy's tokenizer; a rollout's paragraph tags add more."""
    from fapo.grm.prompt import grm_messages

    messages = grm_messages(stats.longest_problem, [""], stats.gold if settings.judge_with_gold else None)
    return prompt_lengths(tokenizer, [{"prompt": messages}])[0]


def check_judges(config: TrainConfig, served_by: dict[str, ServedModels], tokenizer: Any,
                 stats: PromptStats | None) -> list[Finding]:
    judge = config.fapo.judge
    if judge is None:
        return []
    completion = _trl_value(config, "max_completion_length")
    frame = grm_prompt_tokens(tokenizer, stats, config.fapo) if tokenizer is not None and stats else 0
    need = frame + completion + judge.max_tokens
    why = (f"GenRM prompt >= {frame + completion} ({frame} around a {completion}-token rollout) + max_tokens "
           f"{judge.max_tokens}")
    findings = []
    for endpoint in judge.endpoints:
        served = served_by[endpoint.url]
        where = f"{endpoint.url}"
        if served.error:
            fix = ("check the host in fapo.judge.endpoints" if served.error.startswith("unknown host")
                   else "start the GenRM server first (README: fapo serve-grm --engine vllm ...)")
            findings.append(Finding("judge", "fail", f"{where}: {served.error}: {fix}"))
        elif endpoint.model not in served.names:
            findings.append(Finding("judge", "fail", f"{where} serves {list(served.names)}, not {endpoint.model!r}: "
                                                     "set fapo.judge.model to its name or start it with "
                                                     f"--served-model-name {endpoint.model}"))
        elif served.max_tokens_limit is not None and served.max_tokens_limit < judge.max_tokens:
            findings.append(Finding("judge", "fail", f"{where} accepts max_tokens <= {served.max_tokens_limit}, "
                                                     f"fapo.judge.max_tokens is {judge.max_tokens}: lower it or "
                                                     "serve with a larger limit"))
        elif endpoint.model not in served.context:
            findings.append(Finding("judge", "note", f"{where} serves {endpoint.model!r} and reports no context: "
                                                     f"it needs >= {need} tokens ({why})"))
        elif served.context[endpoint.model] < need:
            findings.append(Finding("judge", "fail", f"{where}: context {served.context[endpoint.model]} < {need} = "
                                                     f"{why}: restart it with --max-model-len {need} or more, or "
                                                     "lower fapo.judge.max_tokens"))
        else:
            findings.append(Finding("judge", "ok", f"{where} serves {endpoint.model!r}, context "
                                                   f"{served.context[endpoint.model]} >= {need} = {why}"))
    return findings


def check_packages(config: TrainConfig, spec: LaunchSpec) -> list[Finding]:
    if not spec.check_packages:
        return [Finding("packages", "note", "not checked on this machine (--skip-packages)")]
    use_vllm = bool(_trl_value(config, "use_vllm"))
    needed = required_packages(config.trl, spec.accelerate_config, use_vllm and config.fapo.trainer != "async")
    findings = [Finding("packages", "fail", f"{' or '.join(modules)} is not installed ({why}): pip install "
                                            f"'fapo[{'vllm' if modules == ('vllm',) else 'gpu'}]'")
                for modules, why in needed if missing(modules)]
    if config.fapo.trainer == "async":
        from fapo.train.async_trainer import check_async_requirements

        try:
            check_async_requirements()
        except ConfigError as err:
            findings.append(Finding("packages", "fail", str(err)))
    if not findings:
        findings.append(Finding("packages", "ok", ", ".join(m[0] for m, _ in needed) or "none optional needed"))
    return findings


def server_wait_s(config: TrainConfig) -> float:
    """How long a real launch waits for its servers: TRL's `vllm_server_timeout` (it waits as long itself)."""
    return float(_trl_value(config, "vllm_server_timeout"))


def ask_servers(config: TrainConfig, spec: LaunchSpec) -> dict[str, ServedModels]:
    """Every server of the launch (the policy's vLLM server, each judge endpoint) asked at once, by base URL."""
    targets = [(e.url, e.api_key) for e in config.fapo.judge.endpoints] if config.fapo.judge else []
    url = rollout_url(config)
    if url is not None:
        targets.append((url.rstrip("/") + "/v1", None))
    answers = probe_many(targets, spec.timeout, spec.wait_s, spec.on_wait)
    return {served.url: served for served in answers}


def run_preflight(config: TrainConfig, spec: LaunchSpec) -> Preflight:
    """Every check, in order (the servers are asked all at once, each within `spec.timeout`)."""
    findings: list[Finding] = []
    findings.append(check_schedule(config, spec.world_size))
    context, tokenizer = check_model(config, findings)
    stats = check_data(config, spec, tokenizer, findings)
    need, why = needed_context(config, stats)
    if tokenizer is not None:
        findings.append(check_context(context, need, why))
    served_by = ask_servers(config, spec)
    findings += check_rollout_vllm(config, need, served_by)
    findings += check_judges(config, served_by, tokenizer, stats)
    findings += check_packages(config, spec)
    return Preflight(tuple(findings))


def accelerate_settings(path: str | None) -> tuple[dict[str, Any] | None, int | None]:
    """The accelerate config at `path` and its process count (ConfigError when unreadable)."""
    if not path:
        return None, None
    try:
        data = read_accelerate_config(path)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    processes = data.get("num_processes")
    return data, processes if isinstance(processes, int) else None
