"""The update schedule TRL derives from a config: hand-computed cases, TRL's own GRPOConfig as the
reference, and the official FAPO run scripts' schedule from each shipped paper config."""

from __future__ import annotations

from pathlib import Path

import pytest

from fapo.train.config import load_config
from fapo.train.schedule import effective_schedule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# verl-recipe fapo/run_fapo_7b.sh, run_baseline_7b.sh, run_fapo_genrm_train.sh: train_prompt_bsz=512,
# n_resp_per_prompt=8 (GenRM 16), train_prompt_mini_bsz=32, ppo_epochs 1 (verl's default).
RECIPE_SCHEDULE = {
    "qwen2.5-math-7b-fapo.yaml": {"prompts_per_generation": 512, "num_generations": 8},
    "qwen2.5-math-7b-grpo.yaml": {"prompts_per_generation": 512, "num_generations": 8},
    "qwen3-4b-genrm.yaml": {"prompts_per_generation": 512, "num_generations": 16},
}
RECIPE_MINI_BATCH_PROMPTS = 32


def test_a_hand_computed_schedule():
    raw = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "num_generations": 4,
           "steps_per_generation": 8, "num_iterations": 2}
    s = effective_schedule(raw, world_size=2)
    assert s.completions_per_generation == 4 * 2 * 8 == 64 and s.prompts_per_generation == 16
    assert s.optimizer_steps_per_generation == 8 * 2 / 2 == 8
    assert s.completions_per_optimizer_step == 4 * 2 * 2 == 16 and s.prompts_per_optimizer_step == 4
    assert s.describe() == ("schedule (2 processes): 16 prompts x 4 = 64 completions per generation batch; "
                            "8 optimizer steps per generation batch (2 passes), each on 4 prompts = 16 completions")


def test_trl_defaults_make_one_optimizer_step_per_generation_batch():
    s = effective_schedule({"per_device_train_batch_size": 16, "gradient_accumulation_steps": 4}, world_size=1)
    assert (s.num_generations, s.completions_per_generation, s.optimizer_steps_per_generation) == (8, 64, 1)


@pytest.mark.parametrize("raw", [
    {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2},
    {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "steps_per_generation": 6},
    {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "generation_batch_size": 64,
     "num_iterations": 3, "num_generations": 4},
    {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 4, "steps_per_generation": 1},
])
def test_agrees_with_trl_grpo_config(raw):
    """TRL resolves steps_per_generation / generation_batch_size itself (for its own world size, 1 here)."""
    from trl import GRPOConfig

    args = GRPOConfig(output_dir="/tmp/x", use_cpu=True, report_to="none", **raw)
    assert args.world_size == 1
    ours = effective_schedule(raw, world_size=1)
    assert (ours.steps_per_generation, ours.completions_per_generation) == (args.steps_per_generation,
                                                                           args.generation_batch_size)
    assert effective_schedule(args, world_size=1) == ours
    expected_steps = args.steps_per_generation * args.num_iterations / args.gradient_accumulation_steps
    assert ours.optimizer_steps_per_generation == expected_steps


@pytest.mark.parametrize(("raw", "world_size", "message"), [
    ({"per_device_train_batch_size": 3, "generation_batch_size": 16}, 2, "divisible by per_device_train_batch_size"),
    ({"per_device_train_batch_size": 2, "steps_per_generation": 3, "generation_batch_size": 16}, 2, "disagree"),
    ({"per_device_train_batch_size": 3, "num_generations": 4}, 1, "whole number of groups"),
    ({"per_device_train_batch_size": 8}, 0, "world_size"),
    ({"per_device_train_batch_size": 8, "num_generations": 1}, 1, "num_generations >= 2"),
])
def test_schedules_trl_would_refuse_are_errors(raw, world_size, message):
    with pytest.raises(ValueError, match=message):
        effective_schedule(raw, world_size)


@pytest.mark.parametrize("name", sorted(RECIPE_SCHEDULE))
def test_paper_configs_reproduce_the_recipe_schedule_on_8_gpus(name):
    recipe = RECIPE_SCHEDULE[name]
    s = effective_schedule(load_config(CONFIGS / name).trl, world_size=8)
    assert s.num_generations == recipe["num_generations"]
    assert s.prompts_per_generation == recipe["prompts_per_generation"]
    assert s.prompts_per_optimizer_step == RECIPE_MINI_BATCH_PROMPTS
    assert s.optimizer_steps_per_generation == recipe["prompts_per_generation"] / RECIPE_MINI_BATCH_PROMPTS == 16
    assert s.num_iterations == 1


@pytest.mark.parametrize("name", sorted(RECIPE_SCHEDULE))
@pytest.mark.parametrize("world_size", [4, 16, 32])
def test_the_configs_rule_for_other_gpu_counts_keeps_the_schedule(name, world_size):
    """The configs' comment: keep per_device x W x gradient_accumulation_steps = 32 prompts' completions."""
    trl = load_config(CONFIGS / name).trl
    completions_per_step = RECIPE_MINI_BATCH_PROMPTS * trl["num_generations"]
    accumulation = completions_per_step // (trl["per_device_train_batch_size"] * world_size)
    s = effective_schedule({**trl, "gradient_accumulation_steps": accumulation}, world_size)
    assert (s.prompts_per_generation, s.optimizer_steps_per_generation, s.prompts_per_optimizer_step) == (512, 16, 32)


def test_tiny_policy_config_makes_several_optimizer_steps_per_generation_batch():
    """Only then can the clip bind (docs/design.md §2). The tiny GenRM config (15 GenRM RL steps in the demo) still
    makes one optimizer step per generation batch."""
    s = effective_schedule(load_config(CONFIGS / "tiny-cpu-policy.yaml").trl, world_size=1)
    assert (s.optimizer_steps_per_generation, s.prompts_per_optimizer_step, s.prompts_per_generation) == (4, 2, 8)
