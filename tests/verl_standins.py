"""Test helpers: a stand-in for verl's reward router in front of an SGLang GenRM, and GenRM replies.

`GenerateStandIn` serves the `/generate` route the way verl's router + SGLang (`skip_tokenizer_init`)
do: JSON `{"input_ids": [...], "sampling_params": {...}}` in, `{"output_ids": [...], "meta_info"}`
out. It decodes the prompt ids with a real tokenizer, asks `reply(prompt_text)` for the critique and
encodes it back to ids. Runs on the caller's event loop over real loopback HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web


class GenerateStandIn:
    """`/generate` over loopback HTTP; `address` is "127.0.0.1:PORT" (verl's router address form)."""

    def __init__(self, tokenizer: Any, reply: Callable[[str], str], raw_reply: bytes | None = None) -> None:
        self.tokenizer = tokenizer
        self.reply = reply
        self.raw_reply = raw_reply
        """When set, every answer is these bytes (to play a broken server)."""
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.address = ""

    async def __aenter__(self) -> GenerateStandIn:
        app = web.Application()
        app.router.add_post("/generate", self._generate)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        ids, params = body.get("input_ids"), body.get("sampling_params")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) or not isinstance(params, dict):
            return web.json_response({"error": "input_ids (list of int) and sampling_params are required"}, status=400)
        if self.raw_reply is not None:
            return web.Response(body=self.raw_reply, content_type="application/json")
        text = self.reply(self.tokenizer.decode(ids))
        output_ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        meta = {"prompt_tokens": len(ids), "completion_tokens": len(output_ids), "finish_reason": {"type": "stop"}}
        return web.json_response({"output_ids": output_ids, "meta_info": meta})


def boxed_reply(verdict: str) -> Callable[[str], str]:
    """A GenRM that always ends its critique with `\\boxed{verdict}`."""
    return lambda prompt: f"Each paragraph was checked.\n\n\\boxed{{{verdict}}}"


class FixedReplyBackend:
    """A `serve-grm` backend whose every completion is `reply(last user message)` (a GenRM stand-in)."""

    model_name = "genrm-stand-in"

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply = reply

    def generate(self, requests: list) -> list:
        from fapo.serving.backend import Completion

        return [[Completion(self.reply(r.messages[-1]["content"]), "stop", 8)] * r.n for r in requests]

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return sum(len(m["content"].split()) for m in messages)
