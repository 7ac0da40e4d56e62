"""`fapo serve-grm (--model DIR | --oracle NAME) [--engine hf|vllm]`: a local OpenAI-compatible GenRM server.

`--engine hf` (default): fapo's own server over transformers, for CPUs, tests and the demo (`fapo.serving.server`).
`--engine vllm`: vLLM's OpenAI server started and stopped the same way (`fapo.serving.vllm`), the production
path; `fapo judge` and the trainer reach both the same way.
"""

from __future__ import annotations

import argparse
import os

from fapo.serving import DEFAULT_MAX_BATCH


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
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf",
                   help="hf: fapo's server over transformers (default); vllm: vLLM's OpenAI server (`make vllm`)")
    p.add_argument("--max-batch", type=int, help=f"most requests per generate call (default {DEFAULT_MAX_BATCH}; "
                   "with --engine vllm: vLLM's --max-num-seqs, default vLLM's)")
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
    v = p.add_argument_group("--engine vllm only")
    v.add_argument("--vllm-python", metavar="PYTHON", help="Python with vLLM installed (default: $FAPO_VLLM_PYTHON, "
                   "else .venv-vllm/bin/python here, else this Python if it imports vllm)")
    v.add_argument("--max-model-len", type=int, metavar="N", help="context length, prompt + completion "
                   "(default: the model's)")
    v.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights and activations (default auto)")
    v.add_argument("--kv-cache-gib", type=float, metavar="G", help="KV cache size (default: vLLM's on GPUs; on "
                   "the CPU build 1 GiB unless $VLLM_CPU_KVCACHE_SPACE says otherwise)")
    v.add_argument("--start-timeout", type=float, default=900.0, metavar="S",
                   help="seconds to wait for vLLM to answer /health (default 900)")
    v.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                   help="pass ARG to vLLM's server as it is (repeat; e.g. --vllm-arg=--tensor-parallel-size=2)")
    p.set_defaults(func=run, option_defaults={name: p.get_default(name) for name in HF_ONLY + VLLM_ONLY})


HF_ONLY = ("max_wait_ms", "max_queue", "max_body_bytes", "max_request_tokens", "long_request_tokens",
           "max_connections", "header_timeout", "body_timeout", "device", "threads")
VLLM_ONLY = ("vllm_python", "max_model_len", "dtype", "kv_cache_gib", "start_timeout", "vllm_arg")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from fapo.cli import CliError
    from fapo.serving.server import ServerConfig, serve

    _check_engine_options(args)
    if args.api_key is not None and not args.api_key.strip():  # e.g. --api-key "$UNSET": not "no key"
        raise CliError("--api-key (or $FAPO_GRM_API_KEY) is empty; give the key, or leave both out to serve "
                       "without authentication")
    if args.engine == "vllm":
        return _run_vllm(args)
    try:
        config = ServerConfig(
            host=args.host, port=args.port, max_batch=DEFAULT_MAX_BATCH if args.max_batch is None else args.max_batch, max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue, max_body_bytes=args.max_body_bytes, api_key=args.api_key,
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


def _check_engine_options(args: argparse.Namespace) -> None:
    """Options of the other engine are errors, not silently ignored."""
    from fapo.cli import CliError

    defaults = args.option_defaults
    other = HF_ONLY if args.engine == "vllm" else VLLM_ONLY
    given = ["--" + name.replace("_", "-") for name in other if getattr(args, name) != defaults[name]]
    if given:
        raise CliError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --engine {args.engine}")
    if args.engine == "vllm" and args.oracle:
        raise CliError("--engine vllm serves a model: use --model DIR (oracles are served by --engine hf)")


def _run_vllm(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.serving.vllm import (
        VllmError,
        VllmOptions,
        find_vllm_python,
        is_cpu_build,
        model_problems,
        run_vllm,
    )

    try:
        options = VllmOptions(
            model=args.model, host=args.host, port=args.port, max_model_len=args.max_model_len, dtype=args.dtype,
            served_model_names=(args.served_model_name,) if args.served_model_name else (),
            max_num_seqs=args.max_batch, kv_cache_gib=args.kv_cache_gib, extra_args=tuple(args.vllm_arg), start_timeout_s=args.start_timeout,
        )
        python = find_vllm_python(args.vllm_python)
        problems = model_problems(args.model, is_cpu_build(python), options.extra_args)
        if problems:
            raise CliError(f"vLLM cannot serve {args.model} as a GenRM: " + "; ".join(problems))
        return run_vllm(options, python, api_key=args.api_key)
    except (ValueError, VllmError) as err:
        raise CliError(str(err)) from err
