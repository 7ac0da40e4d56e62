"""FAPO's step time over GRPO's on the tiny CPU config, side by side in one run.

Both arms start from the same warm-started policy with the same seed; GRPO has no judge, FAPO judges
every verified-correct rollout on GenRM workers in separate `fapo serve-grm` processes (the trained
tiny GenRM, or the testbed oracle) through the client. Arms alternate (GRPO, FAPO, GRPO, FAPO, ...)
so drift in machine load hits both. Reports the step-time ratio and the share of a FAPO step spent
waiting on the judge (`time/judge_s`). Prerequisite: `make demo` (or pass --policy/--data).

    python benchmarks/bench_train_overhead.py [--grm-model DIR | --oracle] [--steps 12] [--repeats 2] [--device cuda]

With `--device cuda` the policy trains on the GPU and the GenRM workers serve from the same GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from fapo.demo.config import tiny_policy_trl
from fapo.serving.launch import launch_subprocess
from fapo.train.config import parse_config
from fapo.train.runner import train_policy


def run_arm(arm: str, policy: str, data: Path, urls: list[str], steps: int, seed: int, out: Path,
            device: str = "cpu") -> dict:
    fapo = {"model": policy, "train_data": str(data / "policy_train.jsonl"), "prompt_template": "{problem}",
            "answer_format": "strict", "verify_workers": 1}
    fapo.update({"judge": {"endpoints": urls, "max_tokens": 192}, "penalty": 1.0} if arm == "fapo"
                else {"penalty": 0.0})
    trl = {**tiny_policy_trl(steps, seed), "use_cpu": device == "cpu"}
    result = train_policy(parse_config({**trl, "fapo": fapo}), out)
    records = [json.loads(line) for line in Path(result.metrics_path).read_text().splitlines()]
    records = [r for r in records if "loss" in r][1:]  # the first step warms up caches and workers
    return {"arm": arm, "step_s": [r["time/step_s"] for r in records],
            "judge_s": [r.get("time/judge_s") or 0.0 for r in records],
            "judged": [r.get("grm/judged") or 0.0 for r in records]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="runs/cache/demo/policy", help="warm-started policy directory")
    parser.add_argument("--data", default="runs/demo/data", help="testbed data directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--grm-model", default="runs/demo/grm_rl/final", help="GenRM model served by the workers")
    source.add_argument("--oracle", action="store_true", help="serve the testbed oracle instead of a model")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="steps per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="GRPO/FAPO pairs, alternating")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the policy and GenRM run")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    for path in (Path(args.policy), Path(args.data)):
        if not path.exists():
            print(f"{path} is missing: run `make demo` first or pass --policy/--data", file=sys.stderr)
            return 2
    on_cpu = ["--threads", "1"] if args.device == "cpu" else []
    worker_args = ["--oracle", "testbed"] if args.oracle else ["--model", args.grm_model, "--device", args.device, *on_cpu]
    workers = [launch_subprocess([*worker_args, "--port", "0", "--max-batch", "64", "--max-wait-ms", "5"])
               for _ in range(args.workers)]
    runs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for repeat in range(args.repeats):
                for arm in ("grpo", "fapo"):
                    runs.append(run_arm(arm, args.policy, Path(args.data), [w.url for w in workers], args.steps,
                                        seed=repeat, out=Path(tmp) / f"{arm}-{repeat}", device=args.device))
    finally:
        for worker in workers:
            worker.stop()
    grpo = [s for r in runs if r["arm"] == "grpo" for s in r["step_s"]]
    fapo_runs = [r for r in runs if r["arm"] == "fapo"]
    fapo = [s for r in fapo_runs for s in r["step_s"]]
    judge = [s for r in fapo_runs for s in r["judge_s"]]
    judged = [s for r in fapo_runs for s in r["judged"]]
    # medians: on a shared CPU a few steps stall for seconds (other processes), which swamps a mean
    summary = {
        "grpo_step_s_median": statistics.median(grpo), "fapo_step_s_median": statistics.median(fapo),
        "fapo_over_grpo_median": statistics.median(fapo) / statistics.median(grpo),
        "fapo_over_grpo_mean": statistics.fmean(fapo) / statistics.fmean(grpo),
        "fapo_judge_s_median": statistics.median(judge),
        "judge_share_of_fapo_step": statistics.median(judge) / statistics.median(fapo),
        "judged_per_step": statistics.fmean(judged), "judge": "oracle" if args.oracle else args.grm_model,
        "workers": args.workers, "timed_steps_per_arm": len(grpo), "device": args.device,
    }
    print("| measure | value |\n|---|---|")
    for key, value in summary.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
