"""Local model serving: completion backends (transformers, the testbed's oracle), the small
OpenAI-compatible server with dynamic batching (CPUs, tests, the demo) and its launchers.

Sits beside `fapo.grm`, never under it: the judge speaks HTTP to these servers as to vLLM or SGLang,
and `fapo.grm` imports nothing from here.
"""

DEFAULT_MAX_BATCH = 64
"""Most requests in one generate call of `fapo serve-grm` (`ServerConfig.max_batch`). Measured in
benchmarks/bench_serving.py (BENCHMARKS.md, "GenRM serving"): on a tiny model at concurrency 64, batches of
32-128 gave 1.8-1.9x the throughput of 8; a batch is padded only to its longest row."""
