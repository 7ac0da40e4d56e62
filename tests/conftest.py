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
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny Qwen3 model written once per test session."""
    from fapo.models import TinyModelConfig, make_tiny_model

    out = tmp_path_factory.mktemp("tiny_model")
    make_tiny_model(out, TinyModelConfig(layers=1, hidden=32, heads=2, vocab_size=384))
    return out


POLICY_PROBLEM = "Start with 2. Add 9. Subtract 9. Add 3."
POLICY_REPLIES = [
    "2 + 9 = 11\n\n11 - 9 = 2\n\n2 + 3 = 5\n\nThe answer is \\boxed{5}",  # clean
    "2 + 3 = 5\n\nThe answer is \\boxed{5}",  # skips the cancelling pair: a flawed positive
    "2 + 9 = 11\n\n11 - 9 = 3\n\n3 + 3 = 6\n\nThe answer is \\boxed{6}",  # wrong
]


@pytest.fixture(scope="session")
def memorised_policy_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny policy that answers POLICY_PROBLEM cleanly, through a skip, or wrongly."""
    from memorise import memorise

    out = tmp_path_factory.mktemp("policy")
    return memorise(tiny_model_dir, out, [(POLICY_PROBLEM, reply) for reply in POLICY_REPLIES], steps=150)
