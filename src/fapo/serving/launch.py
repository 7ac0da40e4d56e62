"""Start local GenRM servers for tests, the demo and benchmarks: in a thread of this process
(`serve_in_thread`) or as `fapo serve-grm` child processes (`launch_subprocess`), each ready only
once /health answers. Knows nothing about requests or batching (`fapo.serving.server` does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fapo.serving.backend import CompletionBackend
from fapo.serving.server import LISTENING_PREFIX, GrmServer, ServerConfig


class ServerStartError(RuntimeError):
    """A server did not come up (bind failure, crash, or no /health in time)."""


@dataclass
class RunningServer:
    """A server running on its own event loop in a daemon thread of this process."""

    url: str
    """Base URL for OpenAI clients, `http://HOST:PORT/v1`."""
    server: GrmServer
    """The server itself (its `snapshot()` is /metrics)."""
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self, timeout: float = 10.0) -> None:
        """Answer pending requests with 503, close the listener, end the thread. Idempotent."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(
    backend: CompletionBackend, config: ServerConfig | None = None, *, start_timeout: float = 30.0, **overrides: Any
) -> RunningServer:
    """Start a server in a background thread and return once it accepts connections.

    `config` defaults to `ServerConfig(port=0)` (a free port); keyword `overrides` replace its fields,
    e.g. `serve_in_thread(backend, max_batch=4, api_key="k")`. Raises ServerStartError if it cannot bind.
    """
    config = dataclasses.replace(config or ServerConfig(port=0), **overrides)
    server = GrmServer(backend, config)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[str] = concurrent.futures.Future()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            started.set_result(loop.run_until_complete(server.start()))
        except OSError as err:
            started.set_exception(ServerStartError(f"cannot listen on {config.host}:{config.port}: {err}"))
            loop.close()
            return
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=main, name="fapo-grm-server", daemon=True)
    thread.start()
    url = started.result(timeout=start_timeout)
    return RunningServer(url=url, server=server, _loop=loop, _thread=thread)


@dataclass
class ServerProcess:
    """A `fapo serve-grm` child process that has printed its URL and answers /health."""

    process: subprocess.Popen
    """The child; its stdout and stderr are read by a thread (see `output`)."""
    url: str
    """Base URL for OpenAI clients, `http://HOST:PORT/v1`."""
    _output: deque[str]

    def output(self) -> str:
        """The child's last 200 lines of output."""
        return "".join(self._output)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait up to `timeout` seconds (then SIGKILL); return the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_subprocess(
    args: Sequence[str], *, timeout: float = 120.0, env: Mapping[str, str] | None = None, echo: bool = False
) -> ServerProcess:
    """Run `python -m fapo.cli serve-grm *args`, wait for its URL line and a 200 from /health.

    Pass `--port 0` to get a free port. `echo=True` copies the child's output to this stderr.
    Raises ServerStartError (with the child's last output) if it exits or is not healthy in `timeout` s.
    """
    command = [sys.executable, "-m", "fapo.cli", "serve-grm", *args]
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env, text=True, errors="replace"
    )
    output: deque[str] = deque(maxlen=200)
    announced: concurrent.futures.Future[str] = concurrent.futures.Future()

    def read() -> None:
        for line in process.stdout:
            output.append(line)
            if echo:
                sys.stderr.write(line)
            if line.startswith(LISTENING_PREFIX) and not announced.done():
                announced.set_result(line[len(LISTENING_PREFIX):].strip())
        if not announced.done():
            announced.set_exception(ServerStartError("exited before listening"))

    threading.Thread(target=read, name="fapo-grm-child-output", daemon=True).start()
    started = ServerProcess(process=process, url="", _output=output)
    deadline = time.monotonic() + timeout
    try:
        started.url = announced.result(timeout=timeout)
        _wait_healthy(started.url, deadline)
    except (ServerStartError, concurrent.futures.TimeoutError) as err:
        reason = str(err) or f"no listening line within {timeout:.0f} s"
        status = started.stop(timeout=5.0)
        raise ServerStartError(
            f"`{' '.join(command)}` did not start ({reason}; exit status {status}); "
            f"last output:\n{started.output()[-4000:]}"
        ) from err
    return started


def _wait_healthy(url: str, deadline: float) -> None:
    health = url.removesuffix("/v1") + "/health"
    while True:
        try:
            with urllib.request.urlopen(health, timeout=2.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as err:
            last = err
        if time.monotonic() > deadline:
            raise ServerStartError(f"no 200 from {health}: {last}")
        time.sleep(0.1)
