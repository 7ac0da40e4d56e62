"""The generative reward model (GenRM): prompt and verdict protocol, async client, local server.

`fapo.grm.prompt` is pure; `fapo.grm.client` speaks HTTP and never imports torch;
`fapo.grm.server` wraps a transformers model for CPUs, tests and the demo (its wire format in
`fapo.grm.chat_api`, its batching in `fapo.grm.batcher`).
"""
