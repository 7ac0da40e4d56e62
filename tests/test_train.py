"""FAPO training on TRL, on a CPU: real GRPOTrainer steps with the testbed oracle as the judge."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import pytest

from conftest import policy_case
from fapo.grm.judge import resolve_oracle
from fapo.grm.local import LocalJudge
from fapo.io import JsonlAppender
from fapo.train.config import parse_config
from fapo.train.reward_funcs import PolicyRewardState, score_policy_batch

TRL_TINY = {
    "learning_rate": 1e-3, "num_generations": 4, "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1,
    "max_completion_length": 40, "temperature": 1.0, "loss_type": "dapo", "beta": 0.0, "epsilon": 0.2,
    "epsilon_high": 0.28, "bf16": False, "use_cpu": True, "gradient_checkpointing": False, "logging_steps": 1,
    "save_steps": 1, "report_to": "none", "seed": 0, "max_steps": 2,
}


def readme_metric_tables() -> tuple[dict[str, str], dict[str, str]]:
    """README's "Metrics a run logs" tables, policy and GenRM: {key: when it is logged}."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Metrics a run logs", 1)[1].split("\n## ", 1)[0]
    tables: list[dict[str, str]] = []
    for block in section.split("| key | logged | meaning |")[1:]:
        table: dict[str, str] = {}
        for line in block.splitlines()[2:]:
            if not line.startswith("| "):
                break
            keys, when = (cell.strip() for cell in line.split(" | ")[:2])
            for key in re.findall(r"`([^`]+)`", keys):
                assert key not in table, f"README lists {key} twice"
                table[key] = when
        tables.append(table)
    assert len(tables) == 2, "README's metrics section has the policy table and the GenRM table"
    return tables[0], tables[1]


def write_policy_data(path: Path) -> Path:
    path.write_text("".join(json.dumps({"problem": POLICY_PROBLEM, "answer": POLICY_ANSWER}) + "\n" for _ in range(16)))
    return path


def policy_config(model: Path, data: Path, trl: dict | None = None, **fapo):
    fapo_section = {"model": str(model), "train_data": str(data), "prompt_template": "{problem}", "oracle": "testbed",
                    "answer_format": "strict", "verify_workers": 1, **fapo}
    return parse_config({**TRL_TINY, **(trl or {}), "fapo": fapo_section})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def weights_changed(before: Path, after: Path) -> bool:
    a, b = weights(before), weights(after)
    return any(not (a[k] == b[k]).all() for k in a)


POLICY_PROBLEM, POLICY_ANSWER, _SOLUTIONS = policy_case()
CLEAN, SKIP, WRONG = _SOLUTIONS["clean"], _SOLUTIONS["skip"], _SOLUTIONS["wrong"]
TRAILING = CLEAN + "}}}"


def test_grpo_and_fapo_differ_only_in_the_reward_of_flawed_positives(tmp_path):
    completions = [[{"role": "assistant", "content": c}] for c in (CLEAN, SKIP, WRONG, TRAILING)]
    ids = [[1, 2, 3]] * 4
    rewards, logged = {}, {}
    for penalty in (0.0, 1.0):
        settings = policy_config(tmp_path, tmp_path, penalty=penalty).fapo
        state = PolicyRewardState(settings, 40, frozenset({3}), lambda: LocalJudge(resolve_oracle("testbed")),
                                  JsonlAppender(tmp_path / f"critiques-{penalty}.jsonl"))
        metrics: dict[str, float] = {}
        rewards[penalty] = asyncio.run(score_policy_batch(
            state, completions, ids, [POLICY_PROBLEM] * 4, [POLICY_ANSWER] * 4, 1, metrics.__setitem__))
        logged[penalty] = metrics
    assert rewards[0.0] == [1.0, 1.0, -1.0, -1.0]  # GRPO: right answers pay, the strict format rejects `}}}`
    assert rewards[1.0] == [1.0, 0.0, -1.0, -1.0]  # FAPO: the skipped step costs λ
    assert logged[1.0]["grm/judged"] == 2 and logged[1.0]["grm/flawed_ratio"] == 0.5
    assert logged[0.0]["verify/accuracy"] == logged[1.0]["verify/accuracy"] == 0.5
    critiques = read_jsonl(tmp_path / "critiques-1.0.jsonl")
    assert [c["verdict"] for c in critiques] == [-1, 0] and [c["reward"] for c in critiques] == [1.0, 0.0]


def test_monitor_oracle_measures_without_changing_rewards(tmp_path):
    completions = [[{"role": "assistant", "content": c}] for c in (CLEAN, SKIP, SKIP, WRONG)]
    settings = policy_config(tmp_path, tmp_path, penalty=0.0, oracle=None, monitor_oracle="testbed").fapo
    state = PolicyRewardState(settings, 40, frozenset({3}), None, JsonlAppender(None),
                              monitor=resolve_oracle("testbed"))
    metrics: dict[str, float] = {}
    rewards = asyncio.run(score_policy_batch(state, completions, [[1, 2, 3]] * 4, [POLICY_PROBLEM] * 4, [POLICY_ANSWER] * 4,
                                             1, metrics.__setitem__))
    assert rewards == [1.0, 1.0, 1.0, -1.0]
    assert metrics["monitor/flawed_ratio"] == pytest.approx(2 / 3)
    assert metrics["monitor/flawed_of_all"] == 0.5


def test_truncated_completion_is_no_answer(tmp_path):
    settings = policy_config(tmp_path, tmp_path, oracle=None).fapo
    state = PolicyRewardState(settings, 3, frozenset({99}), None, JsonlAppender(None))
    completions = [[{"role": "assistant", "content": CLEAN}]] * 2
    rewards = asyncio.run(score_policy_batch(state, completions, [[1, 2, 3], [1, 2, 99]], [POLICY_PROBLEM] * 2,
                                             [POLICY_ANSWER] * 2, 1, None))
    assert rewards == [-1.0, 1.0]


def _assert_trained(result, model_before: Path, expect_judged: bool = True) -> list[dict]:
    out = Path(result.output_dir)
    metrics = read_jsonl(out / "metrics.jsonl")
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == list(range(1, result.global_step + 1))
    assert weights_changed(model_before, Path(result.final_model_dir))
    for key in ("verify/accuracy", "grm/judged", "grm/errors", "grm/invalid", "reward/mean", "time/step_s",
                "time/judge_s", "completions/mean_length", "completions/mean_steps"):
        assert all(key in m for m in metrics if "loss" in m), key
    if expect_judged:
        assert sum(m["grm/judged"] for m in metrics if "loss" in m) > 0
    return metrics


def test_policy_training_with_the_oracle_over_http(memorised_policy_dir, tmp_path):
    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import load_oracle

    data = write_policy_data(tmp_path / "train.jsonl")
    with serve_in_thread(load_oracle("testbed")) as server:
        config = policy_config(memorised_policy_dir, data, oracle=None, judge={"endpoints": [server.url]},
                               overlong_buffer=8, monitor_oracle="testbed")
        from fapo.train.runner import train_policy

        result = train_policy(config, tmp_path / "run")
    metrics = _assert_trained(result, memorised_policy_dir)
    assert any(m.get("grm/flawed_ratio") is not None for m in metrics)
    steps = [m for m in metrics if "loss" in m]
    # a dashboard's set: exactly README's table (every-step keys, and those of overlong_buffer and monitor_oracle)
    policy_table, _ = readme_metric_tables()
    expected = {key for key, when in policy_table.items()
                if when in ("every step", "with `overlong_buffer`", "with `monitor_oracle`")}
    for m in steps:
        assert set(m) - {"step"} == expected, (sorted(set(m) - {"step"} - expected), sorted(expected - set(m)))
    assert all(m["grm/healthy_endpoints"] == 1.0 for m in steps)
    # the detail, in OUTPUT/counters.jsonl: the client's cumulative counters, per-endpoint health, the verifier's
    counters = read_jsonl(tmp_path / "run" / "counters.jsonl")
    assert [c["step"] for c in counters] == [m["step"] for m in steps]
    for key in ("grm/client/judgements", "grm/client/requests", "grm/client/healthy_endpoints",
                "grm/client/endpoint/0/healthy", "grm/client/endpoint/0/requests", "verify/total/items",
                "verify/total/timeouts", "verify/total/worker_restarts"):
        assert all(key in c for c in counters), key
    assert all(c["grm/client/endpoint/0/healthy"] == 1.0 for c in counters)
    assert counters[-1]["grm/client/requests"] > 0
    assert counters[-1]["verify/total/items"] >= counters[0]["verify/total/items"] > 0
    critiques = read_jsonl(tmp_path / "run" / "critiques.jsonl")
    assert critiques and all(c["status"] == "ok" and "\\boxed{" in c["critique"] for c in critiques)
    assert all(c["endpoint"] for c in critiques)


def test_a_judge_dying_mid_run_does_not_stop_training(memorised_policy_dir, tmp_path):
    from transformers import TrainerCallback

    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import load_oracle
    from fapo.train.runner import train_policy

    server = serve_in_thread(load_oracle("testbed"))

    class KillJudgeAfterFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                server.stop()

    data = write_policy_data(tmp_path / "train.jsonl")
    config = policy_config(memorised_policy_dir, data, {"max_steps": 3, "save_steps": 10}, oracle=None,
                           judge={"endpoints": [server.url], "timeout": 2.0, "retries": 1})
    result = train_policy(config, tmp_path / "run", callbacks=[KillJudgeAfterFirstStep()])
    server.stop()
    assert result.global_step == 3
    metrics = [m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    after = metrics[1:]
    assert sum(m["grm/errors"] for m in after) > 0
    counters = read_jsonl(tmp_path / "run" / "counters.jsonl")
    assert counters[0]["grm/client/endpoint/0/healthy"] == 1.0
    assert counters[-1]["grm/client/request_errors"] > counters[0]["grm/client/request_errors"]  # the outage, logged
    # every judgement after the outage is an error (no verdict) or a verdict cached before it
    assert all(m["grm/errors"] + m["grm/cached"] == m["grm/judged"] for m in after)
    for m in after:  # a penalty only where a (cached) verdict said flawed; errors cost nothing
        assert m["reward/mean"] == pytest.approx(2 * m["verify/accuracy"] - 1 - m["grm/flawed_of_all"])


def test_grm_training(tiny_model_dir, tmp_path):
    from fapo.grm.prompt import build_grm_prompt
    from fapo.train.runner import train_grm
    from memorise import memorise

    steps = ["2 + 3 = 5", "The answer is \\boxed{5}"]
    row = {"id": "t-0", "problem": "Start with 2. Add 9. Subtract 9. Add 3.", "steps": steps,
           "final_answer_correct": True, "label": 0, "ground_truth": "5"}
    prompt = build_grm_prompt(row["problem"], steps, "5")
    replies = ["Step 0 skips two operations. \\boxed{0}", "All steps are right. \\boxed{-1}", "\\boxed{1}"]
    model = memorise(tiny_model_dir, tmp_path / "grm0", [(prompt, r) for r in replies], steps=90)
    data = tmp_path / "critic.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for _ in range(8)))
    config = parse_config({**TRL_TINY, "fapo": {"model": str(model), "train_data": str(data)}})
    result = train_grm(config, tmp_path / "run")
    metrics = _assert_trained_grm(result, model)
    assert all(math.isfinite(m["grm/valid_rate"]) for m in metrics)
    policy_table, grm_table = readme_metric_tables()  # README's tables: GenRM's keys and TRL's
    fapo_own = ("verify/", "grm/", "monitor/", "reward/", "rollout/", "time/judge", "rewards/", "completions/mean_steps")
    trl = {key for key, when in policy_table.items() if when == "every step" and not key.startswith(fapo_own)}
    expected = set(grm_table) | trl | {"rewards/genrm_reward/mean", "rewards/genrm_reward/std"}
    assert all(set(m) - {"step"} == expected for m in metrics), sorted(set(metrics[0]) ^ expected)
    critiques = read_jsonl(tmp_path / "run" / "critiques.jsonl")
    assert len(critiques) == 2 * 16 and {c["label"] for c in critiques} == {0}


def test_grm_reward_func_with_and_without_r_process(tmp_path):
    """`fapo.grm_process_reward: false` (the paper's ablation) drops R_process and nothing else: the critiques
    file and the logged metrics say the same verdicts either way."""
    from fapo.train.reward_funcs import make_grm_reward_func

    critiques = ["\\boxed{1}", "\\boxed{0}", "\\boxed{-1}", "no verdict"]
    rewards, logged = {}, {}
    for process in (True, False):
        metrics = {}
        func = make_grm_reward_func(JsonlAppender(tmp_path / f"{process}.jsonl"), process=process)
        rewards[process] = func(["p"] * 4, critiques, label=[0] * 4, num_steps=[4] * 4,
                                log_metric=lambda k, v, metrics=metrics: metrics.__setitem__(k, v))
        logged[process] = metrics
    assert rewards[True] == [0.75, 1.0, -1.0, -1.0] and rewards[False] == [1.0, 1.0, -1.0, -1.0]
    assert logged[True]["grm/valid_rate"] == logged[False]["grm/valid_rate"] == 0.75
    assert [c["reward"] for c in read_jsonl(tmp_path / "False.jsonl")] == rewards[False]


def _assert_trained_grm(result, model_before: Path) -> list[dict]:
    metrics = [m for m in read_jsonl(Path(result.output_dir) / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in metrics] == [1, 2]
    assert weights_changed(model_before, Path(result.final_model_dir))
    return metrics


def test_grm_rows_read_the_authors_critic_format(shared_data):
    from fapo.train.config import FapoSettings
    from fapo.train.data import grm_rows

    settings = FapoSettings(model="m", train_data=str(shared_data / "fapo_critic_example" / "fapo-critic.jsonl"))
    rows = grm_rows(settings)
    assert len(rows) == 100
    assert sum(r["label"] == -1 for r in rows) == 50
    assert all(r["prompt"][0]["role"] == "user" and r["num_steps"] >= 1 for r in rows)


def test_processbench_rows_become_critic_prompts(shared_data):
    from fapo.train.config import FapoSettings
    from fapo.train.data import grm_rows

    settings = FapoSettings(model="m", train_data=str(shared_data / "processbench" / "gsm8k.jsonl"),
                            max_train_samples=10)
    rows = grm_rows(settings)
    assert len(rows) == 10
    assert all("<paragraph_0>" in r["prompt"][0]["content"] and "Ground Truth" not in r["prompt"][0]["content"]
               for r in rows)


def test_train_policy_cli_prints_the_schedule_and_the_clip_binds(memorised_policy_dir, tmp_path, capsys):
    """4 optimizer steps per generation batch: from the second on the policy differs from the sampler."""
    import yaml

    from fapo.cli import main

    trl = {**TRL_TINY, "per_device_train_batch_size": 8, "steps_per_generation": 4, "max_steps": 4,
           "save_steps": 100, "learning_rate": 3e-3}
    fapo = {"model": str(memorised_policy_dir), "train_data": str(write_policy_data(tmp_path / "train.jsonl")),
            "prompt_template": "{problem}", "oracle": "testbed", "answer_format": "strict", "verify_workers": 1}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**trl, "fapo": fapo}))
    assert main(["train", "policy", "--config", str(config), "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert ("schedule (1 process): 8 prompts x 4 = 32 completions per generation batch; 4 optimizer steps per "
            "generation batch (1 pass), each on 2 prompts = 8 completions") in out.splitlines()
    clipped = [m["clip_ratio/region_mean"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")
               if "clip_ratio/region_mean" in m]
    assert len(clipped) == 4 and clipped[0] == 0.0 and max(clipped[1:]) > 0.0, clipped


def test_a_run_whose_judge_keeps_failing_stops_with_the_reason(memorised_policy_dir, tmp_path):
    """No silent GRPO: a GenRM that crashes on every request (HTTP 500) stops training once more than the
    tolerated share of the window failed, instead of training GRPO under a FAPO config. The data is the recipe's
    verl-format parquet, read as it is (default fields)."""
    from failing_genrm import BrokenGenRM
    from fapo.grm.failure_window import JudgeFailuresExceeded
    from fapo.serving.launch import serve_in_thread
    from fapo.train.runner import train_policy
    from test_examples_trl import verl_rows

    data = verl_rows(tmp_path / "train.parquet", 16)
    with serve_in_thread(BrokenGenRM("crash")) as server:
        config = policy_config(memorised_policy_dir, data, {"max_steps": 5}, oracle=None,
                               judge={"endpoints": [server.url], "retries": 0},
                               judge_failure_window=20, judge_failure_rate=0.2)
        with pytest.raises(JudgeFailuresExceeded, match=r"errors.*more than 20% of 20.*turning into GRPO"):
            train_policy(config, tmp_path / "run")
    critiques = read_jsonl(tmp_path / "run" / "critiques.jsonl")
    assert critiques and all(c["status"] == "error" for c in critiques)  # what it judged was written first
    assert all(c["problem"] == POLICY_PROBLEM and c["answer"] == POLICY_ANSWER for c in critiques)
    assert not (tmp_path / "run" / "final").exists()


def test_truncation_is_read_with_the_trainers_end_tokens(tiny_model_dir, tmp_path):
    """The end tokens are TRL's own (tokenizer EOS + generation_config.eos_token_id + pad), taken from the
    trainer: a completion at the length limit that ends on a generation_config-only end token is complete."""
    import shutil

    from datasets import Dataset
    from transformers import AutoTokenizer, GenerationConfig
    from trl import GRPOConfig, GRPOTrainer

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    extra_end = tokenizer.convert_tokens_to_ids("<|im_start|>")  # plays Qwen's <|im_end|> beside <|endoftext|>
    generation = GenerationConfig.from_pretrained(str(model_dir))
    generation.eos_token_id = [tokenizer.eos_token_id, extra_end]
    generation.save_pretrained(str(model_dir))
    settings = policy_config(model_dir, tmp_path, oracle=None).fapo
    state = PolicyRewardState(settings, None, None, None, JsonlAppender(None))
    args = GRPOConfig(output_dir=str(tmp_path / "out"), **{k: v for k, v in TRL_TINY.items() if k != "max_steps"},
                      max_steps=1)
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                          args=args, train_dataset=Dataset.from_list([{"prompt": "p"}] * 4),
                          processing_class=tokenizer)
    state.bind_trainer(trainer)
    assert state.eos_token_ids == {tokenizer.eos_token_id, extra_end, tokenizer.pad_token_id}
    full = [5] * (args.max_completion_length - 1)
    assert not state.is_truncated(full + [extra_end])  # the old {eos, pad} set read this as cut
    assert not state.is_truncated(full + [tokenizer.eos_token_id])
    assert state.is_truncated(full + [7]) and not state.is_truncated([7])


def test_the_tail_rule_scores_a_cut_rollout_from_its_last_300_characters(tmp_path):
    settings = policy_config(tmp_path, tmp_path, oracle=None, answer_format="last_boxed", truncation_rule="tail").fapo
    state = PolicyRewardState(settings, 3, frozenset({99}), None, JsonlAppender(None))
    cut_right = "x" * 500 + CLEAN
    cut_early = CLEAN + " and on" * 60
    completions = [[{"role": "assistant", "content": c}] for c in (cut_right, cut_early)]
    rewards = asyncio.run(score_policy_batch(state, completions, [[1, 2, 3]] * 2, [POLICY_PROBLEM] * 2,
                                             [POLICY_ANSWER] * 2, 1, None))
    assert rewards == [1.0, -1.0]  # under "wrong" both are -1 (test_truncated_completion_is_no_answer)


def test_same_seed_same_run_to_the_bit(memorised_policy_dir, tmp_path):
    """What the demo promises on one machine type: a policy RL run on one torch thread is a function of its seed.
    Two runs of the same config give the same rewards, losses and weights, bit for bit; another seed does not."""
    from fapo.train.runner import train_policy

    data = write_policy_data(tmp_path / "train.jsonl")

    def run(name: str, seed: int) -> tuple[list[dict], dict]:
        config = policy_config(memorised_policy_dir, data, {"seed": seed, "save_steps": 100}, torch_threads=1,
                               monitor_oracle="testbed")
        result = train_policy(config, tmp_path / name)
        drop = ("time/", "grm/latency", "step_time", "train_runtime", "train_samples_per_second",
                "train_steps_per_second")  # wall-clock measurements
        metrics = [{k: v for k, v in m.items() if not k.startswith(drop)} for m in read_jsonl(Path(result.output_dir) / "metrics.jsonl")]
        return metrics, weights(Path(result.final_model_dir))

    (metrics_a, weights_a), (metrics_b, weights_b) = run("a", 0), run("b", 0)
    differ = sorted({k for a, b in zip(metrics_a, metrics_b) for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
    assert not differ and len(metrics_a) == len(metrics_b) and any("loss" in m for m in metrics_a), differ
    assert weights_a.keys() == weights_b.keys() and all((weights_a[k] == weights_b[k]).all() for k in weights_a)
    metrics_c, weights_c = run("c", 1)
    assert metrics_c != metrics_a or any(not (weights_c[k] == weights_a[k]).all() for k in weights_a)
