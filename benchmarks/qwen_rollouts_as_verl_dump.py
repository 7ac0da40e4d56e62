"""Write shared/data's 800 real Qwen2.5-Math rollouts as a verl rollout dump, for `fapo eval rollouts`.

verl's `trainer.rollout_data_dir` layout (`RayPPOTrainer._dump_generations`): one `<step>.jsonl` per step, rows
{input (the decoded ChatML prompt), output, gts, score, step, <reward extra fields>}. The rollouts come from one
checkpoint, not a training run: the 100 problems are laid out 20 per "step" (10, 20, ..., 50) so that the
report's per-step table and plot have something to show, and the MATH level is written as the reward
function's `data_source` extra field.

    python benchmarks/qwen_rollouts_as_verl_dump.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qwen25math_rollouts" / "math_cot_100.jsonl"
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def main(out: str) -> int:
    rows = [json.loads(line) for line in DATA.open(encoding="utf-8")]
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    by_step: dict[int, list[str]] = {}
    for row in rows:
        step = 10 * (1 + int(row["idx"]) // 20)
        for response, correct in zip(row["response"], row["score"], strict=True):
            line = {"input": f"system\n{SYSTEM}\nuser\n{row['question']}\nassistant\n", "output": response,
                    "gts": row["gt"], "score": 1.0 if correct else -1.0, "step": step, "acc": correct,
                    "data_source": row["level"]}
            by_step.setdefault(step, []).append(json.dumps(line, ensure_ascii=False))
    for step, lines in by_step.items():
        (target / f"{step}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{sum(map(len, by_step.values()))} rollouts in {len(by_step)} steps: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
