"""A policy run killed with SIGKILL and restarted with --resume ends at the same step, with no
duplicated or missing steps in metrics.jsonl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_train import TRL_TINY, read_jsonl, write_policy_data


def _launch(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fapo.cli", "train", "policy", "--config", str(config), "--output", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )


@pytest.mark.slow
def test_sigkill_then_resume(memorised_policy_dir, tmp_path):
    data = write_policy_data(tmp_path / "train.jsonl")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TRL_TINY, "max_steps": 5, "save_steps": 1, "fapo": {
        "model": str(memorised_policy_dir), "train_data": str(data), "prompt_template": "{problem}",
        "oracle": "testbed", "answer_format": "strict", "verify_workers": 1}}))
    out = tmp_path / "run"
    proc = _launch(config, out)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint-2 within 300 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "final").exists()

    resumed = _launch(config, out, "--resume")
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert "trained to step 5" in output
    steps = [m["step"] for m in read_jsonl(out / "metrics.jsonl") if "loss" in m]
    assert steps == [1, 2, 3, 4, 5]
    state = json.loads((out / "checkpoint-5" / "trainer_state.json").read_text())
    assert state["global_step"] == 5
    judged = {m["step"]: m["grm/judged"] for m in read_jsonl(out / "metrics.jsonl") if "loss" in m}
    critique_steps = [c["step"] for c in read_jsonl(out / "critiques.jsonl")]
    assert {s: critique_steps.count(s) for s in judged} == judged  # one critique per judged rollout, none twice


def test_resume_drops_a_line_torn_inside_a_character_and_keeps_lone_surrogates(tmp_path):
    """critiques.jsonl after a kill: a GenRM reply holding a lone surrogate was written (escaped), and the last
    line was cut inside a multi-byte character. Resuming at step 1 keeps step 1's rows and drops the rest."""
    from fapo.io import JsonlAppender, read_jsonl
    from fapo.train.callbacks import truncate_jsonl_after

    path = tmp_path / "critiques.jsonl"
    critique = json.loads('"Step 0 is fine \\ud800 \\\\boxed{-1}"')
    JsonlAppender(path).write([{"step": 1, "critique": critique}, {"step": 2, "critique": "é"}])
    with path.open("ab") as f:
        f.write('{"step": 2, "critique": "é'.encode()[:-1])
    assert truncate_jsonl_after(path, 1) == 2
    assert read_jsonl(path) == [{"step": 1, "critique": critique}]
