"""`fapo train policy|grm --config FILE [--dry-run]`: FAPO policy RL or GenRM RL on TRL's GRPOTrainer.

A launch runs `fapo.train.preflight` first (the model's context, the data, the servers, the packages) and
stops with its failures, one line each, before TRL loads a weight; `--dry-run` runs only that and prints
every finding.
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="FAPO policy RL or GenRM RL on TRL's GRPOTrainer")
    verbs = p.add_subparsers(dest="train_verb", metavar="WHAT", required=True)
    for name, text in (
        ("policy", "policy RL with the FAPO reward (penalty 0 or judge none: the GRPO baseline)"),
        ("grm", "GenRM RL with the outcome + step-location reward"),
    ):
        q = verbs.add_parser(name, help=text, description=text)
        q.add_argument("--config", required=True, help="YAML: TRL GRPOConfig keys plus a fapo: section")
        q.add_argument("--output", help="output directory (default: the config's output_dir)")
        q.add_argument("--max-steps", type=int, help="override max_steps")
        q.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output dir")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (fapo.penalty=0, learning_rate=1e-6); repeatable")
        if name == "policy":
            q.add_argument("--trainer", choices=("grpo", "async"),
                           help="grpo: TRL's GRPOTrainer; async: AsyncGRPOTrainer (vLLM server, GPUs; "
                                "each group judged as it completes). Default: the config's fapo.trainer")
        q.add_argument("--dry-run", action="store_true",
                       help="check everything a launch needs (schedule, model config and tokenizer, data, servers, "
                            "packages) without loading weights; exit 0 only when a launch would start")
        q.add_argument("--world-size", type=int,
                       help="training processes of the launch (default: the accelerate config's num_processes, "
                            "else $WORLD_SIZE, else 1)")
        q.add_argument("--accelerate-config", default=os.environ.get("ACCELERATE_CONFIG_FILE"),
                       help="the accelerate config of the launch (default: $ACCELERATE_CONFIG_FILE)")
        q.add_argument("--skip-packages", action="store_true",
                       help="dry run for another machine: do not check this one's packages (deepspeed, wandb, vllm)")
        q.set_defaults(func=run, what=name)


def _spec(args: argparse.Namespace, config):
    from fapo.train.config import ConfigError
    from fapo.train.preflight import LaunchSpec, accelerate_settings, server_wait_s

    accelerate, processes = accelerate_settings(args.accelerate_config)
    world = args.world_size or processes or int(os.environ.get("WORLD_SIZE") or 1)
    if world < 1:
        raise ConfigError(f"--world-size must be a whole number >= 1, got {world}")
    if processes is not None and args.world_size and processes != args.world_size:
        raise ConfigError(f"--world-size {args.world_size} but {args.accelerate_config} launches {processes} "
                          "processes: make them agree")
    if args.dry_run:
        return LaunchSpec(kind=args.what, world_size=world, accelerate_config=accelerate,
                          check_packages=not args.skip_packages)
    wait = server_wait_s(config)  # servers started with the launch may still be loading

    def waiting(urls: list[str]) -> None:
        print(f"waiting up to {wait:.0f} s (vllm_server_timeout) for {', '.join(urls)}", flush=True)

    return LaunchSpec(kind=args.what, world_size=world, accelerate_config=accelerate,
                      check_packages=not args.skip_packages, wait_s=wait, on_wait=waiting)


def run(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.train.config import ConfigError, load_config

    try:
        if args.max_steps is not None and args.max_steps < 1:
            raise ConfigError(f"--max-steps must be a whole number >= 1, got {args.max_steps}")
        overrides = list(args.set) + ([f"fapo.trainer={args.trainer}"] if getattr(args, "trainer", None) else [])
        config = load_config(args.config, overrides, check_paths=not args.dry_run)  # a dry run lists them all
        from fapo.train.preflight import run_preflight

        report = run_preflight(config, _spec(args, config))
        if args.dry_run:
            for finding in report.findings:
                print(finding.line(), flush=True)
            print(f"dry run: {'a launch would start' if report.ok else f'{len(report.failures)} to fix'}")
            return 0 if report.ok else 1
        if not report.ok:
            raise ConfigError("\n".join(f.line() for f in report.failures))
        output = args.output or config.trl.get("output_dir")
        if not output:
            raise ConfigError("no output directory: pass --output or set output_dir in the config")
        from fapo.train.runner import train_grm, train_policy  # TRL and torch from here on

        train = train_policy if args.what == "policy" else train_grm
        result = train(config, output, max_steps=args.max_steps, resume=args.resume,
                       announce=lambda line: print(line, flush=True))
    except ConfigError as err:
        raise CliError(str(err)) from err
    print(f"trained to step {result.global_step}; metrics: {result.metrics_path}; model: {result.final_model_dir}")
    return 0
