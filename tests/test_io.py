"""Output files: checked before work, written whole or not at all, through links, `-` for stdout, any input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import policy_case
from fapo.cli import main
from fapo.io import DataError, check_output_path, read_jsonl, write_jsonl, write_text
from fapo.serving.launch import serve_in_thread
from fapo.serving.server import load_oracle

LONE_SURROGATE = '"x\\ud800y"'  # valid JSON, not valid Unicode
BOXED_SURROGATE = '"x\\ud800 so \\\\boxed{2}"'  # the same, in an answer the fast path checks


@pytest.fixture(scope="module")
def oracle_url():
    with serve_in_thread(load_oracle("testbed")) as server:
        yield server.url


def _judge_input(path: Path, ids: list[str] | None = None) -> Path:
    problem, gold, solutions = policy_case()
    ids = ids or ['"clean"', '"skip"']
    lines = [f'{{"id": {row_id}, "problem": {json.dumps(problem)}, "response": {json.dumps(solution)}, '
             f'"ground_truth": "{gold}"}}' for row_id, solution in zip(ids, solutions.values())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _verify_input(path: Path, response: str = BOXED_SURROGATE) -> Path:
    path.write_text('{"id": 1, "response": "so \\\\boxed{2}", "gold": "2"}\n'
                    f'{{"id": 2, "response": {response}, "gold": "2"}}\n', encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ the writer


def test_write_text_replaces_a_links_target_and_keeps_the_link(tmp_path):
    target, link = tmp_path / "target.jsonl", tmp_path / "link.jsonl"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    link.symlink_to(target.name)
    write_jsonl(link, [{"a": 1}])
    assert link.is_symlink() and read_jsonl(target) == [{"a": 1}]
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)  # the file's mode is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "target.jsonl"]  # no temporary left


def test_a_row_that_cannot_be_written_leaves_the_old_file(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("kept\n")
    with pytest.raises(TypeError):
        write_jsonl(out, [{"a": 1}, {"b": object()}])
    assert out.read_text() == "kept\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_lone_surrogates_stay_escaped_and_read_back_the_same(tmp_path):
    row = json.loads('{"id": ' + LONE_SURROGATE + ', "text": "é"}')
    write_jsonl(tmp_path / "o.jsonl", [row])
    assert read_jsonl(tmp_path / "o.jsonl") == [row]
    write_text(tmp_path / "t.md", "a \ud800 b")  # markdown: shown escaped
    assert (tmp_path / "t.md").read_text() == "a \\ud800 b"


def test_check_output_path_refuses_before_work(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("{}\n")
    (tmp_path / "alias.jsonl").symlink_to(src)
    check_output_path("-", [src])
    check_output_path(tmp_path / "new.jsonl", [src])
    for path, message in [(tmp_path, "is a directory"), (tmp_path / "no" / "o.jsonl", "does not exist"),
                          (src, "is also an input"), (tmp_path / "alias.jsonl", "is also an input")]:
        with pytest.raises(DataError, match=message):
            check_output_path(path, [src])


# ------------------------------------------------------------------------------------ verify


def test_verify_with_a_lone_surrogate_writes_every_row(tmp_path, capsys):
    src, out = _verify_input(tmp_path / "s.jsonl"), tmp_path / "o.jsonl"
    assert main(["verify", str(src), "-o", str(out), "--workers", "1"]) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [1, 2] and rows[1]["response"] == "x\ud800 so \\boxed{2}"
    assert rows[1]["correct"] is True


def test_verify_refuses_to_write_over_its_input(tmp_path, capsys):
    src = _verify_input(tmp_path / "s.jsonl")
    before = src.read_bytes()
    assert main(["verify", str(src), "-o", str(src)]) == 2
    assert "is also an input" in capsys.readouterr().err and src.read_bytes() == before


@pytest.mark.parametrize("timeout", ["0", "1e9", "601"])
def test_verify_timeout_must_be_a_finite_positive_number(tmp_path, capsys, timeout):
    assert main(["verify", str(_verify_input(tmp_path / "s.jsonl")), "--timeout", timeout]) == 2
    assert "--timeout must be > 0 and at most 600 seconds" in capsys.readouterr().err


def test_verify_into_a_closed_pipe_says_so(tmp_path):
    src = str(_verify_input(tmp_path / "s.jsonl", '"\\\\boxed{1}"'))
    code = ("import sys, os\nr, w = os.pipe()\nos.close(r)\nos.dup2(w, 1)\nfrom fapo.cli import main\n"
            f"sys.exit(main(['verify', {src!r}, '--workers', '1']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "cannot write stdout: Broken pipe" in done.stderr and "None" not in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


# ------------------------------------------------------------------------------------ judge


def test_judge_writes_through_a_link(tmp_path, oracle_url, capsys):
    src = _judge_input(tmp_path / "in.jsonl")
    target, link = tmp_path / "target.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(target)  # dangling until written
    assert main(["judge", str(src), "-o", str(link), "--endpoint", oracle_url]) == 0
    assert link.is_symlink() and [r["status"] for r in read_jsonl(target)] == ["ok", "ok"]


def test_judge_dash_and_dev_stdout_mean_stdout(tmp_path, oracle_url, capsys):
    src = _judge_input(tmp_path / "in.jsonl")
    assert main(["judge", str(src), "-o", "-", "--endpoint", oracle_url]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["clean", "skip"]
    assert not (Path.cwd() / "-").exists()
    done = subprocess.run([sys.executable, "-m", "fapo.cli", "judge", str(src), "-o", "/dev/stdout",
                           "--endpoint", oracle_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["verdict"] for line in done.stdout.splitlines()] == [-1, 0]  # the skip is step 0
    assert os.path.islink("/dev/stdout")


def test_judge_with_a_lone_surrogate_id_writes_every_row(tmp_path, oracle_url, capsys):
    src = _judge_input(tmp_path / "in.jsonl", [LONE_SURROGATE, '"b"'])
    out = tmp_path / "out.jsonl"
    assert main(["judge", str(src), "-o", str(out), "--endpoint", oracle_url]) == 0
    assert [r["id"] for r in read_jsonl(out)] == ["x\ud800y", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


@pytest.mark.parametrize("output, message", [(".", "is a directory"), ("in.jsonl", "is also an input"),
                                             ("missing/o.jsonl", "does not exist")])
def test_judge_checks_its_output_before_any_work(tmp_path, capsys, output, message):
    src = _judge_input(tmp_path / "in.jsonl")
    before = src.read_bytes()
    # no server at this URL: a check after the work would first spend the retries on it
    code = main(["judge", str(src), "-o", str(tmp_path / output), "--endpoint", "http://127.0.0.1:1/v1"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "grm/requests" not in err
    assert src.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------------------------ eval grm


def _critic_rows(path: Path, ids: list[str]) -> Path:
    problem, _, _ = policy_case()
    lines = [f'{{"id": {row_id}, "problem": {json.dumps(problem)}, "steps": ["a", "b"], "label": -1, '
             f'"final_answer_correct": true}}' for row_id in ids]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_eval_grm_saves_every_prediction_with_a_lone_surrogate_id(tmp_path, capsys):
    data = _critic_rows(tmp_path / "set.jsonl", [LONE_SURROGATE, '"b"', '"c"'])
    preds, report = tmp_path / "p.jsonl", tmp_path / "r.json"
    code = main(["eval", "grm", "--data", str(data), "--judge", "oracle", "--save-predictions", str(preds),
                 "-o", str(report), "--min-coverage", "0"])
    assert code == 0
    assert [r["id"] for r in read_jsonl(preds)] == ["x\ud800y", "b", "c"]
    assert json.loads(report.read_text())["judge_status"]["ok"] + json.loads(report.read_text())["judge_status"][
        "invalid"] == 3


@pytest.mark.parametrize("flag", ["-o", "--save-predictions"])
def test_eval_grm_checks_outputs_before_any_work(tmp_path, capsys, flag):
    data = _critic_rows(tmp_path / "set.jsonl", ['"a"'])
    for output, message in [(tmp_path, "is a directory"), (data, "is also an input")]:
        code = main(["eval", "grm", "--data", str(data), "--endpoint", "http://127.0.0.1:1/v1", flag, str(output)])
        assert code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tmp"))


def test_eval_grm_predictions_to_stdout(tmp_path, capsys):
    data = _critic_rows(tmp_path / "set.jsonl", ['"a"', '"b"'])
    code = main(["eval", "grm", "--data", str(data), "--judge", "oracle", "--save-predictions", "-",
                 "--min-coverage", "0"])
    captured = capsys.readouterr()
    assert code == 0 and [json.loads(line)["id"] for line in captured.out.splitlines()] == ["a", "b"]
    assert "# GenRM evaluation" in captured.err  # the markdown moves out of the way
    assert main(["eval", "grm", "--data", str(data), "--judge", "oracle", "--save-predictions", "-", "-o", "-"]) == 2


# ------------------------------------------------------------------------------------ judge: as it goes, --resume


class _SlowOracle:
    """The testbed oracle taking 0.1 s per batch, so that a run can be stopped half-way."""

    def __init__(self) -> None:
        self.oracle = load_oracle("testbed")
        self.model_name = self.oracle.model_name
        self.prompts: list[str] = []

    def generate(self, requests):
        import time

        time.sleep(0.1)
        self.prompts += [r.messages[-1]["content"] for r in requests]
        return self.oracle.generate(requests)

    def count_prompt_tokens(self, messages):
        return self.oracle.count_prompt_tokens(messages)


def _many_rows(path: Path, n: int) -> Path:
    problem, gold, solutions = policy_case()
    rows = [{"id": f"r{k}", "problem": problem, "response": solutions["clean"] + f"\n\nChecked {k}.",
             "ground_truth": gold} for k in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_judge_writes_as_it_goes_and_resumes_without_judging_a_row_twice(tmp_path):
    import signal
    import time

    backend = _SlowOracle()
    src, out = _many_rows(tmp_path / "in.jsonl", 16), tmp_path / "out.jsonl"
    with serve_in_thread(backend, max_wait_ms=0) as server:
        command = [sys.executable, "-m", "fapo.cli", "judge", str(src), "-o", str(out), "--endpoint", server.url,
                   "--concurrency", "1"]
        run = subprocess.Popen(command, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while (not out.exists() or out.read_text().count("\n") < 4) and time.monotonic() < deadline:
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        first = read_jsonl(out)
        assert 4 <= len(first) < 16 and [r["id"] for r in first] == [f"r{k}" for k in range(len(first))]
        with out.open("ab") as f:  # a kill inside a line: its last character cut in the middle
            f.write('{"id": "r99", "critique": "é'.encode()[:-1])
        done = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [f"r{k}" for k in range(16)] and rows[: len(first)] == first
    assert json.loads(done.stderr.splitlines()[-1])["judged"] == 16 - len(first)
    sent = [sum(f"Checked {k}." in prompt for prompt in backend.prompts) for k in range(16)]
    assert sent[: len(first)] == [1] * len(first)  # a row written before the kill is never judged again;
    assert sum(sent) <= 16 + 1  # only the one in flight at the kill (concurrency 1) is asked twice


def test_judge_resume_refuses_another_runs_output(tmp_path, capsys):
    src, out = _many_rows(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    out.write_text('{"id": "other", "status": "ok"}\n')
    assert main(["judge", str(src), "-o", str(out), "--endpoint", "http://127.0.0.1:1/v1", "--resume"]) == 2
    assert "is not the output for input row 1" in capsys.readouterr().err


@pytest.mark.parametrize("row, message", [
    ('{"id": 1, "problem": "p", "steps": []}', "no steps to judge"),
    ('{"id": 1, "problem": "p", "response": " \\n\\n "}', "no steps to judge"),
    ('{"id": 1, "problem": "p", "steps": ["a"], "ground_truth": NaN}', "NaN is not a JSON number"),
    ('{"id": 1, "problem": "p", "steps": ["a"], "ground_truth": 1e999}', "1e999 overflows a float"),
])
def test_judge_refuses_rows_it_cannot_judge_before_any_work(tmp_path, capsys, row, message):
    src = tmp_path / "in.jsonl"
    src.write_text(row + "\n")
    assert main(["judge", str(src), "-o", str(tmp_path / "o.jsonl"), "--endpoint", "http://127.0.0.1:1/v1"]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl:1: " in err and message in err


def test_crlf_blank_lines_separate_steps():
    from fapo.steps import split_steps

    assert split_steps("Step one.\r\n\r\nStep two.\r\n \r\nStep three.") == ["Step one.", "Step two.", "Step three."]


@pytest.mark.parametrize("where", ["loop", "sys"])
def test_an_output_that_cannot_be_written_is_refused_before_work(tmp_path, where):
    if where == "loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        target, message = tmp_path / "a", "cannot resolve the path"
    else:  # a directory nobody can create files in, root included (sysfs)
        target, message = Path("/sys/kernel/fapo-out.jsonl"), "cannot write in /sys/kernel"
    with pytest.raises(DataError, match=message):
        check_output_path(target)


def test_appended_lines_keep_lone_surrogates_escaped_and_a_torn_line_is_dropped(tmp_path):
    from fapo.io import JsonlAppender, complete_lines

    path = tmp_path / "critiques.jsonl"
    JsonlAppender(path).write([json.loads('{"critique": "x\\ud800", "score": NaN}'.replace("NaN", "1")),
                               {"score": float("nan")}])
    with path.open("ab") as f:
        f.write('{"critique": "é'.encode()[:-1])
    lines, end = complete_lines(path)
    assert [json.loads(line) for line in lines] == [{"critique": "x\ud800", "score": 1}, {"score": None}]
    assert end == len(path.read_bytes()) - len('{"critique": "é'.encode()[:-1])


@pytest.mark.parametrize("second", ["same.json", "./sub/../same.json", "link.json", "hard.json"])
def test_two_outputs_of_one_command_are_never_the_same_file(tmp_path, capsys, second):
    data = _critic_rows(tmp_path / "set.jsonl", ['"a"'])
    first = tmp_path / "same.json"
    first.write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.json").symlink_to(first)
    os.link(first, tmp_path / "hard.json")
    code = main(["eval", "grm", "--data", str(data), "--judge", "oracle", "-o", str(first),
                 "--save-predictions", str(tmp_path / second)])
    assert code == 2 and "are the same file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["verify", "x.jsonl", "--timeout", "nan"],
    ["judge", "x.jsonl", "-o", "o", "--endpoint", "http://h:1/v1", "--breaker-cooldown", "inf"],
    ["eval", "policy", "--model", "m", "--data", "d", "--temperature", "1e999"],
    ["serve-grm", "--oracle", "testbed", "--header-timeout=-inf"],
])
def test_no_numeric_option_of_any_verb_takes_a_non_finite_number(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and "is not a finite number" in capsys.readouterr().err


def test_an_output_may_not_be_a_file_of_the_report_directory(tmp_path, capsys):
    data = _critic_rows(tmp_path / "set.jsonl", ['"a"'])
    code = main(["eval", "grm", "--data", str(data), "--judge", "oracle", "--report-dir", str(tmp_path / "r"),
                 "--save-predictions", str(tmp_path / "r" / ".." / "r" / "REPORT.md")])
    assert code == 2 and "are the same file" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('[{"problem": "p", "answer": NaN}]', "NaN is not a JSON number"),
])
def test_training_rows_in_a_json_array_are_read_as_strictly(tmp_path, text, message):
    from fapo.train.config import ConfigError
    from fapo.train.data import read_rows

    path = tmp_path / "rows.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_rows(path)
