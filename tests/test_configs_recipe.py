"""The paper configs hold the recipe's values: each value README calls the recipe's is checked here against the
number in verl-recipe's run scripts (github.com/verl-project/verl-recipe, commit
48ea0a797fa29867ea0ad92aff7d284eec7d4be3, directory fapo/), cited by file and line. What differs is README's
table "Where a run differs from the recipe", not here."""

from __future__ import annotations

from pathlib import Path

import pytest

from fapo.train.config import load_config
from fapo.train.schedule import effective_schedule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

POLICY_RECIPE = {  # run_fapo_7b.sh (run_baseline_7b.sh has the same lines but for the reward and the GenRM)
    "train_prompt_bsz": 512,            # line 25
    "n_resp_per_prompt": 8,             # line 26
    "train_prompt_mini_bsz": 32,        # line 27
    "clip_ratio_low": 0.2,              # line 14
    "clip_ratio_high": 0.28,            # line 15
    "clip_ratio_c": 10.0,               # line 81
    "max_prompt_length": 2048,          # line 17, with data.filter_overlong_prompts=True (line 71)
    "max_response_length": 8192,        # line 18
    "overlong_buffer_len": 4096,        # lines 19-20
    "overlong_penalty_factor": 1.0,     # line 21
    "loss_agg_mode": "token-mean",      # line 23
    "kl": 0.0,                          # lines 9-12: no KL in reward or loss
    "temperature": 1.0,                 # line 45
    "top_p": 1.0,                       # line 46
    "top_k": -1,                        # line 47 (vLLM's "no top-k")
    "max_position_embeddings": 32768,   # line 83: +actor_rollout_ref.model.override_config.max_position_embeddings
    "lr": 1e-6,                         # line 94
    "lr_warmup_steps": 10,              # line 95 (verl steps: generation batches)
    "weight_decay": 0.1,                # line 96
    "grad_clip": 1.0,                   # line 101
    "total_training_steps": 200,        # line 145
    "val_temperature": 1.0,             # line 111 (val_kwargs.temperature=${temperature})
    "val_top_p": 0.7,                   # line 48
}
JUDGE_RECIPE = {  # reward_fn_reasoning.py
    "max_new_tokens": 16384,            # line 72: GRM_SAMPLING_PARAMS
    "penalty": 1.0,                     # line 74: FLAWED_REWARD_PENALTY
}
GENRM_RECIPE = {  # run_fapo_genrm_train.sh
    "train_prompt_bsz": 512,            # line 25
    "n_resp_per_prompt": 16,            # line 26
    "train_prompt_mini_bsz": 32,        # line 27
    "max_prompt_length": 5120,          # line 17, with data.filter_overlong_prompts=True (line 71)
    "max_response_length": 8192,        # line 18
    "overlong_buffer_len": 4096,        # line 20
    "temperature": 1.2,                 # line 44
    "top_p": 1.0,                       # line 45
    "lr": 1e-6,                         # line 93
    "lr_warmup_steps": 10,              # line 94
    "weight_decay": 0.1,                # line 95
    "grad_clip": 1.0,                   # line 100
    "clip_ratio_c": 10.0,               # line 81
    "save_freq": 10,                    # line 133
    "total_training_steps": 500,        # line 135
}


def shared_checks(config, recipe: dict, world_size: int = 8) -> None:
    """The values both run scripts set the same way, in TRL's terms."""
    trl, fapo = config.trl, config.fapo
    schedule = effective_schedule(trl, world_size)
    assert schedule.num_generations == recipe["n_resp_per_prompt"]
    assert schedule.prompts_per_generation == recipe["train_prompt_bsz"]
    assert schedule.prompts_per_optimizer_step == recipe["train_prompt_mini_bsz"]
    per_batch = recipe["train_prompt_bsz"] // recipe["train_prompt_mini_bsz"]
    assert schedule.optimizer_steps_per_generation == per_batch == 16 and trl["num_iterations"] == 1
    assert trl["epsilon"] == recipe.get("clip_ratio_low", 0.2) and trl["epsilon_high"] == 0.28
    assert trl["delta"] == recipe["clip_ratio_c"]
    assert trl["loss_type"] == "dapo"  # TRL's token-mean over the optimizer step's tokens
    assert trl["beta"] == 0.0
    assert trl["max_completion_length"] == recipe["max_response_length"]
    assert fapo.max_prompt_length == recipe["max_prompt_length"]
    assert fapo.overlong_buffer == recipe["overlong_buffer_len"]  # factor 1: TRL's soft overlong punishment
    assert trl["temperature"] == recipe["temperature"] and trl["top_p"] == recipe["top_p"]
    assert trl["top_k"] == 0  # TRL's "no top-k", the recipe's -1
    assert trl["learning_rate"] == recipe["lr"]
    assert trl["lr_scheduler_type"] == "constant_with_warmup"
    assert trl["warmup_steps"] == recipe["lr_warmup_steps"] * per_batch
    assert trl["weight_decay"] == recipe["weight_decay"] and trl["max_grad_norm"] == recipe["grad_clip"]
    assert trl["max_steps"] == recipe["total_training_steps"] * per_batch
    assert trl["scale_rewards"] == "group"  # verl's GRPO advantage: (r - mean) / (std + eps) per group
    assert trl["mask_truncated_completions"] is False  # the recipe trains on truncated responses
    assert trl["vllm_importance_sampling_correction"] is False  # the recipe has no such correction


@pytest.mark.parametrize("name", ["qwen2.5-math-7b-fapo.yaml", "qwen2.5-math-7b-grpo.yaml"])
def test_the_7b_configs_are_the_recipes(name):
    config = load_config(CONFIGS / name)
    shared_checks(config, POLICY_RECIPE)
    assert config.fapo.max_position_embeddings == POLICY_RECIPE["max_position_embeddings"]
    assert config.fapo.model == "Qwen/Qwen2.5-Math-7B"


def test_the_fapo_config_judges_as_the_recipe():
    fapo = load_config(CONFIGS / "qwen2.5-math-7b-fapo.yaml").fapo
    assert fapo.penalty == JUDGE_RECIPE["penalty"]
    assert fapo.judge is not None and fapo.judge.max_tokens == JUDGE_RECIPE["max_new_tokens"]
    assert fapo.judge.votes == 1  # one critique per rollout


def test_the_grpo_config_is_the_baseline():
    """run_baseline_7b.sh: compute_score_baseline (line 124), no reward model."""
    fapo = load_config(CONFIGS / "qwen2.5-math-7b-grpo.yaml").fapo
    assert fapo.penalty == 0.0 and fapo.judge is None and fapo.oracle is None


def test_the_genrm_config_is_the_recipes():
    config = load_config(CONFIGS / "qwen3-4b-genrm.yaml")
    shared_checks(config, GENRM_RECIPE)
    assert config.trl["save_steps"] == GENRM_RECIPE["save_freq"] * 16
    assert config.fapo.model == "Qwen/Qwen3-4B-Instruct-2507"
