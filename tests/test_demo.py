"""`fapo demo --quick` end to end: every artefact exists and every number is finite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest


def _finite_numbers(value, path="report"):
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        assert math.isfinite(value), path
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_numbers(v, f"{path}[{i}]")


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "fapo.cli", "demo", "--quick", "--out", str(out),
                           "--cache", str(tmp_path / "cache")], capture_output=True, text=True, env=env, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    for arm in ("grpo", "fapo"):
        assert set(report[arm]) >= {"accuracy", "flawed_ratio", "mean_length", "step_s"}
        assert 0 <= report[arm]["accuracy"] <= 1 and 0 <= report[arm]["flawed_ratio"] <= 1
    assert set(report["grm"]) == {"f1", "acc_err", "acc_corr", "fpb_f1"}
    assert report["overhead"]["fapo_over_grpo_step_time"] > 0
    assert report["seeds"] == 1
    _finite_numbers({k: report[k] for k in ("grpo", "fapo", "overhead", "initial", "judging")})
    judging = report["judging"]
    assert judging["judged"] >= 0 and 0 <= judging["checker_flawed_ratio"] <= 1
    # the quick GenRM may give no verdict at all (too little SFT to close its box): then the share is None
    assert judging["judge_flawed_ratio"] is None or 0 <= judging["judge_flawed_ratio"] <= 1
    markdown = (out / "report.md").read_text()
    assert "| GRPO |" in markdown and "| FAPO |" in markdown
    assert "While judging FAPO's rollouts" in markdown
    for png in ("accuracy_flawed.png", "length.png", "grm_reward.png"):
        assert (out / png).stat().st_size > 1000
        assert f"({png})" in markdown
    for arm in ("grpo", "fapo"):
        assert (out / f"{arm}-seed0" / "metrics.jsonl").exists()
    assert (out / "fapo-seed0" / "critiques.jsonl").exists()


def test_failed_policy_run_names_its_log(tmp_path):
    """A run that fails in its worker process stops the stage with an error that points at its output."""
    from fapo.demo.config import DemoConfig
    from fapo.demo.pipeline import run_policy_arms

    config = DemoConfig(seeds=1, policy_rl_steps=1, jobs=2, eval_problems=1, eval_samples=1)
    with pytest.raises(RuntimeError, match=r"log\.txt"):
        run_policy_arms(str(tmp_path / "no-such-policy"), tmp_path / "no-data", tmp_path / "out", [], config)
    assert any("Traceback" in log.read_text() for log in (tmp_path / "out").glob("*/log.txt"))


def test_judging_summary_is_none_where_the_judge_gave_no_verdict(tmp_path):
    """A judge that never closed its box leaves the judged share empty: None (valid JSON), not NaN."""
    from fapo.demo.report import judging_in_training

    run = tmp_path / "fapo-seed0"
    run.mkdir()
    steps = [{"step": 1, "loss": 0.1, "grm/judged": 3.0, "grm/invalid": 3.0, "grm/errors": 0.0,
              "grm/flawed_ratio": None, "monitor/flawed_ratio": 0.5, "monitor/judge_agreement": None},
             {"step": 2, "loss": 0.1, "grm/judged": 2.0, "grm/invalid": 2.0, "grm/errors": 0.0,
              "grm/flawed_ratio": float("nan"), "monitor/flawed_ratio": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    summary = judging_in_training([{"arm": "fapo", "output_dir": str(run)}, {"arm": "grpo", "output_dir": "x"}])
    assert summary == {"judged": 5, "judge_flawed_ratio": None, "checker_flawed_ratio": 0.375, "agreement": None,
                       "no_verdict_share": 1.0}
    json.dumps(summary, allow_nan=False)
