"""The one registry of named programmatic judges ("oracles"), resolved lazily by module path.

An oracle module provides `oracle_verdict(problem, steps) -> int | None` (the in-process judge),
`OracleBackend` (a `fapo.serving.backend.CompletionBackend` that `fapo serve-grm --oracle NAME` serves) and,
optionally, `monitor_metrics(problems, completions, correct) -> {key: value}` (batch diagnostics logged under
`monitor/` in training). General code names an oracle by string and never imports the testbed itself.
"""

from __future__ import annotations

import importlib
from typing import Any

ORACLES: dict[str, str] = {"testbed": "fapo.testbed.oracle"}
"""Oracle name → the module that implements it."""


def oracle_part(name: str, attribute: str) -> Any:
    """`attribute` of the oracle module registered as `name`, imported only now.

    Raises ValueError naming the choices for an unknown name, ImportError naming the module when it is
    missing, and AttributeError when the module lacks the part.
    """
    if name not in ORACLES:
        raise ValueError(f"unknown oracle {name!r}; choose one of {sorted(ORACLES)}")
    module_name = ORACLES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            raise ImportError(f"oracle {name!r} needs module {module_name}, which is not installed") from err
        raise
    return getattr(module, attribute)


def has_oracle_part(name: str, attribute: str) -> bool:
    """Whether oracle `name` provides `attribute` (imports its module)."""
    try:
        oracle_part(name, attribute)
    except AttributeError:
        return False
    return True
