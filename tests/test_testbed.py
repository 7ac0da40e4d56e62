"""The testbed's task, checker, flaws and strict answer rule: table tests and property tests."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fapo.boxed import count_boxed
from fapo.steps import split_steps
from fapo.testbed.answer import are_correct, is_correct, strict_final_answer
from fapo.testbed.checker import (
    check_steps,
    comparisons,
    critique,
    earliest_error,
    shown_verdict,
    tokenizer_critique,
)
from fapo.testbed.flaws import (
    CRITIC_RATES,
    FLAW_KINDS,
    FlawRates,
    flaw_applies,
    make_solution,
    sample_solution,
)
from fapo.testbed.task import (
    Op,
    Problem,
    TaskConfig,
    clean_steps,
    parse_problem,
    render_solution,
    sample_problem,
)

# Start with 4. (1) Add 15. (2) Subtract 15. (3) Multiply by 3.  (answer 12; ops 0-1 are a cancelling pair)
PAIR = Problem(4, (Op("add", 15), Op("subtract", 15), Op("multiply", 3)))
# Start with 7. (1) Add 4. (2) Add 5. (3) Multiply by 2.  (answer 32)
ADDS = Problem(7, (Op("add", 4), Op("add", 5), Op("multiply", 2)))
BOX = "The answer is \\boxed{{{}}}"


def _steps(*lines: str) -> list[str]:
    """Steps from compact lines: "k| a + b = c" becomes "(k) a+b = c"; other lines stay."""
    out = []
    for line in lines:
        match = re.fullmatch(r"(\d+)\| (-?\d+) ([+*-]) (\d+) = (-?\d+)", line)
        out.append(f"({match[1]}) {match[2]}{match[3]}{match[4]} = {match[5]}" if match else line)
    return out


B12 = BOX.format(12)


@pytest.mark.parametrize(
    ("case", "problem", "steps", "expected"),
    [
        ("clean", PAIR, ["(1) 4+15 = 19", "(2) 19-15 = 4", "(3) 4*3 = 12", B12], -1),
        ("clean, padded whitespace", PAIR, [" (1) 4+15 = 19 ", *_steps("2| 19 - 15 = 4", "3| 4 * 3 = 12", B12)], -1),
        ("skip: cancelling pair left out", PAIR, ["(3) 4*3 = 12", B12], 0),
        ("skip, renumbered", PAIR, ["(1) 4*3 = 12", B12], 0),
        ("skip mid-solution", Problem(5, (Op("add", 2), Op("add", 20), Op("subtract", 20), Op("subtract", 3))),
         _steps("1| 5 + 2 = 7", "4| 7 - 3 = 4", BOX.format(4)), 1),
        ("skip at the end: the answer comes early", Problem(5, (Op("add", 2), Op("add", 20), Op("subtract", 20))),
         _steps("1| 5 + 2 = 7", BOX.format(7)), 1),
        ("jump: two adds merged, right value", ADDS, _steps("1| 7 + 9 = 16", "3| 16 * 2 = 32", BOX.format(32)), 0),
        ("jump: result of two ops in one step", ADDS, _steps("1| 7 + 4 = 16", "3| 16 * 2 = 32", BOX.format(32)), 0),
        ("compensating errors", PAIR, _steps("1| 4 + 15 = 18", "2| 18 - 15 = 4", "3| 4 * 3 = 12", B12), 0),
        ("compensating errors later", ADDS, _steps("1| 7 + 4 = 11", "2| 11 + 5 = 17", "3| 17 * 2 = 32", BOX.format(32)), 1),
        ("guess: stops and states the answer", PAIR, _steps("1| 4 + 15 = 19", B12), 1),
        ("guess: only an answer", PAIR, [B12], 0),
        ("answer does not follow from the steps", PAIR,
         _steps("1| 4 + 15 = 19", "2| 19 - 15 = 4", "3| 4 * 3 = 12", BOX.format(13)), 3),
        ("plain mistake", PAIR, _steps("1| 4 + 15 = 29", "2| 29 - 15 = 14", "3| 14 * 3 = 42", BOX.format(42)), 0),
        ("does not continue from the previous result", PAIR,
         _steps("1| 4 + 15 = 19", "2| 18 - 15 = 3", "3| 3 * 3 = 9", BOX.format(9)), 1),
        ("reordered operations", PAIR, _steps("3| 4 * 3 = 12", "1| 12 + 15 = 27", "2| 27 - 15 = 12", B12), 0),
        ("wrong start value", PAIR, _steps("1| 5 + 15 = 20", "2| 20 - 15 = 5", "3| 5 * 3 = 15", BOX.format(15)), 0),
        ("wrong step number", PAIR, _steps("2| 4 + 15 = 19", "2| 19 - 15 = 4"), 0),
        ("right number, other operation", PAIR, ["(1) 4-15 = -11"], 0),
        ("right number, other operand", PAIR, ["(1) 4+5 = 9"], 0),
        ("step without its number", PAIR, ["4+15 = 19", *_steps("2| 19 - 15 = 4", "3| 4 * 3 = 12")], 0),
        ("spaced arithmetic is not the format", PAIR, ["(1) 4 + 15 = 19"], 0),
        ("unparseable step", PAIR, ["4 plus 15 is 19", *_steps("2| 19 - 15 = 4", "3| 4 * 3 = 12", B12)], 0),
        ("prose around a step", PAIR, [*_steps("1| 4 + 15 = 19"), "so (2) 19-15 = 4"], 1),
        ("an extra operation", PAIR, _steps("1| 4 + 15 = 19", "2| 19 - 15 = 4", "3| 4 * 3 = 12", "4| 12 + 1 = 13", B12), 3),
        ("text after the answer", PAIR, _steps("1| 4 + 15 = 19", "2| 19 - 15 = 4", "3| 4 * 3 = 12", B12, "}}}}"), 4),
        ("a second answer", PAIR, _steps("1| 4 + 15 = 19", "2| 19 - 15 = 4", "3| 4 * 3 = 12", B12, B12), 4),
        ("malformed box", PAIR,
         _steps("1| 4 + 15 = 19", "2| 19 - 15 = 4", "3| 4 * 3 = 12", "The answer is \\boxed{12}}"), 3),
        ("unfinished but valid so far", PAIR, _steps("1| 4 + 15 = 19"), -1),
        ("no steps", PAIR, [], -1),
        ("negative values are fine", Problem(3, (Op("subtract", 5), Op("add", 4))),
         _steps("1| 3 - 5 = -2", "2| -2 + 4 = 2", BOX.format(2)), -1),
    ],
)
def test_earliest_error_table(case, problem, steps, expected):
    assert earliest_error(problem, steps) == expected, case


def test_check_steps_explains_the_error():
    assert check_steps(PAIR, _steps("3| 4 * 3 = 12")).reason == "it does not do the next operation (1) Add 15"
    assert "not 29" in check_steps(PAIR, _steps("1| 4 + 15 = 29")).reason
    assert check_steps(PAIR, clean_steps(PAIR)).reason == ""


def test_critique_reads_each_result_then_sets_the_expected_step_beside_it_and_ends_in_the_verdict():
    text = critique(PAIR, _steps("1| 4 + 15 = 19", "2| 19 - 15 = 5", "3| 5 * 3 = 15", BOX.format(15)))
    assert text.split("\n\n") == [
        "<paragraph_0>\nwritten 19\nexpected (1) 4+15 = 19 vs 19, correct.\n</paragraph_0>",
        "<paragraph_1>\nwritten 5\nexpected (2) 19-15 = 4 vs 5, wrong. \\boxed{1}\n</paragraph_1>",
    ]
    clean = critique(PAIR, clean_steps(PAIR)).split("\n\n")
    assert clean[3] == "<paragraph_3>\nwritten answer 12\nexpected answer 12 vs answer 12, correct.\n</paragraph_3>"
    assert clean[-1] == "No paragraph is wrong. \\boxed{-1}"
    assert critique(PAIR, [*clean_steps(PAIR), "}}"]).endswith(
        "<paragraph_4>\nwritten unreadable\nexpected nothing vs unreadable, wrong. \\boxed{4}\n</paragraph_4>")
    assert critique(PAIR, [BOX.format(12)]).endswith(
        "written answer 12\nexpected (1) 4+15 = 19 vs answer 12, wrong. \\boxed{0}\n</paragraph_0>")
    for steps in (_steps("1| 4 + 15 = 19", "2| 19 - 15 = 5"), clean_steps(PAIR), [BOX.format(12)]):
        assert count_boxed(critique(PAIR, steps)) == 1  # the verdict's box is the only one


def test_shown_verdict_reads_the_critiques_own_comparisons_not_its_box():
    """What a critique computes, whatever it says: the first paragraph whose two results differ."""
    slip = _steps("1| 4 + 15 = 19", "2| 19 - 15 = 5", "3| 5 * 3 = 15", BOX.format(15))
    assert shown_verdict(critique(PAIR, slip)) == 1 == earliest_error(PAIR, slip)
    assert shown_verdict(critique(PAIR, clean_steps(PAIR))) == -1
    assert shown_verdict(critique(PAIR, [BOX.format(12)])) == 0  # "19 vs answer 12"
    assert shown_verdict(critique(PAIR, [*clean_steps(PAIR), "}}"])) == 4  # "nothing vs unreadable"
    # a GenRM that computes the slip and calls it correct: its box says -1, its comparison says 1
    said = ("<paragraph_0>\nwritten 19\nexpected (1) 4+15 = 19 vs 19, correct.\n</paragraph_0>\n\n"
            "<paragraph_1>\nwritten 5\nexpected (2) 19-15 = 4 vs 5, correct.\n</paragraph_1>\n\n"
            "No paragraph is wrong. \\boxed{-1}")
    assert shown_verdict(said) == 1
    assert [(c.paragraph, c.expected, c.written, c.said_wrong, c.differ) for c in comparisons(said)] == [
        (0, "19", "19", False, False), (1, "4", "5", False, True)]
    cut = "<paragraph_0>\nwritten 19\nexpected (1) 4+15 = 19 vs 19, correct.\n</paragraph_0>\n\n<paragraph_1>\nwrit"
    assert shown_verdict(cut) == -1 and shown_verdict("no comparison here \\boxed{2}") is None
    # it reads results only: a step numbered past a skipped pair lands on the right value
    skipped = _steps("1| 4 + 15 = 19", "3| 19 * 3 = 57")
    assert earliest_error(PAIR, skipped) == 1 and shown_verdict(critique(PAIR, skipped)) == 1  # 4 vs 57
    # ... and a step that names the wrong operation but writes the right value shows nothing at all
    renumbered = _steps("1| 4 + 15 = 19", "3| 19 - 15 = 4")
    assert earliest_error(PAIR, renumbered) == 1 and shown_verdict(critique(PAIR, renumbered)) == -1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_shown_verdict_agrees_with_the_checker_on_its_own_critiques_of_sampled_solutions(seed):
    """On the checker's own critiques the comparisons and the box agree, except where a wrong operation lands on
    the right value (a skipped pair, then a step numbered past it: docs of `shown_verdict`)."""
    rng = random.Random(seed)
    problem = sample_problem(rng, TaskConfig())
    solution = sample_solution(problem, CRITIC_RATES, rng)
    text = critique(problem, list(solution.steps))
    last = comparisons(text)[-1]  # the checker's critique ends at its verdict's paragraph
    if last.said_wrong and not last.differ:  # a wrong operation that lands on the right value: nothing differs
        assert last.paragraph == solution.label and shown_verdict(text) == -1
    else:
        assert shown_verdict(text) == solution.label


def test_the_tokenizer_corpus_keeps_the_first_critique_text_whatever_the_critique_format():
    steps = _steps("1| 4 + 15 = 19", "2| 19 - 15 = 5", "3| 5 * 3 = 15", BOX.format(15))
    assert tokenizer_critique(PAIR, steps).split("\n\n") == [
        "<paragraph_0>\n(1) 4+15 = 19\n</paragraph_0>\nexpected (1) 4+15 = 19, correct.",
        "<paragraph_1>\n(2) 19-15 = 5\n</paragraph_1>\nexpected (2) 19-15 = 4, wrong. \\boxed{1}",
    ]
    clean = tokenizer_critique(PAIR, clean_steps(PAIR)).split("\n\n")
    assert clean[3] == "<paragraph_3>\nanswer 12\n</paragraph_3>\nexpected answer 12, correct."
    assert clean[-1] == "No paragraph is wrong. \\boxed{-1}"
    assert tokenizer_critique(PAIR, [*clean_steps(PAIR), "}}"]).endswith(
        "<paragraph_4>\nunreadable\n</paragraph_4>\nexpected nothing, wrong. \\boxed{4}")


def test_problem_text_round_trips_and_solution_splits_into_its_steps():
    rng = random.Random(1)
    for _ in range(200):
        problem = sample_problem(rng, TaskConfig())
        assert parse_problem(problem.text) == problem
        steps = clean_steps(problem)
        assert split_steps(render_solution(steps)) == steps
    assert PAIR.text == "Start with 4. (1) Add 15. (2) Subtract 15. (3) Multiply by 3."
    assert parse_problem("Start with 4. (1) Add 15. Then think.") is None
    assert parse_problem("Start with 4. (1) Add 15. (3) Add 2.") is None


def test_sample_problem_respects_the_knobs():
    config = TaskConfig(min_ops=3, max_ops=4, max_value=30, op_weights={"add": 1.0}, cancel_pair_rate=0.0)
    rng = random.Random(0)
    for _ in range(100):
        problem = sample_problem(rng, config)
        assert 3 <= len(problem.ops) <= 4
        assert all(op.kind == "add" for op in problem.ops)
        assert all(0 <= v <= 30 for v in problem.values)
        assert not problem.cancelling_pairs()
    with pytest.raises(ValueError, match="op_weights"):
        TaskConfig(op_weights={"divide": 1.0})


def test_default_task_has_cancelling_pairs_often():
    rng = random.Random(0)
    problems = [sample_problem(rng, TaskConfig()) for _ in range(500)]
    share = sum(bool(p.cancelling_pairs()) for p in problems) / len(problems)
    assert 0.3 < share < 0.5  # cancel_pair_rate 0.5 on problems with >= 3 ops
    def two_digit_pair(problem):  # the drawn pair (plain operations may cancel by chance, with K <= 6)
        return [i for i in problem.cancelling_pairs() if problem.ops[i].operand >= 11]

    assert all(two_digit_pair(p) in ([], [len(p.ops) - 2]) for p in problems)  # pair_at_end
    assert sum(bool(two_digit_pair(p)) for p in problems) > 100
    anywhere = [sample_problem(rng, TaskConfig(pair_at_end=False)) for _ in range(500)]
    assert any(two_digit_pair(p) and two_digit_pair(p)[0] < len(p.ops) - 2 for p in anywhere)


def test_pair_slip_computes_the_pair_with_a_wrong_sum():
    solution = make_solution(PAIR, "pair_slip", random.Random(0))
    assert solution.label == 0 and not solution.final_answer_correct
    assert solution.steps[0].startswith("(1) 4+15 = ") and solution.steps[0] != "(1) 4+15 = 19"
    assert solution.steps[1].startswith("(2) ") and "-15 = " in solution.steps[1]


problems = st.builds(
    lambda seed, lo, extra: sample_problem(random.Random(seed), TaskConfig(min_ops=lo, max_ops=lo + extra)),
    st.integers(0, 2**32), st.integers(1, 6), st.integers(0, 3),
)


@settings(max_examples=300, deadline=None)
@given(problems)
def test_clean_solution_always_checks_clean(problem):
    assert earliest_error(problem, clean_steps(problem)) == -1


@settings(max_examples=300, deadline=None)
@given(problems, st.data(), st.integers(-1000, 1000).filter(lambda d: d != 0))
def test_corrupting_the_result_of_step_k_yields_k(problem, data, delta):
    steps = clean_steps(problem)
    k = data.draw(st.integers(0, len(problem.ops) - 1))
    head, _, result = steps[k].rpartition(" = ")
    steps[k] = f"{head} = {int(result) + delta}"
    assert earliest_error(problem, steps) == k


@settings(max_examples=200, deadline=None)
@given(problems, st.integers(0, 2**32))
def test_every_flaw_lands_where_it_should(problem, seed):
    for flaw in ("clean",) + FLAW_KINDS:
        solution = make_solution(problem, flaw, random.Random(seed))
        assert (solution is None) == (not flaw_applies(problem, flaw))
        if solution is None:
            continue
        assert solution.label == earliest_error(problem, list(solution.steps))
        assert (solution.label == -1) == (flaw == "clean"), (flaw, solution)
        assert solution.final_answer_correct == (flaw not in ("mistake", "pair_slip")), (flaw, solution)


def test_heal_flaw_slips_in_the_pairs_addition_and_the_subtraction_undoes_it():
    solution = make_solution(PAIR, "heal", random.Random(0))
    assert solution.label == 0 and solution.final_answer_correct
    (add, subtract, *rest), start = solution.steps, PAIR.start
    assert add.startswith(f"(1) {start}+") and add.rpartition(" = ")[2] != str(start + PAIR.ops[0].operand)
    assert subtract.rpartition(" = ")[2] == str(start)  # back to the value before the pair: the answer is right
    assert list(rest) == ["(3) 4*3 = 12", B12]


def test_skip_flaw_is_the_shortcut_over_the_cancelling_pair():
    solution = make_solution(PAIR, "skip", random.Random(0))
    assert list(solution.steps) == ["(3) 4*3 = 12", B12]
    assert solution.label == 0 and solution.final_answer_correct


def test_flaw_mix_follows_its_rates():
    rng = random.Random(0)
    pair_problems = [p for p in (sample_problem(rng, TaskConfig()) for _ in range(3000)) if p.cancelling_pairs()]
    mix = [sample_solution(p, FlawRates(skip=0.5), rng).flaw for p in pair_problems]
    assert abs(mix.count("skip") / len(mix) - 0.5) < 0.05
    assert set(mix) == {"skip", "clean"}
    flaws = {sample_solution(p, CRITIC_RATES, rng).flaw for p in pair_problems}
    assert flaws == {"clean", *FLAW_KINDS} - {"heal"}  # healed slips come as rows of their own (GenerateConfig)
    assert {sample_solution(p, FlawRates(heal=1.0), rng).flaw for p in pair_problems} == {"heal"}


def test_flaw_rates_parse_and_validate():
    assert FlawRates.parse("skip=0.5, jump=0.1") == FlawRates(skip=0.5, jump=0.1)
    with pytest.raises(ValueError, match="kind=rate"):
        FlawRates.parse("leap=0.1")
    with pytest.raises(ValueError, match="sum"):
        FlawRates.parse("skip=0.7,jump=0.5")


@pytest.mark.parametrize(
    ("completion", "truncated", "answer"),
    [
        ("(3) 4*3 = 12\n\nThe answer is \\boxed{12}", False, "12"),
        ("The answer is \\boxed{12}\n", False, "12"),
        ("The answer is \\boxed{12}", True, None),  # cut at the length limit: no answer
        ("The answer is \\boxed{12}}}}}", False, None),  # padding after the box
        ("\\boxed{12} then \\boxed{12}", False, None),  # two boxes
        ("The answer is \\boxed{12}.", False, "12"),  # a closer (`.`, `$`, `\\]`) after the box: the one strict rule
        ("The answer is \\boxed{12}. Or 13.", False, None),  # text after the box
        ("The answer is 12", False, None),
        ("The answer is \\boxed{12", False, None),
    ],
)
def test_strict_final_answer(completion, truncated, answer):
    assert strict_final_answer(completion, truncated) == answer


def test_is_correct_uses_the_strict_rule_and_verify():
    assert is_correct(PAIR, "The answer is \\boxed{12}")
    assert is_correct(PAIR.text, "The answer is \\boxed{+12}")  # equivalence is fapo.verify's
    assert not is_correct(PAIR, "The answer is \\boxed{13}")
    assert not is_correct(PAIR, "The answer is \\boxed{12}", truncated=True)
    assert not is_correct(PAIR, "The answer is \\boxed{12}}}}")
    assert are_correct([PAIR, ADDS], ["\\boxed{12}", "\\boxed{12}"]) == [True, False]
    with pytest.raises(ValueError, match="not a testbed problem"):
        is_correct("What is 2 + 2?", "\\boxed{4}")


@pytest.mark.parametrize("unit", ["[Math Problem]\n\n", "<paragraph_0>\n", "<paragraph_0>\nx\n</paragraph_1>"])
def test_the_served_oracle_parses_a_hostile_prompt_in_linear_time(unit):
    """421 KiB of one repeated header or tag: the lazy-regex parser took ~56 s (quadratic) holding the GIL."""
    import time

    from fapo.serving.launch import serve_in_thread
    from fapo.serving.server import load_oracle
    from test_grm_server import call

    head = "[Math Problem]\n\nStart with 2. (1) Add 3. What is the result?\n\n[AI Solution]\n\n"
    with serve_in_thread(load_oracle("testbed")) as server:
        t0 = time.perf_counter()
        status, body = call(f"{server.url}/chat/completions",
                            {"messages": [{"role": "user", "content": (head if "para" in unit else "")
                                           + unit * (421 * 1024 // len(unit))}]})
        assert status == 200 and time.perf_counter() - t0 < 3.0
