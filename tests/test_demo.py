"""`fapo demo --quick` end to end: every artefact exists and every number is finite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _finite_numbers(value, path="report"):
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        assert math.isfinite(value), path
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_numbers(v, f"{path}[{i}]")


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "fapo.cli", "demo", "--quick", "--out", str(out),
                           "--cache", str(tmp_path / "cache")], capture_output=True, text=True, env=env, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    for arm in ("grpo", "fapo", "fapo_oracle"):
        assert set(report[arm]) >= {"accuracy", "flawed_ratio", "mean_length", "step_s", "accuracy_per_seed",
                                    "flawed_ratio_per_seed", "clip_fraction"}
        assert 0 <= report[arm]["accuracy"] <= 1 and 0 <= report[arm]["flawed_ratio"] <= 1
        assert report["clip_fraction"][arm] > 0, "several optimizer steps per generation: the clip must bind"
        assert set(report["diagnostics"][arm]["reasons"]) >= {"clean", "skipped_pair"}
    assert set(report["grm"]) >= {"f1", "acc_err", "acc_corr", "false_alarms", "fpb_f1"}
    # the GenRM before and after RL, on the same held-out rows and one scale (percentages)
    assert report["grm_before"]["rows"] == report["grm"]["rows"] == 120
    assert all(0 <= report[k]["acc_corr"] <= 100 for k in ("grm_before", "grm"))
    # what the critiques compute beside what they say, for both
    assert all(set(report[k]["shown"]) >= {"f1", "fpb_f1", "differ_called_wrong", "agree_called_wrong"}
               for k in ("grm_before", "grm"))
    assert "| GenRM | F1 said | F1 shown |" in (out / "report.md").read_text()
    assert "The GenRM's warm-start: 40 SFT steps." in (out / "report.md").read_text()
    assert report["seeds"] == [0]
    assert set(report["overhead"]) == {"fapo", "fapo_oracle"}
    assert report["checks"] and all(set(c) == {"claim", "seen", "held"} for c in report["checks"])
    _finite_numbers({k: report[k] for k in ("grpo", "fapo", "fapo_oracle", "overhead")})
    json.dumps(report, allow_nan=False)

    # the oracle-judged FAPO arm penalised real flawed positives: reward 1 - λ = 0 for each flawed verdict
    critiques = _records(out / "fapo_oracle-seed0" / "critiques.jsonl")
    flawed = [c for c in critiques if c["status"] == "ok" and c["flawed"]]
    assert flawed, "the oracle found no flawed positive to penalise"
    assert all(c["reward"] == 0.0 and c["verdict"] == c["monitor_verdict"] for c in flawed)
    assert all(c["reward"] == 1.0 for c in critiques if c["status"] == "ok" and not c["flawed"])
    # same seed, same policy: the first generation batch is the same rollouts, so only the penalty differs
    grpo_first = next(r for r in _records(out / "grpo-seed0" / "metrics.jsonl") if "reward/mean" in r)
    fapo_first = next(r for r in _records(out / "fapo_oracle-seed0" / "metrics.jsonl") if "reward/mean" in r)
    assert grpo_first["verify/accuracy"] == fapo_first["verify/accuracy"]
    assert fapo_first["reward/mean"] < grpo_first["reward/mean"]

    markdown = (out / "report.md").read_text()
    assert "| GRPO |" in markdown and "| FAPO, oracle judge |" in markdown and "## Checks" in markdown
    assert "While judging FAPO's rollouts" in markdown and "P(correct \\| skipped)" in markdown
    # --quick tries one warm-start draw and reports its diagnostics and the gate's verdict either way
    assert len(report["warmstart_draws"]) == 1 and report["warmstart_draws"][0]["seed"] == 0
    assert "## The policy's warm-start draws" in markdown and "the policy's warm-start can test the claim" in markdown
    assert "| warm-start (SFT only) | 120 |" in markdown and "| after RL (3 steps, lr 2e-05) | 120 |" in markdown
    for png in ("accuracy_flawed.png", "flaw_classes.png", "length.png", "judge_agreement.png", "grm_reward.png"):
        assert (out / png).stat().st_size > 1000
        assert f"({png})" in markdown
    assert markdown.index("accuracy_flawed.png") < markdown.index("| arm |"), "the curves are the first picture"
    assert (out / "fapo-seed0" / "critiques.jsonl").exists()


def test_failed_policy_run_names_its_log(tmp_path):
    """A run that fails in its worker process stops the stage with an error that points at its output."""
    from fapo.demo.config import DemoConfig
    from fapo.demo.pipeline import run_policy_arms

    config = DemoConfig(seeds=1, policy_rl_steps=4, jobs=2, eval_problems=1, eval_samples=1)
    with pytest.raises(RuntimeError, match=r"log\.txt"):
        run_policy_arms(str(tmp_path / "no-such-policy"), tmp_path / "no-data", tmp_path / "out", [], config)
    assert any("Traceback" in log.read_text() for log in (tmp_path / "out").glob("*/log.txt"))


def test_judging_summary_is_none_where_the_judge_gave_no_verdict(tmp_path):
    """A judge that never closed its box leaves the judged share empty: None (valid JSON), not NaN."""
    from fapo.demo.report import judging_in_training

    run = tmp_path / "fapo-seed0"
    run.mkdir()
    steps = [{"step": 1, "loss": 0.1, "grm/judged": 3.0, "grm/invalid": 3.0, "grm/errors": 0.0,
              "grm/flawed_ratio": None, "monitor/flawed_ratio": 0.5, "monitor/judge_agreement": None},
             {"step": 2, "loss": 0.1, "grm/judged": 2.0, "grm/invalid": 2.0, "grm/errors": 0.0,
              "grm/flawed_ratio": float("nan"), "monitor/flawed_ratio": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    summary = judging_in_training([{"arm": "fapo", "output_dir": str(run)}, {"arm": "grpo", "output_dir": "x"}])
    assert summary == {"judged": 5, "judge_flawed_ratio": None, "checker_flawed_ratio": 0.375, "agreement": None,
                       "no_verdict_share": 1.0}
    json.dumps(summary, allow_nan=False)


def test_demo_config_arms_seeds_and_schedule():
    from fapo.demo.config import DemoConfig, demo_config

    config = DemoConfig(seeds=3, seed_base=5)
    assert config.seed_list == [5, 6, 7] and config.arms == ("grpo", "fapo", "fapo_oracle") and config.trains_genrm
    assert DemoConfig(judge="oracle").arms == ("grpo", "fapo_oracle") and not DemoConfig(judge="oracle").trains_genrm
    assert DemoConfig(judge="trained").arms == ("grpo", "fapo")
    assert demo_config(quick=True).arms == ("grpo", "fapo", "fapo_oracle")
    assert (demo_config().cache_name, demo_config(quick=True).cache_name) == ("demo", "demo-quick")
    assert demo_config(data_seed=3).cache_name == "demo-data3"  # another draw, cached apart
    assert demo_config(quick=True, seeds=2, data_seed=3, seed_base=4).cache_name == "demo-quick-data3"
    assert demo_config(seeds=1).cache_name == "demo"  # one seed of the default is still the default's warm-start
    assert demo_config(long=True).policy_rl_steps == 640 and demo_config(long=True, policy_rl_steps=40).policy_rl_steps == 160
    with pytest.raises(ValueError, match="do not go together"):
        demo_config(quick=True, long=True)
    with pytest.raises(ValueError, match="data_seed"):
        DemoConfig(data_seed=-1)
    with pytest.raises(ValueError, match="multiple of 4"):
        DemoConfig(policy_rl_steps=10)
    with pytest.raises(ValueError, match="judge must be one of"):
        DemoConfig(judge="human")


def test_critic_heal_and_grm_sft_steps_reach_the_data_and_the_genrm(tmp_path, monkeypatch):
    """`--critic-heal N` appends N healed pair slips and their twins to the critic rows and caches both warm-starts
    apart; `--grm-sft-steps S` sets the GenRM SFT's steps and keeps the base's other GenRM settings."""
    import fapo.testbed.warmstart as ws
    from fapo.cli import build_parser
    from fapo.demo.config import QUICK, DemoConfig, demo_config
    from fapo.demo.pipeline import prepare_data, warm_start

    assert demo_config(critic_heal=1200).cache_name == "demo-heal1200"
    assert demo_config(quick=True, data_seed=3, critic_heal=40).cache_name == "demo-quick-data3-heal40"
    quick = demo_config(quick=True, grm_sft_steps=80)
    assert quick.grm_warmstart == {**QUICK.grm_warmstart, "max_steps": 80} and quick.cache_name == "demo-quick"
    assert demo_config(grm_sft_steps=2400).grm_warmstart == {"max_steps": 2400}
    with pytest.raises(ValueError, match="critic_heal"):
        DemoConfig(critic_heal=-1)
    with pytest.raises(ValueError, match="grm_sft_steps"):
        demo_config(grm_sft_steps=0)
    small = {"n_train": 50, "n_test": 20}
    prepare_data(tmp_path / "plain", demo_config(**small))
    prepare_data(tmp_path / "heal", demo_config(critic_heal=30, **small))
    plain = (tmp_path / "plain" / "critic_train.jsonl").read_text().splitlines()
    heal = (tmp_path / "heal" / "critic_train.jsonl").read_text().splitlines()
    assert heal[:len(plain)] == plain and len(heal) == len(plain) + 2 * 30
    assert (tmp_path / "heal" / "sft_train.jsonl").read_bytes() == (tmp_path / "plain" / "sft_train.jsonl").read_bytes()
    seen = []
    monkeypatch.setattr(ws, "warmstart", lambda data, out, config: seen.append(config) or
                        {"train": {"parameters": 1, "train_seconds": 0.0}, "cached": False})
    warm_start(tmp_path / "heal", tmp_path / "cache", demo_config(warmstart_draws=1, grm_sft_steps=77, **small))
    assert [(c.role, c.max_steps) for c in seen] == [("policy", 1200), ("grm", 77)]
    args = build_parser().parse_args(["demo", "--critic-heal", "1200", "--grm-sft-steps", "2400"])
    assert (args.critic_heal, args.grm_sft_steps) == (1200, 2400)


def test_checks_table_from_hand_made_numbers():
    """Every claim of the checks table computed on a tiny report whose outcome is known by hand, per seed."""
    from fapo.demo.checks import check_targets

    def arm(acc, flawed, skipped, clip=(0.01, 0.02)):
        return {"accuracy": sum(acc) / len(acc), "flawed_ratio": sum(flawed) / len(flawed), "accuracy_per_seed": acc,
                "flawed_ratio_per_seed": flawed, "clip_fraction_per_seed": list(clip), "skipped": skipped}

    report = {"initial": {"accuracy": 0.60, "flawed_ratio": 0.30},
              "grpo": arm([0.70, 0.72], [0.45, 0.50], [0.40, 0.40]),
              "fapo_oracle": arm([0.69, 0.75], [0.20, 0.26], [0.10, 0.25], clip=(0.01, 0.0))}
    report["diagnostics"] = {a: {"skipped_pair_per_seed": report[a]["skipped"]} for a in ("grpo", "fapo_oracle")}
    report["diagnostics"]["initial"] = {"reasons": {"skipped_pair": 0.2}}
    checks = {c["claim"]: c for c in check_targets(report)}
    held = {claim: c["held"] for claim, c in checks.items()}
    assert held["GRPO: accuracy >= 5 points above the warm-start in every seed"] is True  # +10, +12
    assert checks["GRPO: accuracy >= 5 points above the warm-start in every seed"]["seen"] == "+10.0, +12.0 points"
    assert held["FAPO, oracle judge: accuracy >= 5 points above the warm-start in every seed"] is True  # +9, +15
    rise = "GRPO spreads the shortcut: flawed-positive ratio >= 10 points above the warm-start in every seed"
    assert held[rise] is True and checks[rise]["seen"] == "+15.0, +20.0 points"
    assert held["GRPO raises the shortcut (skipped-pair flawed positives, share of correct) above the warm-start's "
                "in every seed"] is True  # 0.2 -> 0.4, 0.4
    assert held["FAPO, oracle judge: flawed ratio <= 0.5 x GRPO's in every seed"] is False  # 0.26 > 0.25
    assert held["FAPO, oracle judge: mean accuracy >= GRPO's - 2 points"] is True  # -1, +3: mean +1
    assert checks["FAPO, oracle judge: mean accuracy >= GRPO's - 2 points"]["seen"] == "+1.0 points (per seed -1.0, +3.0)"
    assert held["FAPO, oracle judge: no seed more than 3 points under its GRPO twin"] is True
    assert held["FAPO, oracle judge: per-seed flawed ratios do not overlap GRPO's"] is True  # 0.26 < 0.45
    shortcut = [c for c in held if "shortcut alone" in c]
    assert [held[c] for c in shortcut] == [False]  # 0.25 > 0.5 x 0.40
    clip = "the clip binds (clip fraction > 0 in every run)"
    assert held[clip] is False and checks[clip]["seen"] == "grpo 1.00%, 2.00%; fapo_oracle 1.00%, 0.00%"
    report["fapo_oracle"]["accuracy_per_seed"] = [0.74, 0.68]  # +4, -4: the mean holds, one seed does not
    held = {c["claim"]: c["held"] for c in check_targets(report)}
    assert held["FAPO, oracle judge: mean accuracy >= GRPO's - 2 points"] is True
    assert held["FAPO, oracle judge: no seed more than 3 points under its GRPO twin"] is False


def _grm_eval(f1, acc_err, acc_corr, fpb_f1, n=400):
    """A GenRM evaluation as `fapo.eval.grm_bench` writes it (percentages)."""
    return {"subsets": {"testbed": {"n": n, "f1": f1, "acc_err": acc_err, "acc_corr": acc_corr}},
            "flawed_positive_bench": {"f1": fpb_f1, "precision": 70.0, "recall": 80.0}}


def test_genrm_before_and_after_rl_on_one_scale(tmp_path):
    """The report's GenRM table: warm-start, checkpoints and the final GenRM from the same rows, false alarms as
    100 - acc_corr, the three GenRM checks, and the RL curve with the held-out points."""
    from fapo.demo.checks import check_targets
    from fapo.demo.config import DemoConfig
    from fapo.demo.report import genrm_scores, grm_table, plot_grm_rl

    before, mid, after = (genrm_scores(_grm_eval(61.1, 52.2, 73.6, 73.4)), genrm_scores(_grm_eval(70.0, 60.0, 85.0, 80.0)),
                          genrm_scores(_grm_eval(77.0, 66.0, 92.5, 86.0)))
    assert before["false_alarms"] == 26.4 and before["rows"] == 400 and after["fpb_precision"] == 70.0
    report = {"config": {"grm_rl_steps": 60, "grm_rl_lr": 1e-4}, "grm_before": before, "grm": after,
              "grm_checkpoints": {"30": mid}, "initial": {"accuracy": 0.6, "flawed_ratio": 0.3},
              "grpo": {"accuracy": 0.7, "flawed_ratio": 0.4, "accuracy_per_seed": [0.7], "flawed_ratio_per_seed": [0.4],
                       "clip_fraction": 0.01}, "diagnostics": {}}
    table = grm_table(report)
    assert [line.split(" | ")[0] for line in table[2:]] == ["| warm-start (SFT only)", "| RL step 30",
                                                             "| after RL (60 steps, lr 0.0001)"]
    assert "| 400 | 61.1 | 52.2 | 73.6 | 26.4 | 70 | 80 | 73.4 |" in table[2]
    held = {c["claim"]: c["held"] for c in check_targets(report)}
    assert held["GenRM RL: held-out F1 >= 15 points above the warm-start's"] is True  # +15.9
    assert held["GenRM after RL: false alarms <= 10% of clean held-out rows"] is True  # 7.5
    assert held["GenRM after RL: FlawedPositiveBench-style F1 >= 85 (testbed rows)"] is True
    report["grm"] = genrm_scores(_grm_eval(76.0, 66.0, 89.0, 84.9))
    held = {c["claim"]: c["held"] for c in check_targets(report)}
    assert not any(held[k] for k in held if k.startswith("GenRM"))
    assert DemoConfig().grm_rl_lr == 2e-5 and DemoConfig().grm_eval_every == 0
    with pytest.raises(ValueError, match="grm_rl_lr"):
        DemoConfig(grm_rl_lr=0.0)

    rl = tmp_path / "grm_rl"
    rl.mkdir()
    steps = [{"step": s, "loss": 0.1, "reward/mean": -0.2 + 0.01 * s, "grm/valid_rate": 1.0,
              "grm/outcome_accuracy": 0.6} for s in range(1, 61)]
    (rl / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    assert plot_grm_rl(rl, tmp_path, {0: before, 30: mid, 60: after}) == ["grm_reward.png"] and (tmp_path / "grm_reward.png").stat().st_size > 1000


def test_data_seed_draws_new_data_and_seeds_both_warm_starts(tmp_path, monkeypatch):
    """`--data-seed D`: other problems, and both warm-starts initialised and ordered by D (a whole new draw)."""
    import fapo.testbed.warmstart as ws
    from fapo.demo.config import demo_config
    from fapo.demo.pipeline import prepare_data, warm_start

    small = {"n_train": 50, "n_test": 20}
    prepare_data(tmp_path / "d0", demo_config(**small))
    prepare_data(tmp_path / "d5", demo_config(data_seed=5, **small))
    prepare_data(tmp_path / "d5b", demo_config(data_seed=5, **small))
    read = lambda d: (tmp_path / d / "policy_train.jsonl").read_bytes()  # noqa: E731
    assert read("d5") == read("d5b") and read("d5") != read("d0")
    seen = []
    monkeypatch.setattr(ws, "warmstart", lambda data, out, config: seen.append(config) or
                        {"train": {"parameters": 1, "train_seconds": 0.0}, "cached": False})
    warm_start(tmp_path / "d5", tmp_path / "cache", demo_config(data_seed=5, warmstart_draws=1, **small))
    assert [(c.role, c.seed) for c in seen] == [("policy", 5), ("grm", 5)]
    assert seen[1].init_from == str(tmp_path / "cache" / "policy")


def test_a_warm_start_that_cannot_test_the_claim_is_redrawn_and_reported(tmp_path, monkeypatch):
    """Draw 0 computes the pair right 41% of the time (FAPO's penalised skip beats that): refused; draw 1 (seed
    D + 1000) is used, the GenRM starts from it, and the report's checks and draw table say so."""
    import fapo.testbed.warmstart as ws
    from fapo.demo.checks import check_targets
    from fapo.demo.config import demo_config
    from fapo.demo.pipeline import warm_start
    from fapo.demo.report import _draw_lines

    found = {0: (0.41, 0.80, 0.41, 0.35), 1000 + 7: (0.30, 0.76, 0.60, 0.55)}
    seen = []

    def fake(data, out, config):
        seen.append((config.role, config.seed, Path(out).name, config.init_from))
        eval_ = {}
        if config.role == "policy":
            skip, p_skip, p_comp, clean = found[0] if config.seed == 7 else found[config.seed]
            eval_ = {"accuracy": 0.6, "diagnostics": {"skip_share": skip, "p_correct_skipped": p_skip,
                                                       "p_correct_computed": p_comp, "p_clean_computed": clean}}
        return {"train": {"parameters": 1, "train_seconds": 0.0}, "cached": False, "eval": eval_}

    monkeypatch.setattr(ws, "warmstart", fake)
    warm = warm_start(tmp_path, tmp_path / "cache", demo_config(data_seed=7))
    assert seen == [("policy", 7, "policy", None), ("policy", 1007, "policy-draw1", None),
                    ("grm", 1007, "grm-draw1", str(tmp_path / "cache" / "policy-draw1"))]
    draws = warm["draws"]
    assert [(d["draw"], bool(d["refused"])) for d in draws] == [(0, True), (1, False)]
    assert "computing is right only 41%" in draws[0]["refused"][0]
    held = {c["claim"]: c for c in check_targets({"warmstart_draws": draws, "initial": {"accuracy": 0.6, "flawed_ratio": 0.3},
                                                   "grpo": {"accuracy": 0.7, "flawed_ratio": 0.4, "accuracy_per_seed": [0.7],
                                                            "flawed_ratio_per_seed": [0.4], "clip_fraction": 0.01},
                                                   "diagnostics": {}})}
    gate = next(c for claim, c in held.items() if claim.startswith("the policy's warm-start can test"))
    assert gate["held"] and gate["seen"] == "draw 1 of 2 tried"
    table = _draw_lines({"warmstart_draws": draws})
    assert any(line.startswith("| 0 | 7 | 41.0% | 80.0% | 41.0% | 35.0% | no | computing is right only 41%")
               for line in table), table
    # none testable in the draws allowed: the last is used, and the check says it failed
    found[1000 + 7] = found[0]
    seen.clear()
    warm = warm_start(tmp_path, tmp_path / "cache", demo_config(data_seed=7, warmstart_draws=2, judge="oracle"))
    assert [s[1] for s in seen] == [7, 1007] and all(d["refused"] for d in warm["draws"])
    assert warm["policy"]["dir"] == str(tmp_path / "cache" / "policy-draw1")


def test_the_genrm_table_sets_what_the_critiques_compute_beside_what_they_say():
    """`shown_scores` on real checker critiques and on a GenRM that computes a slip but calls it correct; the
    report's second GenRM table shows both verdicts and how often differing results were called wrong."""
    from fapo.demo.pipeline import shown_scores
    from fapo.demo.report import genrm_scores, grm_table
    from fapo.eval.critic_data import CriticRow
    from fapo.testbed.checker import critique
    from fapo.testbed.task import Op, Problem, clean_steps

    problem = Problem(4, (Op("add", 15), Op("subtract", 15)))
    slip = ("(1) 4+15 = 19", "(2) 19-15 = 5", "The answer is \\boxed{5}")
    clean = tuple(clean_steps(problem))
    rows = [CriticRow("testbed", "a", "p", slip, 1, False), CriticRow("testbed", "b", "p", clean, -1, True)]
    checker = shown_scores(rows, [critique(problem, list(r.steps)) for r in rows])
    assert checker["subsets"]["testbed"]["f1"] == 100.0
    assert (checker["differ"], checker["differ_called_wrong"], checker["agree_called_wrong"]) == (1, 1, 0)
    said_correct = critique(problem, list(slip)).replace("vs 5, wrong. \\boxed{1}", "vs 5, correct.") + \
        "\n\nNo paragraph is wrong. \\boxed{-1}"
    genrm = shown_scores(rows, [said_correct, None])  # the second row: no critique at all (an error)
    assert genrm["subsets"]["testbed"]["acc_err"] == 100.0 and genrm["subsets"]["testbed"]["acc_corr"] == 0.0
    assert (genrm["differ"], genrm["differ_called_wrong"]) == (1, 0)

    after = genrm_scores({**_grm_eval(57.2, 40.9, 95.4, 85.4), "shown": {
        **_grm_eval(88.5, 85.7, 91.4, 91.7), "differ": 230, "differ_called_wrong": 66, "agree": 1101,
        "agree_called_wrong": 3}})
    assert after["shown"]["differ_called_wrong"] == round(100 * 66 / 230, 4) and "shown" not in after["shown"]
    table = grm_table({"config": {"grm_rl_steps": 15, "grm_rl_lr": 2e-5}, "grm": after})
    assert table[-1] == "| after RL (15 steps, lr 2e-05) | 57.2 | 88.5 | 85.4 | 91.7 | 28.7 | 0.273 |"
    assert table[-3].startswith("| GenRM | F1 said | F1 shown |")
    assert "shown" not in "".join(grm_table({"config": {"grm_rl_steps": 0, "grm_rl_lr": 2e-5},
                                              "grm": genrm_scores(_grm_eval(57.2, 40.9, 95.4, 85.4))}))
