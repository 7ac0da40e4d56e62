"""The FAPO recipe's training and test files from local copies of DAPO-Math-17k and AIME.

verl-recipe `fapo/prepare_fapo_data.py` writes `fapo-train-boxed.parquet` (open-r1/DAPO-Math-17k-Processed,
its rows repeated 20 times) and `fapo-test-full-boxed.parquet` (AIME 2024 and 2025 × 32, GPQA-Diamond × 4) as
verl RL rows: `data_source`, `prompt` (one user message: the problem, a blank line, `BOXED_INSTRUCTION`),
`ability`, `reward_model` {style "rule", ground_truth}, `extra_info` {split, index, question}. The recipe's
run script then drops prompts over 2,048 tokens (`data.filter_overlong_prompts`, chat template applied).
`prepare_recipe_data` does the same from files on disk, in any of DAPO-Math-17k's published layouts:

- BytedTsinghua-SIA/DAPO-Math-17k: a chat `prompt` wrapping the problem in "Solve the following math problem
  ... Answer: $Answer ..." (`DAPO_HEAD`, `DAPO_TAIL`, removed here so the prompt asks for `\\boxed{}`),
  `reward_model.ground_truth`; each problem appears many times there, so repeats are dropped and counted;
- open-r1/DAPO-Math-17k-Processed: `prompt` (the bare problem), `solution` (the answer), `source_prompt`, ...;
- flat rows: `prompt` or `problem`, and `answer` (e.g. DAPO samples converted to JSONL);

and AIME in its Qwen2.5-Math layout (`problem`, `answer`, leading zeros as in "025") or the recipe's
Maxwell-Jia/AIME_2024 layout (`Problem`, `Answer`). Integer answers are written without leading zeros, as the
recipe's `str(example["Answer"])` of an integer column reads them.

Owns the file layouts; knows nothing about training, rewards or judges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""The recipe's instruction after each problem (prepare_fapo_data.py)."""
DAPO_HEAD = ("Solve the following math problem step by step. The last line of your response should be of the form "
             "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_TAIL = '\n\nRemember to put your answer on its own line after "Answer:".'
"""BytedTsinghua-SIA/DAPO-Math-17k's prompt around each problem."""
TRAIN_FILE = "fapo-train-boxed.parquet"
TEST_FILE = "fapo-test-full-boxed.parquet"
"""The recipe's file names (run_fapo_7b.sh's TRAIN_FILE and TEST_FILE)."""
RECIPE_MAX_PROMPT_TOKENS = 2048
RECIPE_TRAIN_REPEATS = 20
RECIPE_TEST_REPEATS = 32
"""The recipe's prompt limit (`max_prompt_length`), and how often prepare_fapo_data.py repeats the training
rows and each AIME set."""


class RecipeDataError(ValueError):
    """Input the preparation cannot use; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class MathProblem:
    """One problem as the recipe keeps it: the bare question and its gold answer."""

    question: str
    answer: str


@dataclass(frozen=True)
class PreparedData:
    """What `prepare_recipe_data` wrote and dropped."""

    train_path: str
    test_path: str
    train_problems: int
    """Distinct training problems kept (before repeating)."""
    train_rows: int
    test_rows: int
    duplicates: int
    """Training rows dropped as repeats of an earlier problem (BytedTsinghua's layout repeats each problem)."""
    too_long: dict[str, int]
    """Problems dropped per data source for a prompt over `max_prompt_tokens` (empty without a tokenizer)."""
    layouts: tuple[str, ...]
    """The DAPO-Math layouts found ("bytedtsinghua", "open-r1", "flat")."""


def strip_dapo_wrapper(text: str) -> str:
    """The bare problem inside a BytedTsinghua DAPO-Math prompt (unchanged when it has no wrapper)."""
    if text.startswith(DAPO_HEAD):
        text = text[len(DAPO_HEAD):]
    if text.endswith(DAPO_TAIL):
        text = text[: -len(DAPO_TAIL)]
    return text.strip()


def _answer(value: Any) -> str:
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


def dapo_problem(row: dict[str, Any]) -> tuple[MathProblem, str]:
    """A DAPO-Math row in any published layout → (problem, layout name); RecipeDataError naming the fields."""
    prompt = row.get("prompt")
    reward_model = row.get("reward_model") if isinstance(row.get("reward_model"), dict) else {}
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) and "ground_truth" in reward_model:
        return MathProblem(strip_dapo_wrapper(str(prompt[-1].get("content") or "")),
                           _answer(reward_model["ground_truth"])), "bytedtsinghua"
    if isinstance(prompt, str) and isinstance(row.get("solution"), str) and "source_prompt" in row:
        return MathProblem(prompt.strip(), _answer(row["solution"])), "open-r1"
    question = prompt if isinstance(prompt, str) else row.get("problem")
    if isinstance(question, str) and "answer" in row:
        return MathProblem(strip_dapo_wrapper(question), _answer(row["answer"])), "flat"
    raise RecipeDataError(f"not a DAPO-Math row (chat prompt + reward_model.ground_truth, prompt + solution + "
                          f"source_prompt, or prompt/problem + answer); fields here: {sorted(row)}")


def aime_problem(row: dict[str, Any]) -> MathProblem:
    """An AIME row (`problem`/`answer` or `Problem`/`Answer`) → problem."""
    for question, answer in (("problem", "answer"), ("Problem", "Answer")):
        if isinstance(row.get(question), str) and answer in row:
            return MathProblem(row[question].strip(), _answer(row[answer]))
    raise RecipeDataError(f"not an AIME row (problem + answer, or Problem + Answer); fields here: {sorted(row)}")


def verl_row(problem: MathProblem, data_source: str, split: str, index: int) -> dict[str, Any]:
    """The recipe's verl RL row (prepare_fapo_data.py's `example_map_fn`)."""
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": problem.question + "\n\n" + BOXED_INSTRUCTION}],
        "ability": "Math",
        "reward_model": {"style": "rule", "ground_truth": problem.answer},
        "extra_info": {"split": split, "index": index, "question": problem.question},
    }


def prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Tokens of a chat prompt as verl counts them: the chat template with the generation prompt (the plain
    text when the tokenizer has no template)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = "\n".join(m["content"] for m in messages)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _read(path: Path) -> list[dict[str, Any]]:
    from fapo.io import DataError
    from fapo.train.config import ConfigError
    from fapo.train.data import read_rows

    try:
        rows = read_rows(path)
    except (ConfigError, DataError) as err:
        raise RecipeDataError(str(err)) from err
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise RecipeDataError(f"{path}: row {bad + 1} is not an object")
    return rows


def _problems(path: Path, reader) -> list[tuple[MathProblem, str]]:
    out = []
    for i, row in enumerate(_read(path)):
        try:
            found = reader(row)
        except RecipeDataError as err:
            raise RecipeDataError(f"{path}: row {i + 1}: {err}") from None
        out.append(found if isinstance(found, tuple) else (found, "aime"))
    if not out:
        raise RecipeDataError(f"{path}: no rows")
    return out


def aime_source(path: Path) -> str:
    """The data_source of an AIME file: the directory name when it says aimeNN (`aime24/test.jsonl`), else the
    file name's stem."""
    return path.parent.name if path.parent.name.lower().startswith("aime") else path.stem


def _keep_short(rows: list[dict[str, Any]], tokenizer: Any, limit: int, dropped: dict[str, int]) -> list[dict]:
    if tokenizer is None:
        return rows
    kept = []
    for row in rows:
        if prompt_tokens(tokenizer, row["prompt"]) <= limit:
            kept.append(row)
        else:
            dropped[row["data_source"]] = dropped.get(row["data_source"], 0) + 1
    return kept


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)


def prepare_recipe_data(dapo: str | Path, aime: Sequence[str | Path], out_dir: str | Path, tokenizer: Any = None,
                        max_prompt_tokens: int = RECIPE_MAX_PROMPT_TOKENS, train_repeats: int = RECIPE_TRAIN_REPEATS,
                        test_repeats: int = RECIPE_TEST_REPEATS) -> PreparedData:
    """Write `out_dir/TRAIN_FILE` and `out_dir/TEST_FILE` as the recipe does (see the module docstring).

    `tokenizer` (the policy's): prompts over `max_prompt_tokens` are dropped and counted; None keeps all.
    The training rows are repeated `train_repeats` times and each AIME file's rows `test_repeats` times; as in
    the recipe's concatenated datasets, `extra_info.index` is the problem's position in its source (repeats share
    it; dropped prompts leave gaps, as verl's filter does after indexing)."""
    if train_repeats < 1 or test_repeats < 1 or max_prompt_tokens < 1:
        raise RecipeDataError("train_repeats, test_repeats and max_prompt_tokens must be >= 1")
    if not aime:
        raise RecipeDataError("give at least one AIME file for the test set")
    found = _problems(Path(dapo), dapo_problem)
    seen: set[str] = set()
    unique = []
    for problem, _ in found:
        if problem.question not in seen:
            seen.add(problem.question)
            unique.append(problem)
    dropped: dict[str, int] = {}
    train = _keep_short([verl_row(p, "math-dapo", "train", i) for i, p in enumerate(unique)], tokenizer,
                        max_prompt_tokens, dropped)
    test: list[dict[str, Any]] = []
    for path in map(Path, aime):
        source = aime_source(path)
        rows = [verl_row(p, source, "test", i) for i, (p, _) in enumerate(_problems(path, aime_problem))]
        test += _keep_short(rows, tokenizer, max_prompt_tokens, dropped) * test_repeats
    if not train:
        raise RecipeDataError(f"every training prompt is over {max_prompt_tokens} tokens")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_rows = train * train_repeats
    _write_parquet(train_rows, out / TRAIN_FILE)
    _write_parquet(test, out / TEST_FILE)
    return PreparedData(str(out / TRAIN_FILE), str(out / TEST_FILE), len(train), len(train_rows), len(test),
                        len(found) - len(unique), dropped, tuple(sorted({layout for _, layout in found})))
