"""examples/trl/train_fapo.py, run as a user runs it, on a tiny policy against a real `fapo serve-grm
--oracle testbed` over loopback, with verl-format rows as `fapo data prepare` writes them; and `fapo.trl`'s
reward function inside TRL's GRPOTrainer (end tokens and output directory from the trainer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, policy_case
from fapo.serving.launch import serve_in_thread
from fapo.serving.server import load_oracle
from fapo.train.config import ConfigError
from fapo.trl import fapo_reward

PROBLEM, ANSWER, _ = policy_case()


def verl_rows(path: Path, n: int = 8) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {"data_source": "testbed", "prompt": [{"role": "user", "content": PROBLEM}], "ability": "Math",
           "reward_model": {"style": "rule", "ground_truth": ANSWER},
           "extra_info": {"split": "train", "index": 0, "question": PROBLEM}}
    pq.write_table(pa.Table.from_pylist([row] * n), path)
    return path


def test_the_example_trains_with_fapos_reward(memorised_policy_dir, tmp_path):
    from safetensors.torch import load_file

    data = verl_rows(tmp_path / "train.parquet")
    out = tmp_path / "run"
    with serve_in_thread(load_oracle("testbed")) as server:
        run = subprocess.run(
            [sys.executable, str(REPO / "examples" / "trl" / "train_fapo.py"), "--model", str(memorised_policy_dir),
             "--data", str(data), "--endpoint", server.url, "--judge-max-tokens", "512", "--max-steps", "2",
             "--output-dir", str(out), "--num-generations", "4", "--batch-size", "8", "--max-completion-length", "40",
             "--learning-rate", "1e-3", "--cpu"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trained 2 steps" in run.stdout
    critiques = [json.loads(line) for line in (out / "critiques.jsonl").read_text().splitlines()]
    assert critiques and all(c["status"] == "ok" and c["problem"] == PROBLEM for c in critiques)
    assert {c["reward"] for c in critiques} <= {1.0, 0.0} and all(c["answer"] == ANSWER for c in critiques)
    before, after = load_file(str(memorised_policy_dir / "model.safetensors")), \
        load_file(str(out / "final" / "model.safetensors"))
    assert any(not (before[k] == after[k]).all() for k in before)


def test_the_reward_needs_a_judge_and_names_bad_options():
    with pytest.raises(ConfigError, match="needs a judge"):
        fapo_reward()
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['model'\]"):
        fapo_reward(oracle="testbed", model="m")
    with pytest.raises(ConfigError, match="truncation_rule"):
        fapo_reward(oracle="testbed", truncation_rule="maybe")
    reward = fapo_reward("http://127.0.0.1:1/v1", penalty=0.5)
    assert reward.__name__ == "fapo_reward" and reward.state.settings.judge.endpoints[0].url.startswith("http://127")
