"""The GenRM verdict protocol: prompt rendering and `parse_verdict` (table + adversarial)."""

from __future__ import annotations

import json
import time

import pytest

from fapo.grm.prompt import build_grm_prompt, count_prompt_steps, grm_messages, parse_verdict
from fapo.steps import render_steps, split_steps


@pytest.mark.parametrize(
    ("text", "num_steps", "expected"),
    [
        ("The earliest error is in paragraph 2. \\boxed{2}", 5, 2),
        ("No errors. \\boxed{-1}", 5, -1),
        ("\\boxed{ 3 }", 5, 3),
        ("$\\boxed{$1$}$", 5, 1),
        ("\\boxed{+0}", 3, 0),
        ("first \\boxed{1} then changed my mind \\boxed{0}", 3, 0),
        ("\\boxed{4}", 4, None),  # out of range
        ("\\boxed{4}", None, 4),  # no range given
        ("\\boxed{-2}", 4, None),
        ("\\boxed{2.5}", 4, None),
        ("\\boxed{1+1}", 4, None),
        ("\\boxed{two}", 4, None),
        ("\\boxed{__import__('os').system('true')}", 4, None),
        ("\\boxed{1", 4, None),  # unbalanced
        ("\\boxed{1} and then \\boxed{", 4, None),  # the last box is broken
        ("the answer is 2", 4, None),
        ("", 4, None),
        ("\\boxed{}", 4, None),
        ("\\boxed{{2}}", 4, None),
        ("\\boxed{99999999999999999999}", None, None),
    ],
)
def test_parse_verdict_table(text, num_steps, expected):
    assert parse_verdict(text, num_steps) == expected


def test_parse_verdict_rejects_non_strings():
    assert parse_verdict(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000 + "\\boxed{1}",
        "{" * 1_000_000,
        "\\boxed{" * 200_000,
        "\\boxed{" + "{" * 500_000 + "1",
        "}" * 500_000 + "\\boxed{1}",
    ],
)
def test_parse_verdict_is_linear_on_megabyte_inputs(text):
    start = time.perf_counter()
    parse_verdict(text, 10)
    assert time.perf_counter() - start < 1.0


def test_prompt_has_problem_verbatim_gold_and_indexed_steps():
    problem = "Let $x^2 = 4$.  Find   x > 0."
    prompt = build_grm_prompt(problem, ["x = 2", "\\boxed{2}"], gold="2")
    assert problem in prompt
    assert "[Ground Truth]\n\n2" in prompt
    assert "<paragraph_0>\nx = 2\n</paragraph_0>" in prompt
    assert "<paragraph_1>\n\\boxed{2}\n</paragraph_1>" in prompt
    assert count_prompt_steps(prompt) == 2


def test_prompt_without_gold_drops_its_section():
    prompt = build_grm_prompt("p", ["a"], gold=None)
    assert "Ground Truth" not in prompt and "ground truth" not in prompt


def test_prompt_matches_the_authors_critic_template(shared_data):
    """Our rendering reproduces the FAPO authors' critic prompts byte for byte."""
    with open(shared_data / "fapo_critic_example" / "fapo-critic.jsonl") as f:
        rows = [json.loads(line) for line in f][:20]
    for row in rows:
        content = row["prompt"][0]["content"]
        problem = content.split("[Math Problem]\n\n", 1)[1].split("\n\n[Ground Truth]", 1)[0]
        gold = content.split("[Ground Truth]\n\n", 1)[1].split("\n\n[AI Solution]", 1)[0]
        n = row["extra_info"]["total_steps"]
        steps = [content.split(f"<paragraph_{i}>\n", 1)[1].split(f"\n</paragraph_{i}>", 1)[0] for i in range(n)]
        assert build_grm_prompt(problem, steps, gold) == content
        assert count_prompt_steps(content) == n


def test_messages_are_one_user_turn():
    msgs = grm_messages("p", ["a"], "1")
    assert [m["role"] for m in msgs] == ["user"]


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("a\n\nb\n\n\nc", "paragraph", ["a", "b", "c"]),
        ("a\n  \nb", "paragraph", ["a", "b"]),
        ("a\nb\n\nc", "paragraph", ["a\nb", "c"]),
        ("a\nb\n\nc", "line", ["a", "b", "c"]),
        ("a; b;c", r";\s*", ["a", "b", "c"]),
        ("", "paragraph", []),
        ("   \n\n  ", "paragraph", []),
    ],
)
def test_split_steps(text, mode, expected):
    assert split_steps(text, mode) == expected


def test_render_then_count_round_trips():
    steps = split_steps("one\n\ntwo\n\nthree")
    assert count_prompt_steps(render_steps(steps)) == 3
