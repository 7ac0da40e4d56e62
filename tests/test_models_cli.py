"""Tiny models load offline through the real `from_pretrained` path; the CLI answers fast."""

from __future__ import annotations

import subprocess
import sys
import time


def test_tiny_model_loads_and_generates(tiny_model_dir):
    import torch

    from fapo.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    assert model.config.model_type == "qwen3"
    assert tokenizer.pad_token is not None and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Start with 12. Add 7."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    torch.manual_seed(0)
    out = model.generate(**ids, max_new_tokens=5, do_sample=True)
    assert out.shape[1] > ids["input_ids"].shape[1]
    # digits are single tokens
    assert tokenizer.tokenize("1234") == ["1", "2", "3", "4"]


def test_phrase_tokens_merge_recurring_phrases_but_keep_digits_and_the_equals_slot():
    from fapo.models import train_tokenizer

    corpus = [f"The answer is \\boxed{{{n}}}. Review the solution paragraph by paragraph. (1) {n}+3 = {n + 3}"
              for n in range(200)]
    words, phrases = train_tokenizer(corpus, 400), train_tokenizer(corpus, 400, phrase_tokens=True)
    text = "Review the solution paragraph by paragraph. (1) 12+3 = 15. The answer is \\boxed{15}."
    assert len(phrases.tokenize(text)) < len(words.tokenize(text)) - 5
    assert any(" " in phrases.convert_tokens_to_string([t]).strip() for t in phrases.tokenize(text))
    tokens = phrases.tokenize("(1) 12+3 = 15")
    assert [phrases.convert_tokens_to_string([t]) for t in tokens[-4:]] == [" =", " ", "1", "5"]
    assert phrases.decode(phrases(text)["input_ids"]) == text


def test_tiny_model_cli(tmp_path):
    out = tmp_path / "m"
    proc = subprocess.run(
        [sys.executable, "-m", "fapo.cli", "tiny-model", str(out), "--layers", "1", "--hidden", "32", "--heads", "2",
         "--phrase-tokens"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "fapo.cli", "tiny-model", str(tmp_path / "x"), "--hidden", "30", "--heads", "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "divisible" in bad.stderr and "Traceback" not in bad.stderr


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t = time.perf_counter(); from fapo.cli import build_parser; build_parser(); "
        "print(time.perf_counter() - t); print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    seconds, heavy = proc.stdout.splitlines()
    assert float(seconds) < 0.5
    assert heavy == "False False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fapo.cli", "--help"], capture_output=True, timeout=60, check=True)
    assert time.perf_counter() - start < 3.0  # interpreter start included; in practice ~0.1 s
