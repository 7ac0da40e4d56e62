"""The CUDA paths: model loading, GenRM serving, policy and GenRM training, evaluation sampling.

Marked `gpu` and skipped without a CUDA device (CI has none; `make test-gpu` on a GPU machine). Each
test leaves the device choice to the code's default, as a user on a GPU machine would, and checks that
the work really ran there.
"""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from test_train import _assert_trained, _assert_trained_grm, policy_config, read_jsonl, write_policy_data

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ON_GPU = {"use_cpu": False, "bf16": True}


def test_backend_defaults_to_cuda_in_bf16_and_samples_per_row(tiny_model_dir):
    from fapo.serving.backend import GenerationRequest
    from fapo.serving.hf_backend import TransformersBackend

    backend = TransformersBackend.load(str(tiny_model_dir))
    assert backend.model.device.type == "cuda" and backend.model.dtype == torch.bfloat16
    messages = [{"role": "user", "content": "Start with 3. Add 4."}]
    seeded = GenerationRequest(messages=messages, max_tokens=12, temperature=1.0, seed=7, n=2)
    mixed = [seeded,
             GenerationRequest(messages=messages, max_tokens=5, temperature=0.0),
             GenerationRequest(messages=[{"role": "user", "content": "Start with 12. Subtract 2. Add 9."}],
                               max_tokens=9, temperature=0.7, top_p=0.5)]
    first, second = backend.generate([seeded]), backend.generate([seeded])
    assert [c.text for c in first[0]] == [c.text for c in second[0]]  # seeded draws repeat on the GPU
    out = backend.generate(mixed)
    assert [len(choices) for choices in out] == [2, 1, 1]
    for request, choices in zip(mixed, out):
        assert all(0 < c.completion_tokens <= request.max_tokens for c in choices)
        assert all(c.finish_reason in ("stop", "length") for c in choices)


def test_serve_grm_defaults_to_cuda_and_judges_over_http(tiny_model_dir):
    from fapo.grm.client import Endpoint, JudgeConfig, JudgeItem
    from fapo.grm.judge import judge_sync
    from fapo.serving.launch import launch_subprocess

    with launch_subprocess(["--model", str(tiny_model_dir), "--port", "0", "--max-batch", "16"]) as server:
        config = JudgeConfig(endpoints=(Endpoint(server.url, "tiny"),), concurrency=16, max_tokens=8,
                             temperature=1.0, timeout=60.0, retries=1)
        items = [JudgeItem(problem=f"Start with {i}. Add 2.", steps=(f"{i} + 2 = {i + 2}", f"\\boxed{{{i + 2}}}"),
                           gold=str(i + 2)) for i in range(32)]
        judgements = judge_sync(items, config)
        output = server.output()
    assert "on cuda" in output and "bfloat16" in output, output
    assert len(judgements) == len(items)
    assert all(j.status in ("ok", "invalid") for j in judgements)  # a random model: verdicts or invalid text


class DeviceLog(TrainerCallback):
    """Records where the trained model's weights are at each step."""

    def __init__(self) -> None:
        self.devices: list[str] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.devices.append(next(model.parameters()).device.type)


def test_policy_training_on_cuda_with_the_oracle_over_http(memorised_policy_dir, tmp_path):
    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import load_oracle
    from fapo.train.runner import train_policy

    data = write_policy_data(tmp_path / "train.jsonl")
    seen = DeviceLog()
    with serve_in_thread(load_oracle("testbed")) as server:
        config = policy_config(memorised_policy_dir, data, ON_GPU, oracle=None, judge={"endpoints": [server.url]})
        result = train_policy(config, tmp_path / "run", callbacks=[seen])
    assert seen.devices == ["cuda"] * result.global_step
    metrics = _assert_trained(result, memorised_policy_dir)
    assert all(m["grm/errors"] == 0 for m in metrics if "loss" in m)
    assert any(m.get("grm/flawed_ratio") is not None for m in metrics)


def test_grm_training_on_cuda(tiny_model_dir, tmp_path):
    import json

    from fapo.grm.prompt import build_grm_prompt
    from fapo.train.config import parse_config
    from fapo.train.runner import train_grm
    from memorise import memorise
    from test_train import TRL_TINY

    # a GenRM that answers in three ways (right step, right "no error", no box), so rewards differ in a group
    row = {"id": "t-0", "problem": "Start with 2. Add 9. Subtract 9. Add 3.", "steps": ["2 + 3 = 5", "\\boxed{5}"],
           "final_answer_correct": True, "label": 0, "ground_truth": "5"}
    replies = ["Step 0 skips two operations. \\boxed{0}", "All steps are right. \\boxed{-1}", "\\boxed{1}"]
    prompt = build_grm_prompt(row["problem"], row["steps"], "5")
    model = memorise(tiny_model_dir, tmp_path / "grm0", [(prompt, r) for r in replies], steps=90)
    data = tmp_path / "critic.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for _ in range(8)))
    seen = DeviceLog()
    config = parse_config({**TRL_TINY, **ON_GPU, "fapo": {"model": str(model), "train_data": str(data)}})
    result = train_grm(config, tmp_path / "run", callbacks=[seen])
    assert seen.devices == ["cuda"] * result.global_step
    _assert_trained_grm(result, model)
    assert len(read_jsonl(tmp_path / "run" / "critiques.jsonl")) == 2 * 16


def test_evaluation_samples_on_cuda(memorised_policy_dir):
    from conftest import policy_case
    from fapo.eval.generation import SamplingConfig, sample_completions
    from fapo.verify import verify

    problem, answer, _ = policy_case()
    prompts = [[{"role": "user", "content": problem}]] * 3
    samples, backend = sample_completions(str(memorised_policy_dir), prompts,
                                          SamplingConfig(k=8, max_tokens=60, backend="auto", seed=0))
    assert backend in ("transformers", "vllm")
    assert [len(s) for s in samples] == [8, 8, 8]
    # the memorised policy writes one of its three solutions; two of them box the right answer
    assert any(verify(s.text, answer).correct for row in samples for s in row)
