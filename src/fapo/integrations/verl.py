"""fapo inside verl: drop-in reward functions for verl's reward loop (docs/design.md §1.1, §1.2).

Point a verl run script at them with one line each:

    custom_reward_function.path=pkg://fapo.integrations.verl
    custom_reward_function.name=compute_score_fapo        # or compute_score_baseline, compute_score_fapo_genrm

They have the signatures of the FAPO recipe's functions (verl-recipe `fapo/reward_fn_reasoning.py`,
`fapo/reward_fn_genrm.py`), so verl's reward managers (`dapo`, `naive`) call them as they call those:
`data_source, solution_str, ground_truth, extra_info` as keywords, plus `reward_router_address` and
`reward_model_tokenizer` when verl runs a GenRM behind its reward router, plus whatever
`custom_reward_function.reward_kwargs` holds (the settings in `SETTINGS` below).

What changes against the recipe's functions:
- answers are checked by `fapo.verify` (math-verify with worker-process timeouts) instead of DAPO's
  normalised string match, on the same last 300 characters of the response (`truncation_rule` "tail": verl
  does not say whether a response was cut, so, as in the recipe, a cut response whose tail holds the right
  answer counts and DAPO's reward manager subtracts the overlong penalty);
- the GenRM is asked either through verl's router (SGLang's `/generate`, token ids in and out, as
  the recipe does) or through fapo's client to OpenAI-compatible servers (`judge_endpoints`, or the
  `FAPO_JUDGE_ENDPOINTS` environment variable: comma-separated `http://host:port/v1` URLs), in both
  cases with fapo's timeouts, retries, circuit breaker and cache (`fapo.grm.client`);
- a failed judgement is no penalty *and* a visible `judge_status` ("error" or "invalid"), never a
  silent "not flawed"; `judge_metrics()` gives the process's counters (`grm/flawed_ratio`, ...); and once
  more than `judge_failure_rate` (20%) of a process's last `judge_failure_window` (200) judgements failed,
  `compute_score_fapo` raises `JudgeFailuresExceeded` (or, with `on_judge_failures="warn"`, warns) instead
  of quietly training GRPO;
- the GenRM prompt is the one the GenRM was trained on. The recipe's reward function fills a
  template that says "(split into steps)" with the raw solution: no step boundaries, no indices, so
  the index the GenRM names refers to a split it had to invent, and nothing can check it is in
  range. FAPO-GenRM-4B was trained on FAPO-Critic prompts, whose solutions are split into paragraphs
  tagged `<paragraph_i>` from 0 ("split into paragraphs, enclosed with tags and indexed from 0").
  fapo renders exactly that (`fapo.grm.prompt.build_grm_prompt` on `fapo.steps.split_steps`, blank
  line separated paragraphs), so policy rollouts reach the GenRM in its training format, and the
  verdict is read strictly against the number of paragraphs (`parse_verdict`, never `eval`).

Importable without verl, and imports neither torch nor transformers (a tokenizer arrives as an object).
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fapo.bounds import check_number
from fapo.grm.failure_window import FailureBudget, FailureWindow
from fapo.grm.judge import Judge, make_judge
from fapo.grm.prompt import parse_verdict
from fapo.grm.protocols import TokenGenerate
from fapo.grm.types import Endpoint, JudgeConfig, JudgeItem, Judgement
from fapo.metrics import ratio
from fapo.outcome import answer_text
from fapo.rewards import MAX_PENALTY, fapo_reward, grm_reward
from fapo.steps import split_steps
from fapo.verify import MAX_TIMEOUT_S, VerifyResult, verify_batch

logger = logging.getLogger(__name__)

ENV_ENDPOINTS = "FAPO_JUDGE_ENDPOINTS"
ENV_MODEL = "FAPO_JUDGE_MODEL"
ENV_API_KEY = "FAPO_JUDGE_API_KEY"
NO_ANSWER = "[INVALID]"
"""`pred` when no final answer was extracted (the recipe's marker, so verl's maj@k groups them alike)."""

_VERL_ARGUMENTS = frozenset({"data_source", "extra_info", "reward_router_address", "reward_model_tokenizer"})


@dataclass(frozen=True)
class VerlRewardSettings:
    """Settings from `custom_reward_function.reward_kwargs` (same names as the `fapo:` config section)."""

    penalty: float = 1.0
    """λ: what a flawed positive loses (1.0 in the paper: its reward drops from +1 to 0)."""
    judge_endpoints: tuple[str, ...] = ()
    """OpenAI-compatible GenRM servers (`http://host:port/v1`); a list or a comma-separated string.
    Empty: `FAPO_JUDGE_ENDPOINTS`, else verl's reward router (`reward_model.enable=True`)."""
    judge_model: str = ""
    """The served model name on those servers (default: `FAPO_JUDGE_MODEL`, else "genrm")."""
    judge_api_key: str | None = None
    """Bearer token for those servers (default: `FAPO_JUDGE_API_KEY`)."""
    judge_client: tuple[tuple[str, Any], ...] = ()
    """Every other `JudgeConfig` field, given as `judge_<field>` in reward_kwargs (judge_timeout, judge_retries,
    judge_max_tokens, judge_temperature, judge_concurrency, judge_votes, judge_tie_break, ...); `_settings`
    collects them here. Defaults: `JudgeConfig`'s, except those in `VERL_JUDGE_DEFAULTS`."""
    judge_with_gold: bool = True
    """Show the GenRM the gold answer (the recipe and FAPO-Critic do)."""
    step_split: str = "paragraph"
    """How a rollout is split into the steps the GenRM indexes (`fapo.steps.split_steps`)."""
    verify_timeout: float = 5.0
    """Seconds math-verify may spend on one answer before it counts as wrong (status "timeout")."""
    truncation_rule: str = "tail"
    """How a response's answer is read (`fapo.outcome`): "tail", the recipe's rule, from its last 300 characters,
    truncated or not (the recipe's `verify` does `solution_str[-300:]`; DAPO's reward manager adds the overlong
    penalty). verl passes no truncation flag to a reward function, so "wrong" (fapo's TRL default) cannot be
    applied here; the TRL path's `fapo.truncation_rule: tail` is the same rule."""
    judge_failure_rate: float = 0.2
    """No silent GRPO (`fapo.grm.failure_window`): the largest share of failed judgements (error or invalid)
    tolerated over this process's last `judge_failure_window` judged rollouts (1: never act)."""
    judge_failure_window: int = 200
    """Judged rollouts the failure share is taken over (per reward-worker process)."""
    on_judge_failures: str = "stop"
    """Past the share: "stop" (compute_score_fapo raises `JudgeFailuresExceeded` and the run stops) or "warn"
    (a warning, repeated every `judge_failure_window` judgements while it holds)."""

    def __post_init__(self) -> None:
        endpoints = self.judge_endpoints
        if isinstance(endpoints, str):
            endpoints = tuple(u.strip() for u in endpoints.split(",") if u.strip())
        object.__setattr__(self, "judge_endpoints", tuple(str(u) for u in endpoints))
        check_number("penalty (λ)", self.penalty, 0, MAX_PENALTY)  # nan or inf would poison the group advantages
        check_number("verify_timeout", self.verify_timeout, 0, MAX_TIMEOUT_S, low_open=True)
        if self.truncation_rule != "tail":
            raise ValueError(f'truncation_rule must be "tail" in verl (verl does not tell a reward function that a '
                             f'response was truncated), got {self.truncation_rule!r}')
        self.failure_budget()  # a bad judge_failure_* / on_judge_failures value fails here
        self.judge_config(("http://127.0.0.1:1/v1",))  # a bad judge_* value fails here, naming the field

    def failure_budget(self) -> FailureBudget:
        return FailureBudget(self.judge_failure_rate, self.judge_failure_window, self.on_judge_failures)  # type: ignore[arg-type]

    def judge_config(self, endpoints: tuple[Endpoint | str, ...]) -> JudgeConfig:
        """The client settings for `endpoints` (URL strings get `judge_model` and `judge_api_key`)."""
        model = self.judge_model or os.environ.get(ENV_MODEL) or "genrm"
        api_key = self.judge_api_key or os.environ.get(ENV_API_KEY) or None
        return JudgeConfig(endpoints=endpoints, model=model, api_key=api_key,
                           **{**VERL_JUDGE_DEFAULTS, **dict(self.judge_client)})


VERL_JUDGE_DEFAULTS: dict[str, Any] = {"timeout": 600.0, "retries": 2, "concurrency": 256}
"""Where verl's defaults differ from `JudgeConfig`'s: a critique of the recipe's 16,384 tokens (`JudgeConfig`'s
`max_tokens`, as everywhere) takes minutes, and one reward worker judges a whole batch at once."""

_CLIENT_FIELDS = tuple(f.name for f in fields(JudgeConfig) if f.name not in ("endpoints", "model", "api_key"))
SETTINGS = tuple(f.name for f in fields(VerlRewardSettings) if f.name != "judge_client") + tuple(
    "judge_" + name for name in _CLIENT_FIELDS)


def _settings(kwargs: Mapping[str, Any], function: str) -> VerlRewardSettings:
    """The settings among a call's keyword arguments; unknown names are errors that list the known ones."""
    unknown = sorted(set(kwargs) - set(SETTINGS) - _VERL_ARGUMENTS)
    if unknown:
        raise TypeError(f"{function}() got unexpected keyword argument(s) {unknown}; "
                        f"fapo's settings (custom_reward_function.reward_kwargs) are {list(SETTINGS)}")
    client = tuple(sorted((k.removeprefix("judge_"), v) for k, v in kwargs.items()
                          if k in SETTINGS and k.removeprefix("judge_") in _CLIENT_FIELDS))
    plain = {k: v for k, v in kwargs.items() if k in SETTINGS and k.removeprefix("judge_") not in _CLIENT_FIELDS}
    return VerlRewardSettings(**plain, judge_client=client)


async def _verify(solution_str: str, ground_truth: Any, settings: VerlRewardSettings) -> VerifyResult:
    """`fapo.verify` on one rollout's answer text (`fapo.outcome.answer_text`: its last 300 characters), off the
    event loop (the shared verifier's pool does the work)."""
    gold = str(ground_truth) if ground_truth is not None else None
    text = answer_text(solution_str, settings.truncation_rule)  # type: ignore[arg-type]
    results = await asyncio.to_thread(verify_batch, [text], [gold], timeout=settings.verify_timeout)
    return results[0]


_failure_windows: dict[FailureBudget, FailureWindow] = {}
"""This process's judged rollouts, one window per failure budget (reward workers are processes)."""
_unwarned: dict[FailureBudget, int] = {}
"""Judgements recorded past the budget since the last warning ("warn" repeats every window's worth)."""


def _watch_failures(settings: VerlRewardSettings, status: str) -> None:
    """Record one judgement; past the budget raise ("stop") or warn every `window` judgements ("warn")."""
    budget = settings.failure_budget()
    window = _failure_windows.setdefault(budget, FailureWindow(budget))
    window.record([status])
    warning = window.check("fapo.integrations.verl.compute_score_fapo")
    if warning is None:
        _unwarned.pop(budget, None)
        return
    _unwarned[budget] = _unwarned.get(budget, 0) + 1
    if _unwarned[budget] == 1 or _unwarned[budget] > budget.window:
        _unwarned[budget] = 1
        logger.warning(warning)


async def compute_score_baseline(solution_str: str, ground_truth: str, **kwargs: Any) -> dict[str, Any]:
    """GRPO's reward: +1 for a verified-correct final answer, −1 otherwise (no GenRM).

    Returns {"score", "acc", "pred", "verify_status"}.
    """
    settings = _settings(kwargs, "compute_score_baseline")
    result = await _verify(solution_str, ground_truth, settings)
    return {"score": fapo_reward(result.correct, None, 0.0), "acc": result.correct,
            "pred": result.pred or NO_ANSWER, "verify_status": result.status}


async def compute_score_fapo(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None,
    reward_router_address: str | None = None,
    reward_model_tokenizer: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """R_FAPO = R_RLVR − λ·[verified correct and the GenRM names a wrong step]   (paper §3, docs/design.md §1.1).

    The GenRM is asked only about verified-correct rollouts of training data (`extra_info["split"]`
    is not "test"), with `extra_info["question"]` as the problem. Returns a dict that verl logs:
    `score`, `acc`, `pred`, `is_flawed_positive`, `judge_status` ("ok", "invalid", "error" or
    "skipped" when not asked), `judge_latency_s`, `verify_status`. A judgement that failed gives
    no penalty and says so in `judge_status`. Raises ValueError when a rollout needs judging but
    no GenRM is configured, or `extra_info` has no "question".
    """
    settings = _settings(kwargs, "compute_score_fapo")
    info = extra_info or {}
    result = await _verify(solution_str, ground_truth, settings)
    judgement: Judgement | None = None
    if result.correct and info.get("split") != "test":
        judge = _client(settings, reward_router_address, reward_model_tokenizer)
        gold = str(ground_truth) if settings.judge_with_gold else None
        item = JudgeItem(_question(info), tuple(split_steps(solution_str, settings.step_split)), gold)
        judgement = (await judge.judge_many([item]))[0]
        _watch_failures(settings, judgement.status)
    flawed = judgement.flawed if judgement is not None and judgement.status == "ok" else None
    return {
        "score": fapo_reward(result.correct, flawed, settings.penalty),
        "acc": result.correct,
        "pred": result.pred or NO_ANSWER,
        "is_flawed_positive": flawed is True,
        "judge_status": judgement.status if judgement is not None else "skipped",
        "judge_latency_s": round(judgement.latency_s, 4) if judgement is not None else 0.0,
        "verify_status": result.status,
    }


def compute_score_genrm(
    solution_str: str, ground_truth: int | str, extra_info: Mapping[str, Any] | None, **kwargs: Any
) -> dict[str, Any]:
    """GenRM RL reward R_outcome + R_process (`fapo.rewards.grm_reward`, paper §3.2, docs/design.md §1.2).

    `solution_str` is the GenRM's critique, `ground_truth` the earliest wrong step (−1: none) and
    `extra_info["total_steps"]` the solution's number of steps (FAPO-Critic rows carry both).
    Returns {"score", "acc", "pred", "gt"}: `pred` is the verdict read by `parse_verdict` (None when
    there is no valid one), `acc` whether it called flawed/clean right.
    """
    _settings(kwargs, "compute_score_genrm")
    label, total_steps = _label(ground_truth), _total_steps(extra_info)
    if label >= total_steps:
        raise ValueError(f"ground_truth {label} names no step of a {total_steps}-step solution (0..{total_steps - 1}, "
                         "or -1 for none)")
    predicted = parse_verdict(solution_str, total_steps)
    return {
        "score": grm_reward(predicted, label, total_steps),
        "acc": predicted is not None and (predicted >= 0) == (label >= 0),
        "pred": predicted,
        "gt": label,
    }


compute_score_fapo_genrm = compute_score_genrm
"""The GenRM-training reward under the name verl-recipe fapo's run_fapo_genrm_train.sh gives it
(`custom_reward_function.name=compute_score_fapo_genrm`), so a recipe user changes only the path."""


def _question(info: Mapping[str, Any]) -> str:
    question = info.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError('extra_info["question"] must hold the problem text the GenRM reads '
                         "(the FAPO recipe's prepare_fapo_data.py writes it)")
    return question


def _label(ground_truth: int | str) -> int:
    try:
        label = int(str(ground_truth).strip())
    except ValueError:
        raise ValueError(f"ground_truth must be the earliest wrong step as an integer (-1: none), got {ground_truth!r}") from None
    if label < -1:
        raise ValueError(f"ground_truth must be -1 or a 0-based step index, got {label}")
    return label


def _total_steps(extra_info: Mapping[str, Any] | None) -> int:
    value = (extra_info or {}).get("total_steps")
    try:  # a whole number (2 or 2.0 or "2"), never a fraction cut down (2.5) nor a bool
        steps = int(value) if not isinstance(value, bool) and float(value) == int(value) else 0  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        steps = 0
    if steps < 1:
        raise ValueError(f'extra_info["total_steps"] must be the number of solution steps (>= 1), got {value!r}')
    return steps


# ---------------------------------------------------------------------------------------------------
# One GenRM client per event loop and judge configuration (a client's connections live in one loop).

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, Judge]] = weakref.WeakKeyDictionary()


def _client(settings: VerlRewardSettings, router_address: str | None, tokenizer: Any) -> Judge:
    """The client for these settings in the running loop: fapo's endpoints if any, else verl's router."""
    urls = settings.judge_endpoints or tuple(
        u.strip() for u in os.environ.get(ENV_ENDPOINTS, "").split(",") if u.strip()
    )
    if urls:
        key: tuple = ("openai", settings, urls)
    elif router_address:
        if tokenizer is None:
            raise ValueError("verl passed a reward_router_address but no reward_model_tokenizer")
        key = ("router", settings, router_address, id(tokenizer))
    else:
        raise ValueError(
            "compute_score_fapo needs a GenRM: run it in verl with reward_model.enable=True (verl's router), "
            f"or give custom_reward_function.reward_kwargs.judge_endpoints / {ENV_ENDPOINTS} (http://host:port/v1, ...)"
        )
    loop = asyncio.get_running_loop()
    per_loop = _clients.get(loop)
    if per_loop is None:
        per_loop = _clients[loop] = {}
        # when the loop is gone its clients' counters move to the process totals, so they never go backwards
        weakref.finalize(loop, _retire, per_loop)
    if key not in per_loop:
        per_loop[key] = _make_client(settings, urls, router_address, tokenizer)
    return per_loop[key]


def _make_client(
    settings: VerlRewardSettings, urls: tuple[str, ...], router_address: str | None, tokenizer: Any
) -> Judge:
    """The judge `fapo.grm.judge.make_judge` builds: fapo's client to `urls`, or to verl's router's /generate."""
    if urls:
        return make_judge(settings.judge_config(urls))
    return make_judge(settings.judge_config((Endpoint(f"http://{router_address}"),)), protocol=TokenGenerate(tokenizer))


_retired: dict[str, float] = {}
"""Counters of the clients whose event loop is gone."""


def _add_counters(totals: dict[str, float], clients) -> None:
    for client in clients:
        for name, value in client.metrics().items():
            if not name.startswith("grm/endpoint/") and "latency" not in name and name != "grm/flawed_ratio":
                totals[name] = totals.get(name, 0.0) + value


def _retire(per_loop: dict[tuple, Judge]) -> None:
    _add_counters(_retired, per_loop.values())


def judge_metrics() -> dict[str, float]:
    """This process's GenRM counters, summed over its clients: grm/judgements, grm/ok, grm/invalid,
    grm/errors, grm/flawed, grm/requests, grm/retries, ...; grm/flawed_ratio = flawed / ok (NaN before any ok
    verdict: `fapo.metrics`' empty-case convention)."""
    totals = dict(_retired)
    for per_loop in list(_clients.values()):
        _add_counters(totals, per_loop.values())
    totals["grm/flawed_ratio"] = ratio(totals.get("grm/flawed", 0.0), totals.get("grm/ok", 0.0))
    return totals
