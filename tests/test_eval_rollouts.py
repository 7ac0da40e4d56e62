"""`fapo eval rollouts` and the row schema: a verl dump and a TRL completions log built from real Qwen2.5-Math
rollouts, audited through a real `serve-grm` server over loopback HTTP, against counts made by hand."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path

import pytest

from fapo.cli import main
from fapo.schema import FieldMap, gold_text, lookup, problem_text, response_texts
from fapo.serving.backend import Completion
from fapo.serving.launch import serve_in_thread
from fapo.steps import split_steps

PROBLEMS = 40
"""Problems of math_cot_100.jsonl in the fixtures (x 8 samples = 320 rollouts): 0-19 at step 10, 20-39 at 20."""
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
FLAW = re.compile(r"approx|sqrt", re.IGNORECASE)
LONG = 12
"""The rule judge's critiques of solutions with more paragraphs than this are cut at max_tokens."""


def rule_critique(paragraphs: list[str]) -> tuple[str, str]:
    """The stand-in GenRM: the earliest paragraph that approximates or takes a square root is "wrong"."""
    verdict = next((i for i, p in enumerate(paragraphs) if FLAW.search(p)), -1)
    finish = "length" if len(paragraphs) > LONG else "stop"
    return f"Paragraph by paragraph.\n\n\\boxed{{{verdict}}}", finish  # a cut critique still shows a box


class RuleBackend:
    """A `serve-grm` backend judging with `rule_critique`; counts the solutions it was asked about."""

    model_name = "rule"

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()
        self.lock = threading.Lock()

    def generate(self, requests: list) -> list:
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            paragraphs = re.findall(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", prompt, re.DOTALL)
            with self.lock:
                self.asked[prompt] += 1
            text, finish = rule_critique([p for _, p in paragraphs])
            out.append([Completion(text, finish, 9)] * r.n)
        return out

    def count_prompt_tokens(self, messages: list) -> int:
        return sum(len(m["content"].split()) for m in messages)


@pytest.fixture(scope="module")
def qwen_rows(shared_data) -> list[dict]:
    path = shared_data / "qwen25math_rollouts" / "math_cot_100.jsonl"
    return [json.loads(line) for line in path.open(encoding="utf-8")][:PROBLEMS]


def step_of(row: dict) -> int:
    return 10 if int(row["idx"]) < PROBLEMS // 2 else 20


def hand_counts(qwen_rows: list[dict], key) -> dict:
    """Counts by `key(row)`: correctness is Qwen's own grader's `score` (math-verify agrees on these 320),
    flawed and truncated follow the rule on the paragraphs the GenRM is shown."""
    counts: dict = {}
    for row in qwen_rows:
        c = counts.setdefault(str(key(row)), Counter())
        for response, correct in zip(row["response"], row["score"], strict=True):
            c["rollouts"] += 1
            if not correct:
                continue
            c["correct"] += 1
            paragraphs = split_steps(response)
            if len(paragraphs) > LONG:
                c["truncated"] += 1
            else:
                c["judged"] += 1
                c["flawed"] += any(FLAW.search(p) for p in paragraphs)
    return counts


@pytest.fixture(scope="module")
def verl_dump(qwen_rows, tmp_path_factory) -> Path:
    """verl's `trainer.rollout_data_dir`: {step}.jsonl with input (the decoded ChatML prompt), output, gts,
    score, step and the recipe reward's extra fields (acc, pred), as `RayPPOTrainer._dump_generations` writes."""
    out = tmp_path_factory.mktemp("verl") / "rollout_dumps"
    out.mkdir()
    for step in (10, 20):
        lines = []
        for row in (r for r in qwen_rows if step_of(r) == step):
            for response, correct, pred in zip(row["response"], row["score"], row["pred"], strict=True):
                prompt = f"system\n{SYSTEM}\nuser\n{row['question']}\nassistant\n"
                lines.append({"input": prompt, "output": response, "gts": row["gt"], "score": 1.0 if correct else -1.0,
                              "step": step, "acc": correct, "pred": pred})
        (out / f"{step}.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    return out


@pytest.fixture(scope="module")
def trl_log(qwen_rows, tmp_path_factory) -> tuple[Path, Path]:
    """TRL's output dir with `log_completions=True`: completions/completions_<step>.parquet holding step, prompt
    and completion (conversational), one column per reward function, a `log_extra` column and advantage;
    plus the training data (problem, answer) the gold answers come from."""
    import pandas as pd

    out = tmp_path_factory.mktemp("trl")
    (out / "completions").mkdir()
    for step in (10, 20):
        table: dict[str, list] = {k: [] for k in ("step", "prompt", "completion", "accuracy_reward", "data_source",
                                                  "advantage")}
        for row in (r for r in qwen_rows if step_of(r) == step):
            for response, correct in zip(row["response"], row["score"], strict=True):
                table["step"].append(step)
                table["prompt"].append([{"role": "user", "content": row["question"]}])
                table["completion"].append([{"role": "assistant", "content": response}])
                table["accuracy_reward"].append(1.0 if correct else 0.0)
                table["data_source"].append(row["level"])
                table["advantage"].append(0.0)
        pd.DataFrame(table).to_parquet(out / "completions" / f"completions_{step:05d}.parquet")
    data = out / "train.jsonl"
    data.write_text("".join(json.dumps({"problem": r["question"], "answer": r["gt"]}) + "\n" for r in qwen_rows))
    return out, data


@pytest.fixture(scope="module")
def rule_server():
    backend = RuleBackend()
    with serve_in_thread(backend, max_batch=16) as server:
        yield server.url, backend


def _assert_cells(report_cells: dict, expected: dict) -> None:
    assert set(report_cells) == set(expected)
    for name, want in expected.items():
        got = report_cells[name]
        assert (got["rollouts"], got["correct"], got["judged"], got["flawed"], got["truncated"], got["no_verdict"]) \
            == (want["rollouts"], want["correct"], want["judged"], want["flawed"], want["truncated"],
                want["truncated"]), name
        assert got["accuracy"] == pytest.approx(100 * want["correct"] / want["rollouts"], abs=1e-4)
        assert got["flawed_positive_ratio"] == pytest.approx(100 * want["flawed"] / want["judged"], abs=1e-4)


def test_verl_dump_audited_as_counted_by_hand(verl_dump, qwen_rows, rule_server, tmp_path):
    url, backend = rule_server
    before = sum(backend.asked.values())
    out = tmp_path / "audit"
    assert main(["eval", "rollouts", str(verl_dump), "--endpoint", url, "--report-dir", str(out)]) == 0
    report = json.loads((out / "REPORT.json").read_text())
    expected = hand_counts(qwen_rows, step_of)
    _assert_cells(report["by_group"], expected)
    # the numbers above, written out: 143 and 152 correct; 21 of 134 and 7 of 128 judged ones flawed
    assert [(report["by_group"][s]["correct"], report["by_group"][s]["flawed"], report["by_group"][s]["judged"])
            for s in ("10", "20")] == [(143, 21, 134), (152, 7, 128)]
    distinct = {(r["question"], x) for r in qwen_rows for x, ok in zip(r["response"], r["score"]) if ok}
    assert report["total"]["truncated"] == 9 + 24
    assert sum(backend.asked.values()) - before == len(distinct)  # one request per distinct solution (cached)
    text = (out / "REPORT.md").read_text()
    assert "## Per step" in text and "truncated" in text and "> Paragraph by paragraph." in text
    assert (out / "audit.png").stat().st_size > 5000
    rows = [json.loads(line) for line in (out / "rows.jsonl").open()]
    assert len(rows) == 320 and rows[0]["audit"]["key"] == f"{verl_dump}/10.jsonl:1"
    assert {"input", "output", "gts", "score", "step", "acc", "pred"} <= set(rows[0])  # the input's fields kept
    assert all(r["audit"]["correct"] == r["acc"] for r in rows)  # fapo.verify agrees with the dump's grader here


def test_trl_completions_log_by_data_source(trl_log, qwen_rows, rule_server, tmp_path):
    url, _ = rule_server
    run_dir, data = trl_log
    out = tmp_path / "audit"
    argv = ["eval", "rollouts", str(run_dir), "--endpoint", url, "--report-dir", str(out)]
    assert main(argv) == 2  # TRL logs no gold answer: the error says to give --gold-file
    assert main(argv + ["--gold-file", str(data)]) == 0
    report = json.loads((out / "REPORT.json").read_text())
    _assert_cells(report["by_source"], hand_counts(qwen_rows, lambda r: r["level"]))
    _assert_cells(report["by_group"], hand_counts(qwen_rows, step_of))
    assert "## Per data source" in (out / "REPORT.md").read_text()


def test_resume_judges_no_row_twice(verl_dump, qwen_rows, tmp_path):
    backend = RuleBackend()
    out = tmp_path / "audit"
    with serve_in_thread(backend, max_batch=8) as server:
        argv = ["eval", "rollouts", str(verl_dump), "--endpoint", server.url, "--report-dir", str(out)]
        assert main(argv) == 0
        full = json.loads((out / "REPORT.json").read_text())
        lines = (out / "rows.jsonl").read_text().splitlines(keepends=True)
        (out / "rows.jsonl").write_text("".join(lines[:100]) + lines[100][:40])  # killed mid-write
        assert main(argv) == 2  # rows there and no --resume: refused, nothing lost
        backend.asked.clear()
        assert main(argv + ["--resume"]) == 0
    resumed = json.loads((out / "REPORT.json").read_text())
    assert resumed["total"] == full["total"] and resumed["by_group"] == full["by_group"]
    assert resumed["throughput"]["resumed_rows"] == 100 and resumed["throughput"]["rows"] == 220
    rows = [json.loads(line) for line in (out / "rows.jsonl").open()]
    assert [r["audit"]["key"] for r in rows] == [json.loads(x)["audit"]["key"] for x in lines]
    asked_again = {(r["input"], r["output"]) for r in rows[100:] if r["audit"]["correct"]}
    assert sum(backend.asked.values()) == len(asked_again)  # rows 101-320 only, one request per distinct solution


def test_qwen_file_as_it_is_with_the_oracle_judge(shared_data, tmp_path, capsys):
    """A file holding 8 responses per row is 8 rollouts; the testbed oracle cannot judge real math: counted."""
    out = tmp_path / "audit"
    src = shared_data / "qwen25math_rollouts" / "math_cot_100.jsonl"
    code = main(["eval", "rollouts", str(src), "--judge", "oracle", "--report-dir", str(out),
                 "--map", "data_source=level"])
    assert code == 1 and "every judgement failed" in capsys.readouterr().err
    report = json.loads((out / "REPORT.json").read_text())
    assert report["total"]["rollouts"] == 800 and report["total"]["correct"] == 729  # Qwen's grader: 728 + 73#7
    assert report["total"]["errors"] == 729 and report["total"]["flawed_positive_ratio"] is None
    assert set(report["by_source"]) == {f"Level {i}" for i in range(1, 6)}


def test_bad_input_is_one_line(tmp_path, capsys, verl_dump):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "text": "x", "gold": "1"}\n')
    assert main(["eval", "rollouts", str(bad), "--judge", "none", "--rows", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1: no response field" in err and "--map response=COLUMN" in err and "Traceback" not in err
    assert main(["eval", "rollouts", str(bad), "--judge", "none", "--rows", str(tmp_path / "r2.jsonl"),
                 "--map", "response=text"]) == 0
    assert main(["eval", "rollouts", str(bad), "--judge", "none"]) == 2
    assert "--rows FILE or --report-dir" in capsys.readouterr().err
    assert main(["eval", "rollouts", str(bad), "--judge", "none", "--rows", str(tmp_path / "r3.jsonl"),
                 "--map", "nonsense=x"]) == 2
    assert "unknown field 'nonsense'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the schema


@pytest.mark.parametrize("row, field, name, value", [
    ({"gts": "420", "gold": "7"}, "gold", "gold", "7"),
    ({"gts": "420"}, "gold", "gts", "420"),
    ({"reward_model": {"ground_truth": "3"}}, "gold", "reward_model.ground_truth", "3"),
    ({"output": "x", "input": "p"}, "response", "output", "x"),
    ({"completion": [{"role": "assistant", "content": "y"}]}, "response", "completion", None),
    ({"question": "q", "prompt": "p"}, "problem", "question", "q"),
    ({"idx": 5}, "id", "idx", 5),
    ({"global_step": 3}, "step", "global_step", 3),
])
def test_schema_aliases(row, field, name, value):
    found = lookup(row, field)
    assert found is not None and found.name == name
    if value is not None:
        assert found.value == value


def test_schema_texts():
    chatml = f"system\n{SYSTEM}\nuser\nWhat is 1+1?\nassistant\n"
    assert problem_text(chatml) == "What is 1+1?"
    assert problem_text("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n") == "What is 2+2?"
    assert problem_text([{"role": "system", "content": "s"}, {"role": "user", "content": "Q?"}]) == "Q?"
    assert problem_text("A plain problem.") == "A plain problem."
    assert problem_text("Q?\n\nPlease reason step by step, and put your final answer within \\boxed{}.") == "Q?"
    assert response_texts([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == ["ab"]
    assert response_texts(["a", "b"]) == ["a", "b"] and response_texts(3) is None
    assert gold_text(420) == "420" and gold_text("Janet ... #### 1,200") == "1200" and gold_text(["x"]) == "x"
    assert gold_text({"a": 1}) is None and gold_text(True) is None
    assert lookup({"a": {"b": "g"}, "gold": "no"}, "gold", FieldMap.parse(["gold=a.b"])).value == "g"
    with pytest.raises(ValueError, match="write FIELD=COLUMN"):
        FieldMap.parse(["gold"])


def test_every_verb_reads_the_aliases(tmp_path, capsys):
    """verify (output, gts), judge (question, output, answer): the same names everywhere."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"uid": "a", "question": "What is 2+3?", "output": "2+3 = 5\n\n\\boxed{5}",
                                "gts": 5}) + "\n")
    assert main(["verify", str(rows), "-o", str(tmp_path / "v.jsonl")]) == 0
    verified = json.loads((tmp_path / "v.jsonl").read_text())
    assert verified["correct"] is True and verified["uid"] == "a" and verified["output"].endswith("{5}")
    backend = RuleBackend()
    with serve_in_thread(backend) as server:
        assert main(["judge", str(rows), "-o", str(tmp_path / "j.jsonl"), "--endpoint", server.url]) == 0
    judged = json.loads((tmp_path / "j.jsonl").read_text())
    assert judged["id"] == "a" and judged["verdict"] == -1
    (prompt,) = backend.asked
    assert "What is 2+3?" in prompt and "<paragraph_1>\n\\boxed{5}" in prompt and "5" in prompt


def test_eval_rollouts_never_imports_torch(tmp_path):
    import subprocess
    import sys

    rows = tmp_path / "r.jsonl"
    rows.write_text(json.dumps({"problem": "1+1?", "response": "\\boxed{2}", "gold": "2"}) + "\n")
    code = ("import sys; from fapo.cli import main; "
            f"rc = main(['eval', 'rollouts', {str(rows)!r}, '--judge', 'none', '--rows', {str(tmp_path / 'o.jsonl')!r}]); "
            "bad = {'torch', 'transformers'} & set(sys.modules); print(bad); sys.exit(rc or bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_fapo_run_dir_and_a_json_array(qwen_rows, tmp_path):
    """fapo's critiques.jsonl (problem, answer, completion, step) in its run directory, and a JSON array file."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')  # not rollouts: the directory's critiques.jsonl is read
    critiques = [{"step": 1 + i % 2, "problem": r["question"], "answer": r["gt"], "completion": r["response"][0],
                  "verdict": -1, "status": "ok"} for i, r in enumerate(qwen_rows[:6])]
    (run / "critiques.jsonl").write_text("".join(json.dumps(c) + "\n" for c in critiques))
    array = tmp_path / "rows.json"
    array.write_text(json.dumps({"rows": [{"question": r["question"], "output": r["response"][1], "gts": r["gt"]}
                                          for r in qwen_rows[:4]]}))
    out = tmp_path / "audit"
    assert main(["eval", "rollouts", str(run), str(array), "--judge", "none", "--report-dir", str(out)]) == 0
    report = json.loads((out / "REPORT.json").read_text())
    assert report["total"]["rollouts"] == 10
    assert report["total"]["correct"] == sum(r["score"][0] for r in qwen_rows[:6]) + sum(r["score"][1] for r in qwen_rows[:4])
    assert {g: c["rollouts"] for g, c in report["by_group"].items()} == {"1": 3, "2": 3, "all": 4}
    keys = [json.loads(line)["audit"]["key"] for line in (out / "rows.jsonl").open()]
    assert keys[0] == f"{run}/critiques.jsonl:1" and keys[-1] == f"{array}:#4"
