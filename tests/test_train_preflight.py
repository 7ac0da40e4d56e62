"""`fapo train ... --dry-run`: the paper's 7B config checked against a model directory that mimics
Qwen2.5-Math-7B (its config.json, 4096 positions, its chat template; no weights), the recipe's verl-format
parquet rows, a live `serve-grm` judge and a stand-in for vLLM's /v1/models over loopback HTTP."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from fapo.cli import main
from fapo.serving.launch import serve_in_thread
from fapo.serving.server import load_oracle

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "qwen2.5-math-7b-fapo.yaml"

QWEN25_MATH_7B = {  # Qwen/Qwen2.5-Math-7B's config.json (the fields a dry run reads and their neighbours)
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
    "intermediate_size": 18944, "max_position_embeddings": 4096, "max_window_layers": 28, "model_type": "qwen2",
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_cache": True, "use_mrope": False, "use_sliding_window": False, "vocab_size": 152064,
}
QWEN25_MATH_TEMPLATE = (  # Qwen2.5-Math's chat template without its tool branch: the default system prompt
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within "
    "\\\\boxed{}.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
BOXED = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(scope="module")
def math7b_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Qwen2.5-Math-7B's config.json and chat template with the tiny model's tokenizer; no weights."""
    out = tmp_path_factory.mktemp("qwen2.5-math-7b")
    (out / "config.json").write_text(json.dumps(QWEN25_MATH_7B))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, out / name)
    (out / "chat_template.jinja").write_text(QWEN25_MATH_TEMPLATE)
    return out


def dapo_rows(shared_data: Path) -> list[dict]:
    return [json.loads(line) for line in (shared_data / "dapo_math_sample" / "dapo_eval64.jsonl").open()]


def write_verl_parquet(shared_data: Path, path: Path) -> Path:
    """The recipe's layout (verl-recipe fapo/prepare_fapo_data.py: chat prompt with the \\boxed{} instruction,
    reward_model.ground_truth, extra_info.split/index/question), written with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"data_source": "math-dapo", "prompt": [{"role": "user", "content": r["prompt"].strip() + BOXED}],
             "ability": "Math", "reward_model": {"style": "rule", "ground_truth": r["answer"]},
             "extra_info": {"split": "train", "index": i, "question": r["prompt"]}}
            for i, r in enumerate(dapo_rows(shared_data))]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_flat_jsonl(shared_data: Path, path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "answer": r["answer"]}) + "\n"
                            for r in dapo_rows(shared_data)))
    return path


@contextmanager
def vllm_models(name: str, max_model_len: int, root: str | None = None):
    """A stand-in for vLLM's `GET /v1/models` (the fields vLLM 0.x answers with), on a free loopback port."""
    body = json.dumps({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "vllm",
                                                    "root": root or name, "max_model_len": max_model_len}]}).encode()

    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/v1/models"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if ok else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def paper_launch(math7b_dir: Path, judge_limit: int = 16384):
    """The 7B config's servers, live: `fapo serve-grm --oracle testbed` as FAPO-GenRM-4B and the policy's
    vLLM server (stand-in) serving 32768 tokens."""
    with serve_in_thread(load_oracle("testbed"), served_model_name="FAPO-GenRM-4B", max_tokens_limit=judge_limit,
                         max_request_tokens=32768) as judge, \
            vllm_models(str(math7b_dir), 32768) as rollout:
        yield ["--set", f"fapo.judge.endpoints=[{judge.url}]", "--set", f"vllm_server_base_url={rollout}"]


def dry_run(config: Path, *argv: str) -> list[str]:
    return ["train", "policy", "--config", str(config), "--dry-run", "--skip-packages", *argv]


FORMATS = ["verl", "flat"]


def data_args(fmt: str, shared_data: Path, tmp_path: Path) -> list[str]:
    if fmt == "verl":
        from fapo.train import data

        if not hasattr(data, "policy_row"):
            pytest.skip("this tree's fapo.train.data does not read verl-format rows yet")
        return ["--set", f"fapo.train_data={write_verl_parquet(shared_data, tmp_path / 'fapo-train-boxed.parquet')}"]
    return ["--set", f"fapo.train_data={write_flat_jsonl(shared_data, tmp_path / 'dapo.jsonl')}",
            "--set", "fapo.problem_field=prompt", "--set", "fapo.answer_field=answer"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_paper_config_fails_on_a_4096_context_and_passes_with_its_override(fmt, math7b_dir, shared_data,
                                                                                tmp_path, capsys):
    """Done-when of the dry run: one line about the context without the override, 16 optimizer steps per
    generation batch on 8 processes and exit 0 with it."""
    data = data_args(fmt, shared_data, tmp_path)
    with paper_launch(math7b_dir) as servers:
        args = dry_run(PAPER, "--world-size", "8", "--set", f"fapo.model={math7b_dir}", *data, *servers)
        assert main(args + ["--set", "fapo.max_position_embeddings=null"]) == 1
        failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
        assert len(failed) == 1 and failed[0].startswith("FAIL context: the model's context is 4096 tokens, a "
                                                         "sequence needs 10240 = 2048 prompt"), failed
        assert "fapo.max_position_embeddings: 32768" in failed[0]
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.rstrip().endswith("dry run: a launch would start")
    assert ("OK   schedule: schedule (8 processes): 512 prompts x 8 = 4096 completions per generation batch; "
            "16 optimizer steps per generation batch (1 pass), each on 32 prompts = 256 completions") in out
    assert "context 32768 tokens (fapo.max_position_embeddings (config.json says 4096))" in out
    assert "OK   context: 32768 tokens >= 10240 = 2048 prompt (fapo.max_position_embeddings" not in out
    assert "OK   context: 32768 tokens >= 10240 = 2048 prompt (fapo.max_prompt_length)" in out
    prompt = next(line for line in out.splitlines() if line.startswith("NOTE prompt:"))
    assert "<|im_start|>system\\nPlease reason step by step" in prompt and "<|im_start|>assistant" in prompt
    # the template's default system prompt and the row's (verl) or fapo's (flat) instruction, as in the recipe
    assert prompt.count("\\\\boxed{}") == 2
    assert "of 64 over, dropped at launch" in out
    judge = next(line for line in out.splitlines() if line.startswith("NOTE judge:"))
    assert "serves 'FAPO-GenRM-4B' and reports no context" in judge and "max_tokens 16384" in judge


def test_the_dry_run_names_each_server_that_cannot_take_the_launch(math7b_dir, shared_data, tmp_path, capsys):
    """serve-grm's default max_tokens limit (8192) under the recipe's 16384, a vLLM GenRM whose context cannot
    hold a longest rollout's prompt plus 16384 (README's old --max-model-len 20480), a wrong served name, a
    dead endpoint and a rollout server at 4096: each one line naming the fix."""
    data = data_args("flat", shared_data, tmp_path)
    with paper_launch(math7b_dir, judge_limit=8192) as servers, \
            vllm_models("FAPO-GenRM-4B", 20480) as short, vllm_models("genrm", 65536) as renamed, \
            vllm_models(str(math7b_dir), 4096) as rollout:
        judges = f"fapo.judge.endpoints=[{servers[1].split('[')[1][:-1]},{short}/v1,{renamed}/v1,http://127.0.0.1:9/v1]"
        code = main(dry_run(PAPER, "--world-size", "8", "--set", f"fapo.model={math7b_dir}", *data, *servers,
                            "--set", judges, "--set", f"vllm_server_base_url={rollout}"))
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    failed = [line for line in out if line.startswith("FAIL")]
    assert len(failed) == 5, failed
    assert any("accepts max_tokens <= 8192, fapo.judge.max_tokens is 16384" in line for line in failed)
    context = next(line for line in failed if line.startswith(f"FAIL judge: {short}/v1: context 20480 < "))
    assert "restart it with --max-model-len" in context
    assert any(f"{renamed}/v1 serves ['genrm'], not 'FAPO-GenRM-4B'" in line for line in failed)
    assert any("http://127.0.0.1:9/v1: unreachable" in line and "start the GenRM server" in line for line in failed)
    vllm = next(line for line in failed if line.startswith("FAIL vllm:"))
    assert "max_model_len 4096 < 10240" in vllm and "--hf-overrides '{\"max_position_embeddings\": 32768}'" in vllm


def test_seven_trainer_gpus_need_another_generation_batch(math7b_dir, shared_data, tmp_path, capsys):
    """4096 is not divisible by 2 x 7; README's 7-GPU schedule (4032 = 504 prompts x 8, 18 micro-batches per
    step) gives 16 optimizer steps of 252 completions."""
    data = data_args("flat", shared_data, tmp_path)
    with paper_launch(math7b_dir) as servers:
        base = dry_run(PAPER, "--world-size", "7", "--set", f"fapo.model={math7b_dir}", *data, *servers)
        assert main(base) == 1
        assert "FAIL schedule: generation_batch_size (4096) must be divisible" in capsys.readouterr().out
        assert main(base + ["--set", "generation_batch_size=4032", "--set", "gradient_accumulation_steps=18"]) == 0
    assert ("504 prompts x 8 = 4032 completions per generation batch; 16 optimizer steps per generation batch "
            "(1 pass), each on 31.5 prompts = 252 completions") in capsys.readouterr().out


def test_packages_the_launch_imports_are_named_with_the_install_line(math7b_dir, shared_data, tmp_path, capsys):
    """report_to: wandb, DeepSpeed from the accelerate config and vLLM: missing ones fail with the pip line."""
    import importlib.util

    data = data_args("flat", shared_data, tmp_path)
    with paper_launch(math7b_dir) as servers:
        code = main(["train", "policy", "--config", str(PAPER), "--dry-run", "--accelerate-config",
                     str(REPO / "configs" / "accelerate" / "zero3-8gpu.yaml"), "--set", f"fapo.model={math7b_dir}",
                     *data, *servers])
    out = capsys.readouterr().out
    assert "schedule (8 processes)" in out  # the world size came from the accelerate config
    for module, line in (("deepspeed", "deepspeed is not installed (the accelerate config's distributed_type: "
                                       "DEEPSPEED): pip install 'fapo[gpu]'"),
                         ("wandb", "wandb is not installed (report_to: wandb): pip install 'fapo[gpu]'"),
                         ("vllm", "vllm is not installed (use_vllm: true): pip install 'fapo[vllm]'")):
        assert (line in out) == (importlib.util.find_spec(module) is None), module
    assert code == (1 if "FAIL packages" in out else 0)


def test_a_real_launch_stops_on_the_same_checks_before_loading_the_model(math7b_dir, shared_data, tmp_path, capsys):
    data = data_args("flat", shared_data, tmp_path)
    """Servers started with the launch may still be loading: a real launch asks again for vllm_server_timeout."""
    import time

    started = time.monotonic()
    code = main(["train", "policy", "--config", str(PAPER), "--output", str(tmp_path / "run"),
                 "--set", f"fapo.model={math7b_dir}", "--set", "fapo.max_position_embeddings=null", *data,
                 "--set", "vllm_server_base_url=http://127.0.0.1:9", "--set", "vllm_server_timeout=5"])
    captured = capsys.readouterr()
    assert code == 2 and "FAIL context: the model's context is 4096 tokens" in captured.err
    assert "waiting up to 5 s (vllm_server_timeout) for http://127.0.0.1:9/v1" in captured.out
    assert 3 < time.monotonic() - started < 60
    assert "FAIL vllm: rollout server http://127.0.0.1:9: unreachable" in captured.err
    assert "FAIL judge: http://genrm-0:8001/v1: unknown host" in captured.err and not (tmp_path / "run").exists()


QWEN3_4B_INSTRUCT = {  # Qwen/Qwen3-4B-Instruct-2507's config.json: the fields a dry run reads
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "max_position_embeddings": 262144,
    "rope_theta": 5000000, "hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True,
}


def test_the_genrm_config_on_the_authors_critic_rows(tiny_model_dir, shared_data, tmp_path, capsys):
    """`fapo train grm --dry-run` on the FAPO-Critic example rows (verl format) for 8 processes: the recipe's
    8192 critiques per generation batch in 16 steps of 32 prompts, critic prompts against the 5,120 limit."""
    model = tmp_path / "qwen3-4b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(QWEN3_4B_INSTRUCT))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / name, model / name)
    data = shared_data / "fapo_critic_example" / "fapo-critic.jsonl"
    with vllm_models(str(model), 13312) as rollout:
        code = main(["train", "grm", "--config", str(REPO / "configs" / "qwen3-4b-genrm.yaml"), "--dry-run",
                     "--skip-packages", "--world-size", "8", "--set", f"fapo.model={model}",
                     "--set", f"fapo.train_data={data}", "--set", f"vllm_server_base_url={rollout}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ("512 prompts x 16 = 8192 completions per generation batch; 16 optimizer steps per generation batch "
            "(1 pass), each on 32 prompts = 512 completions") in out
    assert "fields data_source, prompt, ability, reward_model.ground_truth" in out
    assert "limit fapo.max_prompt_length 5120" in out and "OK   context: 262144 tokens >= 13312" in out
    assert "max_model_len 13312" in out and "judge" not in out


def test_a_dry_run_lists_every_problem_at_once(tmp_path, capsys):
    """A missing model directory and a missing training file are both reported, with what to do."""
    code = main(dry_run(PAPER, "--set", f"fapo.model={tmp_path / 'nope'}", "--set",
                        f"fapo.train_data={tmp_path / 'fapo-train-boxed.parquet'}", "--set", "use_vllm=false",
                        "--set", "fapo.judge.endpoints=[http://127.0.0.1:9/v1]"))
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert code == 1 and [line.split(":")[0] for line in failed] == ["FAIL model", "FAIL data", "FAIL judge"]
    assert f"directory not found: {tmp_path / 'nope'}" in failed[0] and "fapo data prepare writes it" in failed[1]


def test_the_async_trainer_dry_run_names_what_it_would_drop_and_its_staleness(math7b_dir, shared_data, tmp_path,
                                                                              capsys):
    data = data_args("flat", shared_data, tmp_path)
    with paper_launch(math7b_dir) as servers:
        base = ["train", "policy", "--config", str(PAPER), "--dry-run", "--skip-packages", "--trainer", "async",
                "--world-size", "7", "--set", f"fapo.model={math7b_dir}", *data, *servers]
        assert main(base) == 1
        trainer = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL trainer"))
        assert "delta: 10.0 (it has no dual clip)" in trainer and "generation_batch_size: 4096" in trainer
        assert main(base + ["--set", "delta=null", "--set", "generation_batch_size=null"]) == 0
    assert ("OK   trainer: AsyncGRPOTrainer, 7 processes; trains on rollouts up to max_staleness = 4 optimizer "
            "steps old") in capsys.readouterr().out
