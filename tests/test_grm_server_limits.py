"""The local GenRM server cannot be tied up: context and token budgets, lanes, dropped clients, slow or
too many connections, hostile JSON, Retry-After, and the API key from the environment. Real loopback
servers; the stand-in backends only decide how long generation takes."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from fapo.serving.backend import Completion, GenerationRequest
from fapo.serving.launch import launch_subprocess, serve_in_thread
from test_grm_server import HELLO, StubBackend, call, chat, metrics, wait_for


class ContextStub(StubBackend):
    """A stub with a 20-token context (tokens are words); records the max_tokens it is asked for."""

    context_tokens = 20

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        self.asked += [r.max_tokens for r in requests]
        return super().generate(requests)


class LongRequestsWait(StubBackend):
    """Generation of a request with max_tokens × n over `threshold` blocks until `gate` opens."""

    def __init__(self, gate: threading.Event, threshold: int) -> None:
        super().__init__()
        self.long_gate, self.threshold = gate, threshold

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        if any(r.max_tokens * r.n > self.threshold for r in requests):
            assert self.long_gate.wait(30), "test gate never opened"
        return super().generate(requests)


def _raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


# ------------------------------------------------------------------------------------ prompt and budget


def test_a_prompt_longer_than_the_context_answers_400_with_the_counts(tiny_model_dir):
    from fapo.serving.hf_backend import TransformersBackend

    backend = TransformersBackend.load(str(tiny_model_dir), device="cpu")
    assert backend.context_tokens == 4096
    with serve_in_thread(backend) as server:
        status, body = call(f"{server.url}/chat/completions",
                            {"messages": [{"role": "user", "content": "x " * 3000}], "max_tokens": 1})
        assert status == 400 and "tokens; this model's context is 4096 tokens" in body["error"]["message"]
        assert metrics(server.url)["rejected"]["400"] == 1 and metrics(server.url)["batches"] == 0


def test_max_tokens_is_cut_to_the_room_the_context_leaves():
    backend = ContextStub()
    with serve_in_thread(backend) as server:
        assert chat(server.url, messages=[{"role": "user", "content": "w " * 15}], max_tokens=100)[0] == 200
        status, body = chat(server.url, messages=[{"role": "user", "content": "w " * 25}])
        assert status == 400 and "the prompt has 25 tokens; this model's context is 20" in body["error"]["message"]
    assert backend.asked == [5]


def test_max_tokens_times_n_is_bounded():
    with serve_in_thread(StubBackend(), max_request_tokens=1000) as server:
        status, body = chat(server.url, max_tokens=200, n=8)
        assert status == 400 and "200 × 8 = 1600 exceeds this server's 1000 tokens" in body["error"]["message"]
        assert chat(server.url, max_tokens=200, n=5)[0] == 200


# ------------------------------------------------------------------------------------ queueing


def test_a_short_request_does_not_wait_behind_a_long_one():
    gate = threading.Event()
    backend = LongRequestsWait(gate, threshold=64)
    with serve_in_thread(backend, long_request_tokens=64) as server, ThreadPoolExecutor(1) as pool:
        long = pool.submit(chat, server.url, max_tokens=8192, n=4)
        wait_for(lambda: metrics(server.url)["in_flight"] == 1)
        started = time.monotonic()
        assert chat(server.url, max_tokens=5)[0] == 200  # served while the long one still generates
        assert time.monotonic() - started < 5 and not long.done()
        gate.set()
        assert long.result()[0] == 200


def test_a_queued_request_whose_client_left_is_dropped():
    gate = threading.Event()
    backend = StubBackend(gate=gate)
    with serve_in_thread(backend, max_batch=1, max_wait_ms=0) as server, ThreadPoolExecutor(2) as pool:
        first = pool.submit(chat, server.url)
        wait_for(lambda: metrics(server.url)["in_flight"] == 1)
        body = json.dumps({"messages": [{"role": "user", "content": "gone"}]}).encode()
        leaver = _raw(server.port, HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        wait_for(lambda: metrics(server.url)["queue_depth"] == 1)
        third = pool.submit(chat, server.url, messages=[{"role": "user", "content": "stays"}])
        wait_for(lambda: metrics(server.url)["queue_depth"] == 2)
        leaver.close()
        time.sleep(0.5)  # loopback: the server sees the close at once
        gate.set()
        assert first.result()[0] == 200
        assert third.result()[1]["choices"][0]["message"]["content"] == "echo stays #0"
        assert metrics(server.url)["dropped_disconnected"] == 1 and metrics(server.url)["errors"] == 0
    assert backend.batch_sizes == [1, 1]  # the departed client's request never reached the backend


def test_429_and_503_say_when_to_retry():
    gate = threading.Event()
    with serve_in_thread(StubBackend(gate=gate), max_batch=1, max_queue=1, max_wait_ms=0) as server, \
            ThreadPoolExecutor(2) as pool:
        busy = [pool.submit(chat, server.url) for _ in range(2)]
        wait_for(lambda: metrics(server.url)["queue_depth"] == 1)
        request = urllib.request.Request(f"{server.url}/chat/completions", json.dumps({"messages": HELLO}).encode())
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        assert answer.value.code == 429 and answer.value.headers["Retry-After"] == "1"
        gate.set()
        assert [f.result()[0] for f in busy] == [200, 200]


# ------------------------------------------------------------------------------------ connections


def test_half_sent_heads_and_bodies_are_timed_out():
    with serve_in_thread(StubBackend(), header_timeout_s=0.5, body_timeout_s=0.5) as server:
        stalled = [_raw(server.port, HEAD) for _ in range(50)]  # the head never ends
        started = time.monotonic()
        assert all(_read_all(sock) == b"" for sock in stalled)  # closed by the server
        assert time.monotonic() - started < 5
        partial = _raw(server.port, HEAD + b"Content-Length: 100\r\n\r\n{\"messages\"")
        answer = _read_all(partial)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
        snapshot = metrics(server.url)
        assert snapshot["rejected"]["408"] == 1 and snapshot["connections"] == 1  # this /metrics request
        for sock in [*stalled, partial]:
            sock.close()


def test_connections_over_the_cap_are_answered_503():
    with serve_in_thread(StubBackend(), max_connections=3) as server:
        held = [_raw(server.port, b"") for _ in range(3)]
        wait_for(lambda: server.server.snapshot()["connections"] == 3)
        answer = _read_all(_raw(server.port, b""))
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer and b"too many connections" in answer
        for sock in held:
            sock.close()
        wait_for(lambda: server.server.snapshot()["connections"] == 0)
        assert chat(server.url)[0] == 200 and metrics(server.url)["rejected"]["503"] == 1


# ------------------------------------------------------------------------------------ hostile JSON, API key


@pytest.mark.parametrize("raw, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"messages": [], "n": ' + b"9" * 5000 + b"}", "not usable JSON"),
    (b'{"messages": [{"role": "user", "content": "a\\ud800"}]}', "not valid Unicode"),
    (b'{"messages": [' + b",".join([b'{"role": "user", "content": ""}'] * 5000) + b"]}", "at most 1024"),
])
def test_hostile_json_answers_400_and_is_counted(raw, message):
    with serve_in_thread(StubBackend()) as server:
        status, body = call(f"{server.url}/chat/completions", raw=raw)
        assert status == 400 and message in body["error"]["message"]
        snapshot = metrics(server.url)
        assert snapshot["rejected"]["400"] == 1 and snapshot["errors"] == 0
        assert chat(server.url)[0] == 200


def test_api_key_from_the_environment():
    with launch_subprocess(["--oracle", "testbed", "--port", "0"], env={"FAPO_GRM_API_KEY": "k3y"}) as process:
        assert "k3y" not in " ".join(process.process.args)
        assert chat(process.url)[0] == 401
        url = f"{process.url}/chat/completions"
        assert call(url, {"messages": HELLO}, headers={"Authorization": "Bearer k3y"})[0] == 200


# ------------------------------------------------------------------------------------ one request, its own failure


class PoisonStub(StubBackend):
    """Fails any batch holding a message "poison" (as a backend fails on a request it cannot sample)."""

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        self.batch_sizes.append(len(requests))
        if any(r.messages[-1]["content"] == "poison" for r in requests):
            raise RuntimeError("cannot sample")
        return [[Completion("ok", "stop", 1)] * r.n for r in requests]


def test_a_request_that_fails_generation_fails_alone():
    backend = PoisonStub()
    with serve_in_thread(backend, max_wait_ms=300, max_batch=8) as server:
        contents = ["a", "b", "poison", "c", "d"]
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda c: call(f"{server.url}/chat/completions",
                                                   {"messages": [{"role": "user", "content": c}]}), contents))
        assert [status for status, _ in answers] == [200, 200, 500, 200, 200]
        assert max(backend.batch_sizes) > 1  # they were batched together, then separated
        assert metrics(server.url)["errors"] == 1


def test_a_near_zero_temperature_is_greedy_and_its_batch_is_answered(tiny_model_dir):
    from fapo.serving.hf_backend import TransformersBackend

    backend = TransformersBackend.load(str(tiny_model_dir), device="cpu")
    with serve_in_thread(backend, max_wait_ms=300) as server:
        temperatures = [1e-45, 0.7, 1.0, 5e-324, 0.0]
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda t: chat(server.url, temperature=t, max_tokens=4), temperatures))
        assert [status for status, _ in answers] == [200] * 5, answers
        assert answers[0][1]["choices"][0]["message"] == answers[4][1]["choices"][0]["message"]  # both greedy


def test_an_oversized_prompt_is_refused_before_it_is_counted_in_full(tiny_model_dir):
    """4 MiB of prompt on a 4096-token model: refused after counting a few pieces, while small requests
    keep their latency (counting never takes generation's tokenizer lock)."""
    from fapo.serving.hf_backend import TransformersBackend

    backend = TransformersBackend.load(str(tiny_model_dir), device="cpu")
    huge = {"messages": [{"role": "user", "content": "12 + 34 = 46. " * 300_000}], "max_tokens": 1}
    with serve_in_thread(backend) as server:
        assert chat(server.url, max_tokens=1)[0] == 200  # warm
        t0 = time.perf_counter()
        status, body = call(f"{server.url}/chat/completions", huge)
        refused_s = time.perf_counter() - t0
        assert status == 400 and "more than 8192 tokens" in body["error"]["message"]
        assert refused_s < 1.5, refused_s


@pytest.mark.parametrize("head, status", [
    (b"Authorization: Bearer \xff\xfe\r\n", 401),  # not UTF-8: was a 500
    ("Authorization: Bearer é\r\n".encode("latin-1"), 401),
    (b"Authorization: Bearer k\r\nContent-Encoding: gzip\r\n", 400),  # a body that is not gzip: was a 500
    (b"Authorization: Bearer k\r\nContent-Length: abc\r\n", 400),
])
def test_a_malformed_request_is_a_counted_client_error_never_a_500(head, status):
    body = json.dumps({"messages": HELLO}).encode()
    length = b"" if b"Content-Length" in head else b"Content-Length: %d\r\n" % len(body)
    with serve_in_thread(StubBackend(), api_key="k") as server:
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        sock = _raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + head + length + b"\r\n" + body)
        try:
            assert sock.recv(64).split(b" ")[1] == str(status).encode()
        finally:
            sock.close()
        snapshot = metrics(server.url)
        assert snapshot["errors"] == 0
        assert call(f"{server.url}/chat/completions", {"messages": HELLO}, headers={"Authorization": "Bearer k"})[0] == 200


@pytest.mark.parametrize("option, message", [
    (["--api-key", ""], "--api-key (or $FAPO_GRM_API_KEY) is empty"),
    (["--api-key", " "], "--api-key (or $FAPO_GRM_API_KEY) is empty"),
    (["--max-wait-ms", "1e9"], "max_wait_ms must be a number in [0, 60000]"),
    (["--body-timeout", "1e300"], "body_timeout_s must be a number in (0, 3600]"),
])
def test_serve_grm_refuses_an_empty_key_and_unbounded_waits(capsys, option, message):
    from fapo.cli import main

    assert main(["serve-grm", "--oracle", "testbed", "--port", "0", *option]) == 2
    assert message in capsys.readouterr().err
