"""The GenRM judging protocol: prompt and verdict parsing, judge types, the async OpenAI-compatible
client (N endpoints, least-outstanding routing, retries, circuit breaker, cache, metrics), the in-process
judge, and the one place a judge is built from settings (`fapo.grm.judge`).

Never imports torch and never serves a model: local model serving is `fapo.serving`, and the judge speaks
HTTP to any OpenAI-compatible server the same way.
"""
