"""Shared fixtures. Tests run offline on the CPU; data comes from ../shared/data or is generated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
