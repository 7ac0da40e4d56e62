"""Local model serving: completion backends (transformers, the testbed's oracle), the small
OpenAI-compatible server with dynamic batching (CPUs, tests, the demo) and its launchers.

Sits beside `fapo.grm`, never under it: the judge speaks HTTP to these servers as to vLLM or SGLang,
and `fapo.grm` imports nothing from here.
"""
