"""Tiny Qwen3 models and locally trained tokenizers, and the one loading path for any model.

`make_tiny_model` writes a randomly initialised Qwen3-architecture causal LM and a byte-level BPE
tokenizer trained here with `tokenizers` (digits split one per token, a Qwen-style chat template,
pad/eos tokens). Tests, the testbed and the demo use it instead of hub models. `load_model` is the
same `from_pretrained` path a user's Qwen/Llama checkpoint takes. Knows nothing about FAPO.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Qwen's chat format; `{% generation %}` marks assistant tokens for TRL's assistant-only loss.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of a tiny Qwen3 model."""

    layers: int = 2
    """Number of transformer layers."""
    hidden: int = 64
    """Hidden size; must be divisible by `heads`."""
    heads: int = 4
    """Attention heads (key/value heads are the same number)."""
    head_dim: int | None = None
    """Size of each head; None: hidden / heads. vLLM's CPU attention runs only head sizes 32, 64, 80, 96, 112,
    128, ... (`fapo.serving.vllm.CPU_HEAD_SIZES`): a model served by `serve-grm --engine vllm` on a CPU needs one."""
    vocab_size: int = 512
    """Target BPE vocabulary size, special tokens included (the trained size can be smaller)."""
    phrase_tokens: bool = False
    """Let BPE merge across spaces, so a phrase that recurs in the corpus ("The answer is \\boxed{", a
    prompt's fixed instructions) becomes one token; digits stay one per token either way. For a
    tiny model trained on a narrow corpus this shortens rows a lot (testbed GenRM rows 391 -> ~165
    tokens) without making the arithmetic any coarser."""
    max_positions: int = 4096
    """Longest sequence the rotary embedding is set up for."""
    seed: int = 0
    """Seed of the random initialisation."""

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.hidden < 8 or self.heads < 1 or self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be >= 8 and divisible by heads ({self.heads})")
        if self.head_dim is None and (self.hidden // self.heads) % 2:
            raise ValueError(f"hidden/heads = {self.hidden // self.heads} must be even (rotary embedding)")
        if self.head_dim is not None and (self.head_dim < 2 or self.head_dim % 2):
            raise ValueError(f"head_dim must be an even number >= 2 (rotary embedding), got {self.head_dim}")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size must be >= 300 (256 byte symbols + specials), got {self.vocab_size}")


def default_corpus() -> list[str]:
    """A small built-in corpus of math and critique text for training a tokenizer."""
    from fapo.grm.prompt import build_grm_prompt

    words = (
        "Start with the number. Add subtract multiply by divide then result is so the answer "
        "Let us compute step each paragraph the earliest error occurs final answer correct wrong "
        "The following problem solution ground truth We have Therefore Thus Since Hence"
    )
    lines = [words, "\\boxed{-1} \\boxed{0} \\frac{1}{2} \\sqrt{2} x^2 + y^2 = z^2 $a+b$ \\cdot \\times \\pi"]
    for a in range(0, 40, 3):
        for b in range(1, 12, 4):
            lines.append(f"{a} + {b} = {a + b}. {a} - {b} = {a - b}. {a} * {b} = {a * b}. \\boxed{{{a * b}}}")
    lines.append(build_grm_prompt("Start with 3. Add 4.", ["3 + 4 = 7", "\\boxed{7}"], gold="7"))
    return lines * 4


def train_tokenizer(corpus: list[str], vocab_size: int = 512, phrase_tokens: bool = False):
    """Train a byte-level BPE tokenizer (digits one per token) and wrap it for transformers.

    With `phrase_tokens` BPE may merge across spaces (see `TinyModelConfig.phrase_tokens`).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    pieces = [pre_tokenizers.Digits(individual_digits=True),
              pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not phrase_tokens)]
    if phrase_tokens:
        # " =" stays its own token, so a result is still preceded by two tokens (" =", " ") as with word
        # tokens, where a tiny model computes it. Testbed policy accuracy: word tokens 0.59, phrase tokens
        # with " = " as one token 0.48, with it split 0.505 (one run each).
        pieces.insert(0, pre_tokenizers.Split(Regex(" ="), "isolated"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pieces)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=IM_END, bos_token=None, unk_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def make_tiny_model(out_dir: str | Path, config: TinyModelConfig | None = None, corpus: list[str] | None = None) -> dict[str, Any]:
    """Write a random Qwen3 causal LM + tokenizer to `out_dir`; return a summary dict."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    config = config or TinyModelConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus or default_corpus(), config.vocab_size, config.phrase_tokens)
    vocab = len(tokenizer)
    model_config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=config.hidden,
        intermediate_size=config.hidden * 3,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        head_dim=config.head_dim or config.hidden // config.heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(config.seed)
    model = Qwen3ForCausalLM(model_config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": vocab, **asdict(config)}
    (out / "fapo_tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_model(path: str, device: str | None = None, dtype: str = "auto"):
    """Load a causal LM and its tokenizer with `from_pretrained` (a local directory or a hub name).

    Returns (model, tokenizer) with the model in eval mode on `device` (CUDA when available and
    not told otherwise) and the tokenizer padding on the left for generation.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device)
    model.config.use_cache = True  # checkpoints saved by training loops may carry use_cache=False
    model.eval()
    return model, tokenizer
