"""`fapo serve-grm (--model DIR | --oracle NAME)`: a local OpenAI-compatible GenRM server.

For CPUs, tests and the demo; production GenRMs run on vLLM or SGLang (`vllm serve MODEL`), which
`fapo judge` and the trainer reach the same way. Server logic lives in `fapo.serving.server`.
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve-grm",
        help="serve a GenRM (a transformers model or an oracle) over an OpenAI-compatible HTTP API",
        description="A small OpenAI-compatible chat-completions server with dynamic batching, for CPUs, "
        "tests and the demo (production: vLLM/SGLang). Prints 'fapo serve-grm listening on URL' when "
        "ready; on SIGINT/SIGTERM answers pending requests 503, interrupts generation and exits within "
        "seconds.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory (or hub name) loadable by transformers")
    source.add_argument("--oracle", metavar="NAME", help="serve a programmatic judge instead, e.g. 'testbed'")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-batch", type=int, default=8, help="most requests per generate call (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="longest a request waits for a fuller batch (default 10)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="most waiting requests before answering 429 (default 256)")
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                   help="largest request body before answering 413 (default 8 MiB)")
    p.add_argument("--max-request-tokens", type=int, default=32768, metavar="N",
                   help="largest max_tokens x n of one request before answering 400 (default 32768); a prompt "
                   "longer than the model's context also answers 400")
    p.add_argument("--long-request-tokens", type=int, default=4096, metavar="N",
                   help="requests with max_tokens x n above this are generated apart, so short ones never wait "
                   "behind them (default 4096)")
    p.add_argument("--max-connections", type=int, default=512,
                   help="open connections before a new one is answered 503 and closed (default 512)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a connection may go without a complete request head, new or idle (default 10)")
    p.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="seconds to receive a request body once its head is in, else 408 (default 30)")
    p.add_argument("--api-key", default=os.environ.get("FAPO_GRM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes (default $FAPO_GRM_API_KEY; "
                   "prefer the variable: a command-line key shows in ps)")
    p.add_argument("--served-model-name", help="model name reported by the API (default: --model as given)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where the model runs (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 when several "
                   "workers share a few cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from fapo.cli import CliError
    from fapo.serving.server import ServerConfig, serve

    try:
        config = ServerConfig(
            host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue, max_body_bytes=args.max_body_bytes, api_key=args.api_key or None,
            served_model_name=args.served_model_name, max_request_tokens=args.max_request_tokens,
            long_request_tokens=args.long_request_tokens, max_connections=args.max_connections,
            header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
        )
    except ValueError as err:
        raise CliError(str(err)) from err
    backend = _oracle_backend(args.oracle) if args.oracle else _model_backend(args.model, args.device, args.threads)
    try:
        generation_ended = asyncio.run(serve(backend, config))
    except OSError as err:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {err}") from err
    if not generation_ended:  # a backend that cannot be interrupted: do not wait for its thread
        print("fapo serve-grm: stopped (generation still running; not waited for)", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(0)
    print("fapo serve-grm: stopped", file=sys.stderr)
    return 0


def _oracle_backend(name: str):
    from fapo.cli import CliError
    from fapo.serving.server import load_oracle

    try:
        return load_oracle(name)
    except (ValueError, ImportError) as err:
        raise CliError(str(err)) from err


def _model_backend(path: str, device: str | None, threads: int | None = None):
    import sys

    import torch

    from fapo.cli import CliError
    from fapo.serving.hf_backend import TransformersBackend

    if threads is not None:
        if threads < 1:
            raise CliError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)

    if device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda was asked for but no CUDA device is available")
    print(f"fapo serve-grm: loading {path} ...", file=sys.stderr, flush=True)
    try:
        backend = TransformersBackend.load(path, device=device)
    except (OSError, ValueError) as err:
        raise CliError(f"cannot load model {path!r}: {err}") from err
    print(f"fapo serve-grm: {path} on {backend.model.device} ({backend.model.dtype})", file=sys.stderr, flush=True)
    return backend
