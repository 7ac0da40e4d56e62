"""The overridden model directory (`fapo.max_position_embeddings`) and the prompt limit (`fapo.max_prompt_length`),
on the tiny model: what transformers loads from the directory, and which rows survive the limit."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from fapo.train.config import ConfigError, FapoSettings
from fapo.train.launch_inputs import OVERRIDE_DIR, drop_long_prompts, overridden_model, prompt_lengths


def test_the_trained_model_loads_with_the_overridden_context(tiny_model_dir, tmp_path):
    """The trainer (and colocated vLLM, which reads the directory the trainer loaded from) see 32768 positions;
    the weights are the model's own, linked, not copied."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = FapoSettings(model=str(tiny_model_dir), train_data="x.jsonl", max_position_embeddings=32768)
    with ThreadPoolExecutor(4) as pool:  # every process of a launch prepares the same directory at once
        results = list(pool.map(lambda _: overridden_model(settings, tmp_path), range(4)))
    target = tmp_path / OVERRIDE_DIR
    assert {r.model for r in results} == {str(target)}
    assert AutoConfig.from_pretrained(target).max_position_embeddings == 32768
    assert json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"] == 4096
    assert (target / "model.safetensors").is_symlink()
    loaded = AutoModelForCausalLM.from_pretrained(target)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert loaded.config.max_position_embeddings == 32768
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), original.state_dict().values()))
    assert not list(target.glob(".config.json.*"))


def test_no_override_leaves_the_model_alone(tiny_model_dir, tmp_path):
    settings = FapoSettings(model=str(tiny_model_dir), train_data="x.jsonl")
    assert overridden_model(settings, tmp_path) is settings and not (tmp_path / OVERRIDE_DIR).exists()


def test_prompts_over_the_limit_are_dropped_and_counted(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"prompt": [{"role": "user", "content": "Add 3. " * n}]} for n in (1, 5, 40, 2)]
    lengths = prompt_lengths(tokenizer, rows)
    assert lengths[2] > lengths[1] > lengths[0]
    limit = lengths[1]
    said: list[str] = []
    kept = drop_long_prompts(rows, tokenizer, limit, said.append)
    assert kept == [rows[0], rows[1], rows[3]]
    assert said == [f"prompts over {limit} tokens dropped: 1 of 4 (longest kept {limit} tokens)"]
    assert drop_long_prompts(rows, tokenizer, None) is rows
    with pytest.raises(ConfigError, match="every one of 4 prompts is longer than 1 tokens"):
        drop_long_prompts(rows, tokenizer, 1)


def test_the_limits_are_fapo_keys_not_trl_ones(tmp_path):
    from fapo.train.config import parse_config

    base = {"fapo": {"model": "m", "train_data": "d.jsonl"}}
    with pytest.raises(ConfigError, match="TRL's GRPOConfig has none: write fapo.max_prompt_length"):
        parse_config({**base, "max_prompt_length": 2048})
    with pytest.raises(ConfigError, match="fapo.max_position_embeddings must be a whole number"):
        parse_config({"fapo": {**base["fapo"], "max_position_embeddings": 0}})
    settings = parse_config({"fapo": {**base["fapo"], "max_prompt_length": 2048,
                                      "max_position_embeddings": 32768}}).fapo
    assert (settings.max_prompt_length, settings.max_position_embeddings) == (2048, 32768)


def test_a_launch_trains_the_overridden_model_on_the_prompts_that_fit(memorised_policy_dir, tmp_path, capsys):
    """`fapo train policy` end to end on the CPU: the saved model has the overridden context, the long prompts
    were dropped and counted before training, and the preflight passed silently."""
    import yaml
    from transformers import AutoConfig

    from fapo.cli import main
    from test_train import POLICY_ANSWER, POLICY_PROBLEM, TRL_TINY

    data = tmp_path / "train.jsonl"
    long_problem = POLICY_PROBLEM + " Then add 0." * 40
    data.write_text("".join(json.dumps({"problem": p, "answer": POLICY_ANSWER}) + "\n"
                            for p in [POLICY_PROBLEM] * 16 + [long_problem] * 4))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TRL_TINY, "max_steps": 1, "save_steps": 100, "fapo": {
        "model": str(memorised_policy_dir), "train_data": str(data), "prompt_template": "{problem}",
        "oracle": "testbed", "answer_format": "strict", "verify_workers": 1,
        "max_prompt_length": 100, "max_position_embeddings": 8192}}))
    assert main(["train", "policy", "--config", str(config), "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "prompts over 100 tokens dropped: 4 of 20" in out and "FAIL" not in out
    assert AutoConfig.from_pretrained(tmp_path / "run" / "final").max_position_embeddings == 8192
    assert json.loads((memorised_policy_dir / "config.json").read_text())["max_position_embeddings"] == 4096
