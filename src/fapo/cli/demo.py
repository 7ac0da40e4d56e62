"""`fapo demo`: the whole system end to end on a CPU, with a report a person can read."""

from __future__ import annotations

import argparse

from fapo.demo.config import JUDGES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole system end to end on the CPU (testbed) and write a report",
        description="testbed data → warm-started tiny policy and GenRM → GenRM RL → GenRM evaluation → the GenRM "
        "served by two serve-grm workers (and the step checker by one) → GRPO, FAPO with the trained GenRM and FAPO "
        "with the checker from the same policy and seeds → held-out evaluation → report.",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="one seed, short runs (under 5 minutes on 2 cores)")
    p.add_argument("--seeds", type=int, help="seeds per arm (default 3; --quick: 1)")
    p.add_argument("--seed-base", type=int, help="first RL seed: seeds S, S+1, ... (default 0); data and warm-starts stay")
    p.add_argument("--data-seed", type=int,
                   help="seed of the testbed data and both warm-starts (default 0): another draw of everything before "
                        "RL, warm-started once and cached apart (runs/cache/demo-data<D>)")
    p.add_argument("--long", action="store_true",
                   help="4x the policy RL steps (640 optimizer steps by default): the training curves of a long run")
    p.add_argument("--judge", choices=JUDGES,
                   help="FAPO's judge: both (default: one FAPO arm each), trained (the GenRM) or oracle (the checker)")
    p.add_argument("--steps", type=int,
                   help="policy RL optimizer steps per run, a multiple of 4 (default 160; --quick: 12)")
    p.add_argument("--lr", type=float, help="policy RL learning rate (default 1e-4)")
    p.add_argument("--jobs", type=int, help="policy RL runs at once, one process and one torch thread each (default 2)")
    p.add_argument("--critic-heal", type=int,
                   help="append N healed pair slips, each with its clean twin, to the GenRM's SFT data (default 0; measured: "
                        "1200 with --grm-sft-steps 2400, BENCHMARKS.md, \"Healed slips in the GenRM's data\"); "
                        "warm-starts cached apart")
    p.add_argument("--grm-sft-steps", type=int, help="GenRM SFT optimizer steps (default: the testbed preset's, 900); "
                        "another value retrains the cached GenRM in place, the policy stays cached")
    p.add_argument("--grm-rl-steps", type=int, help="GenRM RL steps, 4 critic prompts x 8 critiques each (default 15)")
    p.add_argument("--grm-rl-lr", type=float, help="GenRM RL learning rate (default 2e-5)")
    p.add_argument("--grm-reward", choices=("outcome_process", "outcome"),
                   help="GenRM RL reward: R_outcome + R_process (default, the paper's) or R_outcome alone (its ablation)")
    p.add_argument("--grm-eval-every", type=int,
                   help="also score the GenRM RL checkpoint every N steps on the held-out critic rows (default 0: "
                        "before and after RL only)")
    p.add_argument("--cache", help="where warm-started models are cached (default: OUT/../cache)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.demo.config import demo_config

    try:
        config = demo_config(args.quick, args.long, seeds=args.seeds, seed_base=args.seed_base,
                             data_seed=args.data_seed, judge=args.judge, critic_heal=args.critic_heal,
                             grm_sft_steps=args.grm_sft_steps,
                             policy_rl_steps=args.steps, policy_rl_lr=args.lr, jobs=args.jobs, grm_rl_steps=args.grm_rl_steps,
                             grm_rl_lr=args.grm_rl_lr, grm_eval_every=args.grm_eval_every,
                             grm_process_reward=None if args.grm_reward is None else args.grm_reward == "outcome_process")
    except ValueError as err:
        raise CliError(str(err)) from err
    from fapo.demo.pipeline import run_demo

    report = run_demo(args.out, config, cache_dir=args.cache)
    from fapo.demo.report import LABELS

    for arm in ("initial", *config.arms):
        entry = report[arm]
        print(f"{LABELS.get(arm, 'initial'):<20} accuracy {entry['accuracy']:.3f}  flawed ratio {entry['flawed_ratio']:.3f}")
    held = sum(c["held"] for c in report["checks"])
    print(f"checks held: {held} of {len(report['checks'])}. Report: {args.out}/report.md")
    return 0
