"""Training configs: YAML keys mirror TRL's GRPOConfig plus a fapo: section; typos are named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fapo.train.config import ConfigError, load_config, parse_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate_and_build_grpo_config(path):
    config = load_config(path)
    args = config.grpo_config(output_dir="/tmp/x", use_vllm=False, bf16=False, gradient_checkpointing=False)
    assert args.beta == 0.0 and args.loss_type == "dapo" and args.scale_rewards == "group"


# The official run scripts (verl-recipe fapo/run_fapo_7b.sh, run_baseline_7b.sh, run_fapo_genrm_train.sh) as
# TRL settings. verl steps its lr scheduler once per generation batch, so its lr_warmup_steps=10 is 10 x 16
# optimizer steps here, and its total_training_steps (200; GenRM 500) counts generation batches too.
RECIPE = {
    "learning_rate": 1e-6, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 10 * 16,
    "weight_decay": 0.1, "max_grad_norm": 1.0,  # optim.weight_decay, grad_clip
    "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0,  # top_p 1.0, top_k -1 (off in vLLM; 0 is off in TRL)
    "loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "delta": 10.0,  # token-mean, clip_ratio_c 10
    "beta": 0.0, "scale_rewards": "group", "num_iterations": 1,  # no KL loss or reward, GRPO advantages
    "max_completion_length": 8192, "mask_truncated_completions": False,  # truncated responses are trained on
}
PAPER_CONFIGS = {  # name: (num_generations, temperature, max_steps, penalty)
    "qwen2.5-math-7b-fapo.yaml": (8, 1.0, 200 * 16, 1.0),
    "qwen2.5-math-7b-grpo.yaml": (8, 1.0, 200 * 16, 0.0),
    "qwen3-4b-genrm.yaml": (16, 1.2, 500 * 16, None),
}


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_paper_recipe_values(name):
    config = load_config(CONFIGS[0].parent / name)
    args = config.grpo_config(output_dir="/tmp/x", use_vllm=False, bf16=False, gradient_checkpointing=False)
    for key, value in RECIPE.items():
        assert getattr(args, key) == value, key
    num_generations, temperature, max_steps, penalty = PAPER_CONFIGS[name]
    assert (args.num_generations, args.temperature, args.max_steps) == (num_generations, temperature, max_steps)
    # overlong_buffer_cfg: len 4096 (of max_response_length 8192), penalty_factor 1.0 = TRL's soft punishment
    assert config.fapo.overlong_buffer == 4096
    if penalty is not None:
        assert config.fapo.penalty == penalty


def test_the_grpo_baseline_differs_from_fapo_only_in_the_reward():
    fapo = load_config(CONFIGS[0].parent / "qwen2.5-math-7b-fapo.yaml")
    grpo = load_config(CONFIGS[0].parent / "qwen2.5-math-7b-grpo.yaml")
    assert fapo.fapo.judge_kind == "http" and grpo.fapo.judge_kind == "none"
    assert fapo.fapo.judge.model == "FAPO-GenRM-4B" and len(fapo.fapo.judge.endpoints) == 4
    assert grpo.trl == {**fapo.trl, "output_dir": grpo.trl["output_dir"]}
    assert {k: v for k, v in vars(grpo.fapo).items() if k not in ("penalty", "judge")} == \
        {k: v for k, v in vars(fapo.fapo).items() if k not in ("penalty", "judge")}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"learnig_rate": 1e-6, "fapo": {"model": "m", "train_data": "d"}}, "did you mean 'learning_rate'"),
        ({"fapo": {"model": "m", "train_data": "d", "penalti": 1}}, "did you mean 'penalty'"),
        ({"fapo": {"train_data": "d"}}, "fapo.model is required"),
        ({"fapo": {"model": "m", "train_data": "d", "judge": "gpt"}}, "fapo.judge must be a mapping"),
        ({"fapo": {"model": "m", "train_data": "d", "judge": {"model": "g"}}}, "fapo.judge needs endpoints"),
        ({"fapo": {"model": "m", "train_data": "d", "judge": {"endpoints": ["http://a/v1"], "tie_brake": "clean"}}},
         "unknown key fapo.judge.tie_brake .did you mean 'tie_break'"),
        ({"fapo": {"model": "m", "train_data": "d", "judge": {"endpoints": ["http://a/v1"]}, "oracle": "testbed"}},
         "exclude each other"),
        ({"fapo": {"model": "m", "train_data": "d", "judge_endpoints": ["http://a/v1"]}}, "fapo.judge_endpoints is now fapo.judge.endpoints"),
        ({"fapo": {"model": "m", "train_data": "d", "penalty": -1}}, "penalty"),
    ],
)
def test_bad_configs_say_how_to_fix(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_set_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1.0e-6\nfapo:\n  model: m\n  train_data: d\n")
    config = load_config(path, ["learning_rate=3e-4", "fapo.penalty=0", "fapo.judge.endpoints=[http://a/v1]",
                                "fapo.judge.tie_break=clean", "fapo.judge.top_p=0.9", "fapo.judge.breaker_failures=2",
                                "fapo.judge.backoff_max=1.5", "fapo.judge.chat_template_kwargs={enable_thinking: false}"])
    assert config.trl["learning_rate"] == 3e-4
    judge = config.fapo.judge
    assert config.fapo.penalty == 0 and [e.url for e in judge.endpoints] == ["http://a/v1"]
    assert (judge.tie_break, judge.top_p, judge.breaker_failures, judge.backoff_max) == ("clean", 0.9, 2, 1.5)
    assert judge.retries == 3  # every knob left out keeps JudgeConfig's default: one source of defaults
    assert judge.chat_template_kwargs == {"enable_thinking": False}
    assert (judge.max_tokens, judge.temperature) == (16384, None)  # the recipe's budget and the server's decoding
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["penalty"])


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("fapo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("name", "builder"), [("tiny-cpu-policy.yaml", "tiny_policy_trl"), ("tiny-cpu-grm.yaml", "tiny_grm_trl")])
def test_tiny_configs_are_what_the_demo_runs(name, builder):
    from fapo.demo import config as demo_config

    shipped = load_config(Path(CONFIGS[0]).parent / name).trl
    demo = getattr(demo_config, builder)(steps=shipped["max_steps"], seed=shipped["seed"])
    assert {k: v for k, v in shipped.items() if k != "output_dir"} == demo


BAD_VALUES = [  # (YAML text, the error's start) — each a one-line error naming the key
    ("max_steps: -5\n", "max_steps must be a whole number >= 1"),
    ("learning_rate: fast\n", "learning_rate must be a number > 0, got 'fast'"),
    ("fapo:\n  verify_timeout: 0\n", "fapo.verify_timeout must be a number in (0, 600], got 0"),
    ("fapo:\n  judge:\n    endpoints: [http://a/v1]\n    timeout: -1\n", "fapo.judge: timeout must be a number in (0, 86400]"),
    ("fapo:\n  judge:\n    endpoints: [localhost:8000]\n", "fapo.judge: endpoint url 'localhost:8000' must look like"),
    ("fapo:\n  judge:\n    endpoints: [http://a/v1]\n    tie_break: maybe\n", "fapo.judge: tie_break must be"),
    ("fapo:\n  judge:\n    endpoints: [http://a/v1]\n    chat_template_kwargs: [x]\n",
     "fapo.judge.chat_template_kwargs must be a mapping"),
    ("fapo:\n  judge:\n    endpoints: [http://a/v1]\n    votes: two\n", "fapo.judge.votes must be a whole number"),
    ("fapo:\n  model: ./no/such/model\n", "fapo.model: directory not found: ./no/such/model"),
    ("- a\n- b\n", "a training config must be a YAML mapping (key: value lines), got list"),
    ("fapo:\n  penalty: abc\n", "fapo.penalty must be a number, got 'abc'"),
    ("fapo:\n  prompt_template: 5\n", "fapo.prompt_template must be a string, got 5"),
    ("fapo:\n  step_split: '('\n", 'fapo.step_split must be "paragraph", "line" or a regular expression'),
    ("fapo:\n  verify_timeout: 1.0e+300\n", "fapo.verify_timeout must be a number in (0, 600]"),
    ("fapo:\n  penalty: 1.0e+300\n", "fapo.penalty (λ) must be a number in [0, 1000]"),
    ("fapo:\n  judge:\n    endpoints: [http://a/v1]\n    breaker_cooldown: 1.0e+300\n",
     "fapo.judge: breaker_cooldown must be a number in [0, 3600]"),
]


def test_bad_values_fail_fast_before_trl_is_imported(tmp_path):
    """Each bad value: exit 2, one line naming the key and what it expects, well under a second, no TRL."""
    import ast
    import subprocess
    import sys

    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "p", "answer": "1"}\n')
    paths = []
    for i, (text, _) in enumerate(BAD_VALUES):
        base = {"fapo": {"model": str(tmp_path), "train_data": str(data)}, "output_dir": str(tmp_path / "out")}
        path = tmp_path / f"c{i}.yaml"
        if text.startswith("-"):
            path.write_text(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
            base["fapo"].update(raw.pop("fapo", {}))
            path.write_text(yaml.safe_dump({**base, **raw}))
        paths.append(str(path))
    script = (
        "import contextlib, io, sys, time\nfrom fapo.cli import main\n"
        f"for path in {paths!r}:\n"
        "    err = io.StringIO()\n    t = time.perf_counter()\n"
        "    with contextlib.redirect_stderr(err):\n        code = main(['train', 'policy', '--config', path])\n"
        "    print(code, round(time.perf_counter() - t, 3), repr(err.getvalue()))\n"
        "print('trl' in sys.modules, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert lines[-1] == "False False", done.stderr
    for (_, message), line in zip(BAD_VALUES, lines[:-1], strict=True):
        code, seconds, err = line.split(" ", 2)
        err = ast.literal_eval(err)
        assert code == "2" and float(seconds) < 1.0, line
        assert err.startswith("fapo train: error: " + message) and err.count("\n") == 1, (message, err)


def test_a_key_given_twice_is_an_error(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("fapo:\n  penalty: 1.0\n  model: m\n  penalty: 0.0\n")
    with pytest.raises(ConfigError, match="key 'penalty' is given twice"):
        load_config(path)


def test_an_output_dir_that_is_a_file_or_unwritable_is_refused_before_work(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "p", "answer": "1"}\n')
    blocked = tmp_path / "ro"
    blocked.mkdir()
    blocked.chmod(0o500)
    outputs = [data] if os.geteuid() == 0 else [data, blocked / "run"]  # root may write anywhere
    try:
        for out in outputs:
            path = tmp_path / "c.yaml"
            path.write_text(f"output_dir: {out}\nfapo:\n  model: {tmp_path}\n  train_data: {data}\n")
            with pytest.raises(ConfigError, match="output_dir must be a directory this user can write"):
                load_config(path)
    finally:
        blocked.chmod(0o700)


def test_a_hub_model_missing_offline_is_a_config_error(tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "p", "answer": "1"}\n')
    path = tmp_path / "c.yaml"
    path.write_text(f"fapo:\n  model: fapo-tests/no-such-model\n  train_data: {data}\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="neither a directory nor in the local hub cache"):
        load_config(path, check_paths=True)
