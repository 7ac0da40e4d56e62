"""`fapo eval policy` on a tiny memorised policy, problem loading, and `fapo eval curves`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import policy_case
from fapo.cli import main
from fapo.eval.problems import EvalProblem, load_problems
from fapo.io import DataError
from fapo.steps import split_steps

POLICY_PROBLEM, POLICY_ANSWER, POLICY_SOLUTIONS = policy_case()

# ------------------------------------------------------------------------------------ problems


def test_load_problems_formats(tmp_path, shared_data):
    gsm8k = load_problems(shared_data / "gsm8k" / "test.jsonl", limit=3)  # `question`, `... #### N`
    assert len(gsm8k) == 3 and all(p.answer.isdigit() for p in gsm8k) and "####" not in gsm8k[0].answer
    math500 = load_problems(shared_data / "math500" / "test.jsonl", limit=2)
    assert math500[0].problem.startswith("Convert the point") and math500[0].answer
    aime = load_problems(shared_data / "aime24" / "test.jsonl", limit=1)
    assert aime[0].id == "60"
    custom = tmp_path / "c.jsonl"
    custom.write_text('{"q": "What is 1+1?", "gold": "1,000"}\n{"q": "x", "gold": "#### 1,200"}\n')
    rows = load_problems(custom, problem_field="q", answer_field="gold")
    assert [(p.id, p.answer) for p in rows] == [("1", "1,000"), ("2", "1200")]


@pytest.mark.parametrize("line, message", [
    ('{"problem": "p"}', "no gold field .*gold, ground_truth, answer.*--answer-field"),
    ('{"text": "p", "answer": "1"}', "no problem field .*problem, question.*--problem-field"),
    ('{"problem": "", "answer": "1"}', "must be a non-empty string"),
    ('{"problem": "p", "answer": null}', "no gold field"),
    ('{"problem": "p", "answer": {"x": 1}}', "must be a string or a number"),
    ('{"problem": "p", "answer"', "invalid JSON"),
])
def test_bad_problem_rows(tmp_path, capsys, line, message):
    path = tmp_path / "probs.jsonl"
    path.write_text('{"problem": "ok", "answer": "1"}\n' + line + "\n")
    with pytest.raises(DataError, match=f"probs.jsonl:2: .*{message}"):
        load_problems(path)
    assert main(["eval", "policy", "--model", str(tmp_path), "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and "Traceback" not in err


def test_policy_cli_user_errors(tmp_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text('{"problem": "p", "answer": "1"}\n')
    assert main(["eval", "policy", "--model", str(tmp_path / "missing"), "--data", str(data)]) == 2
    assert "model directory not found" in capsys.readouterr().err
    assert main(["eval", "policy", "--model", str(tmp_path), "--data", str(data), "--judge", "endpoint"]) == 2
    assert "needs at least one URL" in capsys.readouterr().err
    assert main(["eval", "policy", "--model", str(tmp_path), "--data", str(data), "--k", "0"]) == 2
    assert "k must be >= 1" in capsys.readouterr().err
    assert main(["eval", "policy", "--model", str(tmp_path), "--data", str(data), "--prompt-template", "no slot"]) == 2
    assert "must contain {problem}" in capsys.readouterr().err


def test_verify_samples_counts_answers_as_training_does():
    from fapo.eval.generation import Sample
    from fapo.eval.policy import verify_samples

    problems = [EvalProblem("p", "1 + 4?", "5")]
    texts = [("so \\boxed{5}", False), ("\\boxed{4} no, \\boxed{5}", False), ("\\boxed{5} and more", False),
             ("\\boxed{5}", True), ("\\boxed{6}", False), ("no box", False)]
    samples = [[Sample(text, 5, truncated) for text, truncated in texts]]
    lenient = verify_samples(problems, samples)
    assert [r.correct for r in lenient] == [True, True, True, False, False, False]  # truncated never counts
    strict = verify_samples(problems, samples, answer_format="strict")
    assert [r.correct for r in strict] == [True, False, False, False, False, False]
    assert [r.outcome for r in strict] == ["correct, no verdict", "no answer", "no answer", "no answer", "wrong",
                                           "no answer"]


# ------------------------------------------------------------------------------------ a tiny policy


def test_eval_policy_judged_over_http(memorised_policy_dir, tmp_path, capsys):
    """Sample 8 answers, verify, and judge the correct ones with the oracle behind a real GenRM server."""
    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import load_oracle

    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"id": "p0", "problem": POLICY_PROBLEM, "answer": POLICY_ANSWER}) + "\n")
    report_dir = tmp_path / "report"
    with serve_in_thread(load_oracle("testbed")) as server:
        code = main(["eval", "policy", "--model", str(memorised_policy_dir), "--data", str(data), "--k", "8",
                     "--max-tokens", "48", "--prompt-template", "{problem}", "--endpoint", server.url,
                     "--report-dir", str(report_dir)])
    assert code == 0
    report = json.loads((report_dir / "REPORT.json").read_text())
    assert (report["n_problems"], report["n_rollouts"], report["k"]) == (1, 8, 8)
    assert report["generation_backend"] == "transformers" and report["judge"] == f"endpoint {server.url}"
    assert set(report["pass_at"]) == {"1", "2", "4", "8"} and report["pass_at"]["1"] == report["avg_at_k"]
    assert report["avg_at_k"] == pytest.approx(100 * report["n_correct"] / 8)
    assert sum(report["outcomes"].values()) == 8 and sum(report["verify_status"].values()) == 8
    assert sum(report["judge_status"].values()) == report["n_correct"]  # only correct rollouts are judged
    # the oracle knows testbed problems: every correct rollout gets a verdict
    assert report["judge_status"] == ({"ok": report["n_correct"]} if report["n_correct"] else {})
    assert report["n_judged"] == report["n_correct"]
    assert report["flawed_among_all"] == pytest.approx(100 * report["n_flawed"] / 8)
    assert 0 < report["mean_length_tokens"] <= 48 and report["mean_steps"] > 0
    samples = [json.loads(line) for line in (report_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and {s["id"] for s in samples} == {"p0"}
    assert sum(s["correct"] for s in samples) == report["n_correct"]
    for name in ("pass_at_k.png", "outcomes.png", "lengths.png"):
        assert (report_dir / name).stat().st_size > 1000
    assert "## Flawed positives" in (report_dir / "REPORT.md").read_text()
    assert "| avg@8 | pass@1 |" in capsys.readouterr().out


def skip_checker(problem: str, steps: list[str]) -> int | None:
    """A judge for POLICY_PROBLEM's replies: the 2-step reply skips the cancelling pair (step 0 is wrong)."""
    return 0 if len(steps) < 4 else -1


@pytest.fixture(scope="module")
def skipping_policy_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny policy that knows one reply to POLICY_PROBLEM: the right answer through a skipped pair."""
    from memorise import memorise

    return memorise(tiny_model_dir, tmp_path_factory.mktemp("skipper"),
                    [(POLICY_PROBLEM, POLICY_SOLUTIONS["skip"])], steps=60)


def test_evaluate_policy_library_gsm8k_format_with_a_verdict_function(skipping_policy_dir, tmp_path):
    from fapo.eval import JudgeSpec, PolicyEvalConfig, SamplingConfig, evaluate_policy

    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": POLICY_PROBLEM, "answer": f"work\n#### {POLICY_ANSWER}"}) + "\n")
    problems = load_problems(data)
    assert problems[0].answer == POLICY_ANSWER
    config = PolicyEvalConfig(SamplingConfig(k=4, temperature=0.0, max_tokens=60), prompt_template="{problem}")
    judge = JudgeSpec(verdict_fn=skip_checker)
    report = evaluate_policy(str(skipping_policy_dir), problems, config, judge=judge)
    s = report.scores
    assert s.n_rollouts == 4 and report.judge == "oracle skip_checker"
    assert [r.text for r in report.rollouts] == [POLICY_SOLUTIONS["skip"]] * 4  # greedy: the memorised reply
    assert skip_checker("", split_steps(POLICY_SOLUTIONS["skip"])) == 0
    # 4 right answers, every one through the skip: all judged, all flawed
    assert (s.n_correct, s.avg_at_k, s.maj_at_k, s.n_flawed) == (4, 100.0, 100.0, 4)
    assert s.judge_status == {"ok": 4}
    assert s.flawed_among_correct == 100.0 and s.flawed_among_all == 100.0


# ------------------------------------------------------------------------------------ curves


def _metrics_file(path: Path, flawed: float, step_s: float) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, 6):
        lines.append({"step": step, "loss": 0.1, "verify/accuracy": 0.2 + 0.1 * step,
                      "grm/flawed_ratio": None if step == 3 else flawed, "reward/mean": -0.4 + 0.2 * step,
                      "completions/mean_length": 100 + step, "time/step_s": step_s})
    lines.append({"step": 5, "train_runtime": 10.0, "train_loss": 0.1})  # the final summary, no metrics
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path / "metrics.jsonl"


def test_eval_curves_two_runs(tmp_path, capsys):
    grpo = _metrics_file(tmp_path / "grpo", 0.3, 2.0)
    _metrics_file(tmp_path / "fapo", 0.1, 2.1)
    out = tmp_path / "curves"
    code = main(["eval", "curves", str(grpo), str(tmp_path / "fapo"), "--out", str(out)])
    assert code == 0
    for name in ("accuracy", "flawed_ratio", "reward", "response_length", "step_time", "curves"):
        assert (out / f"{name}.png").stat().st_size > 1000
    summary = json.loads((out / "curves.json").read_text())
    assert set(summary["runs"]) == {"grpo", "fapo"} and summary["missing"] == []
    flawed = summary["runs"]["fapo"]["metrics"]["grm/flawed_ratio"]
    assert flawed == {"points": 4, "last_step": 5, "last": 0.1, "mean": 0.1}  # the null is skipped
    assert summary["step_time_ratio"] == {"grpo": 1.0, "fapo": 1.05}
    assert "| fapo |" in capsys.readouterr().out


def test_eval_curves_bad_input(tmp_path, capsys):
    run = _metrics_file(tmp_path / "a", 0.1, 1.0)
    run.write_text(run.read_text() + "{broken\n")
    assert main(["eval", "curves", str(run), "--out", str(tmp_path / "o")]) == 2
    assert f"{run}:7: invalid JSON" in capsys.readouterr().err
    assert main(["eval", "curves", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read" in capsys.readouterr().err
    ok = _metrics_file(tmp_path / "b", 0.1, 1.0)
    assert main(["eval", "curves", str(ok), "--out", str(tmp_path / "o"), "--label", "x", "--label", "y"]) == 2
    assert "2 --label for 1 runs" in capsys.readouterr().err
