"""Test helper: teach a tiny random model a handful of chat replies in a few seconds.

Training tests need a policy whose samples are sometimes right, sometimes flawed, sometimes wrong
(so rewards vary and weights move), and a GenRM whose critiques sometimes parse. A plain loop on
a few examples gets there in seconds; real warm-starts use `fapo testbed warmstart` (TRL's SFT).
"""

from __future__ import annotations

from pathlib import Path


def memorise(model_dir: Path, out_dir: Path, pairs: list[tuple[str, str]], steps: int = 150, lr: float = 3e-3) -> Path:
    """Fine-tune `model_dir` on (user, assistant) pairs and save to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    batch = []
    for user, assistant in pairs:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            return_dict=True, return_assistant_tokens_mask=True,
        )
        ids = torch.tensor(enc["input_ids"])
        labels = torch.where(torch.tensor(enc["assistant_masks"]) == 1, ids, torch.tensor(-100))
        batch.append((ids, labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        ids, labels = batch[step % len(batch)]
        loss = model(input_ids=ids[None], labels=labels[None]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
