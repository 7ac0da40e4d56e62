"""A pool of worker processes that answer tasks under a hard per-task timeout, callable from any thread.

Owns: starting worker processes (fresh interpreters, connected by a socket), handing each one task
at a time, the per-task deadline, killing and replacing a worker that overruns or dies, and the
worker's side of the protocol (`serve`). The timeout holds in any thread of the caller, unlike
`signal.alarm`, which works in the main thread only. A worker also bounds itself, so that it never
outlives its parent by more than one task's time nor grows without limit: an address-space limit
(`memory_bytes`; a task that hits it is a "memory" failure), a CPU-time limit per task (the kernel
ends a worker still busy after its task's time plus one second, even when the parent was killed and
cannot), and a thread that exits the worker once its parent is gone.

Must not know what the tasks are: a worker runs a "module:function" named by the caller, which
returns the handler for its tasks. No math, no imports beyond the standard library (and `fapo`, to
find where it was imported from). A task that fails is a `TaskFailure` value, never an exception.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT = 120.0  # seconds for a new worker to import its handler and warm up
_CLOSE_GRACE = 1.0  # seconds a worker gets to exit after being told to, before it is killed


@dataclass(frozen=True)
class TaskFailure:
    """What a task that got no answer from its handler gets instead."""

    kind: Literal["timeout", "memory", "error"]
    """"timeout" (ran past its deadline; the worker was killed and replaced), "memory" (the task needed more
    memory than the worker's address-space limit; the worker was replaced) or "error" (the worker died, no
    worker could start, or the run was left before the task was done)."""
    detail: str = ""
    """What happened, for the log."""


# ---------------------------------------------------------------------------------------------------
# Worker side: runs in the pool's processes only.


def serve(fd: int, setup: str, memory_bytes: int = 0) -> None:
    """Worker main loop on socket `fd`.

    Limits its address space to `memory_bytes` (0: no limit) and watches its parent; calls `setup`
    ("module:function") once, which prepares the process (imports, warm-up) and returns the handler;
    then says "ready" and, for each `(task, seconds)` received, sends `("done", handler(task))` (or
    `("memory", why)` and exits, when the task ran out of memory) until it receives None or the socket
    closes. Each task may use `seconds` + 1 s of CPU time; the kernel ends the worker past that.
    """
    conn = Connection(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    _exit_with_parent(os.getppid())
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, resource.getrlimit(resource.RLIMIT_AS)[1]))
    module, function = setup.split(":")
    handle: Callable[[Any], Any] = getattr(importlib.import_module(module), function)()
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task, seconds = message
        _limit_cpu(seconds + 1.0)
        try:
            answer = handle(task)
            out_of_memory = memory_bytes > 0 and _peak_address_space() >= 0.9 * memory_bytes
        except MemoryError:
            out_of_memory = True
        if out_of_memory:  # also when the handler's library caught the MemoryError: its answer is not one
            conn.send(("memory", f"the task needed more than the worker's {memory_bytes / 2**30:.2g} GiB"))
            return
        conn.send(("done", answer))


def _peak_address_space() -> int:
    """This process's largest address space so far in bytes (Linux's VmPeak; 0 where /proc has none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _exit_with_parent(parent: int) -> None:
    """A daemon thread that ends this process once `parent` is gone (it then has another parent). It runs
    whenever the worker lets go of the GIL; the CPU limit covers a task that does not."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="fapo-parent-watch", daemon=True).start()


def _limit_cpu(seconds: float) -> None:
    """Let the CPU time used so far grow by at most `seconds` before the kernel sends SIGXCPU (which ends
    the process): the bound on a task that nobody is left to time out."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(used.ru_utime + used.ru_stime + seconds) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


# ---------------------------------------------------------------------------------------------------
# Parent side: worker processes managed by hand, so that one overrunning task can be killed alone.


def _worker_env() -> dict[str, str]:
    """The parent's environment, with the directory `fapo` was imported from first on PYTHONPATH."""
    import fapo

    root = os.path.dirname(os.path.dirname(os.path.abspath(fapo.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class _Worker:
    """One worker process and the parent's end of its socket; `ready` once it has warmed up.

    A fresh interpreter (not fork, not multiprocessing's spawn): forking a trainer that runs
    threads can deadlock the child, and multiprocessing's spawn/forkserver re-run the user's
    `__main__` in every worker. The cost is the interpreter's start plus the handler's imports.
    """

    _COMMAND = ("import sys; from fapo.process_pool import serve; "
                "serve(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))")

    def __init__(self, setup: str, memory_bytes: int = 0) -> None:
        self.conn, child_conn = multiprocessing.Pipe(duplex=True)
        fd = child_conn.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-c", self._COMMAND, str(fd), setup, str(memory_bytes)],
            pass_fds=(fd,),
            env=_worker_env(),
            stdin=subprocess.DEVNULL,
        )
        child_conn.close()
        self.ready = False
        self.started = time.monotonic()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.process.wait(timeout=_CLOSE_GRACE)
        except (OSError, subprocess.TimeoutExpired):
            pass  # gone already, or slow to go: kill() below ends it either way
        self.kill()


class ProcessPool:
    """`size` workers, each doing one task at a time under a per-task deadline.

    `setup` names the "module:function" each worker calls once to get its task handler (see
    `serve`); tasks and answers must pickle, and a task must not be None (it stops the worker).
    Workers start on first use and are stopped by `close` (or at exit). Not thread-safe: one caller
    at a time. `pid` is the process that made the pool: after a fork, the workers are not the child's.
    """

    def __init__(self, size: int, setup: str, memory_bytes: int = 0) -> None:
        self.size = size
        self.setup = setup
        self.memory_bytes = memory_bytes
        """Address-space limit of each worker in bytes (0: none)."""
        self.restarts = 0  # workers killed (timeout) or found dead and replaced
        self._workers: list[_Worker] = []
        self._running: dict[_Worker, tuple[int, float]] = {}  # worker -> (task index, deadline)
        self.pid = os.getpid()
        atexit.register(self.close)

    def close(self) -> None:
        atexit.unregister(self.close)
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def run(self, tasks: list[Any], timeout: float) -> list[Any]:
        """Answers to `tasks`, in order; each task gets at most `timeout` seconds of a worker.

        A task that got no answer has a `TaskFailure` in its place.
        """
        outcomes: list[Any] = [TaskFailure("error", "not run")] * len(tasks)
        pending = deque(range(len(tasks)))
        self._resize()
        start_failures = 0
        try:
            while pending or self._running:
                self._dispatch(tasks, pending, timeout)
                start_failures += self._wait_and_collect(outcomes)
                if start_failures > 2 * self.size + 2:  # workers cannot start at all: give up, loudly
                    logger.error(
                        "fapo.process_pool: %d worker start failures; failing the rest", start_failures
                    )
                    for i in [*pending, *(i for i, _ in self._running.values())]:
                        outcomes[i] = TaskFailure("error", "no worker could start")
                    break
        finally:  # left early (Ctrl-C, give-up): a busy worker would answer the wrong call later
            for worker in list(self._running):
                self._replace(worker)
        return outcomes

    def start(self) -> None:
        """Start missing workers and wait until every one is warm."""
        self._resize()
        failures = 0
        while not all(w.ready for w in self._workers) and failures <= 2 * self.size + 2:
            failures += self._wait_and_collect([])

    def _resize(self) -> None:
        while len(self._workers) > self.size:
            self._workers.pop().stop()
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self.setup, self.memory_bytes))

    def _replace(self, worker: _Worker) -> None:
        self._running.pop(worker, None)
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self.setup, self.memory_bytes)
        self.restarts += 1

    def _dispatch(self, tasks: list[Any], pending: deque[int], timeout: float) -> None:
        for worker in list(self._workers):
            if not pending:
                return
            if worker.ready and worker not in self._running:
                i = pending.popleft()
                try:
                    worker.conn.send((tasks[i], timeout))
                except OSError:  # died while idle: retry the task on a fresh worker
                    pending.appendleft(i)
                    self._replace(worker)
                    continue
                self._running[worker] = (i, time.monotonic() + timeout)

    def _deadline(self, worker: _Worker) -> float:
        if worker in self._running:
            return self._running[worker][1]
        return worker.started + _STARTUP_TIMEOUT if not worker.ready else float("inf")

    def _wait_and_collect(self, outcomes: list[Any]) -> int:
        """Wait for the next message, death or deadline; record outcomes. Returns start failures."""
        watched = [w for w in self._workers if w in self._running or not w.ready]
        if not watched:
            return 0
        handles = {w.conn: w for w in watched}  # a dead worker's socket reads as EOF
        delay = min(self._deadline(w) for w in watched) - time.monotonic()
        fired = {handles[h] for h in wait(list(handles), timeout=max(0.0, delay))}
        failures = 0
        for worker in fired:
            failures += self._on_event(worker, outcomes)
        now = time.monotonic()
        for worker in watched:
            if worker in self._workers and self._deadline(worker) <= now:
                if worker in self._running:
                    outcomes[self._running[worker][0]] = TaskFailure("timeout")
                else:
                    failures += 1
                    logger.warning("fapo.process_pool: a worker did not start in %.0f s", _STARTUP_TIMEOUT)
                self._replace(worker)
        return failures

    def _on_event(self, worker: _Worker, outcomes: list[Any]) -> int:
        """Handle a message or the death of `worker`. Returns 1 if it died before it was ready."""
        try:
            message = worker.conn.recv() if worker.conn.poll() else None
        except (EOFError, OSError):
            message = "dead"
        if message is None and worker.process.poll() is None:
            return 0  # nothing to read yet
        if message == "ready":
            worker.ready = True
            return 0
        if isinstance(message, tuple) and message[0] == "done" and worker in self._running:
            outcomes[self._running.pop(worker)[0]] = message[1]
            return 0
        if isinstance(message, tuple) and message[0] == "memory" and worker in self._running:
            outcomes[self._running.pop(worker)[0]] = TaskFailure("memory", message[1])
            self._replace(worker)  # it exits after saying so
            return 0
        was_ready = worker.ready
        if worker in self._running:
            outcomes[self._running[worker][0]] = TaskFailure("error", "the worker died")
        self._replace(worker)
        return 0 if was_ready else 1
