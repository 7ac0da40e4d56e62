"""The test suite's own guard: tests that need ../shared/data fail in CI when it is missing, skip elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDS_DATA = "tests/test_eval_policy.py::test_load_problems_formats"


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_missing_shared_data(tmp_path, ci, outcome):
    env = {**os.environ, "CI": ci, "FAPO_SHARED_DATA": str(tmp_path / "absent")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NEEDS_DATA],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in proc.stdout, proc.stdout[-2000:]
    assert (proc.returncode != 0) == (ci == "true")
    if ci:
        assert "shared data not found" in proc.stdout
