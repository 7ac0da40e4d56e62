"""`fapo data prepare` and verl-format training rows, on the DAPO-Math and AIME rows in ../shared/data: the
sample's own flat layout and the two published layouts built from its rows, each written as the recipe's
parquet files and read back by `fapo train`'s data loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fapo.cli import main
from fapo.train.config import ConfigError, FapoSettings
from fapo.train.data import field_value, policy_rows
from fapo.train.recipe_data import (
    BOXED_INSTRUCTION,
    DAPO_HEAD,
    DAPO_TAIL,
    TEST_FILE,
    TRAIN_FILE,
    RecipeDataError,
    prepare_recipe_data,
    prompt_tokens,
)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_parquet(rows: list[dict], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_parquet(path: Path | str) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def sample(shared_data) -> list[dict]:
    return read_jsonl(shared_data / "dapo_math_sample" / "dapo_eval64.jsonl")


def bytedtsinghua_layout(rows: list[dict]) -> list[dict]:
    """BytedTsinghua-SIA/DAPO-Math-17k: the "Answer: $Answer" chat prompt, each problem twice (the published file
    repeats its problems)."""
    out = [{"data_source": "math_dapo", "prompt": [{"content": DAPO_HEAD + r["prompt"] + DAPO_TAIL, "role": "user"}],
            "ability": "MATH", "reward_model": {"ground_truth": r["answer"], "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": f"id-{i}"}} for i, r in enumerate(rows)]
    return out + out


def open_r1_layout(rows: list[dict]) -> list[dict]:
    """open-r1/DAPO-Math-17k-Processed: prompt (bare problem), solution (answer), source_prompt, ..."""
    return [{"prompt": r["prompt"], "solution": r["answer"], "data_source": "math_dapo",
             "source_prompt": [{"content": DAPO_HEAD + r["prompt"] + DAPO_TAIL, "role": "user"}], "ability": "MATH",
             "reward_model": {"ground_truth": r["answer"], "style": "rule-lighteval/MATH_v2"},
             "extra_info": {"index": f"id-{i}"}} for i, r in enumerate(rows)]


@pytest.mark.parametrize("layout", ["flat", "bytedtsinghua", "open-r1"])
def test_every_published_layout_gives_the_recipes_rows(layout, sample, shared_data, tmp_path):
    source = {"flat": lambda: shared_data / "dapo_math_sample" / "dapo_eval64.jsonl",
              "bytedtsinghua": lambda: write_parquet(bytedtsinghua_layout(sample), tmp_path / "dapo.parquet"),
              "open-r1": lambda: write_parquet(open_r1_layout(sample), tmp_path / "dapo.parquet")}[layout]()
    done = prepare_recipe_data(source, [shared_data / "aime24" / "test.jsonl"], tmp_path / "out",
                               train_repeats=2, test_repeats=3)
    assert done.layouts == (layout,) and done.train_problems == 64 and done.too_long == {}
    assert done.duplicates == (64 if layout == "bytedtsinghua" else 0)
    train, test = read_parquet(tmp_path / "out" / TRAIN_FILE), read_parquet(tmp_path / "out" / TEST_FILE)
    assert len(train) == 128 and len(test) == 90
    first = train[0]
    assert first["prompt"] == [{"role": "user", "content": sample[0]["prompt"] + "\n\n" + BOXED_INSTRUCTION}]
    assert first["reward_model"] == {"style": "rule", "ground_truth": sample[0]["answer"]}
    assert first["extra_info"] == {"split": "train", "index": 0, "question": sample[0]["prompt"]}
    assert first["data_source"] == "math-dapo" and first["ability"] == "Math"
    assert train[64]["extra_info"]["index"] == 0  # a repeat keeps its problem's index, as the recipe's concat does
    assert "Answer:" not in "".join(r["prompt"][0]["content"] for r in train)
    aime = read_jsonl(shared_data / "aime24" / "test.jsonl")
    assert {r["data_source"] for r in test} == {"aime24"} and {r["extra_info"]["split"] for r in test} == {"test"}
    by_question = {r["extra_info"]["question"]: r["reward_model"]["ground_truth"] for r in test}
    assert by_question[aime[0]["problem"].strip()] == str(int(aime[0]["answer"]))
    assert any(r["answer"].startswith("0") for r in aime)  # "025" is written "25", as the recipe's integer column
    assert not any(gt.startswith("0") for gt in by_question.values())


def test_prompts_over_the_limit_are_dropped_and_counted(sample, shared_data, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    lengths = [prompt_tokens(tokenizer, [{"role": "user", "content": r["prompt"] + "\n\n" + BOXED_INSTRUCTION}])
               for r in sample]
    limit = sorted(lengths)[len(lengths) // 2]
    aime = shared_data / "aime24" / "test.jsonl"
    done = prepare_recipe_data(shared_data / "dapo_math_sample" / "dapo_eval64.jsonl", [aime], tmp_path,
                               tokenizer, max_prompt_tokens=limit, train_repeats=1, test_repeats=1)
    assert done.too_long["math-dapo"] == sum(n > limit for n in lengths) > 0
    assert done.train_problems == sum(n <= limit for n in lengths)
    kept = read_parquet(done.train_path)
    assert all(prompt_tokens(tokenizer, r["prompt"]) <= limit for r in kept)
    assert done.test_rows + done.too_long.get("aime24", 0) == 30


def test_the_cli_reports_and_fapo_train_reads_the_files_as_they_are(shared_data, tiny_model_dir, tmp_path, capsys):
    code = main(["data", "prepare", "--dapo", str(shared_data / "dapo_math_sample" / "dapo_eval64.jsonl"),
                 "--aime", str(shared_data / "aime24" / "test.jsonl"), "--out", str(tmp_path),
                 "--tokenizer", str(tiny_model_dir), "--train-repeats", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "prompts over 2048 tokens dropped" in out and f"{TRAIN_FILE} (64 rows)" in out
    assert f"{TEST_FILE} (960 rows)" in out  # 30 AIME problems x 32, the recipe's avg@32
    # the recipe's parquet as it is: default fields, or the dotted ones the recipe's reward reads
    for fields in ({}, {"problem_field": "extra_info.question", "answer_field": "reward_model.ground_truth"},
                   {"problem_field": "prompt"}):
        rows = policy_rows(FapoSettings(model="m", train_data=str(tmp_path / TRAIN_FILE), **fields))
        raw = read_parquet(tmp_path / TRAIN_FILE)
        assert [r["prompt"] for r in rows] == [r["prompt"] for r in raw]  # no second instruction
        assert [r["problem"] for r in rows] == [r["extra_info"]["question"] for r in raw]
        assert [r["answer"] for r in rows] == [r["reward_model"]["ground_truth"] for r in raw]
        assert rows[0]["prompt"][0]["content"].count(BOXED_INSTRUCTION) == 1


def test_flat_rows_get_the_template_and_missing_fields_name_the_fix(sample, tmp_path):
    data = tmp_path / "flat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sample[:3]))
    rows = policy_rows(FapoSettings(model="m", train_data=str(data), problem_field="prompt"))
    assert rows[0]["prompt"][0]["content"].startswith(sample[0]["prompt"]) and rows[0]["answer"] == sample[0]["answer"]
    with pytest.raises(ConfigError, match=r"row 1 has no 'problem' field .*dotted.*reward_model.ground_truth"):
        policy_rows(FapoSettings(model="m", train_data=str(data)))
    nested = tmp_path / "nested.jsonl"
    nested.write_text(json.dumps({"q": {"text": "What is 1+1?"}, "gold": {"value": 2}}) + "\n")
    rows = policy_rows(FapoSettings(model="m", train_data=str(nested), problem_field="q.text", answer_field="gold.value"))
    assert rows == [{"prompt": [{"role": "user", "content": rows[0]["prompt"][0]["content"]}],
                     "problem": "What is 1+1?", "answer": "2"}]
    assert field_value({"a.b": 1, "a": {"b": 2}}, "a.b") == 1  # a column named with the dot wins


def test_bad_inputs_name_the_file_and_row(shared_data, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(RecipeDataError, match=r"bad.jsonl: row 1: not a DAPO-Math row"):
        prepare_recipe_data(bad, [shared_data / "aime24" / "test.jsonl"], tmp_path / "out")
    assert main(["data", "prepare", "--dapo", str(tmp_path / "none.jsonl"), "--aime", str(bad),
                 "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
