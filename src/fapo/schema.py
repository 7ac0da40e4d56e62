"""The one row schema every verb reads: one name per thing, and the other frameworks' names as aliases.

    found = lookup(row, "gold")                         # FieldValue(name="gts", value="420") on a verl dump row
    mapping = FieldMap.parse(["gold=reward_model.ground_truth"])
    lookup(row, "gold", mapping)                        # a dotted path, as `--map` gives it

`fapo verify`, `fapo judge`, `fapo eval grm`, `fapo eval rollouts` and `fapo eval policy`'s data all look a
field up here: the first of its names (FIELDS) that the row has, unless a `--map field=path` names another
column (a dotted path reaches into nested objects). The text helpers turn what frameworks store into what
fapo needs: a chat-message list or a decoded chat transcript into the user's problem, messages into the
response text, a GSM8K worked answer into its final number. Owns the names only; reads no files and knows
nothing of verification or judging. README's "Row schema" table is this module's FIELDS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fapo.policy_prompt import DEFAULT_PROMPT_TEMPLATE, gold_answer

FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "idx", "uid", "request_id"),
    "problem": ("problem", "question", "extra_info.question", "prompt", "input", "query", "instruction"),
    "response": ("response", "output", "completion", "generation"),
    "steps": ("steps",),
    "gold": ("gold", "ground_truth", "answer", "gts", "gt", "reward_model.ground_truth"),
    "step": ("step", "global_step"),
    "data_source": ("data_source", "source", "subset"),
}
"""Canonical field → the names it is read under, in the order tried. fapo's own name comes first; then
ProcessBench's and the recipe's (`ground_truth`), MATH's and GSM8K's (`question`, `answer`), verl's dumps
(`input`, `output`, `gts`) and data (`reward_model.ground_truth`, `extra_info.question`), TRL's completion
logs (`prompt`, `completion`), Qwen2.5-Math's evaluation files (`idx`, `gt`, `query`)."""


@dataclass(frozen=True)
class FieldValue:
    """A field found in a row: the column it came from and its raw value."""

    name: str
    value: Any


@dataclass(frozen=True)
class FieldMap:
    """`--map field=path` overrides: canonical field → the one column (dotted path) to read it from."""

    paths: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: Sequence[str] | None) -> FieldMap:
        """From `field=path` strings; ValueError naming the fix for a bad one."""
        paths: dict[str, str] = {}
        for spec in specs or ():
            name, sep, path = spec.partition("=")
            name, path = name.strip(), path.strip()
            if not sep or not path:
                raise ValueError(f"--map {spec!r}: write FIELD=COLUMN, e.g. gold=reward_model.ground_truth")
            if name not in FIELDS:
                raise ValueError(f"--map {spec!r}: unknown field {name!r}; fields: {', '.join(FIELDS)}")
            paths[name] = path
        return cls(paths)

    def names(self, canonical: str) -> tuple[str, ...]:
        """The columns tried for `canonical`: the mapped one alone, else FIELDS's aliases."""
        return (self.paths[canonical],) if canonical in self.paths else FIELDS[canonical]


NO_MAP = FieldMap()


def get_path(row: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """`row[path]`, or the nested value of a dotted path (`reward_model.ground_truth`; a column literally named
    with the dots wins); `default` when absent."""
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def lookup(row: Mapping[str, Any], canonical: str, mapping: FieldMap = NO_MAP) -> FieldValue | None:
    """The first of `canonical`'s names present (not None) in `row`; None when the row has none of them."""
    for name in mapping.names(canonical):
        value = get_path(row, name)
        if value is not None:
            return FieldValue(name, value)
    return None


def missing_message(canonical: str, row: Mapping[str, Any], mapping: FieldMap = NO_MAP, fix: str | None = None) -> str:
    """Why `canonical` was not found: the names tried, the row's columns and the fix (default `--map`)."""
    tried = ", ".join(mapping.names(canonical))
    fix = fix or f"name the column with --map {canonical}=COLUMN"
    return f"no {canonical} field (looked for {tried}; the row has {', '.join(sorted(map(str, row))) or 'nothing'}); {fix}"


_INSTRUCTION = DEFAULT_PROMPT_TEMPLATE.split("{problem}", 1)[1].strip()
"""What fapo's default prompt template adds after the problem (TRL logs of fapo runs hold it)."""
_CHAT_TOKENS = re.compile(r"<\|im_(?:start|end)\|>|<\|endoftext\|>")
_TRANSCRIPT = re.compile(r"^\s*(?:system\n.*?\n)?user\n(?P<user>.*?)\n*assistant\n?\s*$", re.DOTALL)


def problem_text(value: Any) -> str | None:
    """The user's problem from a string, a chat-message list (the last user turn) or a decoded ChatML
    transcript (`system\\n...\\nuser\\nPROBLEM\\nassistant\\n`, what verl's dumps hold), without the
    instruction fapo's default prompt template appends; None otherwise."""
    if isinstance(value, list):
        users = [m.get("content") for m in value if isinstance(m, Mapping) and m.get("role") == "user"]
        value = users[-1] if users else None
    if not isinstance(value, str):
        return None
    text = _CHAT_TOKENS.sub("", value) if "<|im_" in value else value
    match = _TRANSCRIPT.match(text)
    text = (match.group("user") if match else text).strip()
    if text.endswith(_INSTRUCTION) and len(text) > len(_INSTRUCTION):
        text = text[: -len(_INSTRUCTION)].strip()
    return text


def response_texts(value: Any) -> list[str] | None:
    """The response(s) a value holds: a string is one, a list of strings is several samples, a list of
    chat messages is one (its assistant turns joined); None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        parts = [m.get("content") for m in value if m.get("role", "assistant") == "assistant"]
        return ["".join(p for p in parts if isinstance(p, str))]
    return None


def gold_text(value: Any) -> str | None:
    """The gold answer as a string (a number is written out; a GSM8K `... #### 1,200` gives `1200`; a
    one-element list is its element); None for no usable answer."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    text = gold_answer(value)
    return text or None
