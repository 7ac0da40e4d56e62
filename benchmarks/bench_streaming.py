"""FAPO/GRPO step time with a slow judge, synchronous vs streaming rollouts, side by side in one run (CPU).

The judge is a stand-in GenRM: fapo's own GenRM server (`fapo.grm.server`, dynamic batching, at most
`--slots` requests per batch) in a separate process, answering with the testbed oracle's verdicts after
a lognormal service time per batch (median `--judge-ms`, sigma `--judge-sigma`), i.e. a server whose
throughput is the bottleneck, as a GenRM on its own GPUs is. Arms, alternating so machine-load drift
hits all of them: GRPO (no judge), FAPO with `fapo.rollout: sync`, FAPO with `fapo.rollout: streaming`
(`--chunks` chunks per generation batch), and GRPO with streaming chunks and no judge (what chunked
generation alone costs). Same warm-started testbed policy, same seeds, the tiny CPU schedule (8 prompts x
8 rollouts per generation batch, 4 optimizer steps on it). The first generation batch of each run is
not timed. Reports per arm the time per generation batch (its 4 optimizer steps), the FAPO/GRPO ratios
(pooled and per round), the judge's span per batch (`time/judge_busy_s`, first request to last verdict)
and the part of it the step waited for (`time/judge_s`): hidden = 1 - waited / span; and the wait per
judged rollout, synchronous vs streaming (a streaming span includes the gaps between chunks).

    python benchmarks/bench_streaming.py [--policy DIR --data DIR] [--batches 4] [--repeats 2] [--json OUT]

Prerequisite: a warm-started testbed policy and its data (`fapo testbed generate`, `fapo testbed
warmstart --role policy`; `make demo` leaves them in runs/cache/demo/policy and runs/demo/data).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS_PER_GENERATION = 4


class LognormalOracle:
    """The testbed oracle's verdicts after a lognormal service time per batch (a stand-in for a GenRM model)."""

    def __init__(self, median_s: float, sigma: float, seed: int = 0):
        import random

        from fapo.serving.server import load_oracle

        self.inner = load_oracle("testbed")
        self.model_name = self.inner.model_name
        self.median_s, self.sigma = median_s, sigma
        self.rng = random.Random(seed)

    def generate(self, requests):
        time.sleep(self.median_s * self.rng.lognormvariate(0.0, self.sigma))
        return self.inner.generate(requests)

    def count_prompt_tokens(self, messages):
        return self.inner.count_prompt_tokens(messages)


def serve_judge(median_s: float, sigma: float, slots: int, urls: Any, stop: Any) -> None:
    """Stand-in GenRM process: fapo's GenRM server over the lognormal oracle; reports its URL, runs until `stop`."""
    from fapo.serving.launch import serve_in_thread

    with serve_in_thread(LognormalOracle(median_s, sigma), max_batch=slots, max_wait_ms=2) as server:
        urls.put(server.url)
        stop.wait()


def run_arm(arm: str, policy: str, data: Path, url: str, batches: int, chunks: int, seed: int, out: Path) -> dict:
    from fapo.demo.config import tiny_policy_trl
    from fapo.train.config import parse_config
    from fapo.train.runner import train_policy

    judged = arm.startswith("fapo")
    fapo = {"model": policy, "train_data": str(data / "policy_train.jsonl"), "prompt_template": "{problem}",
            "answer_format": "strict", "verify_workers": 1, "torch_threads": 1,
            "rollout": "streaming" if arm.endswith("streaming") else "sync", "rollout_chunks": chunks,
            **({"oracle": None, "judge": {"endpoints": [url], "timeout": 120.0}, "penalty": 1.0} if judged
               else {"penalty": 0.0})}
    trl = tiny_policy_trl((batches + 1) * STEPS_PER_GENERATION, seed)
    result = train_policy(parse_config({**trl, "fapo": fapo}), out)
    records = [json.loads(line) for line in Path(result.metrics_path).read_text().splitlines()]
    records = [r for r in records if "loss" in r][STEPS_PER_GENERATION:]  # the first generation batch warms up
    step_s = [r["time/step_s"] for r in records]
    per_batch = [sum(step_s[i:i + STEPS_PER_GENERATION]) for i in range(0, len(step_s), STEPS_PER_GENERATION)]
    return {"arm": arm, "batch_s": per_batch,
            "judge_s": [r["time/judge_s"] for r in records if r.get("time/judge_s") is not None],
            "judge_busy_s": [r["time/judge_busy_s"] for r in records if r.get("time/judge_busy_s") is not None],
            "judged": [r["grm/judged"] for r in records if r.get("grm/judged") is not None]}


ARMS = ("grpo", "fapo-sync", "fapo-streaming", "grpo-streaming")


def summarise(runs: list[dict]) -> dict[str, Any]:
    def pooled(arm: str, key: str) -> list[float]:
        return [v for r in runs if r["arm"] == arm for v in r[key]]

    batch = {arm: statistics.fmean(pooled(arm, "batch_s")) for arm in ARMS}
    summary: dict[str, Any] = {f"{arm} s per generation batch": batch[arm] for arm in ARMS}
    summary["fapo-sync / grpo"] = batch["fapo-sync"] / batch["grpo"]
    summary["fapo-streaming / grpo"] = batch["fapo-streaming"] / batch["grpo"]
    summary["grpo-streaming / grpo (chunked generation alone)"] = batch["grpo-streaming"] / batch["grpo"]
    for arm in ("fapo-sync", "fapo-streaming"):
        busy, waited = statistics.fmean(pooled(arm, "judge_busy_s")), statistics.fmean(pooled(arm, "judge_s"))
        summary[f"{arm}: judge busy s per batch"] = busy
        summary[f"{arm}: judge s the step waited"] = waited
        summary[f"{arm}: judge time hidden"] = 1 - waited / busy if busy else float("nan")
        summary[f"{arm}: rollouts judged per batch"] = statistics.fmean(pooled(arm, "judged"))
        judged = sum(pooled(arm, "judged"))
        summary[f"{arm}: s waited per judged rollout"] = sum(pooled(arm, "judge_s")) / judged if judged else float("nan")
    sync_wait, stream_wait = (summary[f"{arm}: s waited per judged rollout"] for arm in ("fapo-sync", "fapo-streaming"))
    summary["judge wait per judged rollout removed by streaming"] = 1 - stream_wait / sync_wait
    rounds = [runs[i:i + len(ARMS)] for i in range(0, len(runs), len(ARMS))]
    for arm in ("fapo-sync", "fapo-streaming", "grpo-streaming"):  # machine load moves between rounds
        summary[f"{arm} / grpo, per round"] = [
            statistics.fmean(next(r for r in rnd if r["arm"] == arm)["batch_s"])
            / statistics.fmean(next(r for r in rnd if r["arm"] == "grpo")["batch_s"]) for rnd in rounds]
    added_sync = batch["fapo-sync"] - batch["grpo"]
    summary["added time removed by streaming"] = (
        (batch["fapo-sync"] - batch["fapo-streaming"]) / added_sync if added_sync > 0 else float("nan"))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="runs/cache/demo/policy", help="warm-started policy directory")
    parser.add_argument("--data", default="runs/demo/data", help="testbed data directory")
    parser.add_argument("--batches", type=int, default=4, help="timed generation batches per run")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the four arms, alternating")
    parser.add_argument("--chunks", type=int, default=4, help="streaming chunks per generation batch")
    parser.add_argument("--judge-ms", type=float, default=250.0, help="median judge service time per batch")
    parser.add_argument("--judge-sigma", type=float, default=0.5, help="lognormal sigma of the service time")
    parser.add_argument("--slots", type=int, default=4, help="requests the stand-in GenRM serves per batch")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    for path in (Path(args.policy), Path(args.data)):
        if not path.exists():
            print(f"{path} is missing: pass --policy/--data (see the docstring)", file=sys.stderr)
            return 2
    ctx = mp.get_context("spawn")
    urls, stop = ctx.Queue(), ctx.Event()
    judge = ctx.Process(target=serve_judge, args=(args.judge_ms / 1000, args.judge_sigma, args.slots, urls, stop),
                        daemon=True)
    judge.start()
    runs = []
    try:
        url = urls.get(timeout=120)
        with tempfile.TemporaryDirectory() as tmp:
            for repeat in range(args.repeats):
                for arm in ARMS:
                    runs.append(run_arm(arm, args.policy, Path(args.data), url, args.batches, args.chunks,
                                        seed=repeat, out=Path(tmp) / f"{arm}-{repeat}"))
                    print(f"{arm} (round {repeat + 1}): s per generation batch "
                          f"{[round(s, 2) for s in runs[-1]['batch_s']]}", flush=True)
    finally:
        stop.set()
        judge.join(timeout=30)
    summary = summarise(runs)
    print("| measure | value |\n|---|---|")
    for key, value in summary.items():
        shown = ", ".join(f"{v:.3f}" for v in value) if isinstance(value, list) else f"{value:.3f}"
        print(f"| {key} | {shown} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
