"""The `fapo` command line: argument parsing, then one library call per verb.

Each verb lives in its own module under `fapo.cli` with `register(subparsers)`; those modules
import only argparse-level code at the top, so `fapo --help` stays fast and verbs that need no
model never import torch. Logic belongs in the library, not here.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

# Verb modules, in the order `fapo --help` lists them.
VERB_MODULES = [
    "fapo.cli.tiny_model",
    "fapo.cli.verify",
    "fapo.cli.testbed",
    "fapo.cli.serve_grm",
    "fapo.cli.judge",
    "fapo.cli.data",
    "fapo.cli.train",
    "fapo.cli.demo",
    "fapo.cli.eval",
]


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    from fapo import __version__

    parser = argparse.ArgumentParser(
        prog="fapo",
        description="Flawed-Aware Policy Optimization: verify, judge, serve, evaluate and train.",
    )
    parser.add_argument("--version", action="version", version=f"fapo {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    _finite_floats(parser)
    return parser


def finite_float(text: str) -> float:
    """An argparse type: a float that is a number (nan, inf and 1e999 are refused, exit 2)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1] (nan refused)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _finite_floats(parser: argparse.ArgumentParser) -> None:
    """Every `type=float` option of every verb (nested ones included) becomes `finite_float`: one rule for
    all numeric options, so that no verb can take infinity for "never"."""
    for action in parser._actions:  # argparse keeps the options here; there is no public accessor
        if action.type is float:
            action.type = finite_float
        for child in (action.choices or {}).values() if isinstance(action.choices, dict) else ():
            if isinstance(child, argparse.ArgumentParser):
                _finite_floats(child)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # text that is not valid Unicode is shown escaped, never a crash
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2 if args.verb is None else 0
    try:
        return int(func(args) or 0)
    except CliError as err:
        print(f"fapo {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        print(f"fapo {args.verb}: error: the reader of the output went away (broken pipe)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
