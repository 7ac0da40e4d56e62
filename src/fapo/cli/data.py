"""`fapo data prepare`: the FAPO recipe's training and test parquet files from local DAPO-Math-17k and AIME."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare training data files",
                       description="Prepare training data files.")
    verbs = p.add_subparsers(dest="data_verb", metavar="VERB", required=True)
    from fapo.train.recipe_data import (
        RECIPE_MAX_PROMPT_TOKENS,
        RECIPE_TEST_REPEATS,
        RECIPE_TRAIN_REPEATS,
        TEST_FILE,
        TRAIN_FILE,
    )

    q = verbs.add_parser(
        "prepare", help="write the FAPO recipe's training and test files (verl-format parquet)",
        description=f"Write OUT/{TRAIN_FILE} and OUT/{TEST_FILE} as verl-recipe fapo/prepare_fapo_data.py does: "
        "verl RL rows whose prompt asks for a \\boxed{} answer, with extra_info.question and "
        "reward_model.ground_truth, from a local copy of DAPO-Math-17k (BytedTsinghua-SIA's layout, "
        "open-r1/DAPO-Math-17k-Processed's, or flat prompt/answer rows) and AIME files (problem/answer). "
        "With --tokenizer, prompts over --max-prompt-tokens are dropped and counted, as the recipe's run script "
        "does. fapo train reads the training file as it is.")
    q.add_argument("--dapo", required=True, metavar="FILE", help="DAPO-Math-17k rows (.parquet, .jsonl or .json)")
    q.add_argument("--aime", required=True, action="append", metavar="FILE",
                   help="AIME rows for the test file (repeatable; data_source from the directory name, e.g. aime24)")
    q.add_argument("--out", required=True, metavar="DIR", help="directory to write the two files to (created)")
    q.add_argument("--tokenizer", metavar="DIR",
                   help="the policy's tokenizer (model directory or hub name): drop prompts over the limit")
    q.add_argument("--max-prompt-tokens", type=int, default=RECIPE_MAX_PROMPT_TOKENS,
                   help=f"prompt limit in tokens, chat template included (default {RECIPE_MAX_PROMPT_TOKENS}, the "
                   "recipe's)")
    q.add_argument("--train-repeats", type=int, default=RECIPE_TRAIN_REPEATS,
                   help=f"times the training rows are repeated (default {RECIPE_TRAIN_REPEATS}, the recipe's; with "
                   "TRL's max_steps 1 is enough)")
    q.add_argument("--test-repeats", type=int, default=RECIPE_TEST_REPEATS,
                   help=f"times each AIME file is repeated (default {RECIPE_TEST_REPEATS}, the recipe's avg@32)")
    q.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.train.recipe_data import RecipeDataError, prepare_recipe_data

    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        except (OSError, ValueError) as err:
            raise CliError(f"--tokenizer: cannot load {args.tokenizer}: {str(err).splitlines()[0]}") from err
    try:
        done = prepare_recipe_data(args.dapo, args.aime, args.out, tokenizer, args.max_prompt_tokens,
                                   args.train_repeats, args.test_repeats)
    except (RecipeDataError, OSError) as err:
        raise CliError(str(err)) from err
    too_long = sum(done.too_long.values())
    limit = (f"{too_long} prompts over {args.max_prompt_tokens} tokens dropped "
             f"({', '.join(f'{k} {v}' for k, v in sorted(done.too_long.items())) or 'none'})"
             if tokenizer is not None else "prompt lengths not checked (no --tokenizer)")
    print(f"DAPO-Math ({', '.join(done.layouts)} layout): {done.train_problems} problems kept, "
          f"{done.duplicates} repeated rows dropped; {limit}")
    print(f"wrote {done.train_path} ({done.train_rows} rows) and {done.test_path} ({done.test_rows} rows)")
    return 0
