"""`TransformersBackend`: text generation over a transformers causal LM, for the local GenRM server and for
policy sampling in evaluation (`fapo.eval.generation`).

Owns: chat templating (add_generation_prompt=True), left-padded batches, ONE `model.generate` call
per batch, per-row sampling parameters, finish reasons and token counts. Must not: know about HTTP,
queues or limits (`fapo.serving.server` does), or pretend to be fast — production GenRMs run on
vLLM/SGLang; this is for CPUs, tests and the demo.

Requests in one batch may ask for different temperatures, top-p, max_tokens and seeds. Instead of one
`generate` per parameter group, `generate` runs greedy and `RowSampler` (a logits processor) draws each
sampled row's next token itself, with that row's temperature, top-p and random generator, returning
logits in which only the drawn token survives; greedy rows (temperature 0) pass through untouched. A
row that reaches its own max_tokens is made to end (and is reported "length"), so the batch stops as
soon as every row is done. `n` choices are n rows of the same prompt. With a seed, choice j draws from
its own generator seeded `seed + j`, so a seeded request's text does not depend on what else is in its
batch (up to floating-point effects of padding).

`context_tokens` (the model's position limit) lets the server refuse prompts that do not fit, and
`interrupt()` ends a running `generate` at its next token (the server calls it when it stops). The
server counts prompt tokens in one thread while another generates: counting uses its own copy of the
tokenizer, so that it never waits for (or holds up) generation, whose tokenizer is used under a lock.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from fapo.serving.backend import Completion, GenerationRequest

# Every generation setting that makes transformers add a logits processor or change the search, at its
# neutral value. Passed to each `generate` call, they override a checkpoint's generation_config (e.g. the
# repetition_penalty instruct models ship), which would otherwise apply: only RowSampler shapes the
# next-token distribution, as TRL samples rollouts without those processors.
PLAIN_DECODING: dict[str, Any] = {
    "do_sample": False, "num_beams": 1, "num_return_sequences": 1, "temperature": 1.0, "top_k": None,
    "top_p": 1.0, "min_p": None, "typical_p": 1.0, "top_h": None, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "sequence_bias": None, "min_length": 0,
    "min_new_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "exponential_decay_length_penalty": None, "guidance_scale": None,
    "renormalize_logits": False, "remove_invalid_values": False, "watermarking_config": None,
}


class RowSampler(LogitsProcessor):
    """Per-row temperature / top-p / seed sampling and per-row length limits inside a greedy `generate`."""

    def __init__(
        self,
        rows: Sequence[GenerationRequest],
        choice_index: Sequence[int],
        prompt_len: int,
        eos_id: int,
        device: torch.device | str,
    ) -> None:
        temperature = [r.temperature for r in rows]
        self.prompt_len = prompt_len
        self.eos_id = eos_id
        self.temperature = torch.tensor(temperature, dtype=torch.float32, device=device)  # (R,)
        self.top_p = torch.tensor([r.top_p for r in rows], dtype=torch.float32, device=device)  # (R,)
        self.max_tokens = torch.tensor([r.max_tokens for r in rows], device=device)  # (R,)
        # Decided on the host, so that a GPU does not synchronise at every step:
        self.any_top_p = any(r.top_p < 1 for r in rows)
        self.first_end = min(r.max_tokens for r in rows)  # no row needs ending before this step
        sampled = [i for i, t in enumerate(temperature) if t > 0]
        self.sampled_rows = torch.tensor(sampled, dtype=torch.long, device=device)  # (S,)
        # (position among sampled rows, generator) for rows that carry a seed
        self.seeded = [
            (k, torch.Generator(device=device).manual_seed(rows[i].seed + choice_index[i]))
            for k, i in enumerate(sampled)
            if rows[i].seed is not None
        ]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids (R, T), scores (R, V) float32 logits of the next token
        step = input_ids.shape[1] - self.prompt_len  # tokens generated so far
        if self.sampled_rows.numel():
            rows = self.sampled_rows
            probs = torch.softmax(scores[rows] / self.temperature[rows, None], dim=-1)  # (S, V)
            if self.any_top_p:
                probs = keep_top_p(probs, self.top_p[rows])
            chosen = self._draw(probs)  # (S,)
            only_chosen = torch.full_like(probs, float("-inf")).scatter_(1, chosen[:, None], 0.0)
            scores[rows] = only_chosen
        if step >= self.first_end:
            ended = self.max_tokens <= step  # (R,) rows past their own max_tokens: make them stop
            scores[ended] = float("-inf")
            scores[ended, self.eos_id] = 0.0
        return scores

    def _draw(self, probs: torch.Tensor) -> torch.Tensor:
        chosen = torch.multinomial(probs, 1).squeeze(1)  # (S,) unseeded rows use the global RNG
        for k, generator in self.seeded:
            chosen[k] = torch.multinomial(probs[k], 1, generator=generator)[0]
        return chosen


def keep_top_p(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Nucleus filter: zero the tokens outside the smallest set whose mass reaches top_p (per row).

    probs (S, V), top_p (S,). The most likely token is always kept. Rows are not renormalised
    (`torch.multinomial` does not need it).
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (S, V)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (S, V) mass of strictly more likely tokens
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p[:, None], 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def completion_from_ids(
    ids: Sequence[int], max_tokens: int, eos_ids: set[int], decode: Callable[[list[int]], str]
) -> Completion:
    """Turn one row of generated ids into a Completion.

    "stop" when an end-of-sequence token comes within the first `max_tokens` tokens (it counts as a
    completion token, as in vLLM); otherwise "length" with the first `max_tokens` tokens. Anything
    after (padding, a forced end) is ignored.
    """
    ids = list(ids[:max_tokens])
    for k, token in enumerate(ids):
        if token in eos_ids:
            return Completion(text=decode(ids[:k]), finish_reason="stop", completion_tokens=k + 1)
    return Completion(text=decode(ids), finish_reason="length", completion_tokens=len(ids))


class _Interrupted(StoppingCriteria):
    """Stops every row once the backend's interrupt counter has moved past the value it started with."""

    def __init__(self, backend: TransformersBackend, started_at: int) -> None:
        self.backend = backend
        self.started_at = started_at

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        stop = self.backend._interrupts != self.started_at
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class TransformersBackend:
    """A `CompletionBackend` over a transformers causal LM and its tokenizer (chat template required)."""

    def __init__(self, model, tokenizer, model_name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.eos_ids = _eos_ids(model, tokenizer)
        if not self.eos_ids:
            raise ValueError(f"{model_name}: neither the tokenizer nor the generation config names an eos token")
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{model_name}: the tokenizer has no pad token (load it with fapo.models.load_model)")
        self.context_tokens: int | None = getattr(model.config, "max_position_embeddings", None)
        """Most tokens (prompt plus generated) the model can attend over; None when the config does not say."""
        self._tokenizer_lock = threading.Lock()
        self._counting_tokenizer = copy.deepcopy(tokenizer)  # used by the counting thread only
        self._interrupts = 0

    @classmethod
    def load(cls, path: str, device: str | None = None, model_name: str | None = None) -> TransformersBackend:
        """Load with `fapo.models.load_model`: CUDA in bf16 when available (or asked), else CPU in fp32."""
        from fapo.models import load_model

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
        model, tokenizer = load_model(path, device=device, dtype=dtype)
        return cls(model, tokenizer, model_name or str(path))

    def render(self, messages: list[dict[str, str]], chat_template_kwargs: dict[str, Any] | None = None) -> str:
        """The prompt text: the chat template (with the request's template arguments) with the assistant turn opened."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                  **(chat_template_kwargs or {}))

    def count_prompt_tokens(self, messages: list[dict[str, str]],
                            chat_template_kwargs: dict[str, Any] | None = None) -> int:
        """Prompt length in tokens, rendered as `render` does; called from one counting thread at a time, with a
        tokenizer of its own, never under generation's lock."""
        tokenizer = self._counting_tokenizer
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                             chat_template=self.tokenizer.chat_template, **(chat_template_kwargs or {}))
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def interrupt(self) -> None:
        """End any `generate` running now at its next token (rows so far come back as "length")."""
        self._interrupts += 1

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """One `model.generate` call for the whole batch: request i's n choices are n rows."""
        owners = [i for i, r in enumerate(requests) for _ in range(r.n)]  # (R,) request of each row
        choice_index = [j for r in requests for j in range(r.n)]
        started_at = self._interrupts
        with self._tokenizer_lock:
            prompts = [self.render(r.messages, r.chat_template_kwargs) for r in requests]
            batch = self.tokenizer(
                [prompts[i] for i in owners], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.model.device)
        prompt_len = batch["input_ids"].shape[1]
        rows = [requests[i] for i in owners]
        sampler = RowSampler(rows, choice_index, prompt_len, min(self.eos_ids), self.model.device)
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                **PLAIN_DECODING,
                max_new_tokens=max(r.max_tokens for r in requests),
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([_Interrupted(self, started_at)]),
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.tokenizer.pad_token_id,
            )  # (R, prompt_len + new)
        generated = output[:, prompt_len:].tolist()
        completions: list[list[Completion]] = [[] for _ in requests]
        with self._tokenizer_lock:
            for i, ids in zip(owners, generated, strict=True):
                completions[i].append(completion_from_ids(ids, requests[i].max_tokens, self.eos_ids, self._decode))
        return completions

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _eos_ids(model, tokenizer) -> set[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        configured = [configured]
    ids = set(configured or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
