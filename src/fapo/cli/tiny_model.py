"""`fapo tiny-model OUT_DIR`: write a random tiny Qwen3 model and a locally trained tokenizer."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tiny-model",
        help="write a randomly initialised tiny Qwen3 causal LM and a locally trained BPE tokenizer",
        description="Write a random Qwen3-architecture causal LM plus a BPE tokenizer trained locally "
        "(chat template, pad/eos tokens), loadable offline with AutoModelForCausalLM/AutoTokenizer.",
    )
    p.add_argument("out_dir", help="directory to write (created)")
    p.add_argument("--layers", type=int, default=2, help="transformer layers (default 2)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--head-dim", type=int, help="size of each head (default hidden/heads; vLLM's CPU build "
                   "needs 32, 64, 80, ...: e.g. --hidden 64 --heads 2)")
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary size target (default 512)")
    p.add_argument("--phrase-tokens", action="store_true",
                   help="let BPE merge across spaces (recurring phrases become one token; digits stay single)")
    p.add_argument("--vocab-corpus", help="text file to train the tokenizer on (default: a built-in math corpus)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.models import TinyModelConfig, make_tiny_model

    corpus = None
    if args.vocab_corpus:
        try:
            with open(args.vocab_corpus, encoding="utf-8") as f:
                corpus = f.read().splitlines()
        except OSError as err:
            raise CliError(f"cannot read --vocab-corpus: {err}") from err
    try:
        config = TinyModelConfig(
            layers=args.layers, hidden=args.hidden, heads=args.heads, head_dim=args.head_dim, vocab_size=args.vocab_size,
            phrase_tokens=args.phrase_tokens, seed=args.seed,
        )
    except ValueError as err:
        raise CliError(str(err)) from err
    info = make_tiny_model(args.out_dir, config, corpus=corpus)
    print(f"wrote {info['parameters']:,}-parameter Qwen3 model, vocab {info['vocab_size']}, to {args.out_dir}")
    return 0
