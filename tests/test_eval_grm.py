"""`fapo eval grm`: input validation, predictions files, the oracle on testbed data, a tiny model over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fapo.cli import main
from fapo.eval.critic_data import load_critic_rows, load_critic_sets, load_predictions
from fapo.eval.grm_bench import evaluate_grm, grm_markdown
from fapo.io import DataError

SUBSET_KEYS = {"n", "n_error", "n_correct", "acc_err", "acc_corr", "f1", "n_invalid"}
FPB_KEYS = {"n", "precision", "recall", "f1", "accuracy"}


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(i: int, label: int, answer_correct: bool = True, steps: int = 3) -> dict:
    return {"id": f"r{i}", "problem": f"problem {i}", "steps": [f"step {j}" for j in range(steps)],
            "label": label, "final_answer_correct": answer_correct}


@pytest.fixture
def small_set(tmp_path) -> Path:
    rows = [_row(0, -1), _row(1, -1), _row(2, 1), _row(3, 0, False), _row(4, 2)]
    return _write_rows(tmp_path / "mini.jsonl", rows)


@pytest.fixture(scope="module")
def processbench_slice(shared_data, tmp_path_factory) -> Path:
    """8 short rows of ProcessBench's gsm8k subset: 3 wrong answers, 1 flawed positive, 4 error-free."""
    rows = [json.loads(line) for line in (shared_data / "processbench" / "gsm8k.jsonl").open()]
    rows.sort(key=lambda r: len(r["problem"]) + sum(map(len, r["steps"])))
    wrong = [r for r in rows if r["label"] != -1 and not r["final_answer_correct"]][:3]
    flawed = [r for r in rows if r["label"] != -1 and r["final_answer_correct"]][:1]
    clean = [r for r in rows if r["label"] == -1][:4]
    return _write_rows(tmp_path_factory.mktemp("pb") / "gsm8k.jsonl", wrong + flawed + clean)


@pytest.fixture(scope="module")
def testbed_critic(tmp_path_factory) -> Path:
    """A small testbed critic set (ProcessBench format, testbed problems the oracle can check)."""
    from fapo.testbed.data import GenerateConfig, generate

    out = tmp_path_factory.mktemp("tb")
    generate(out, GenerateConfig(n_train=5, n_test=20, n_sft=5, n_critic_train=5, n_critic_test=80))
    return out / "critic_test.jsonl"


# ------------------------------------------------------------------------------------ bad input

BAD_LINES = [
    ('{"id": "x", "problem": "p", "label": -1}', "missing field steps"),
    ('{"id": "x", "problem": "p", "steps": ["a"]}', "missing field label"),
    ('{"id": "x", "problem": "p", "steps": ["a"], "label": 3}', "'label' must be -1 or a step index"),
    ('{"id": "x", "problem": "p", "steps": "a", "label": -1}', "'steps' must be a list of strings"),
    ('{"id": "x", "problem": "p", "steps": ["a"], "label": -1, "final_answer_correct": "yes"}', "final_answer_correct"),
    ('{"id": "x", "problem": ', "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
]


@pytest.mark.parametrize("line, message", BAD_LINES)
def test_bad_row_names_file_and_line(tmp_path, capsys, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_row(0, -1)) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"bad.jsonl:2: .*{message}"):
        load_critic_rows(path)
    assert main(["eval", "grm", "--data", str(path), "--judge", "oracle"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and message in err and "Traceback" not in err


def test_missing_files_and_duplicate_subsets(tmp_path, small_set, capsys):
    assert main(["eval", "grm", "--data", str(tmp_path / "nope.jsonl"), "--judge", "oracle"]) == 2
    assert "nope.jsonl: cannot read" in capsys.readouterr().err
    assert main(["eval", "grm", "--data", str(small_set), "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert "p.jsonl: cannot read" in capsys.readouterr().err
    other = tmp_path / "sub"
    other.mkdir()
    (other / "mini.jsonl").write_text(small_set.read_text())
    with pytest.raises(DataError, match="subset name 'mini' is already taken"):
        load_critic_sets([small_set, other / "mini.jsonl"])
    assert main(["eval", "grm", "--data", str(small_set), "--judge", "oracle", "-o", str(tmp_path / "no/r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_input_in_a_real_process_exits_2_without_traceback(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_row(0, -1)) + "\n{oops\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "fapo.cli", "eval", "grm", "--data", str(path), "--judge", "oracle"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"{path}:2: invalid JSON" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------ predictions files


def test_predictions_file_scored_by_hand(tmp_path, small_set):
    rows = load_critic_rows(small_set)
    preds = _write_rows(tmp_path / "preds.jsonl", [
        {"id": "r0", "verdict": -1},  # clean, right
        {"id": "r1", "verdict": None},  # clean, no verdict
        {"id": "r2", "verdict": 1, "status": "ok"},  # erroneous, exact
        {"id": "r3", "verdict": 7},  # erroneous, out of range: no verdict
        {"id": "unknown", "verdict": 0},  # not in the data: ignored
    ])  # r4 has no prediction: no verdict
    verdicts = load_predictions(preds, rows)
    assert verdicts == [-1, None, 1, None, None]
    report = evaluate_grm(rows, verdicts, source="test")
    s = report.subsets["mini"]
    assert (s.n, s.n_error, s.n_correct, s.n_invalid) == (5, 3, 2, 3)
    assert s.acc_err == pytest.approx(100 / 3) and s.acc_corr == pytest.approx(50.0) and s.f1 == pytest.approx(40.0)
    fpb = report.flawed_positive_bench  # r3 has a wrong final answer: left out
    assert (fpb.n, fpb.true_positive, fpb.false_positive, fpb.false_negative, fpb.true_negative) == (4, 1, 0, 1, 2)
    assert (fpb.precision, fpb.recall, fpb.accuracy) == pytest.approx((100.0, 50.0, 75.0))
    assert report.confusion["mini"]["erroneous"] == {"-1": 0, "labelled step": 1, "other step": 0, "no verdict": 2}
    assert "| mini | 5 | 3 | 2 | 33.3 | 50.0 | 40.0 | 3 |" in grm_markdown(report)


@pytest.mark.parametrize("lines, message", [
    ([{"id": "r0", "verdict": "1"}], "'verdict' must be an integer"),
    ([{"id": "r0", "verdict": True}], "'verdict' must be an integer"),
    ([{"id": "r0", "verdict": 1}, {"id": "r0", "verdict": 2}], "already predicted on line 1"),
    ([{"verdict": 1}], "missing field id"),
])
def test_bad_predictions(tmp_path, small_set, lines, message):
    preds = _write_rows(tmp_path / "preds.jsonl", lines)
    with pytest.raises(DataError, match=message):
        load_predictions(preds, load_critic_rows(small_set))


def test_cli_predictions_all_null(tmp_path, small_set, capsys):
    preds = _write_rows(tmp_path / "preds.jsonl", [{"id": f"r{i}", "verdict": None} for i in range(5)])
    report_dir = tmp_path / "report"
    code = main(["eval", "grm", "--data", str(small_set), "--predictions", str(preds), "--report-dir", str(report_dir)])
    assert code == 1  # no valid verdict: the report is written, and the exit status says it means nothing
    report = json.loads((report_dir / "REPORT.json").read_text())
    assert report["coverage"] == 0.0 and report["judge_status"]["invalid"] == 5
    assert set(report["subsets"]["mini"]) == SUBSET_KEYS
    assert report["subsets"]["mini"]["f1"] == 0.0 and report["average_f1"] == 0.0
    assert FPB_KEYS <= set(report["flawed_positive_bench"]) and report["flawed_positive_bench"]["f1"] == 0.0
    assert (report_dir / "confusion.png").stat().st_size > 1000
    captured = capsys.readouterr()
    assert "| mini | 5 |" in (report_dir / "REPORT.md").read_text() and "| mini | 5 |" in captured.out
    assert "only 0.0% of rows have a valid verdict" in captured.err


def test_predictions_matching_no_id_are_refused(tmp_path, small_set, capsys):
    preds = _write_rows(tmp_path / "preds.jsonl", [{"id": f"other-{i}", "verdict": -1} for i in range(280)])
    assert main(["eval", "grm", "--data", str(small_set), "--predictions", str(preds)]) == 2
    assert "none of its 280 predictions has the id of a data row" in capsys.readouterr().err


def test_all_error_predictions_fail_and_out_of_range_verdicts_are_counted(tmp_path, small_set, capsys):
    errors = _write_rows(tmp_path / "errors.jsonl",
                         [{"id": f"r{i}", "verdict": None, "status": "error"} for i in range(5)])
    assert main(["eval", "grm", "--data", str(small_set), "--predictions", str(errors), "-o", "-"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["judge_status"] == {"ok": 0, "invalid": 0, "error": 5, "missing": 0}
    assert "only 0.0% of rows have a valid verdict" in captured.err

    mixed = _write_rows(tmp_path / "mixed.jsonl", [{"id": "r0", "verdict": 99}, {"id": "r1", "verdict": -1},
                                                   {"id": "r2", "verdict": 1}, {"id": "r3", "verdict": 0}])
    code = main(["eval", "grm", "--data", str(small_set), "--predictions", str(mixed), "-o", "-"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0 and report["coverage"] == 60.0
    assert report["judge_status"] == {"ok": 3, "invalid": 1, "error": 0, "missing": 1}
    assert "WARNING: 40.0% of rows have no valid verdict" in captured.err
    assert main(["eval", "grm", "--data", str(small_set), "--predictions", str(mixed), "--min-coverage", "0.9"]) == 1
    assert "below --min-coverage 0.9" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--limit", "-5"], ["--limit", "0"], ["--min-coverage", "2"]])
def test_eval_grm_bad_numbers_are_usage_errors(small_set, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "grm", "--data", str(small_set), "--judge", "oracle", *argv])
    assert exit_info.value.code == 2 and "expected a" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ judges


def test_plumbing_oracle_scores_100_on_the_labels_it_made(testbed_critic, tmp_path):
    """Plumbing only: the testbed checker judges rows whose labels the same checker wrote, so 100 is all it
    can score; this checks that verdicts travel through `eval grm --judge oracle` to the report intact.
    The metrics themselves are tested on wrong verdicts in test_scripted_judge_with_wrong_verdicts_scored_by_hand."""
    out = tmp_path / "r.json"
    code = main(["eval", "grm", "--data", str(testbed_critic), "--judge", "oracle",
                 "-o", str(out), "--report-dir", str(tmp_path / "report")])
    assert code == 0
    report = json.loads(out.read_text())
    subset = report["subsets"]["critic_test"]
    assert subset["n"] == 80 and subset["n_error"] > 0 and subset["n_correct"] > 0
    assert subset["f1"] == 100.0 and report["average_f1"] == 100.0
    fpb = report["flawed_positive_bench"]
    assert fpb["n"] > 0 and fpb["f1"] == 100.0 and fpb["precision"] == fpb["recall"] == 100.0
    assert report["judge_status"] == {"ok": 80, "invalid": 0, "error": 0}


def test_plumbing_predictions_written_by_fapo_judge(testbed_critic, tmp_path):
    """Plumbing only (the oracle judges its own labels): `fapo judge` against an oracle server writes
    predictions that `eval grm --predictions` reads."""
    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import load_oracle

    judged = tmp_path / "judged.jsonl"
    with serve_in_thread(load_oracle("testbed")) as server:
        assert main(["judge", str(testbed_critic), "-o", str(judged), "--endpoint", server.url]) == 0
    out = tmp_path / "r.json"
    assert main(["eval", "grm", "--data", str(testbed_critic), "--predictions", str(judged), "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["average_f1"] == 100.0 and report["flawed_positive_bench"]["f1"] == 100.0
    assert report["source"] == f"predictions {judged}"


class ScriptedJudge:
    """A GenRM backend that answers each `problem i` of `small_set` with a fixed critique: right and wrong
    verdicts, and one without a verdict."""

    model_name = "scripted"
    REPLIES = {
        "0": "All steps hold. \\boxed{-1}",  # label -1: right
        "1": "I cannot tell.",  # label -1: no verdict (invalid), so not "-1": wrong
        "2": "Fine throughout. \\boxed{-1}",  # label 1: misses the error
        "3": "Step 0 is wrong. \\boxed{0}",  # label 0 (wrong final answer): exact
        "4": "Step 2 is wrong. \\boxed{2}",  # label 2: exact
    }

    def generate(self, requests):
        import re

        from fapo.serving.backend import Completion

        replies = [self.REPLIES[re.search(r"problem (\d)", r.messages[-1]["content"]).group(1)] for r in requests]
        return [[Completion(text, "stop", 5)] * r.n for text, r in zip(replies, requests, strict=True)]

    def count_prompt_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)


def test_scripted_judge_with_wrong_verdicts_scored_by_hand(small_set, tmp_path):
    """The whole `eval grm --endpoint` path on a real loopback server, with metrics computed by hand."""
    from fapo.serving.launch import serve_in_thread

    out = tmp_path / "r.json"
    with serve_in_thread(ScriptedJudge(), max_wait_ms=0) as server:
        assert main(["eval", "grm", "--data", str(small_set), "--endpoint", server.url, "--model", "scripted",
                     "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    s = report["subsets"]["mini"]
    # erroneous r2 r3 r4: r3, r4 exact -> 2/3; error-free r0 r1: r0 right -> 1/2; F1 = 2ab/(a+b)
    assert (s["n"], s["n_error"], s["n_correct"], s["n_invalid"]) == (5, 3, 2, 1)
    assert (s["acc_err"], s["acc_corr"]) == pytest.approx((200 / 3, 50.0))
    assert s["f1"] == pytest.approx(2 * (200 / 3) * 50 / (200 / 3 + 50)) and report["average_f1"] == s["f1"]
    # FlawedPositiveBench: final answer right (r0 r1 r2 r4); r4 caught (TP), r2 missed (FN), r0 r1 clean (TN)
    fpb = report["flawed_positive_bench"]
    assert (fpb["n"], fpb["precision"], fpb["recall"], fpb["accuracy"]) == pytest.approx((4, 100.0, 50.0, 75.0))
    assert fpb["f1"] == pytest.approx(200 / 3)
    assert report["judge_status"] == {"ok": 4, "invalid": 1, "error": 0}


def test_eval_grm_never_imports_torch(tmp_path, small_set, testbed_critic):
    """--judge oracle and --predictions run without torch or transformers (checked in a fresh process)."""
    preds = _write_rows(tmp_path / "preds.jsonl", [{"id": f"r{i}", "verdict": -1} for i in range(5)])
    script = (
        "import sys\nfrom fapo.cli import main\n"
        f"a = main(['eval', 'grm', '--data', {str(testbed_critic)!r}, '--judge', 'oracle', '--limit', '5'])\n"
        f"b = main(['eval', 'grm', '--data', {str(small_set)!r}, '--predictions', {str(preds)!r}])\n"
        "print('RESULT', a, b, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "RESULT 0 0 False False" in proc.stdout, proc.stderr


def test_oracle_on_other_problems_fails_every_judgement(small_set, capsys):
    """Problems the oracle cannot read are judge errors (counted, exit 1), never verdicts."""
    assert main(["eval", "grm", "--data", str(small_set), "--judge", "oracle", "-o", "-"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["judge_status"] == {"ok": 0, "invalid": 0, "error": 5}
    assert report["subsets"]["mini"]["n_invalid"] == 5 and "every judgement failed" in captured.err
    assert "not a testbed problem" in captured.err and "server" not in captured.err  # there is none


def test_tiny_model_over_a_real_server(tiny_model_dir, processbench_slice, tmp_path):
    """A ProcessBench slice judged by a tiny random model served over loopback: garbage verdicts, a sound report."""
    from fapo.serving.hf_backend import TransformersBackend
    from fapo.serving.launch import serve_in_thread

    backend = TransformersBackend.load(str(tiny_model_dir), device="cpu")
    out = tmp_path / "r.json"
    preds = tmp_path / "preds.jsonl"
    with serve_in_thread(backend, max_batch=8) as server:
        code = main(["eval", "grm", "--data", str(processbench_slice), "--endpoint", server.url, "--max-tokens", "8",
                     "-o", str(out), "--save-predictions", str(preds), "--min-coverage", "0"])
    assert code == 0
    report = json.loads(out.read_text())
    subset = report["subsets"]["gsm8k"]
    assert (subset["n"], subset["n_error"], subset["n_correct"]) == (8, 4, 4)
    status = report["judge_status"]
    assert sum(status.values()) == 8 and status["error"] == 0
    assert subset["n_invalid"] == status["invalid"]
    assert report["flawed_positive_bench"]["n"] == 5  # 1 flawed positive + 4 error-free, all with a right answer
    assert report["judge_metrics"]["grm/requests"] == 8
    saved = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in saved] == [json.loads(line)["id"] for line in processbench_slice.read_text().splitlines()]
    # the saved verdicts re-score to the same report
    again = tmp_path / "again.json"
    assert main(["eval", "grm", "--data", str(processbench_slice), "--predictions", str(preds), "-o", str(again),
                 "--min-coverage", "0"]) == 0
    assert json.loads(again.read_text())["subsets"] == report["subsets"]


def test_model_dir_serves_in_process(tiny_model_dir, processbench_slice, tmp_path):
    from fapo.eval.grm_bench import judge_critic_rows
    from fapo.eval.judges import JudgeSpec, served_config

    rows = load_critic_rows(processbench_slice, limit=2)
    spec = JudgeSpec(served_config(max_tokens=4, temperature=0.0), model_dir=str(tiny_model_dir), device="cpu")
    verdicts, judgements, metrics = judge_critic_rows(rows, spec)
    assert len(verdicts) == len(judgements) == 2
    assert all(j.status in ("ok", "invalid") for j in judgements)
    assert all(v is None for v, j in zip(verdicts, judgements) if j.status != "ok")
    assert metrics["grm/requests"] == 2
    assert JudgeSpec(model_dir=str(tiny_model_dir)).config.timeout == 3600.0  # a local model's default settings
    with pytest.raises(ValueError, match="exactly one of"):
        JudgeSpec()


def test_judge_spec_validation(small_set, capsys):
    from fapo.eval.judges import JudgeSpec
    from fapo.grm.types import JudgeConfig

    with pytest.raises(ValueError, match="exactly one of"):
        JudgeSpec(JudgeConfig(endpoints=("http://127.0.0.1:9/v1",)), oracle="testbed")
    with pytest.raises(ValueError, match="unknown oracle"):
        JudgeSpec(oracle="nope")
    with pytest.raises(TypeError, match="JudgeConfig"):
        JudgeSpec({"endpoints": ["http://127.0.0.1:9/v1"]})
    assert main(["eval", "grm", "--data", str(small_set), "--endpoint", "http://127.0.0.1:9/v1",
                 "--votes", "3", "--temperature", "0"]) == 2
    assert "set temperature > 0" in capsys.readouterr().err
    assert main(["eval", "grm", "--data", str(small_set), "--endpoint", "localhost:8000"]) == 2
    assert "must look like http://HOST:PORT/v1" in capsys.readouterr().err
    assert main(["eval", "grm", "--data", str(small_set), "--judge", "oracle", "--oracle", "nope"]) == 2
    assert "unknown oracle 'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ samples and truncation


def test_sample_is_stratified_where_limit_takes_one_stratum(shared_data):
    """ProcessBench's gsm8k opens with wrong answers: --limit 10 measures neither acc_corr nor FlawedPositiveBench;
    --sample 10 draws every stratum in proportion (and at least one flawed positive), reproducibly."""
    path = shared_data / "processbench" / "gsm8k.jsonl"
    first = load_critic_sets([path], limit=10)
    assert all(r.label != -1 and not r.final_answer_correct for r in first)
    sample = load_critic_sets([path], sample=10, seed=3)
    every = load_critic_sets([path])
    strata = Counter("clean" if r.label == -1 else "flawed" if r.final_answer_correct else "wrong" for r in sample)
    whole = Counter("clean" if r.label == -1 else "flawed" if r.final_answer_correct else "wrong" for r in every)
    assert sum(strata.values()) == 10 and set(strata) == {"clean", "flawed", "wrong"}
    assert all(abs(strata[k] - 10 * whole[k] / len(every)) <= 1 for k in ("clean", "wrong"))
    assert [r.id for r in sample] == [r.id for r in load_critic_sets([path], sample=10, seed=3)]
    assert [r.id for r in sample] != [r.id for r in load_critic_sets([path], sample=10, seed=4)]
    order = {r.id: i for i, r in enumerate(every)}
    assert [order[r.id] for r in sample] == sorted(order[r.id] for r in sample)


def test_flawed_positive_bench_without_items_is_null(tmp_path, small_set):
    rows = [r for r in load_critic_rows(small_set) if not r.final_answer_correct]
    report = evaluate_grm(rows, [0] * len(rows))
    fpb = report.to_json()["flawed_positive_bench"]
    assert fpb["n"] == 0 and fpb["precision"] is None and fpb["f1"] is None and fpb["accuracy"] is None
    assert "| 0 | — | — | — | — |" in grm_markdown(report)


def test_truncated_critiques_are_no_verdict_and_predictions_carry_critiques(processbench_slice, tmp_path):
    """A GenRM whose critiques of long solutions hit max_tokens: those rows have no verdict, the report counts
    them, the predictions keep every critique, and the plot's FlawedPositiveBench panel has a no-verdict column."""
    from fapo.serving.backend import Completion
    from fapo.serving.launch import serve_in_thread

    class HalfCut:
        model_name = "half-cut"

        def generate(self, requests):
            out = []
            for r in requests:
                steps = r.messages[-1]["content"].count("</paragraph_")
                finish = "length" if steps > 4 else "stop"
                out.append([Completion("Looks fine.\n\n\\boxed{-1}", finish, 5)] * r.n)
            return out

        def count_prompt_tokens(self, messages):
            return 10

    rows = load_critic_rows(processbench_slice)
    long_rows = sum(len(r.steps) > 4 for r in rows)
    assert 0 < long_rows < len(rows)
    preds, out = tmp_path / "preds.jsonl", tmp_path / "report"
    with serve_in_thread(HalfCut()) as server:
        code = main(["eval", "grm", "--data", str(processbench_slice), "--endpoint", server.url, "--min-coverage", "0",
                     "--save-predictions", str(preds), "--report-dir", str(out), "--preset", "recipe"])
    assert code == 0
    report = json.loads((out / "REPORT.json").read_text())
    assert report["truncated"] == long_rows and report["judge_status"]["invalid"] == long_rows
    assert report["settings"]["temperature"] == 0.6 and report["settings"]["max_tokens"] == 8192
    fpb_cut = sum(len(r.steps) > 4 for r in rows if r.final_answer_correct)
    assert sum(report["fpb_no_verdict"].values()) == fpb_cut
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert all(p["critique"] == "Looks fine.\n\n\\boxed{-1}" for p in lines)
    assert sum(p["truncated"] for p in lines) == long_rows and all(p["verdict"] is None for p in lines if p["truncated"])
    assert "cut at the critique budget" in (out / "REPORT.md").read_text()
