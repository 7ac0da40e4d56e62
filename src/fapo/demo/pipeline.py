"""The demo's stages, in order. Each stage is one library call (or a few) and returns plain data.

    data → warm-start (cached) → GenRM RL → serve GenRM ×2 (+ the checker ×1) → GenRM eval →
    GRPO / FAPO (trained GenRM) / FAPO (checker) × seeds (+ eval), `jobs` processes at once → report
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from fapo.demo.config import (
    ARM_JUDGE,
    DEMO_JUDGE,
    POLICY_MAX_TOKENS,
    DemoConfig,
    tiny_grm_trl,
    tiny_policy_trl,
)

console = Console(stderr=True)
STAGES = 6


def _stage(number: int, text: str) -> None:
    console.rule(f"[bold]\\[{number}/{STAGES}] {text}")


def prepare_data(data_dir: Path, config: DemoConfig) -> dict[str, Any]:
    """Testbed problems, the SFT mix and critic data of `config.data_seed` (with `config.critic_heal` healed pair
    slips), written afresh each run (one seed, the same bytes each time, so cached warm-starts stay valid)."""
    from fapo.testbed.data import GenerateConfig, generate

    return generate(data_dir, GenerateConfig(seed=config.data_seed, n_train=config.n_train, n_test=config.n_test,
                                             n_critic_heal=config.critic_heal))


DRAW_SEED_STRIDE = 1000
"""Warm-start draw k of data seed D is seeded D + k * DRAW_SEED_STRIDE (draw 0: D itself)."""


def _policy_draws(data_dir: Path, cache_dir: Path, config: DemoConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The policy's warm-start: draw 0, and while its diagnostics say it cannot test FAPO's claim
    (`fapo.testbed.diagnose.untestable_reasons`), another draw (another initialisation and data order on the same
    data), up to `config.warmstart_draws`. Returns the record used (the first testable draw, else the last) and
    every draw's seed, diagnostics and refusal reasons."""
    from fapo.testbed.diagnose import untestable_reasons
    from fapo.testbed.warmstart import preset, warmstart

    draws, record = [], {}
    for draw in range(config.warmstart_draws):
        seed = config.data_seed + draw * DRAW_SEED_STRIDE
        out = cache_dir / ("policy" if draw == 0 else f"policy-draw{draw}")
        record = warmstart(data_dir, out, preset("policy", **{"seed": seed, **config.policy_warmstart}))
        record["dir"] = str(out)
        found = (record.get("eval") or {}).get("diagnostics") or {}
        reasons = untestable_reasons(found)
        keys = ("skip_share", "p_correct_skipped", "p_correct_computed", "p_clean_computed")
        draws.append({"draw": draw, "seed": seed, "dir": str(out), "refused": reasons,
                      **{key: found.get(key) for key in keys}, "accuracy": (record.get("eval") or {}).get("accuracy")})
        cached = "reused from cache" if record["cached"] else f"{record['train']['train_seconds']} s"
        verdict = "can test the claim" if not reasons else "cannot test the claim: " + "; ".join(reasons)
        console.print(f"  policy draw {draw} (seed {seed}): {record['train']['parameters']:,} parameters, {cached}; "
                      f"skips {_percent(found.get('skip_share'))} of pairs, right {_percent(found.get('p_correct_skipped'))} "
                      f"skipped vs {_percent(found.get('p_correct_computed'))} computed: {verdict}")
        if not reasons:
            break
    return record, draws


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def warm_start(data_dir: Path, cache_dir: Path, config: DemoConfig) -> dict[str, Any]:
    """SFT of the tiny policy (in draws, see `_policy_draws`) and (unless the checker is the only judge) the GenRM,
    TRL's SFTTrainer, reused from `cache_dir` when unchanged. Returns the records by role, and "draws"."""
    from fapo.testbed.warmstart import preset, warmstart

    policy, draws = _policy_draws(data_dir, cache_dir, config)
    records: dict[str, Any] = {"policy": policy, "draws": draws}
    if config.trains_genrm:
        # the GenRM starts from the warm-started policy: one tokenizer, and a model that already reads the task
        grm_dir = cache_dir / ("grm" if draws[-1]["draw"] == 0 else f"grm-draw{draws[-1]['draw']}")
        overrides = {"init_from": policy["dir"], "seed": draws[-1]["seed"], **config.grm_warmstart}
        records["grm"] = warmstart(data_dir, grm_dir, preset("grm", **overrides))
        records["grm"]["dir"] = str(grm_dir)
        cached = "reused from cache" if records["grm"]["cached"] else f"{records['grm']['train']['train_seconds']} s"
        console.print(f"  grm: {records['grm']['train']['parameters']:,} parameters, {cached}, eval {records['grm'].get('eval')}")
    return records


def train_genrm(grm_dir: str, data_dir: Path, out_dir: Path, config: DemoConfig) -> str:
    """GenRM RL with R_outcome + R_process from the warm-started GenRM; returns the trained model's dir. With
    `config.grm_eval_every`, a checkpoint (model only) every that many steps, for `evaluate_genrm_checkpoints`."""
    from fapo.train.config import parse_config
    from fapo.train.runner import train_grm

    if config.grm_rl_steps == 0:
        return grm_dir
    for stale in out_dir.glob("checkpoint-*"):  # an earlier run's, which evaluate_genrm_checkpoints would score
        shutil.rmtree(stale)
    trl = tiny_grm_trl(config.grm_rl_steps, 0, config.grm_rl_lr)
    if config.grm_eval_every:
        trl.update(save_steps=config.grm_eval_every, save_only_model=True)
    # it runs alone on the machine: 2 threads took 1.35x less time per step than 1
    train_config = parse_config({**trl, "fapo": {
        "model": grm_dir, "train_data": str(data_dir / "critic_train.jsonl"), "torch_threads": 2,
        "grm_process_reward": config.grm_process_reward}})
    return train_grm(train_config, out_dir).final_model_dir


@contextlib.contextmanager
def genrm_workers(config: DemoConfig, grm_dir: str) -> Iterator[dict[str, list[str]]]:
    """`fapo serve-grm` worker processes; yields their URLs by judge: "trained" (`config.workers` processes
    serving the trained GenRM) and "oracle" (one process serving the step checker), as `config.judge` needs."""
    from fapo.serving.launch import launch_subprocess

    sources = {"trained": (["--model", grm_dir, "--device", "cpu", "--threads", "1"], config.workers),
               "oracle": (["--oracle", "testbed"], 1)}
    workers: dict[str, list[Any]] = {}
    try:
        for judge in config.judges:
            source, count = sources[judge]
            workers[judge] = []
            for _ in range(count):
                workers[judge].append(launch_subprocess([*source, "--port", "0", "--max-wait-ms", "5"]))
        yield {judge: [w.url for w in ws] for judge, ws in workers.items()}
    finally:
        for worker in (w for ws in workers.values() for w in ws):
            worker.stop()


def evaluate_genrm(urls: list[str], data_dir: Path, config: DemoConfig) -> dict[str, Any]:
    """ProcessBench-style scores of the served GenRM on held-out critic rows."""
    from fapo.eval.critic_data import load_critic_rows
    from fapo.eval.grm_bench import evaluate_grm, judge_critic_rows
    from fapo.eval.judges import JudgeSpec
    from fapo.grm.types import JudgeConfig

    rows = load_critic_rows(data_dir / "critic_test.jsonl", limit=config.grm_eval_rows)
    spec = JudgeSpec(JudgeConfig(endpoints=tuple(urls), **DEMO_JUDGE))
    verdicts, judgements, metrics = judge_critic_rows(rows, spec, progress=True)
    result = evaluate_grm(rows, verdicts, source="served GenRM", judgements=judgements, judge_metrics=metrics).to_json()
    result["shown"] = shown_scores(rows, [j.critique for j in judgements])
    return result


def shown_scores(rows: list[Any], critiques: list[str | None]) -> dict[str, Any]:
    """What the critiques' own comparisons show (`fapo.testbed.checker.shown_verdict`), scored like the verdicts
    their boxes give; how often a critique's first paragraph whose two results differ was called wrong, and how
    often a paragraph whose results agree was: the gap between what the GenRM computes and what it says."""
    from fapo.eval.grm_bench import evaluate_grm
    from fapo.testbed.checker import comparisons, verdict_shown_by

    found = [comparisons(text or "") for text in critiques]
    differ = [next(c for c in each if c.differ) for each in found if any(c.differ for c in each)]
    agree = [c for each in found for c in each if not c.differ]
    return {**evaluate_grm(rows, [verdict_shown_by(each) for each in found], source="the critiques' comparisons").to_json(),
            "differ": len(differ), "differ_called_wrong": sum(c.said_wrong for c in differ),
            "agree": len(agree), "agree_called_wrong": sum(c.said_wrong for c in agree)}


def evaluate_genrm_dir(model_dir: str | Path, data_dir: Path, config: DemoConfig) -> dict[str, Any]:
    """`evaluate_genrm` of the GenRM in `model_dir`, served for the purpose by `config.workers` workers."""
    from fapo.serving.launch import launch_subprocess

    workers = []
    try:
        for _ in range(config.workers):
            workers.append(launch_subprocess(["--model", str(model_dir), "--device", "cpu", "--threads", "1",
                                              "--port", "0", "--max-wait-ms", "5"]))
        return evaluate_genrm([w.url for w in workers], data_dir, config)
    finally:
        for worker in workers:
            worker.stop()


def evaluate_genrm_checkpoints(rl_dir: Path, data_dir: Path, config: DemoConfig) -> dict[int, dict[str, Any]]:
    """The GenRM RL checkpoints before the last step (`config.grm_eval_every`), each scored like the final GenRM,
    by step."""
    steps = sorted(int(p.name.split("-")[1]) for p in rl_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    return {step: evaluate_genrm_dir(rl_dir / f"checkpoint-{step}", data_dir, config)
            for step in steps if step < config.grm_rl_steps}


def train_arm(arm: str, seed: int, policy_dir: str, data_dir: Path, out_dir: Path, urls: dict[str, list[str]],
              config: DemoConfig) -> dict[str, Any]:
    """One policy RL run: "grpo" (λ = 0, no judge), "fapo" (λ, the served GenRM) or "fapo_oracle" (λ, the served
    step checker); every arm is monitored by the checker (logged, never rewarded)."""
    from fapo.train.config import parse_config
    from fapo.train.runner import train_policy

    fapo: dict[str, Any] = {"model": policy_dir, "train_data": str(data_dir / "policy_train.jsonl"),
                            "prompt_template": "{problem}", "answer_format": "strict", "verify_workers": 1,
                            "monitor_oracle": "testbed", "torch_threads": 1}
    if arm in ARM_JUDGE:
        fapo.update(penalty=config.penalty, judge={"endpoints": urls[ARM_JUDGE[arm]], **DEMO_JUDGE, "timeout": 30.0})
    else:
        fapo.update(penalty=0.0)
    result = train_policy(parse_config({**tiny_policy_trl(config.policy_rl_steps, seed, config.policy_rl_lr), "fapo": fapo}), out_dir)
    return {"arm": arm, "seed": seed, "output_dir": result.output_dir, "final_model_dir": result.final_model_dir}


def evaluate_arm(model_dir: str, data_dir: Path, config: DemoConfig, seed: int) -> dict[str, Any]:
    """Held-out accuracy, flawed-positive ratio (the checker as judge), length and diagnostics of one policy."""
    from fapo.eval.generation import SamplingConfig
    from fapo.eval.judges import JudgeSpec
    from fapo.eval.policy import PolicyEvalConfig, evaluate_policy
    from fapo.eval.problems import load_problems
    from fapo.testbed.diagnose import diagnose

    problems = load_problems(data_dir / "policy_test.jsonl", limit=config.eval_problems)
    eval_config = PolicyEvalConfig(
        sampling=SamplingConfig(k=config.eval_samples, temperature=1.0, seed=seed, backend="transformers", device="cpu",
                                max_tokens=POLICY_MAX_TOKENS),
        prompt_template="{problem}", answer_format="strict",
    )
    report = evaluate_policy(model_dir, problems, eval_config, judge=JudgeSpec(oracle="testbed"))
    scores = report.scores
    rollouts = report.rollouts
    diagnostics = diagnose([problems[r.problem_index].problem for r in rollouts], [r.text for r in rollouts],
                           [r.correct for r in rollouts])
    return {"accuracy": scores.avg_at_k / 100, "flawed_ratio": (scores.flawed_among_correct or 0.0) / 100,
            "flawed_of_all": (scores.flawed_among_all or 0.0) / 100, "mean_length": scores.mean_length_tokens,
            "mean_steps": scores.mean_steps, "diagnostics": diagnostics}


def _arm_job(arm: str, seed: int, policy_dir: str, data_dir: Path, run_dir: Path, urls: dict[str, list[str]],
             config: DemoConfig) -> dict[str, Any]:
    """One run in its own process: train (unless arm is "initial") and evaluate; output goes to run_dir/log.txt."""
    import os
    import sys
    import traceback

    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "log.txt", "w", buffering=1)  # noqa: SIM115 - lives as long as this worker process's fds
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        os.dup2(log.fileno(), stream.fileno())
    try:
        if arm == "initial":
            run = {"arm": arm, "seed": seed, "final_model_dir": policy_dir}
        else:
            run = train_arm(arm, seed, policy_dir, data_dir, run_dir, urls, config)
        run["eval"] = evaluate_arm(run["final_model_dir"], data_dir, config, seed)
    except BaseException:
        traceback.print_exc()
        raise
    return run


def _steps_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"loss"' in line for line in path.read_text().splitlines())


def run_policy_arms(policy_dir: str, data_dir: Path, out: Path, urls: dict[str, list[str]], config: DemoConfig
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every arm for every seed, plus the initial policy's evaluation, `config.jobs` processes at once.

    Each run is a separate process with one torch thread (deterministic whatever runs beside it); its
    output goes to `<run>/log.txt` while one progress bar per run follows its metrics.jsonl. Returns
    the initial policy's evaluation and the runs (seed-major, in `config.arms` order).
    """
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # longest first, so that no process is left running alone at the end: FAPO steps wait on the judge
    specs = [(arm, seed, out / f"{arm}-seed{seed}") for arm in reversed(config.arms) for seed in config.seed_list]
    specs.append(("initial", config.seed_base, out / "initial"))
    with ProcessPoolExecutor(config.jobs, mp_context=multiprocessing.get_context("spawn")) as pool, \
            Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=console) as progress:
        jobs = []
        for arm, seed, run_dir in specs:
            total = 1 if arm == "initial" else config.policy_rl_steps
            label = f"{arm.upper().replace('_', '-')} seed {seed}" if arm != "initial" else "initial policy"
            task = progress.add_task(label, total=total)
            future = pool.submit(_arm_job, arm, seed, policy_dir, data_dir, run_dir, urls, config)
            jobs.append((future, task, run_dir, arm))
        pending = {future for future, *_ in jobs}
        while pending:
            _, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
            for future, task, run_dir, arm in jobs:
                if future.done() and future.exception() is None:
                    progress.update(task, completed=progress.tasks[task].total)
                elif arm != "initial" and future.running():  # only a running job's metrics.jsonl grows
                    progress.update(task, completed=_steps_done(run_dir))
            failed = [(run_dir, f) for f, _, run_dir, _ in jobs if f.done() and f.exception() is not None]
            if failed:
                run_dir, future = failed[0]
                for other in pending:
                    other.cancel()
                log = run_dir / "log.txt"
                where = f"; its output: {log}" if log.exists() else ""
                raise RuntimeError(f"policy run {run_dir.name} failed: {future.exception()!r}{where}"
                                   ) from future.exception()
    results = {(run["arm"], run["seed"]): run for run in (future.result() for future, *_ in jobs)}
    return (results["initial", config.seed_base]["eval"],
            [results[arm, seed] for seed in config.seed_list for arm in config.arms])


def run_demo(out_dir: str | Path, config: DemoConfig, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Run every stage and write the report; returns report.json's content."""
    from fapo.demo.report import step_times, write_report

    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out.parent / "cache" / config.cache_name
    data_dir = out / "data"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _stage(1, f"testbed data (data seed {config.data_seed})")
    prepare_data(data_dir, config)
    _stage(2, "warm-start the tiny policy and GenRM (SFT, cached)")
    warm = warm_start(data_dir, cache, config)
    timings["prepare_s"] = time.perf_counter() - t0
    grm_dir, grm_report = None, None
    t1 = time.perf_counter()
    if config.trains_genrm:
        reward = "R_outcome + R_process" if config.grm_process_reward else "R_outcome alone"
        _stage(3, f"GenRM RL: {config.grm_rl_steps} GRPO steps with {reward}, lr {config.grm_rl_lr:g}")
        grm_dir = train_genrm(warm["grm"]["dir"], data_dir, out / "grm_rl", config)
    else:
        _stage(3, "GenRM RL: skipped (the step checker is FAPO's only judge)")
    timings["grm_rl_s"] = time.perf_counter() - t1
    runs: list[dict[str, Any]] = []
    with genrm_workers(config, grm_dir) as urls:
        if config.trains_genrm:
            _stage(4, f"GenRM evaluation through {len(urls['trained'])} serve-grm workers: before and after RL, "
                      "on the same held-out critic rows")
            t2 = time.perf_counter()
            grm_report = {"after": evaluate_genrm(urls["trained"], data_dir, config)}
            if config.grm_rl_steps:
                grm_report["before"] = evaluate_genrm_dir(warm["grm"]["dir"], data_dir, config)
                grm_report["checkpoints"] = evaluate_genrm_checkpoints(out / "grm_rl", data_dir, config)
            timings["grm_eval_s"] = time.perf_counter() - t2
        else:
            _stage(4, "GenRM evaluation: skipped (no trained GenRM in this run)")
        arms = ", ".join(a.upper().replace("_", "-") for a in config.arms)
        _stage(5, f"policy RL: {arms} x seeds {config.seed_list}, {config.policy_rl_steps} optimizer steps each "
                  f"(lr {config.policy_rl_lr:g}), "
                  f"{config.jobs} at once; then held-out evaluation")
        initial, runs = run_policy_arms(warm["policy"]["dir"], data_dir, out, urls, config)
    for run in runs:
        run["step_s"] = step_times(Path(run["output_dir"]))
    timings["total_s"] = time.perf_counter() - t0
    _stage(6, "report")
    return write_report(out, config=asdict(config), warm=warm, grm_dir=grm_dir, grm_report=grm_report,
                        initial=initial, runs=runs, timings=timings)
