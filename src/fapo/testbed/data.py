"""Generate and write the testbed's data sets, deterministically from one seed.

`generate(out_dir, config)` writes (JSONL, one row per line):
- `policy_train.jsonl`, `policy_test.jsonl`: problems for policy RL and evaluation, `{problem, answer}`.
- `sft_train.jsonl`: the policy's SFT mix, chat-ready for TRL's SFTTrainer in conversational
  prompt-completion form, `{prompt: [user msg], completion: [assistant msg]}`, plus `problem, answer,
  flaw, label, final_answer_correct`. The mix follows `sft_rates` (by default all positives, about a
  quarter of them flawed).
- `critic_train.jsonl`, `critic_test.jsonl`: ProcessBench rows `{id, generator, problem, steps,
  final_answer_correct, label}` plus `ground_truth` (the answer) and `flaw`. The train file can end
  with healed pair slips, each with its clean twin, after its mix (`GenerateConfig.n_critic_heal`, 0 by default).
- `manifest.json`: the config and the counts.
Test problems (policy and critic) never occur on the train side (policy, SFT, critic train).
Same config and seed, same bytes.

Owns the files and the train/test split. Problems and flaws come from `task` and `flaws`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fapo.testbed.flaws import (
    CRITIC_RATES,
    SFT_RATES,
    FlawRates,
    Solution,
    flaw_applies,
    make_solution,
    sample_solution,
)
from fapo.testbed.task import Problem, TaskConfig, policy_messages, render_solution, sample_problem

FILES = ("policy_train", "policy_test", "sft_train", "critic_train", "critic_test")


@dataclass(frozen=True)
class GenerateConfig:
    """What `generate` writes."""

    seed: int = 0
    """Seed of every random choice; the same seed gives the same bytes."""
    n_train: int = 2000
    """Problems for policy RL (`policy_train.jsonl`)."""
    n_test: int = 200
    """Held-out problems for policy evaluation (`policy_test.jsonl`); critic test rows use them too."""
    n_sft: int = 8000
    """Solutions in the policy's SFT mix (`sft_train.jsonl`), one per freshly drawn train-side problem."""
    n_critic_train: int = 4000
    """Critic rows for GenRM training (`critic_train.jsonl`)."""
    n_critic_test: int = 400
    """Held-out critic rows (`critic_test.jsonl`), on the test problems."""
    n_critic_heal: int = 0
    """Healed pair slips (flaw `heal`) to append to `critic_train.jsonl` after its `n_critic_train` rows of the mix,
    each followed by its clean twin (the same problem solved right), on problems of their own stream. A healed slip
    (a slip in the pair's addition that the subtraction undoes) is the flawed positive that policy RL grows most,
    and a GenRM trained on the mix alone, whose `compensate` rows put two cancelling slips anywhere, flags few of
    them. On data seed 0, 1,200 of them with twins and a 1,200-step GenRM SFT took the healed slips flagged among
    FAPO's training rollouts from 17 to 108 of 150 (clean ones 6 -> 1 of 300), the judge's agreement with the checker
    from 80.6% to 91.7%, and a 640-step FAPO run's flawed ratio from 0.78/0.62 to 0.52/0.43 x GRPO's; on data seed 32,
    not developed on, the GenRM so trained flagged 160 of 1,677 (BENCHMARKS.md, "Healed slips in the GenRM's data").
    Hence 0 by default. Appended, not mixed in, so the mix's first rows, which the tokenizer's corpus reads
    (`fapo.testbed.warmstart.tokenizer_corpus`), and with them the policy's initialisation, stay as they were."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The problem distribution."""
    sft_rates: FlawRates = SFT_RATES
    """Flaw mix of the SFT data (see `fapo.testbed.flaws`)."""
    critic_rates: FlawRates = CRITIC_RATES
    """Flaw mix of the critic data."""

    def __post_init__(self) -> None:
        counts = {"n_train": self.n_train, "n_sft": self.n_sft, "n_critic_train": self.n_critic_train,
                  "n_critic_test": self.n_critic_test, "n_critic_heal": self.n_critic_heal}
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.n_test < 1:
            raise ValueError(f"n_test must be >= 1 (critic test rows are drawn from the test problems), got {self.n_test}")


def _draw_test_problems(config: GenerateConfig) -> list[Problem]:
    rng = random.Random(f"{config.seed}/test")
    problems: dict[str, Problem] = {}
    for _ in range(100 * config.n_test + 1000):
        problem = sample_problem(rng, config.task)
        problems.setdefault(problem.text, problem)
        if len(problems) == config.n_test:
            return list(problems.values())
    raise ValueError(f"only {len(problems)} distinct problems found for n_test={config.n_test}; "
                     "lower n_test or widen the task's ranges")


def _train_problems(config: GenerateConfig, stream: str, held_out: set[str]) -> Iterator[Problem]:
    """Endless train-side problems of one named random stream, never a held-out one."""
    rng = random.Random(f"{config.seed}/{stream}")
    misses = 0
    while True:
        problem = sample_problem(rng, config.task)
        if problem.text in held_out:
            misses += 1
            if misses > 10_000:
                raise ValueError("the task has too few distinct problems besides the test set; widen its ranges")
            continue
        yield problem


def _distinct(problems: Iterator[Problem], n: int) -> list[Problem]:
    seen: dict[str, Problem] = {}
    for _ in range(100 * n + 1000):
        if len(seen) == n:
            break
        problem = next(problems)
        seen.setdefault(problem.text, problem)
    if len(seen) < n:
        raise ValueError(f"only {len(seen)} distinct train problems for n_train={n}; lower it or widen the task")
    return list(seen.values())


def _solutions(problems: Iterator[Problem], n: int, rates: FlawRates, rng: random.Random) -> list[Solution]:
    return [sample_solution(next(problems), rates, rng) for _ in range(n)]


def _heal_pairs(problems: Iterator[Problem], n: int, rng: random.Random) -> list[Solution]:
    """`n` healed pair slips on the problems of `problems` that have a cancelling pair, each followed by the same
    problem solved right (its clean twin)."""
    out: list[Solution] = []
    for _ in range(1000 * n + 1000):
        if len(out) == 2 * n:
            return out
        problem = next(problems)
        if flaw_applies(problem, "heal"):
            out += [make_solution(problem, "heal", rng), make_solution(problem, "clean", rng)]
    raise ValueError(f"only {len(out) // 2} train problems with a cancelling pair for n_critic_heal={n}; widen the task")


def policy_row(problem: Problem) -> dict[str, Any]:
    return {"problem": problem.text, "answer": str(problem.answer)}


def sft_row(solution: Solution) -> dict[str, Any]:
    problem = solution.problem
    return {
        "prompt": policy_messages(problem.text),
        "completion": [{"role": "assistant", "content": render_solution(list(solution.steps))}],
        "problem": problem.text,
        "answer": str(problem.answer),
        "flaw": solution.flaw,
        "label": solution.label,
        "final_answer_correct": solution.final_answer_correct,
    }


def critic_row(solution: Solution, row_id: str) -> dict[str, Any]:
    return {
        "id": row_id,
        "generator": "fapo-testbed",
        "problem": solution.problem.text,
        "steps": list(solution.steps),
        "final_answer_correct": solution.final_answer_correct,
        "label": solution.label,
        "ground_truth": str(solution.problem.answer),
        "flaw": solution.flaw,
    }


def build_rows(config: GenerateConfig) -> dict[str, list[dict[str, Any]]]:
    """All rows of every file, in memory (see the module docstring for the layout)."""
    test = _draw_test_problems(config)
    held_out = {p.text for p in test}
    policy_train = _distinct(_train_problems(config, "policy", held_out), config.n_train)
    sft = _solutions(_train_problems(config, "sft", held_out), config.n_sft, config.sft_rates,
                     random.Random(f"{config.seed}/sft-flaws"))
    critic_train = _solutions(_train_problems(config, "critic", held_out), config.n_critic_train,
                              config.critic_rates, random.Random(f"{config.seed}/critic-flaws"))
    critic_train += _heal_pairs(_train_problems(config, "critic-heal", held_out), config.n_critic_heal,
                                random.Random(f"{config.seed}/critic-heal-flaws"))
    critic_test = _solutions((test[i % len(test)] for i in range(config.n_critic_test)), config.n_critic_test, config.critic_rates,
                             random.Random(f"{config.seed}/critic-test-flaws"))
    return {
        "policy_train": [policy_row(p) for p in policy_train],
        "policy_test": [policy_row(p) for p in test],
        "sft_train": [sft_row(s) for s in sft],
        "critic_train": [critic_row(s, f"testbed-train-{i}") for i, s in enumerate(critic_train)],
        "critic_test": [critic_row(s, f"testbed-test-{i}") for i, s in enumerate(critic_test)],
    }


def summarize(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Counts per file, and per flaw kind / label class for the solution files."""
    out: dict[str, Any] = {}
    for name, file_rows in rows.items():
        entry: dict[str, Any] = {"rows": len(file_rows)}
        if file_rows and "flaw" in file_rows[0]:
            entry["flaws"] = dict(sorted(Counter(r["flaw"] for r in file_rows).items()))
            positives = [r for r in file_rows if r["final_answer_correct"]]
            entry["flawed_positive_share"] = round(sum(r["label"] != -1 for r in positives) / max(len(positives), 1), 4)
            entry["erroneous_share"] = round(sum(r["label"] != -1 for r in file_rows) / len(file_rows), 4)
        out[name] = entry
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate(out_dir: str | Path, config: GenerateConfig | None = None) -> dict[str, Any]:
    """Write every file and `manifest.json` to `out_dir` (created); return the manifest."""
    config = config or GenerateConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = build_rows(config)
    for name in FILES:
        write_jsonl(out / f"{name}.jsonl", rows[name])
    manifest = {"config": asdict(config), "files": {f"{name}.jsonl": entry for name, entry in summarize(rows).items()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest
