"""`fapo demo`: the whole system end to end on a CPU, with a report a person can read."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole system end to end on the CPU (testbed) and write a report",
        description="testbed data → warm-started tiny policy and GenRM → GenRM RL → GenRM evaluation → the GenRM "
        "served by two serve-grm workers → GRPO and FAPO from the same policy and seeds → evaluation → report.",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="one seed, short runs (under 5 minutes on 2 cores)")
    p.add_argument("--seeds", type=int, help="seeds per arm (default 3; --quick: 1)")
    p.add_argument("--judge", choices=("trained", "oracle"), help="FAPO's judge: the trained GenRM (default) or the checker")
    p.add_argument("--steps", type=int, help="policy RL steps per run (default 60; --quick: 10)")
    p.add_argument("--jobs", type=int, help="policy RL runs at once, one process and one torch thread each (default 2)")
    p.add_argument("--cache", help="where warm-started models are cached (default: OUT/../cache)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.demo.config import demo_config

    try:
        config = demo_config(args.quick, seeds=args.seeds, judge=args.judge, policy_rl_steps=args.steps,
                             jobs=args.jobs)
    except ValueError as err:
        raise CliError(str(err)) from err
    from fapo.demo.pipeline import run_demo

    report = run_demo(args.out, config, cache_dir=args.cache)
    g, f = report["grpo"], report["fapo"]
    print(f"GRPO: accuracy {g['accuracy']:.3f}, flawed ratio {g['flawed_ratio']:.3f}; "
          f"FAPO: accuracy {f['accuracy']:.3f}, flawed ratio {f['flawed_ratio']:.3f}; "
          f"FAPO/GRPO step time {report['overhead']['fapo_over_grpo_step_time']:.2f}. Report: {args.out}/report.md")
    return 0
