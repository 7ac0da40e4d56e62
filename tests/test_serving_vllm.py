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

from fapo.grm.launch import ServerStartError, launch_subprocess
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
    with pytest.raises(VllmError, match="cannot run vLLM: .*No module named 'vllm'"):
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
