"""Test helper: GenRM backends for a real `serve-grm` over loopback that fail the way GenRMs do."""

from __future__ import annotations

from fapo.serving.backend import Completion
from fapo.serving.server import load_oracle


class BrokenGenRM:
    """serve-grm's testbed oracle whose model fails: `mode` "no_verdict" answers a critique without a
    `\\boxed{}` verdict (status "invalid"), "crash" raises (HTTP 500: status "error")."""

    def __init__(self, mode: str = "no_verdict"):
        self.inner = load_oracle("testbed")
        self.model_name = self.inner.model_name
        self.mode = mode

    def generate(self, requests):
        if self.mode == "crash":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return [[Completion("Every step looks fine to me.", "stop", 7)] * r.n for r in requests]

    def count_prompt_tokens(self, messages):
        return self.inner.count_prompt_tokens(messages)
