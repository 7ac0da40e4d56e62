"""Warm-start tiny testbed models by SFT (TRL's SFTTrainer) on the CPU, cached.

`warmstart(data_dir, out_dir, config)` trains with SFTTrainer on conversational prompt-completion
data (loss on the completion only):
- role "policy": `sft_train.jsonl` (problem -> solution);
- role "grm": `critic_train.jsonl` turned into GenRM chats (`fapo.grm.prompt.grm_messages` ->
  the checker's critique ending in `\\boxed{k}`).
The start is either a random tiny Qwen3 from `fapo.models.make_tiny_model`, whose tokenizer is trained
on testbed text of both roles (whole-word tokens, digits one per token), or, with `init_from`, an
earlier warm-start: the GenRM is best started from the warm-started policy, which already reads
problems and does the arithmetic (as the paper's GenRM starts from an instruct model), so it learns to
judge in a fraction of the steps. The result is a normal `from_pretrained` directory.

`out_dir/warmstart.json` records a key: the SHA-256 of the config, the data files' bytes and the
`init_from` model's own key; a second call with the same key reuses the model (and its stored
measurements) instead of training. After training the model is measured on held-out data
(`fapo.testbed.evaluate`) and the numbers stored in the same record.

Owns the SFT recipe for testbed models. Must not contain RL or general training code (`fapo.train`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fapo.grm.prompt import grm_messages
from fapo.io import read_jsonl
from fapo.metrics import undefined_as_none
from fapo.testbed.checker import critique, tokenizer_critique
from fapo.testbed.task import parse_problem

RECORD = "warmstart.json"
RECIPE_VERSIONS = {"policy": 4, "grm": 5}
"""Part of each role's cache key: bump a role's when its training text (solution or critique format), the
tokenizer's corpus or the recipe changes. grm 5: the critique reads each result, then the expected step beside it."""
ROLES = ("policy", "grm")
_TRAIN_FILE = {"policy": "sft_train.jsonl", "grm": "critic_train.jsonl"}
_TEST_FILE = {"policy": "policy_test.jsonl", "grm": "critic_test.jsonl"}


@dataclass(frozen=True)
class WarmstartConfig:
    """Model shape and SFT settings of one warm-start."""

    role: str = "policy"
    """"policy" (solve problems) or "grm" (judge solutions)."""
    layers: int = 3
    """Transformer layers of the tiny Qwen3."""
    hidden: int = 128
    """Hidden size."""
    heads: int = 4
    """Attention heads."""
    vocab_size: int = 1024
    """Target BPE vocabulary, trained on testbed text of both roles with phrase tokens (BPE merges
    across spaces; digits stay one per token): the fixed text of the GenRM prompt and of critiques
    becomes a few tokens, so GenRM rows shrink from ~390 tokens (word tokens, vocabulary 512) to
    ~165 and policy rows from ~87 to ~60. The corpus yields ~660 tokens, so any size above that is the same."""
    max_steps: int = 600
    """Optimizer steps."""
    batch_size: int = 32
    """Sequences per optimizer step."""
    micro_batches: int = 1
    """Forward/backward passes per step (gradient accumulation). With more than one, transformers'
    "batch_rebalance" sampler draws the step's sequences at random and splits them by length, so short
    rows are not padded to the longest: the gradient is the same token-weighted sum as one padded batch."""
    learning_rate: float = 3e-3
    """Peak learning rate (cosine decay after a 5% warm-up); tiny models from scratch need a high one."""
    max_length: int = 640
    """Longest tokenized training sequence (with phrase tokens policy rows are ~60 tokens, GenRM rows ~165,
    at most ~300): a bound that truncates nothing."""
    max_examples: int | None = None
    """Use only the first N training rows (None: all)."""
    threads: int = 2
    """torch CPU threads. On an idle 2-core machine 2 threads trained 1.65x faster than 1 (14.6k vs
    8.8k tokens/s); on an oversubscribed CPU they ran slower, so give each concurrent job one."""
    seed: int = 0
    """Seed of the initialisation and of the data order."""
    eval_problems: int = 100
    """Held-out problems (policy) or critic rows (GenRM) measured after training; 0 skips measuring."""
    eval_samples: int = 8
    """Rollouts per problem for the policy's accuracy and flawed-positive ratio (T = 1)."""
    init_from: str | None = None
    """Directory of an earlier warm-start to continue from (its shape and tokenizer are kept, and
    layers/hidden/heads/vocab_size are ignored); None starts from a random tiny model."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.max_steps < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.threads < 1:
            raise ValueError("max_steps, batch_size, threads must be >= 1 and learning_rate > 0")
        if self.micro_batches < 1 or self.batch_size % self.micro_batches:
            raise ValueError(f"micro_batches must be >= 1 and divide batch_size ({self.batch_size}), got {self.micro_batches}")


def training_rows(data_dir: Path, role: str, limit: int | None = None, write_critique=critique) -> list[dict[str, Any]]:
    """Conversational prompt-completion rows for SFTTrainer (GenRM completions by `write_critique`)."""
    rows = read_jsonl(data_dir / _TRAIN_FILE[role])[:limit]
    if role == "policy":
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    out = []
    for r in rows:
        problem = parse_problem(r["problem"])
        if problem is None:
            raise ValueError(f"critic row {r.get('id')} is not a testbed problem: {r['problem'][:80]!r}")
        out.append({
            "prompt": grm_messages(r["problem"], r["steps"], r.get("ground_truth")),
            "completion": [{"role": "assistant", "content": write_critique(problem, r["steps"])}],
        })
    return out


def tokenizer_corpus(data_dir: Path, rows_per_role: int = 1000) -> list[str]:
    """Testbed text of both roles (so a policy's tokenizer also serves the GenRM started from it), the GenRM's
    critiques in their pinned tokenizer text (`fapo.testbed.checker.tokenizer_critique`), not the current format."""
    corpus = ["user\n", "assistant\n", "user\nassistant\n"]
    for row in training_rows(data_dir, "policy", rows_per_role) + training_rows(data_dir, "grm", rows_per_role,
                                                                              write_critique=tokenizer_critique):
        corpus += [m["content"] for m in row["prompt"] + row["completion"]]
    return corpus


def cache_key(data_dir: Path, config: WarmstartConfig) -> str:
    """SHA-256 of the recipe version, the config, every data file training reads, and the `init_from` model's key."""
    digest = hashlib.sha256(json.dumps({"recipe": RECIPE_VERSIONS[config.role], **asdict(config)}, sort_keys=True).encode())
    for name in sorted({*_TRAIN_FILE.values(), _TEST_FILE[config.role]}):
        digest.update((data_dir / name).read_bytes())
    if config.init_from is not None:
        record = read_record(config.init_from)
        if record is None:
            raise FileNotFoundError(f"{config.init_from} holds no {RECORD}; warm-start that model first")
        digest.update(record["key"].encode())
    return digest.hexdigest()


def read_record(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _sft_config(config: WarmstartConfig, out_dir: Path):
    from dataclasses import fields

    from trl import SFTConfig

    options = {}
    # transformers releases without train_sampling_strategy draw micro-batches at random: same training, padded
    if config.micro_batches > 1 and "train_sampling_strategy" in {f.name for f in fields(SFTConfig)}:
        options["train_sampling_strategy"] = "batch_rebalance"
    return SFTConfig(
        output_dir=str(out_dir / "trainer"), max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size // config.micro_batches,
        gradient_accumulation_steps=config.micro_batches, **options,
        learning_rate=config.learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, config.max_steps // 20),
        weight_decay=0.0, max_length=config.max_length, completion_only_loss=True, bf16=False, fp16=False,
        use_cpu=True, gradient_checkpointing=False, save_strategy="no", report_to="none", logging_steps=25,
        seed=config.seed, data_seed=config.seed, dataloader_num_workers=0, dataset_num_proc=None,
    )


def _seeded_trainer_class():
    from trl import SFTTrainer

    class SeededSFTTrainer(SFTTrainer):
        """SFTTrainer whose length-rebalancing sampler draws from `data_seed` (transformers leaves it at 42)."""

        def _get_train_sampler(self, *args, **kwargs):
            sampler = super()._get_train_sampler(*args, **kwargs)
            if type(sampler).__name__ == "BatchRebalanceSampler":
                sampler.seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return sampler

    return SeededSFTTrainer


def train(data_dir: Path, out_dir: Path, config: WarmstartConfig) -> dict[str, Any]:
    """Make the tiny model and run SFT; write it to `out_dir`; return training facts."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fapo.models import TinyModelConfig, make_tiny_model

    rows = training_rows(data_dir, config.role, config.max_examples)
    init = out_dir / "init"
    if config.init_from is None:
        shape = TinyModelConfig(layers=config.layers, hidden=config.hidden, heads=config.heads,
                                vocab_size=config.vocab_size, phrase_tokens=True, seed=config.seed)
        make_tiny_model(init, shape, corpus=tokenizer_corpus(data_dir))
    else:
        shutil.copytree(config.init_from, init, ignore=shutil.ignore_patterns(RECORD), dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(init)
    # Attention kernel by role (speed only; results match to float rounding, which SFT here amplifies). At
    # phrase-token lengths on 2 CPU threads SDPA trained GenRM rows ~8% faster than eager (0.58 vs 0.63 s/step);
    # on policy rows the two were within 4% (0.337 vs 0.351 s/step), and eager was kept.
    attention = "eager" if config.role == "policy" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32, attn_implementation=attention)
    trainer_class = _seeded_trainer_class()
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer = trainer_class(model=model, args=_sft_config(config, out_dir), train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer)
    result = trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.config.use_cache = True  # training turned the KV cache off; generation (eval, RL, serving) wants it
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(init)
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
            "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
            "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1),
            "train_rows": len(rows), "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None, "train_loss": result.training_loss}


def measure(data_dir: Path, out_dir: Path, config: WarmstartConfig) -> dict[str, Any]:
    """The trained model on held-out data: policy accuracy / flawed-positive ratio, or GenRM F1."""
    from fapo.models import load_model
    from fapo.testbed.evaluate import evaluate_grm, evaluate_policy

    model, tokenizer = load_model(str(out_dir), device="cpu", dtype="float32")
    rows = read_jsonl(data_dir / _TEST_FILE[config.role])[: config.eval_problems]
    if config.role == "policy":
        result = evaluate_policy(model, tokenizer, [r["problem"] for r in rows], samples=config.eval_samples,
                                 seed=config.seed)
    else:
        result = evaluate_grm(model, tokenizer, rows)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(result).items()}


def warmstart(data_dir: str | Path, out_dir: str | Path, config: WarmstartConfig | None = None) -> dict[str, Any]:
    """Train (or reuse) a warm-started testbed model in `out_dir`; return its record.

    The record (also `out_dir/warmstart.json`): `key`, `config`, `train` (parameters, seconds, losses),
    `eval` (measurements, absent when eval_problems is 0) and `cached` (True when reused).
    """
    import torch

    config = config or WarmstartConfig()
    data, out = Path(data_dir), Path(out_dir)
    for name in sorted({*_TRAIN_FILE.values(), _TEST_FILE[config.role]}):
        if not (data / name).is_file():
            raise FileNotFoundError(f"{data / name} is missing; run `fapo testbed generate --out {data}` first")
    key = cache_key(data, config)
    record = read_record(out)
    if record is not None and record.get("key") == key and (out / "config.json").is_file():
        if config.role == "policy" and config.eval_problems > 0 and "diagnostics" not in (record.get("eval") or {}):
            # measured before warm-start records carried diagnostics: measure again, keep the model
            torch.set_num_threads(config.threads)
            record["eval"] = undefined_as_none(measure(data, out, config))
            (out / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return {**record, "cached": True}
    torch.set_num_threads(config.threads)
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD).unlink(missing_ok=True)
    record = {"key": key, "config": asdict(config), "data_dir": str(data), "train": train(data, out, config)}
    if config.eval_problems > 0:
        record["eval"] = undefined_as_none(measure(data, out, config))  # an undefined ratio is null in the record
    (out / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {**record, "cached": False}


PRESETS: dict[str, dict[str, Any]] = {
    "policy": {"layers": 3, "hidden": 128, "heads": 4, "max_steps": 1200, "batch_size": 32, "micro_batches": 2,
               "max_length": 192},
    "grm": {"layers": 3, "hidden": 128, "heads": 4, "max_steps": 900, "batch_size": 16, "micro_batches": 2,
            "max_length": 640},
}
"""Per-role defaults. In the last default `fapo demo` on a 2-core machine with 2 threads: policy 224-229 s per
draw (held-out accuracy 0.72-0.73), GenRM 259 s from the policy (README, "The last default run"); the GenRM is
meant to start from the policy (`init_from`).
Policy SFT steps: 1200. At 600 the policy slipped on the pair's addition so often that a median 10% of its
computed pair rollouts were clean and correct (nine draws), most correct ones being healed slips; 1200 steps give
a median 36% (eight draws; BENCHMARKS.md, "The demo across draws").
GenRM SFT steps: 900, because the verdict comes last. With the critique format of `fapo.testbed.checker.critique`
and the 1,200-step policy, the 450-step GenRM computed most expected steps right but called the first difference
"wrong" in 46% of the held-out critiques (F1 57.5, or 88.5 read from its own comparisons); 900 steps, 97% (F1 93.0,
FlawedPositiveBench F1 97.8; BENCHMARKS.md, "GenRM warm-start length"). With the critic data's healed pair slips
and their clean twins (`fapo.testbed.data.GenerateConfig.n_critic_heal`, off by default), 900 steps flagged 67 of
150 healed slips among FAPO's training rollouts and 1,200 steps 108 (409 s of training alone on this machine,
against 254-313 s for the four 900-step variants that day), 2,400 steps 128 (~645 s), and 87 and 138 on data seeds 32
and 33, where 1,200 steps had flagged 12 on data seed 32 (`fapo demo --critic-heal 1200 --grm-sft-steps 2400`;
BENCHMARKS.md, "Healed slips in the GenRM's data"). Two
length-sorted micro-batches per step: GenRM rows (50-310 tokens, a padded batch is 40% padding) 0.58 -> 0.42
s/step, policy rows 0.35 -> 0.325."""


def preset(role: str, **overrides: Any) -> WarmstartConfig:
    """The role's preset config with `overrides` (WarmstartConfig field names) applied."""
    if role not in PRESETS:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return WarmstartConfig(role=role, **{**PRESETS[role], **overrides})
