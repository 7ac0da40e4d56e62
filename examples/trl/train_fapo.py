"""FAPO on TRL's GRPOTrainer with fapo's public reward function (`fapo.trl.fapo_reward`).

    python examples/trl/train_fapo.py --model Qwen/Qwen2.5-Math-7B --data data/fapo-train-boxed.parquet \
        --endpoint http://genrm-0:8001/v1 --endpoint http://genrm-1:8001/v1 --judge-model FAPO-GenRM-4B \
        --max-steps 100

--data is a .parquet, .jsonl or .json file: verl-format rows as `fapo data prepare` writes them (a chat `prompt`,
`reward_model.ground_truth`, `extra_info.question`), used as they are, or rows with `problem` and `answer`, whose
prompt becomes the problem followed by the instruction to box the answer. The GenRM endpoints are
OpenAI-compatible servers (`fapo serve-grm`, vLLM, SGLang). Everything else is TRL's: this script is what a TRL
user writes, with one reward function from fapo. `fapo train policy --config ...` runs the same reward with the
paper's configs, resume and fapo's metrics file.
"""

from __future__ import annotations

import argparse

from datasets import load_dataset
from trl import GRPOConfig, GRPOTrainer

from fapo.grm.types import JudgeConfig
from fapo.trl import fapo_reward

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def load_rows(path: str):
    """The training rows, each with a chat `prompt`: verl rows as they are, problem/answer rows prompted."""
    kind = "parquet" if path.endswith(".parquet") else "json"
    dataset = load_dataset(kind, data_files=path, split="train")
    if "prompt" in dataset.column_names and isinstance(dataset[0]["prompt"], list):
        return dataset
    return dataset.map(lambda row: {"prompt": [{"role": "user", "content": f"{row['problem']}\n\n{INSTRUCTION}"}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="policy: a model directory or a hub name")
    parser.add_argument("--data", required=True, help="training rows (.parquet, .jsonl or .json)")
    parser.add_argument("--endpoint", required=True, action="append", help="GenRM server URL (repeatable)")
    parser.add_argument("--judge-model", default="genrm", help="the GenRM's served model name (default genrm)")
    parser.add_argument("--judge-max-tokens", type=int, help="critique budget in tokens (default: JudgeConfig's)")
    parser.add_argument("--max-steps", type=int, default=100, help="optimizer steps")
    parser.add_argument("--penalty", type=float, default=1.0, help="λ: what a flawed positive loses (default 1)")
    parser.add_argument("--output-dir", default="runs/trl-fapo", help="checkpoints, critiques.jsonl, final model")
    parser.add_argument("--num-generations", type=int, default=8, help="rollouts per prompt (G)")
    parser.add_argument("--batch-size", type=int, default=8, help="completions per device per step")
    parser.add_argument("--max-completion-length", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--cpu", action="store_true", help="train on the CPU in float32 (tests, tiny models)")
    args = parser.parse_args()

    budget = {"max_tokens": args.judge_max_tokens} if args.judge_max_tokens else {}
    judge = JudgeConfig(endpoints=tuple(args.endpoint), model=args.judge_model, **budget)
    reward = fapo_reward(judge, penalty=args.penalty, truncation_rule="tail")
    config = GRPOConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, learning_rate=args.learning_rate,
        num_generations=args.num_generations, per_device_train_batch_size=args.batch_size,
        max_completion_length=args.max_completion_length, temperature=1.0, loss_type="dapo", beta=0.0,
        epsilon=0.2, epsilon_high=0.28, mask_truncated_completions=False, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=args.cpu, bf16=not args.cpu,
    )
    trainer = GRPOTrainer(model=args.model, reward_funcs=[reward], args=config, train_dataset=load_rows(args.data))
    trainer.train()
    trainer.save_model(f"{args.output_dir}/final")
    print(f"trained {trainer.state.global_step} steps; critiques in {args.output_dir}/critiques.jsonl")


if __name__ == "__main__":
    main()
