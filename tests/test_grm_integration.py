"""The client against several real `serve-grm` servers on a tiny model, over loopback HTTP."""

from __future__ import annotations

from fapo.grm.client import Endpoint, JudgeConfig, JudgeItem
from fapo.grm.judge import judge_sync


def test_client_spreads_judgements_over_two_real_model_servers(tiny_model_dir):
    from fapo.serving.hf_backend import TransformersBackend
    from fapo.serving.launch import serve_in_thread

    servers = [serve_in_thread(TransformersBackend.load(str(tiny_model_dir), device="cpu"), max_batch=8,
                               max_wait_ms=20) for _ in range(2)]
    try:
        config = JudgeConfig(endpoints=tuple(Endpoint(s.url, "tiny") for s in servers), concurrency=8,
                             max_tokens=8, temperature=1.0, timeout=60.0, retries=1)
        items = [JudgeItem(problem=f"Start with {i}. Add 2.", steps=(f"{i} + 2 = {i + 2}", f"\\boxed{{{i + 2}}}"),
                           gold=str(i + 2)) for i in range(24)]
        judgements = judge_sync(items, config)
        snapshots = [s.server.snapshot() for s in servers]
    finally:
        for s in servers:
            s.stop()
    assert len(judgements) == len(items)
    # a random model rarely writes a valid \boxed{k}: such answers are "invalid", never verdicts
    assert all(j.status in ("ok", "invalid") for j in judgements)
    assert all((j.verdict is None) == (j.status != "ok") for j in judgements)
    assert {j.endpoint for j in judgements} == {s.url for s in servers}
    assert all(snap["requests"] >= 4 for snap in snapshots)
    assert sum(snap["batches"] for snap in snapshots) < len(items)  # dynamic batching happened
