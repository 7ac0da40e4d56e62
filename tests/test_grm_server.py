"""The local GenRM server over real loopback HTTP: a tiny transformers model and stub backends."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fapo.serving.backend import Completion, GenerationRequest
from fapo.serving.launch import ServerStartError, launch_subprocess, serve_in_thread
from fapo.serving.server import ServerConfig, parse_chat_request

HELLO = [{"role": "user", "content": "Start with 3. Add 4. What is the result?"}]


def call(url: str, body: Any = None, *, raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """POST JSON (or `raw` bytes) when a body is given, else GET; return (status, parsed JSON)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def chat(url: str, **fields: Any) -> tuple[int, dict]:
    return call(f"{url}/chat/completions", {"model": "any", "messages": HELLO, **fields})


def metrics(url: str) -> dict:
    return call(url.removesuffix("/v1") + "/metrics")[1]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


class StubBackend:
    """Echoes the last message; optionally blocks on `gate` or fails, to drive the server's edges."""

    model_name = "stub"

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.gate = gate
        self.fail = fail
        self.batch_sizes: list[int] = []

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        self.batch_sizes.append(len(requests))
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.fail:
            raise RuntimeError("stub failure")
        return [
            [Completion(f"echo {r.messages[-1]['content']} #{j}", "stop", 3) for j in range(r.n)] for r in requests
        ]

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return sum(len(m["content"].split()) for m in messages)


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    from fapo.serving.hf_backend import TransformersBackend

    return TransformersBackend.load(str(tiny_model_dir), device="cpu", model_name="tiny-grm")


@pytest.fixture
def stub_server():
    with serve_in_thread(StubBackend(), max_wait_ms=0) as server:
        yield server


# ------------------------------------------------------------------------------------ tiny model


def test_chat_completion_returns_text_and_usage(tiny_backend):
    with serve_in_thread(tiny_backend) as server:
        status, body = chat(server.url, max_tokens=6, temperature=0)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == "tiny-grm" and body["id"]
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert "<|im_end|>" not in choice["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == tiny_backend.count_prompt_tokens(HELLO) > 0
    assert 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 6
    else:
        assert choice["finish_reason"] == "stop"


def test_a_checkpoints_generation_config_does_not_change_decoding(tiny_backend, tiny_model_dir):
    """Processors a checkpoint's generation_config asks for (repetition penalty, n-gram bans, ...) stay off:
    only the request's own sampling settings shape the text, as in TRL's rollouts."""
    from fapo.serving.backend import GenerationRequest
    from fapo.serving.hf_backend import TransformersBackend

    shipped = TransformersBackend.load(str(tiny_model_dir), device="cpu", model_name="tiny-grm")
    shipped.model.generation_config.update(repetition_penalty=50.0, no_repeat_ngram_size=1, min_new_tokens=12,
                                           num_beams=2, top_k=3, temperature=0.3)
    requests = [GenerationRequest(HELLO, max_tokens=12, temperature=0.0),
                GenerationRequest(HELLO, max_tokens=12, temperature=1.0, n=2, seed=3)]
    plain = [[c.text for c in choices] for choices in tiny_backend.generate(requests)]
    assert [[c.text for c in choices] for choices in shipped.generate(requests)] == plain


def test_n_choices_and_seeded_sampling_is_reproducible(tiny_backend):
    with serve_in_thread(tiny_backend) as server:
        _, first = chat(server.url, n=3, max_tokens=12, temperature=1.0, top_p=0.95, seed=7)
        _, again = chat(server.url, n=3, max_tokens=12, temperature=1.0, top_p=0.95, seed=7)
        _, max_completion = chat(server.url, max_completion_tokens=2, max_tokens=50, temperature=0)
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in first["choices"]]
    assert texts == [c["message"]["content"] for c in again["choices"]]
    assert len(set(texts)) > 1, "the n choices of a seeded request should differ"
    assert 3 <= first["usage"]["completion_tokens"] <= 3 * 12
    assert max_completion["usage"]["completion_tokens"] <= 2


def test_concurrent_requests_are_batched_with_per_request_parameters(tiny_backend):
    kinds = [
        {"temperature": 0, "max_tokens": 9},
        {"temperature": 0, "max_tokens": 3},
        {"temperature": 0.8, "top_p": 0.9, "max_tokens": 5, "seed": 3, "n": 2},
        {"temperature": 1.2, "max_tokens": 7},
    ]
    with serve_in_thread(tiny_backend, max_batch=8, max_wait_ms=3000) as server:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda kind: chat(server.url, **kind), kinds * 2))
        stats = metrics(server.url)
    with serve_in_thread(tiny_backend, max_batch=1) as server:
        _, solo_greedy = chat(server.url, temperature=0, max_tokens=9)
        _, solo_seeded = chat(server.url, temperature=0.8, top_p=0.9, max_tokens=5, seed=3, n=2)
    assert all(status == 200 for status, _ in answers)
    assert stats["requests"] == stats["completed"] == 8
    assert stats["batches"] < 8 and stats["mean_batch_size"] > 1, stats
    for kind, (_, body) in zip(kinds * 2, answers, strict=True):
        assert len(body["choices"]) == kind.get("n", 1)
        for choice in body["choices"]:
            assert choice["finish_reason"] in ("stop", "length")
        assert body["usage"]["completion_tokens"] <= kind["max_tokens"] * kind.get("n", 1)
    # Same prompt, so no padding: a row's result does not depend on its batch mates.
    assert answers[0][1]["choices"] == solo_greedy["choices"]
    assert answers[2][1]["choices"] == solo_seeded["choices"]


def test_finish_reason_and_token_count_from_ids():
    from fapo.serving.hf_backend import completion_from_ids

    decode = lambda ids: " ".join(map(str, ids))  # noqa: E731
    eos = {2, 9}
    table = [
        ([5, 6, 2, 0, 0], 4, Completion("5 6", "stop", 3)),
        ([5, 9, 0], 4, Completion("5", "stop", 2)),
        ([2, 0], 4, Completion("", "stop", 1)),
        ([5, 6, 7, 8], 4, Completion("5 6 7 8", "length", 4)),
        ([5, 6, 7, 2], 3, Completion("5 6 7", "length", 3)),  # forced end after the row's own max_tokens
    ]
    for ids, max_tokens, expected in table:
        assert completion_from_ids(ids, max_tokens, eos, decode) == expected


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    import torch

    from fapo.serving.hf_backend import keep_top_p

    probs = torch.tensor([[0.1, 0.5, 0.3, 0.1], [0.1, 0.5, 0.3, 0.1]])
    kept = keep_top_p(probs, torch.tensor([0.7, 0.4]))
    assert torch.allclose(kept, torch.tensor([[0.0, 0.5, 0.3, 0.0], [0.0, 0.5, 0.0, 0.0]]))


# ------------------------------------------------------------------------------------ HTTP edges


def test_health_models_and_metrics(stub_server):
    root = stub_server.url.removesuffix("/v1")
    assert call(f"{root}/health") == (200, {"status": "ok", "model": "stub"})
    status, models = call(f"{stub_server.url}/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["stub"]
    assert "max_tokens_limit" not in models["data"][0] and "max_model_len" not in models["data"][0]  # no bounds
    status, body = chat(stub_server.url, n=2)
    assert status == 200 and body["choices"][1]["message"]["content"].endswith("#1")
    stats = metrics(stub_server.url)
    assert stats["requests"] == stats["completed"] == 1 and stats["generated_tokens"] == 6
    assert stats["latency_s"]["p50"] is not None and stats["queue_depth"] == 0


def test_models_reports_the_context_as_vllm_does(tiny_backend, tiny_model_dir):
    """`max_model_len` in /v1/models is the model's context, the field vLLM and SGLang report, so that a dry run
    can tell whether a GenRM prompt plus max_tokens fits before training."""
    context = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    with serve_in_thread(tiny_backend, ServerConfig(port=0, max_tokens_limit=4096)) as server:
        status, models = call(f"{server.url}/models")
    assert status == 200 and models["data"][0]["id"] == "tiny-grm"
    assert models["data"][0]["max_model_len"] == context and models["data"][0]["max_tokens_limit"] == 4096


BAD_BODIES = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "'messages'"),
    (b'{"messages": []}', "'messages'"),
    (b'{"messages": ["hi"]}', "messages[0]"),
    (b'{"messages": [{"role": "user"}]}', "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": 3}]}', "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "'temperature'"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "'max_tokens'"),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": true}', "'n'"),
    (b'{"messages": [{"role": "user", "content": "x"}], "top_p": 0}', "'top_p'"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": true}', "'stream' is not supported"),
]


def test_malformed_requests_answer_400_with_a_message(stub_server):
    for raw, message in BAD_BODIES:
        status, body = call(f"{stub_server.url}/chat/completions", raw=raw)
        assert status == 400, raw
        assert message in body["error"]["message"], (raw, body)
    assert metrics(stub_server.url)["rejected"]["400"] == len(BAD_BODIES)


def test_oversized_body_answers_413():
    with serve_in_thread(StubBackend(), max_body_bytes=1000) as server:
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        assert call(f"{server.url}/chat/completions", big)[0] == 413
        # No Content-Length: the limit applies while reading a chunked body.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        chunks = iter([b'{"messages": [{"role": "user", "content": "', b"x" * 2000, b'"}]}'])
        connection.request("POST", "/v1/chat/completions", body=chunks, encode_chunked=True)
        assert connection.getresponse().status == 413
        connection.close()
        assert chat(server.url)[0] == 200
        assert metrics(server.url)["rejected"]["413"] == 2


def test_api_key_guards_v1_routes():
    with serve_in_thread(StubBackend(), api_key="s3cret") as server:
        body = {"messages": HELLO}
        url = f"{server.url}/chat/completions"
        assert call(url, body)[0] == 401
        assert call(url, body, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(f"{server.url}/models")[0] == 401
        assert call(url, body, headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert call(server.url.removesuffix("/v1") + "/health")[0] == 200
        assert metrics(server.url)["rejected"]["401"] == 3


def test_full_queue_answers_429_while_the_loop_stays_responsive():
    gate = threading.Event()
    backend = StubBackend(gate=gate)
    with serve_in_thread(backend, max_batch=1, max_queue=2, max_wait_ms=0) as server, ThreadPoolExecutor(3) as pool:
        first = pool.submit(chat, server.url)
        wait_for(lambda: metrics(server.url)["in_flight"] == 1)  # generating, blocked on the gate
        queued = [pool.submit(chat, server.url) for _ in range(2)]
        wait_for(lambda: metrics(server.url)["queue_depth"] == 2)
        status, body = chat(server.url)
        assert status == 429 and "queue is full" in body["error"]["message"]
        gate.set()
        assert [f.result()[0] for f in [first, *queued]] == [200, 200, 200]
        assert metrics(server.url)["rejected"]["429"] == 1
    assert backend.batch_sizes == [1, 1, 1]


def test_backend_failure_answers_500_and_is_counted():
    with serve_in_thread(StubBackend(fail=True)) as server:
        status, body = chat(server.url)
        assert status == 500 and "stub failure" in body["error"]["message"]
        assert metrics(server.url)["errors"] == 1
        assert call(server.url.removesuffix("/v1") + "/health")[0] == 200


def test_stop_answers_waiting_requests_503():
    gate = threading.Event()
    server = serve_in_thread(StubBackend(gate=gate), max_batch=1, max_wait_ms=0)
    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(chat, server.url) for _ in range(2)]
        wait_for(lambda: server.server.snapshot()["queue_depth"] == 1)
        server.stop()
        gate.set()
        assert sorted(f.result()[0] for f in answers) == [503, 503]


def test_a_taken_port_is_a_clear_start_error(stub_server):
    with pytest.raises(ServerStartError, match=f"cannot listen on 127.0.0.1:{stub_server.port}"):
        serve_in_thread(StubBackend(), port=stub_server.port)


def test_parse_defaults_and_max_completion_tokens_precedence():
    config = ServerConfig(default_max_tokens=100)
    request = parse_chat_request({"messages": HELLO, "temperature": None}, config)
    assert request == GenerationRequest(messages=HELLO, max_tokens=100, temperature=1.0, top_p=1.0, n=1, seed=None)
    both = parse_chat_request({"messages": HELLO, "max_tokens": 50, "max_completion_tokens": 7}, config)
    assert both.max_tokens == 7


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        ServerConfig(max_batch=0)
    with pytest.raises(ValueError, match="0 picks a free port"):
        ServerConfig(port=70000)


# ------------------------------------------------------------------------------------ CLI, oracle


def test_cli_rejects_unknown_or_missing_oracle(monkeypatch, capsys):
    from fapo import oracles
    from fapo.cli import main

    assert main(["serve-grm", "--oracle", "nosuch"]) == 2
    assert "unknown oracle 'nosuch'" in capsys.readouterr().err
    monkeypatch.setitem(oracles.ORACLES, "ghost", "fapo.no_such_module")
    assert main(["serve-grm", "--oracle", "ghost"]) == 2
    assert "fapo.no_such_module, which is not installed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve-grm", "--oracle", "testbed", "--model", "x"])


def test_cli_rejects_a_zero_max_batch_and_shares_the_library_default(capsys):
    from fapo.cli import main
    from fapo.serving import DEFAULT_MAX_BATCH

    assert main(["serve-grm", "--oracle", "testbed", "--port", "0", "--max-batch", "0"]) == 2
    assert "max_batch must be >= 1" in capsys.readouterr().err
    assert ServerConfig().max_batch == DEFAULT_MAX_BATCH == 64


def test_subprocess_that_fails_to_start_reports_its_output():
    with pytest.raises(ServerStartError, match="exited before listening(.|\n)*unknown oracle 'nosuch'"):
        launch_subprocess(["--oracle", "nosuch", "--port", "0"], timeout=60)


def test_testbed_oracle_is_served():
    pytest.importorskip("fapo.testbed.oracle")
    from fapo.serving.server import load_oracle

    with serve_in_thread(load_oracle("testbed")) as server:
        status, body = chat(server.url)
    assert status == 200 and body["model"] == "testbed-oracle" and body["choices"][0]["message"]["content"]


def test_subprocess_serves_and_stops_on_sigterm_within_seconds_even_while_generating(tiny_model_dir):
    process = launch_subprocess(["--model", str(tiny_model_dir), "--port", "0"], timeout=120)
    try:
        assert process.url.startswith("http://127.0.0.1:") and process.url.endswith("/v1")
        status, body = chat(process.url, max_tokens=4)
        assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")
        with ThreadPoolExecutor(1) as pool:  # greedy, no end token for thousands of steps: minutes of work
            long = pool.submit(chat, process.url, messages=[{"role": "user", "content": "hi"}], max_tokens=8000,
                               temperature=0)
            wait_for(lambda: metrics(process.url)["in_flight"] == 1)
            time.sleep(0.5)
            assert metrics(process.url)["in_flight"] == 1 and not long.done()
            started = time.monotonic()
            status = process.stop(timeout=20)
            assert time.monotonic() - started < 8  # interrupted at the next token, not after the whole request
            assert long.result()[0] == 503
    finally:
        status = process.stop(timeout=20)
    assert status == 0, process.output()
    assert "listening on" in process.output() and "stopped" in process.output()


# ------------------------------------------------------------------------------------ the judge's budget

THINKING_TEMPLATE = (  # Qwen3's switch, in miniature: thinking off writes an empty think block
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def test_the_recipes_budget_is_accepted_and_cut_to_the_context(tiny_backend):
    """No constant below the context: max_tokens 16384 (the recipe's) is served, cut to the room the prompt
    leaves in the model's context, which `/v1/models` and `/tokenize` report as vLLM does."""
    with serve_in_thread(tiny_backend) as server:
        root = server.url.removesuffix("/v1")
        status, models = call(f"{server.url}/models")
        assert status == 200 and models["data"][0]["max_model_len"] == tiny_backend.context_tokens == 4096
        status, counted = call(f"{root}/tokenize", {"model": "any", "messages": HELLO, "add_generation_prompt": True})
        assert status == 200 and counted == {"count": tiny_backend.count_prompt_tokens(HELLO), "max_model_len": 4096}
    assert ServerConfig().max_tokens_limit is None
    backend = ContextStub()
    with serve_in_thread(backend) as server:
        status, body = chat(server.url, max_tokens=16384)
    assert status == 200 and backend.max_tokens == [64 - backend.count_prompt_tokens(HELLO)]


class ContextStub(StubBackend):
    """A stub with a 64-token context that records the max_tokens it was asked to generate."""

    context_tokens = 64

    def __init__(self) -> None:
        super().__init__()
        self.max_tokens: list[int] = []

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        self.max_tokens += [r.max_tokens for r in requests]
        return super().generate(requests)


def test_chat_template_kwargs_reach_the_template(tiny_backend):
    template = tiny_backend.tokenizer.chat_template
    tiny_backend.tokenizer.chat_template = THINKING_TEMPLATE
    try:
        with serve_in_thread(tiny_backend) as server:
            root = server.url.removesuffix("/v1")
            plain = call(f"{root}/tokenize", {"messages": HELLO})[1]["count"]
            off = call(f"{root}/tokenize", {"messages": HELLO, "chat_template_kwargs": {"enable_thinking": False}})
            assert off[0] == 200 and off[1]["count"] > plain
            status, body = chat(server.url, max_tokens=2, temperature=0, chat_template_kwargs={"enable_thinking": False})
            assert status == 200 and body["usage"]["prompt_tokens"] == off[1]["count"]
            status, body = chat(server.url, max_tokens=2, chat_template_kwargs=["enable_thinking"])
            assert status == 400 and "chat_template_kwargs" in body["error"]["message"]
    finally:
        tiny_backend.tokenizer.chat_template = template
