"""The client fits a request to the endpoint's context (fapo.grm.fit) instead of sending one the server refuses.

The stand-in is what vLLM's OpenAI server does, over loopback: `/v1/models` reports `max_model_len`, `/tokenize`
counts a chat prompt, and a chat request whose prompt plus `max_tokens` exceeds the context is an HTTP 400.
Its tokens are words, so the counts are easy to check.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web

from fapo.grm.client import GenRMClient
from fapo.grm.fit import TEMPLATE_TOKENS, reported_context
from fapo.grm.types import RECIPE_MAX_TOKENS, Endpoint, JudgeConfig, JudgeItem

ITEM = JudgeItem("Start with 7. (1) Add 3.", ("(1) 7+3 = 10", "The answer is \\boxed{10}"), "10")


@dataclass
class VllmLike:
    """A vLLM-shaped endpoint: context `max_model_len`, refuses what does not fit, answers "\\boxed{1}"."""

    max_model_len: int | None
    tokenize: bool = True
    chats: list[dict] = field(default_factory=list)
    counted: list[dict] = field(default_factory=list)
    models_asked: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    @staticmethod
    def count(body: dict) -> int:
        words = sum(len(m["content"].split()) for m in body["messages"])
        return words + (3 if (body.get("chat_template_kwargs") or {}).get("enable_thinking") is False else 0)

    async def models(self, request: web.Request) -> web.Response:
        self.models_asked += 1
        return web.json_response({"object": "list", "data": [{"id": "genrm", "max_model_len": self.max_model_len}]})

    async def tokenize_route(self, request: web.Request) -> web.Response:
        if not self.tokenize:
            return web.Response(status=404)
        body = await request.json()
        self.counted.append(body)
        return web.json_response({"count": self.count(body), "max_model_len": self.max_model_len, "tokens": []})

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.chats.append(body)
        prompt = self.count(body)
        if self.max_model_len is not None and prompt + body["max_tokens"] > self.max_model_len:
            return web.json_response({"error": {"message": f"This model's maximum context length is "
                                                           f"{self.max_model_len} tokens", "code": 400}}, status=400)
        return web.json_response({"choices": [{"message": {"content": "Paragraph 1 is wrong. \\boxed{1}"}}]})

    async def __aenter__(self) -> VllmLike:
        app = web.Application()
        app.add_routes([web.get("/v1/models", self.models), web.post("/tokenize", self.tokenize_route),
                        web.post("/v1/chat/completions", self.chat)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


def judge(server: VllmLike, items=(ITEM,), **config) -> tuple[list, dict]:
    async def run():
        async with server, GenRMClient(JudgeConfig(endpoints=(server.url,), retries=0, **config)) as client:
            judgements = await client.judge_many(list(items))
            return judgements, client.metrics()

    return asyncio.run(run())


def test_the_default_budget_is_the_recipes():
    assert JudgeConfig(endpoints=("http://h:1/v1",)).max_tokens == RECIPE_MAX_TOKENS == 16384


def test_an_unfitted_request_is_what_the_server_refuses():
    """Without fitting, the recipe's budget against a 4k context is a 400 (the stand-in behaves as vLLM)."""
    server = VllmLike(max_model_len=4096)
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": RECIPE_MAX_TOKENS}

    async def run():
        async with server:
            return await server.chat(_Request(body))

    assert asyncio.run(run()).status == 400


def test_a_request_that_fits_goes_as_configured_without_counting():
    server = VllmLike(max_model_len=1_000_000)
    (j,), metrics = judge(server)
    assert (j.status, j.verdict) == ("ok", 1)
    assert server.chats[0]["max_tokens"] == RECIPE_MAX_TOKENS and not server.counted
    assert metrics["grm/fitted"] == 0 and server.models_asked == 1


def test_a_request_is_fitted_to_the_room_its_prompt_leaves():
    server = VllmLike(max_model_len=4096)
    (j, again), metrics = judge(server, items=(ITEM, JudgeItem("Start with 8. (1) Add 3.", ITEM.steps, "11")))
    assert (j.status, j.verdict, again.status) == ("ok", 1, "ok")
    first = server.chats[0]
    assert first["max_tokens"] == 4096 - VllmLike.count(first)  # all the room there is, and no more
    assert server.counted[0]["messages"] == first["messages"] and server.counted[0]["add_generation_prompt"]
    assert metrics["grm/fitted"] == 2 and metrics["grm/errors"] == 0
    assert server.models_asked == 1  # asked once per endpoint


def test_room_above_the_budget_keeps_the_budget():
    server = VllmLike(max_model_len=RECIPE_MAX_TOKENS + 300)  # the byte bound does not decide; the count does
    (j,), metrics = judge(server)
    assert j.status == "ok" and server.counted
    assert server.chats[0]["max_tokens"] == RECIPE_MAX_TOKENS and metrics["grm/fitted"] == 0


def test_an_endpoint_that_cannot_count_gets_the_room_of_the_upper_bound():
    server = VllmLike(max_model_len=4096, tokenize=False)
    (j,), metrics = judge(server)
    assert j.status == "ok"
    sent = server.chats[0]
    bound = len(json.dumps([{"role": m["role"], "content": m["content"]} for m in sent["messages"]],
                           ensure_ascii=False, separators=(",", ":")).encode())
    assert 0 < sent["max_tokens"] <= 4096 - bound - TEMPLATE_TOKENS + 64  # the bound, up to JSON spelling


def test_a_prompt_longer_than_the_context_is_an_error_and_never_sent():
    server = VllmLike(max_model_len=5)
    (j,), metrics = judge(server)
    assert j.status == "error" and "context is 5 tokens" in j.error
    assert not server.chats and metrics["grm/errors"] == 1


def test_a_server_that_does_not_say_gets_the_budget():
    server = VllmLike(max_model_len=None)
    (j,), _ = judge(server, max_tokens=100)
    assert j.status == "ok" and server.chats[0]["max_tokens"] == 100 and not server.counted


def test_chat_template_kwargs_reach_the_chat_request_and_the_count():
    server = VllmLike(max_model_len=4096)
    (j,), _ = judge(server, chat_template_kwargs={"enable_thinking": False}, temperature=0.6, top_p=0.95)
    chat, counted = server.chats[0], server.counted[0]
    assert chat["chat_template_kwargs"] == counted["chat_template_kwargs"] == {"enable_thinking": False}
    assert (chat["temperature"], chat["top_p"]) == (0.6, 0.95)
    assert chat["max_tokens"] == 4096 - VllmLike.count(chat)  # counted with the template's arguments


def test_reported_context_reads_the_served_model():
    listing = {"data": [{"id": "other", "max_model_len": 10}, {"id": "genrm", "max_model_len": 32768}]}
    assert reported_context(listing, Endpoint("http://h:1/v1")) == 32768
    assert reported_context({"data": [{"id": "x", "max_model_len": 7}]}, Endpoint("http://h:1/v1")) == 7
    assert reported_context({"data": [{"id": "x"}, {"id": "y"}]}, Endpoint("http://h:1/v1")) is None
    assert reported_context({"data": [{"id": "genrm", "max_model_len": True}]}, Endpoint("http://h:1/v1")) is None
    assert reported_context([], Endpoint("http://h:1/v1")) is None


class _Request:
    def __init__(self, body: dict) -> None:
        self.body = body

    async def json(self) -> dict:
        return self.body


def test_one_budget_and_decoding_for_every_verb_and_path():
    """Training, `fapo eval`, `fapo judge` and the verl adapter all send the recipe's budget and leave decoding to
    the server unless told otherwise; `fapo serve-grm` accepts that budget."""
    import argparse

    from fapo.cli import eval as eval_cli
    from fapo.cli import judge as judge_cli
    from fapo.cli.judge import CLIENT_OPTIONS
    from fapo.integrations.verl import VerlRewardSettings
    from fapo.serving.chat_api import parse_chat_request
    from fapo.serving.server import ServerConfig
    from fapo.train.config import parse_config

    url = "http://127.0.0.1:9/v1"
    training = parse_config({"fapo": {"model": "m", "train_data": "d", "judge": {"endpoints": [url]}}}).fapo.judge
    verl = VerlRewardSettings(judge_endpoints=url).judge_config((url,))
    parser = argparse.ArgumentParser()
    eval_cli._judge_client_options(parser)
    args = parser.parse_args([])
    args.endpoint, args.api_key = [url], None
    evaluation = eval_cli._judge_spec(args, "endpoint", None, "genrm").config
    for config in (training, verl, evaluation):
        assert (config.max_tokens, config.temperature, config.top_p) == (RECIPE_MAX_TOKENS, None, None)
    judge_parser = argparse.ArgumentParser()
    judge_cli.register(judge_parser.add_subparsers())
    judge_args = judge_parser.parse_args(["judge", "in.jsonl", "-o", "out.jsonl", "--endpoint", url])
    assert all(getattr(judge_args, flag[2:].replace("-", "_")) is None for flag, _, _ in CLIENT_OPTIONS)  # JudgeConfig's
    request = parse_chat_request({"messages": [{"role": "user", "content": "x"}], "max_tokens": RECIPE_MAX_TOKENS},
                                 ServerConfig())
    assert request.max_tokens == RECIPE_MAX_TOKENS
