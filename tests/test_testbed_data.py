"""Testbed data generation, the oracle judge (in-process and over HTTP), and the warm-start recipe."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from fapo.grm.prompt import grm_messages, parse_verdict
from fapo.io import read_jsonl
from fapo.serving.backend import GenerationRequest
from fapo.steps import split_steps
from fapo.testbed.checker import earliest_error
from fapo.testbed.data import FILES, GenerateConfig, generate
from fapo.testbed.oracle import UNREADABLE, OracleBackend, oracle_verdict, parse_grm_prompt
from fapo.testbed.task import parse_problem

SMALL = GenerateConfig(seed=3, n_train=60, n_test=25, n_sft=80, n_critic_train=60, n_critic_test=50,
                       n_critic_heal=20)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("testbed_data")
    generate(out, SMALL)
    return out


def _critic_rows(data_dir: Path) -> list[dict]:
    return read_jsonl(data_dir / "critic_train.jsonl") + read_jsonl(data_dir / "critic_test.jsonl")


def test_same_seed_same_bytes_other_seed_other_bytes(data_dir, tmp_path):
    generate(tmp_path / "again", SMALL)
    generate(tmp_path / "other", GenerateConfig(**{**SMALL.__dict__, "seed": 4}))
    for name in [*FILES, "manifest"]:
        suffix = ".json" if name == "manifest" else ".jsonl"
        original = (data_dir / f"{name}{suffix}").read_bytes()
        assert (tmp_path / "again" / f"{name}{suffix}").read_bytes() == original, name
    assert (tmp_path / "other" / "policy_test.jsonl").read_bytes() != (data_dir / "policy_test.jsonl").read_bytes()


def test_no_test_problem_on_the_train_side(data_dir):
    test = {r["problem"] for r in read_jsonl(data_dir / "policy_test.jsonl")}
    assert len(test) == SMALL.n_test
    assert {r["problem"] for r in read_jsonl(data_dir / "critic_test.jsonl")} <= test
    for name in ("policy_train", "sft_train", "critic_train"):
        train = {r["problem"] for r in read_jsonl(data_dir / f"{name}.jsonl")}
        assert not train & test, name
    policy_train = read_jsonl(data_dir / "policy_train.jsonl")
    assert len({r["problem"] for r in policy_train}) == len(policy_train) == SMALL.n_train


def test_rows_carry_consistent_labels(data_dir):
    """Plumbing only: the labels were written by the same checker this test re-runs, so it checks that files
    hold what the generator computed (and the answer flags), not that the checker is right; the checker is
    tested against hand-written steps and by properties in test_testbed.py."""
    for row in read_jsonl(data_dir / "policy_train.jsonl"):
        assert set(row) == {"problem", "answer"} and row["answer"] == str(parse_problem(row["problem"]).answer)
    for row in read_jsonl(data_dir / "sft_train.jsonl"):
        assert row["prompt"] == [{"role": "user", "content": row["problem"]}]
        steps = split_steps(row["completion"][0]["content"])
        assert row["completion"][0]["role"] == "assistant"
        assert earliest_error(parse_problem(row["problem"]), steps) == row["label"]
        # the default SFT mix holds positives only, but for the slips in cancelling pairs
        assert row["final_answer_correct"] == (row["flaw"] != "pair_slip")
    for row in _critic_rows(data_dir):
        assert {"id", "generator", "problem", "steps", "final_answer_correct", "label", "ground_truth"} <= set(row)
        problem = parse_problem(row["problem"])
        assert row["ground_truth"] == str(problem.answer)
        assert earliest_error(problem, row["steps"]) == row["label"]
        assert row["steps"][-1].endswith(f"\\boxed{{{row['ground_truth']}}}") == row["final_answer_correct"]
    critic_labels = {r["label"] == -1 for r in _critic_rows(data_dir)}
    assert critic_labels == {True, False}


def test_critic_train_ends_with_healed_pair_slips_and_their_clean_twins_after_an_unchanged_mix(data_dir, tmp_path):
    critic = read_jsonl(data_dir / "critic_train.jsonl")
    mix, heal, twins = critic[: SMALL.n_critic_train], critic[SMALL.n_critic_train :: 2], critic[SMALL.n_critic_train + 1 :: 2]
    assert len(heal) == len(twins) == SMALL.n_critic_heal
    assert {r["flaw"] for r in heal} == {"heal"} and {r["flaw"] for r in twins} == {"clean"}
    assert "heal" not in {r["flaw"] for r in mix}
    for row, twin in zip(heal, twins, strict=True):  # a flawed positive at the pair's addition, then the same problem solved right
        problem = parse_problem(row["problem"])
        assert row["final_answer_correct"] and row["label"] in problem.cancelling_pairs()
        assert earliest_error(problem, row["steps"]) == row["label"]
        assert twin["problem"] == row["problem"] and twin["label"] == -1 and twin["final_answer_correct"]
        differ = [i for i, (a, b) in enumerate(zip(row["steps"], twin["steps"], strict=True)) if a != b]
        assert differ == [row["label"], row["label"] + 1]
    generate(tmp_path / "none", dataclasses.replace(SMALL, n_critic_heal=0))
    assert read_jsonl(tmp_path / "none" / "critic_train.jsonl") == mix
    for name in ("sft_train", "critic_test", "policy_train", "policy_test"):
        assert (tmp_path / "none" / f"{name}.jsonl").read_bytes() == (data_dir / f"{name}.jsonl").read_bytes()


def test_manifest_counts(data_dir):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 3
    assert manifest["files"]["sft_train.jsonl"]["rows"] == SMALL.n_sft
    assert manifest["files"]["critic_test.jsonl"]["rows"] == SMALL.n_critic_test
    assert 0 < manifest["files"]["sft_train.jsonl"]["flawed_positive_share"] < 0.6


def test_cli_generate(tmp_path, capsys):
    from fapo.cli import main

    out = tmp_path / "cli"
    args = ["testbed", "generate", "--out", str(out), "--n-train", "5", "--n-test", "5", "--n-sft", "5",
            "--n-critic-train", "5", "--n-critic-test", "5", "--n-critic-heal", "3", "--flaw-rates", "skip=1.0"]
    assert main(args) == 0
    assert all((out / f"{name}.jsonl").is_file() for name in FILES)
    assert len(read_jsonl(out / "critic_train.jsonl")) == 5 + 2 * 3
    assert main(["testbed", "generate", "--out", str(out), "--flaw-rates", "leap=0.5"]) == 2
    assert "kind=rate" in capsys.readouterr().err


def test_oracle_backend_agrees_with_the_checker_on_every_row(data_dir):
    rows = _critic_rows(data_dir)
    requests = [GenerationRequest(messages=grm_messages(r["problem"], r["steps"], r["ground_truth"])) for r in rows]
    requests += [GenerationRequest(messages=grm_messages(r["problem"], r["steps"])) for r in rows]  # no gold
    replies = OracleBackend().generate(requests)
    for row, reply in zip(rows + rows, replies, strict=True):
        assert parse_verdict(reply[0].text, len(row["steps"])) == row["label"], row["id"]
        assert reply[0].finish_reason == "stop"
        assert oracle_verdict(row["problem"], row["steps"]) == row["label"]
        assert oracle_verdict(row["problem"], "\n\n".join(row["steps"])) == row["label"]


def test_oracle_refuses_what_it_cannot_judge():
    backend = OracleBackend()
    [[reply]] = backend.generate([GenerationRequest(messages=[{"role": "user", "content": "What is 2 + 2?"}])])
    assert reply.text == UNREADABLE and parse_verdict(reply.text) is None
    assert parse_grm_prompt(grm_messages("What is 2 + 2?", ["4"], "4")[0]["content"]) is None
    with pytest.raises(ValueError, match="not a testbed problem"):
        oracle_verdict("What is 2 + 2?", ["4"])
    long = GenerationRequest(messages=grm_messages("Start with 1. Add 1. Add 1.", ["1 + 1 = 2"]), max_tokens=3, n=2)
    [[cut, cut2]] = backend.generate([long])
    assert cut.finish_reason == "length" and cut.completion_tokens == 3 and cut == cut2


def test_oracle_serves_thousands_of_requests_per_second(data_dir):
    rows = _critic_rows(data_dir)
    requests = [GenerationRequest(messages=grm_messages(r["problem"], r["steps"], r["ground_truth"])) for r in rows] * 20
    start = time.perf_counter()
    OracleBackend().generate(requests)
    assert len(requests) / (time.perf_counter() - start) > 2000


def test_oracle_over_http_agrees_with_the_checker_on_every_row(data_dir):
    from fapo.grm.client import JudgeConfig, JudgeItem
    from fapo.grm.judge import judge_sync
    from fapo.serving.launch import serve_in_thread

    rows = _critic_rows(data_dir)
    items = [JudgeItem(r["problem"], tuple(r["steps"]), r["ground_truth"]) for r in rows]
    with serve_in_thread(OracleBackend()) as server:
        judgements = judge_sync(items, JudgeConfig(endpoints=(server.url,), retries=0))
        [unreadable] = judge_sync([JudgeItem("What is 2 + 2?", ("4",))], JudgeConfig(endpoints=(server.url,)))
    for row, judgement in zip(rows, judgements, strict=True):
        assert judgement.status == "ok" and judgement.verdict == row["label"], (row["id"], judgement)
    assert unreadable.status == "invalid" and unreadable.verdict is None


def test_grm_training_rows_target_the_checker_verdict(data_dir):
    from fapo.testbed.warmstart import training_rows

    rows = training_rows(data_dir, "grm")
    critic = read_jsonl(data_dir / "critic_train.jsonl")
    for row, source in zip(rows, critic, strict=True):
        assert row["prompt"] == grm_messages(source["problem"], source["steps"], source["ground_truth"])
        assert parse_verdict(row["completion"][0]["content"], len(source["steps"])) == source["label"]
    policy = training_rows(data_dir, "policy", limit=3)
    assert len(policy) == 3 and set(policy[0]) == {"prompt", "completion"}


def test_cache_key_follows_config_and_data(data_dir, tmp_path):
    import shutil

    from fapo.testbed.warmstart import cache_key, preset

    key = cache_key(data_dir, preset("policy"))
    assert key == cache_key(data_dir, preset("policy"))
    assert key != cache_key(data_dir, preset("policy", max_steps=7))
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    (copy / "sft_train.jsonl").write_text((data_dir / "sft_train.jsonl").read_text()[:-200])
    assert cache_key(copy, preset("policy")) != key


def test_warmstart_smoke_trains_measures_and_caches(data_dir, tmp_path):
    from fapo.testbed.warmstart import WarmstartConfig, warmstart

    config = WarmstartConfig(role="policy", layers=1, hidden=32, heads=2, vocab_size=320, max_steps=4, batch_size=8,
                             eval_problems=2, eval_samples=2)
    first = warmstart(data_dir, tmp_path / "policy", config)
    assert not first["cached"] and first["train"]["train_rows"] == SMALL.n_sft
    assert 0.0 <= first["eval"]["accuracy"] <= 1.0 and first["eval"]["rollouts"] == 4
    assert json.loads((tmp_path / "policy" / "config.json").read_text())["use_cache"] is True
    again = warmstart(data_dir, tmp_path / "policy", config)
    assert again["cached"] and again["eval"] == first["eval"]
    grm_config = WarmstartConfig(**{**config.__dict__, "role": "grm", "max_length": 512, "micro_batches": 2,
                                    "init_from": str(tmp_path / "policy")})
    grm = warmstart(data_dir, tmp_path / "grm", grm_config)
    assert grm["eval"]["rows"] == 2 and not grm["cached"]
    assert grm["train"]["parameters"] == first["train"]["parameters"]


def test_micro_batches_take_the_same_step_as_one_padded_batch(data_dir, tmp_path):
    """Length-sorted micro-batches (gradient accumulation) sum to the gradient of one padded batch."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from fapo.models import TinyModelConfig, make_tiny_model
    from fapo.testbed.warmstart import (
        WarmstartConfig,
        _seeded_trainer_class,
        _sft_config,
        tokenizer_corpus,
        training_rows,
    )

    model_dir = tmp_path / "init"
    make_tiny_model(model_dir, TinyModelConfig(layers=1, hidden=32, heads=2, vocab_size=320, phrase_tokens=True),
                    corpus=tokenizer_corpus(data_dir))
    rows = training_rows(data_dir, "grm", limit=8)  # one step's worth: both runs see the same 8 rows
    gradients, shapes = {}, {}

    class Grab(TrainerCallback):
        def __init__(self, micro_batches):
            self.micro_batches = micro_batches

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            gradients[self.micro_batches] = torch.cat([p.grad.flatten() for p in model.parameters()]).clone()

    for micro_batches in (1, 2):
        config = WarmstartConfig(role="grm", max_steps=1, batch_size=8, micro_batches=micro_batches, seed=5)
        args = _sft_config(config, tmp_path / f"mb{micro_batches}")
        trainer = _seeded_trainer_class()(
            model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
            args=args, train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(model_dir),
            callbacks=[Grab(micro_batches)])
        shapes[micro_batches] = [tuple(b["input_ids"].shape) for b in trainer.get_train_dataloader()]
        trainer.train()
        sampler = trainer.get_train_dataloader().batch_sampler
        if micro_batches > 1 and hasattr(args, "train_sampling_strategy"):
            assert type(sampler).__name__ == "BatchRebalanceSampler" and sampler.seed == 5
    assert len(shapes[1]) == 1 and len(shapes[2]) == 2 and sum(rows for rows, _ in shapes[2]) == 8
    assert sum(r * t for r, t in shapes[2]) < shapes[1][0][0] * shapes[1][0][1]  # less padding
    difference = (gradients[2] - gradients[1]).norm() / gradients[1].norm()
    assert difference < 1e-5


def test_micro_batches_must_divide_the_batch():
    from fapo.testbed.warmstart import WarmstartConfig

    with pytest.raises(ValueError, match="micro_batches"):
        WarmstartConfig(batch_size=16, micro_batches=3)


def test_score_verdicts_processbench_and_flawed_positive_metrics():
    from fapo.testbed.evaluate import score_verdicts

    rows = [{"label": -1, "final_answer_correct": True}, {"label": -1, "final_answer_correct": True},
            {"label": 2, "final_answer_correct": True}, {"label": 0, "final_answer_correct": False}]
    result = score_verdicts(rows, [-1, 1, 2, None])
    assert (result.acc_corr, result.acc_err, result.f1) == (0.5, 0.5, 0.5)
    assert (result.fpb_precision, result.fpb_recall) == (0.5, 1.0)
    assert result.fpb_f1 == pytest.approx(2 / 3) and result.invalid_share == 0.25


def test_cli_warmstart_reports_missing_data(tmp_path, capsys):
    from fapo.cli import main

    assert main(["testbed", "warmstart", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--role", "policy"]) == 2
    assert "testbed generate" in capsys.readouterr().err
