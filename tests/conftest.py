"""Shared fixtures. Tests run offline on the CPU; data comes from ../shared/data or is generated."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FAPO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $FAPO_SHARED_DATA). Missing: the test skips, except in CI (CI=true), where it fails."""
    if not SHARED_DATA.is_dir():
        message = f"shared data not found at {SHARED_DATA} (set FAPO_SHARED_DATA)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message + "; in CI a missing data directory fails the run", pytrace=False)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny Qwen3 model written once per test session."""
    from fapo.models import TinyModelConfig, make_tiny_model

    out = tmp_path_factory.mktemp("tiny_model")
    make_tiny_model(out, TinyModelConfig(layers=1, hidden=32, heads=2, vocab_size=384))
    return out


def policy_case() -> tuple[str, str, dict[str, str]]:
    """A testbed problem with a cancelling pair, and three solutions: clean, skipping the pair (a flawed
    positive: right answer, skipped steps) and wrong. Built with the testbed's own writers."""
    import random

    from fapo.testbed.flaws import make_solution
    from fapo.testbed.task import Op, Problem, clean_steps, render_solution

    problem = Problem(2, (Op("add", 19), Op("subtract", 19), Op("add", 3)))
    rng = random.Random(0)
    solutions = {"clean": render_solution(clean_steps(problem))}
    for name, flaw in (("skip", "skip"), ("wrong", "mistake")):
        solution = make_solution(problem, flaw, rng)
        assert solution is not None, flaw
        solutions[name] = render_solution(list(solution.steps))
    return problem.text, str(problem.answer), solutions


@pytest.fixture(scope="session")
def memorised_policy_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny policy that answers `policy_case()`'s problem cleanly, through a skip, or wrongly."""
    from memorise import memorise

    problem, _, solutions = policy_case()
    out = tmp_path_factory.mktemp("policy")
    return memorise(tiny_model_dir, out, [(problem, reply) for reply in solutions.values()], steps=150)
