"""Sampling k completions per prompt from a policy checkpoint: vLLM on a GPU, transformers otherwise.

`sample_completions` returns, for each chat prompt, k `Sample`s (text, generated tokens, whether the
length limit cut it). The transformers path reuses the local GenRM server's backend
(`fapo.serving.hf_backend.TransformersBackend`: chat template, left padding, one `generate` call per
batch, per-row temperature / top-p); vLLM is used when it is installed and CUDA is present.
torch, transformers and vLLM are imported only here and only when called. Knows nothing about
answers or judging.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Backend = Literal["auto", "vllm", "transformers"]


@dataclass(frozen=True)
class Sample:
    """One sampled completion."""

    text: str
    num_tokens: int
    """Generated tokens, the end-of-sequence token included when there is one."""
    truncated: bool
    """True when the completion hit `max_tokens` before ending."""


def choose_backend(requested: Backend = "auto") -> Literal["vllm", "transformers"]:
    """"vllm" when asked, or on "auto" when vLLM is installed and a CUDA device is present."""
    if requested == "transformers":
        return "transformers"
    has_vllm = importlib.util.find_spec("vllm") is not None
    if requested == "vllm":
        if not has_vllm:
            raise ValueError("--backend vllm: vLLM is not installed (pip install 'fapo[vllm]')")
        return "vllm"
    import torch

    return "vllm" if has_vllm and torch.cuda.is_available() else "transformers"


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled."""

    k: int = 16
    """Samples per problem."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy (then the k samples are identical)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 2048
    """Most generated tokens per sample; a sample cut there is "truncated"."""
    batch_size: int = 64
    """Most sequences (prompts × k) in one transformers `generate` call (vLLM schedules its own)."""
    seed: int = 0
    """Sampling seed."""
    backend: Backend = "auto"
    """"vllm", "transformers", or "auto" (vLLM when installed and CUDA is present)."""
    device: str | None = None
    """transformers device (default: CUDA when available, else CPU)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_tokens and batch_size must be >= 1")
        if self.backend not in ("auto", "vllm", "transformers"):
            raise ValueError(f"backend must be auto, vllm or transformers, got {self.backend!r}")


def sample_completions(
    model_dir: str, prompts: Sequence[list[dict[str, str]]], config: SamplingConfig, progress: bool = False
) -> tuple[list[list[Sample]], str]:
    """`config.k` samples for each chat prompt, and the backend that made them ("vllm" or "transformers")."""
    chosen = choose_backend(config.backend)
    if chosen == "vllm":
        return _sample_vllm(model_dir, prompts, config, progress), chosen
    return _sample_transformers(model_dir, prompts, config, progress), chosen


def _sample_vllm(
    model_dir: str, prompts: Sequence[list[dict[str, str]]], config: SamplingConfig, progress: bool
) -> list[list[Sample]]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, seed=config.seed)
    params = SamplingParams(n=config.k, temperature=config.temperature, top_p=config.top_p,
                            max_tokens=config.max_tokens, seed=config.seed)
    outputs = llm.chat(list(prompts), params, use_tqdm=progress)
    return [
        [Sample(o.text, len(o.token_ids), o.finish_reason == "length") for o in request.outputs]
        for request in outputs
    ]


def _sample_transformers(
    model_dir: str, prompts: Sequence[list[dict[str, str]]], config: SamplingConfig, progress: bool
) -> list[list[Sample]]:
    import torch
    from tqdm.auto import tqdm

    from fapo.serving.backend import GenerationRequest
    from fapo.serving.hf_backend import TransformersBackend

    backend = TransformersBackend.load(model_dir, device=config.device)
    torch.manual_seed(config.seed)  # one global stream: reproducible for the same batching
    per_call = max(1, config.batch_size // config.k)
    samples: list[list[Sample]] = []
    with tqdm(total=len(prompts), desc="sampling", unit="problem", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(prompts), per_call):
            requests = [
                GenerationRequest(messages=list(p), max_tokens=config.max_tokens, temperature=config.temperature,
                                  top_p=config.top_p, n=config.k)
                for p in prompts[start : start + per_call]
            ]
            for choices in backend.generate(requests):
                samples.append([Sample(c.text, c.completion_tokens, c.finish_reason == "length") for c in choices])
            bar.update(len(requests))
    return samples
