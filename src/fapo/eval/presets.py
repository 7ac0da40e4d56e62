"""Evaluation settings by name: `--preset recipe` is what the FAPO recipe validates with.

From verl-recipe `fapo/` (the authors' scripts): the policy runs (`run_fapo_7b.sh`, `run_fapo_32b.sh`,
`run_baseline_*.sh`) validate at `val_kwargs.temperature=1.0`, `val_kwargs.top_p=0.7` with
`data.max_response_length=8192`; the paper reports avg@32 on AIME24 (the scripts' `val_kwargs.n=1` is per
validation pass). The GenRM run (`run_fapo_genrm_train.sh`) validates at `val_temperature=0.6`,
`val_top_p=0.95`, `max_response_length=8192`. "default" is fapo's own setting: for the policy CPU-friendly
short samples; for the judge nothing of its own, so `JudgeConfig`'s defaults hold (the recipe's critique budget
of 16,384 tokens, decoding left to the server), as on every other verb and path. A flag given on the command
line wins over its preset. Owns the numbers only.
"""

from __future__ import annotations

from typing import Any

POLICY_PRESETS: dict[str, dict[str, Any]] = {
    "default": {"k": 16, "temperature": 1.0, "top_p": 1.0, "max_tokens": 2048},
    "recipe": {"k": 32, "temperature": 1.0, "top_p": 0.7, "max_tokens": 8192},
}
"""`fapo eval policy` sampling: samples per problem, temperature, top_p, most tokens per sample."""

JUDGE_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "recipe": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 8192},
}
"""GenRM sampling for `fapo eval grm` / `eval rollouts` / `eval policy`'s judge: temperature, top_p, critique
budget in tokens (a critique cut there is no verdict). A value a preset leaves out is `JudgeConfig`'s."""

PRESETS = tuple(POLICY_PRESETS)


def preset_values(table: dict[str, dict[str, Any]], name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The preset's values with every value `given` (not None) put over them; ValueError for an unknown name."""
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(table)}")
    return table[name] | {k: v for k, v in given.items() if v is not None}
