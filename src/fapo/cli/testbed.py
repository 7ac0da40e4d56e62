"""`fapo testbed generate|warmstart`: the synthetic flawed-reasoning testbed's data and tiny models."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "testbed",
        help="synthetic flawed-reasoning testbed: generate data, warm-start tiny models",
        description="Arithmetic word problems with checkable steps, injected flaws (a shortcut among them), "
        "an oracle judge and tiny warm-started models.",
    )
    verbs = p.add_subparsers(dest="testbed_verb", metavar="ACTION", required=True)

    g = verbs.add_parser("generate", help="write policy, SFT and critic data (same seed, same bytes)")
    g.add_argument("--out", required=True, help="directory to write (created)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--n-train", type=int, default=2000, help="policy RL train problems (default 2000)")
    g.add_argument("--n-test", type=int, default=200, help="held-out problems (default 200)")
    g.add_argument("--n-sft", type=int, default=8000, help="SFT solutions (default 8000)")
    g.add_argument("--n-critic-train", type=int, default=4000, help="critic train rows (default 4000)")
    g.add_argument("--n-critic-test", type=int, default=400, help="critic test rows (default 400)")
    g.add_argument("--n-critic-heal", type=int, default=0,
                   help="healed pair slips appended to the critic train rows, each with its clean twin (default 0)")
    g.add_argument("--flaw-rates", help="SFT flaw mix, e.g. skip=0.5,jump=0.05 (default: the built-in mix)")
    g.add_argument("--critic-flaw-rates", help="critic flaw mix, same syntax (default: the built-in mix)")
    g.add_argument("--min-ops", type=int, help="fewest operations per problem (default 2)")
    g.add_argument("--max-ops", type=int, help="most operations per problem (default 6)")
    g.add_argument("--max-value", type=int, help="largest running result (default 99)")
    g.add_argument("--cancel-pair-rate", type=float, help="share of problems with a cancelling pair (default 0.5)")
    g.set_defaults(func=run_generate)

    w = verbs.add_parser("warmstart", help="SFT a tiny policy or GenRM on generated data (cached), then measure it")
    w.add_argument("--data", required=True, help="directory written by `fapo testbed generate`")
    w.add_argument("--out", required=True, help="model directory to write (reused when data and config match)")
    w.add_argument("--role", choices=["policy", "grm"], required=True, help="train the policy or the GenRM")
    w.add_argument("--steps", type=int, help="optimizer steps (default: the role's preset)")
    w.add_argument("--batch-size", type=int, help="sequences per step")
    w.add_argument("--micro-batches", type=int, help="length-sorted forward/backward passes per step (presets: 2)")
    w.add_argument("--lr", type=float, help="peak learning rate")
    w.add_argument("--layers", type=int, help="transformer layers")
    w.add_argument("--hidden", type=int, help="hidden size")
    w.add_argument("--heads", type=int, help="attention heads")
    w.add_argument("--threads", type=int, help="torch CPU threads (default 2, for an idle 2-core machine; 1 per concurrent job)")
    w.add_argument("--eval-problems", type=int, help="held-out problems/rows to measure after training; 0 skips")
    w.add_argument("--seed", type=int, help="initialisation and data-order seed")
    w.add_argument("--init-from", help="continue from this earlier warm-start (e.g. the GenRM from the policy)")
    w.set_defaults(func=run_warmstart)


def run_generate(args: argparse.Namespace) -> int:
    import dataclasses

    from fapo.cli import CliError
    from fapo.testbed.data import GenerateConfig, generate
    from fapo.testbed.flaws import FlawRates
    from fapo.testbed.task import TaskConfig

    try:
        task_overrides = {k: v for k, v in {"min_ops": args.min_ops, "max_ops": args.max_ops, "max_value": args.max_value,
                                            "cancel_pair_rate": args.cancel_pair_rate}.items() if v is not None}
        rates = {}
        if args.flaw_rates is not None:
            rates["sft_rates"] = FlawRates.parse(args.flaw_rates)
        if args.critic_flaw_rates is not None:
            rates["critic_rates"] = FlawRates.parse(args.critic_flaw_rates)
        config = GenerateConfig(seed=args.seed, n_train=args.n_train, n_test=args.n_test, n_sft=args.n_sft,
                                n_critic_train=args.n_critic_train, n_critic_test=args.n_critic_test,
                                n_critic_heal=args.n_critic_heal,
                                task=dataclasses.replace(TaskConfig(), **task_overrides), **rates)
        manifest = generate(args.out, config)
    except ValueError as err:
        raise CliError(str(err)) from err
    for name, entry in manifest["files"].items():
        extra = f", flawed positives {entry['flawed_positive_share']:.0%}" if "flawed_positive_share" in entry else ""
        print(f"{args.out}/{name}: {entry['rows']} rows{extra}")
    return 0


def run_warmstart(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.testbed.warmstart import preset, warmstart

    names = {"steps": "max_steps", "batch_size": "batch_size", "micro_batches": "micro_batches", "lr": "learning_rate",
             "layers": "layers", "hidden": "hidden", "heads": "heads", "threads": "threads",
             "eval_problems": "eval_problems", "seed": "seed", "init_from": "init_from"}
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    try:
        config = preset(args.role, **overrides)
        record = warmstart(args.data, args.out, config)
    except (ValueError, FileNotFoundError) as err:
        raise CliError(str(err)) from err
    state = "reused cached model" if record["cached"] else f"trained in {record['train']['train_seconds']} s"
    print(f"{args.role} warm-start in {args.out}: {state}, {record['train']['parameters']:,} parameters")
    if "eval" in record:
        print(json.dumps(record["eval"], indent=2))
    return 0
