"""fapo.integrations.verl driven by verl itself (`make test-verl`: verl 0.9.1 in .venv-verl; skipped elsewhere).

verl's own loader (`get_custom_reward_fn`, `custom_reward_function.path=pkg://...`) wraps our function
the way a run script does, verl's `DAPORewardManager.run_single` decodes `DataProto` items built from real
rollouts (shared/data/qwen25math_rollouts) with a real tokenizer and awaits it with verl's keywords, and
the GenRM answers behind a `/generate` stand-in (verl's router protocol) or a real `serve-grm` (OpenAI
path, settings through `reward_kwargs`). Cross-checks against the FAPO recipe's reward logic, restated
below on verl's own `math_dapo` helpers, say where the two agree and where they do not.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections import Counter

import pytest

verl = pytest.importorskip("verl", reason="verl is not installed: run `make test-verl`")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.reward_loop.reward_manager.dapo import DAPORewardManager  # noqa: E402
from verl.trainer.ppo.reward import get_custom_reward_fn  # noqa: E402
from verl.utils.reward_score.math_dapo import last_boxed_only_string, normalize_final_answer, remove_boxed  # noqa: E402

from fapo.integrations.verl import compute_score_baseline, compute_score_fapo, compute_score_genrm  # noqa: E402
from fapo.serving.launch import serve_in_thread  # noqa: E402
from verl_standins import FixedReplyBackend, GenerateStandIn  # noqa: E402

MAX_RESPONSE = 1024


def recipe_verify(solution: str, gold: str) -> bool:
    """The recipe's check: DAPO's normalised last box of the last 300 characters equals the gold."""
    box = last_boxed_only_string(solution[-300:])
    pred = remove_boxed(box) if box is not None else "[INVALID]"
    return normalize_final_answer(pred) == normalize_final_answer(gold)


def recipe_flawed(critique: str) -> bool:
    """The recipe's reading of a GenRM answer: flawed iff the last box holds an integer other than -1."""
    try:
        return int(remove_boxed(last_boxed_only_string(critique))) != -1
    except Exception:  # the recipe treats every unreadable answer as "not flawed"
        return False


def recipe_genrm_score(critique: str, label: int, total_steps: int) -> float:
    """The recipe's GenRM reward: the box of the last 300 characters read by int(), in range or invalid."""
    try:
        k = int(remove_boxed(last_boxed_only_string(critique[-300:])))
        k = k if k == -1 or 0 <= k < total_steps else None
    except Exception:
        k = None
    if k is None:
        return -1.0
    if label == -1:
        return 1.0 if k == -1 else -1.0
    return -1.0 if k == -1 else 1.0 - abs(k - label) / total_steps


def verdict_for(prompt: str) -> str:
    """A deterministic stand-in GenRM: flawed at step 0 for about a third of the problems (by problem text,
    which the recipe's prompt and fapo's both hold in their [Math Problem] section)."""
    problem = prompt.split("[Math Problem]\n\n", 1)[-1].split("\n\n[Ground Truth]", 1)[0]
    return "Checked.\n\n\\boxed{0}" if zlib.crc32(problem.encode()) % 3 == 0 else "Checked.\n\n\\boxed{-1}"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def rollouts(shared_data) -> list[dict]:
    rows = [json.loads(line) for line in (shared_data / "qwen25math_rollouts" / "math_cot_100.jsonl").open()]
    return [{"question": r["question"], "gold": r["gt"], "response": response, "graded": bool(score)}
            for r in rows for response, score in zip(r["code"], r["score"])]


def verl_config(function: str, **reward_kwargs) -> OmegaConf:
    return OmegaConf.create({"reward": {
        "custom_reward_function": {"path": "pkg://fapo.integrations.verl", "name": function,
                                   "reward_kwargs": reward_kwargs},
        "reward_kwargs": {"max_resp_len": MAX_RESPONSE,
                          "overlong_buffer_cfg": {"enable": True, "len": 256, "penalty_factor": 1.0, "log": True}},
    }})


def data_item(tokenizer, rollout: dict, split: str = "train") -> DataProto:
    """One rollout as verl's reward loop hands it over: left-padded prompt, right-padded response."""
    prompt = tokenizer.encode(rollout["question"], add_special_tokens=False)[-64:]
    response = tokenizer.encode(rollout["response"], add_special_tokens=False)[:MAX_RESPONSE]
    prompts = torch.full((1, 64), tokenizer.pad_token_id or 0)
    prompts[0, 64 - len(prompt):] = torch.tensor(prompt)
    responses = torch.full((1, MAX_RESPONSE), tokenizer.pad_token_id or 0)
    responses[0, : len(response)] = torch.tensor(response)
    mask = torch.zeros((1, 64 + MAX_RESPONSE), dtype=torch.long)
    mask[0, 64 - len(prompt): 64] = 1
    mask[0, 64: 64 + len(response)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, responses], dim=1)},
        non_tensors={"data_source": ["math"], "reward_model": [{"ground_truth": rollout["gold"]}],
                     "extra_info": [{"question": rollout["question"], "split": split}]},
    )


def test_verl_loads_our_function_as_an_async_reward(tokenizer):
    manager = DAPORewardManager(verl_config("compute_score_fapo"), tokenizer, get_custom_reward_fn(verl_config("compute_score_fapo")))
    assert manager.is_async_reward_score


def test_dapo_reward_manager_drives_compute_score_fapo_through_the_router(tokenizer, rollouts):
    sample = rollouts[::20]  # 40 real rollouts, 5 of each response slot
    config = verl_config("compute_score_fapo")

    async def run() -> tuple[list[dict], list[dict], int]:
        async with GenerateStandIn(tokenizer, verdict_for) as router:
            manager = DAPORewardManager(config, tokenizer, get_custom_reward_fn(config),
                                        reward_router_address=router.address, reward_model_tokenizer=tokenizer)
            outs = await asyncio.gather(*(manager.run_single(data_item(tokenizer, r)) for r in sample))
            direct = [await compute_score_fapo("math", tokenizer.decode(tokenizer.encode(r["response"],
                      add_special_tokens=False)[:MAX_RESPONSE], skip_special_tokens=True), r["gold"],
                      {"question": r["question"], "split": "train"}, router.address, tokenizer) for r in sample]
            return outs, direct, len(router.requests)

    outs, direct, requests = asyncio.run(run())
    infos = [o["reward_extra_info"] for o in outs]
    for out, info, mine in zip(outs, infos, direct):
        assert {k: info[k] for k in mine if k != "judge_latency_s"} == {k: v for k, v in mine.items() if k != "judge_latency_s"}
        assert out["reward_score"] == pytest.approx(mine["score"] + info["overlong_reward"])
    statuses = Counter(i["judge_status"] for i in infos)
    assert statuses["ok"] == sum(i["acc"] for i in infos) > 0 and statuses["ok"] + statuses["skipped"] == len(sample)
    flawed = [i for i in infos if i["is_flawed_positive"]]
    assert flawed and all(i["score"] == 0.0 for i in flawed)
    assert requests == statuses["ok"]  # the direct calls were answered from the client's cache


def test_reward_kwargs_reach_the_openai_path_through_verl(tokenizer, rollouts):
    correct = [r for r in rollouts if r["graded"]][:6]
    with serve_in_thread(FixedReplyBackend(lambda prompt: "\\boxed{0}"), max_wait_ms=0) as server:
        config = verl_config("compute_score_fapo", judge_endpoints=server.url, judge_max_tokens=256, penalty=0.5)

        async def run() -> list[dict]:
            manager = DAPORewardManager(config, tokenizer, get_custom_reward_fn(config))
            return await asyncio.gather(*(manager.run_single(data_item(tokenizer, r)) for r in correct))

        infos = [o["reward_extra_info"] for o in asyncio.run(run())]
    judged = [i for i in infos if i["acc"]]
    assert judged and all(i["judge_status"] == "ok" and i["score"] == 0.5 for i in judged)


def test_validation_items_are_not_judged(tokenizer, rollouts):
    config = verl_config("compute_score_fapo")  # no GenRM anywhere: a judged item would raise

    async def run() -> list[dict]:
        manager = DAPORewardManager(config, tokenizer, get_custom_reward_fn(config))
        return await asyncio.gather(*(manager.run_single(data_item(tokenizer, r, "test")) for r in rollouts[:8]))

    infos = [o["reward_extra_info"] for o in asyncio.run(run())]
    assert {i["judge_status"] for i in infos} == {"skipped"} and any(i["acc"] for i in infos)


def test_cross_check_fapo_against_the_recipe_on_800_rollouts(rollouts):
    """Where both verifiers agree, fapo's FAPO reward equals the recipe's under the same GenRM verdicts."""
    with serve_in_thread(FixedReplyBackend(verdict_for), max_wait_ms=0) as server:
        async def run() -> list[dict]:
            return await asyncio.gather(*(
                compute_score_fapo("math", r["response"], r["gold"], {"question": r["question"], "split": "train"},
                                   judge_endpoints=server.url, judge_max_tokens=256) for r in rollouts))

        mine = asyncio.run(run())
    table: Counter = Counter()
    for r, out in zip(rollouts, mine):
        recipe_ok = recipe_verify(r["response"], r["gold"])
        table[(out["acc"], recipe_ok, r["graded"])] += 1
        if out["acc"] == recipe_ok:
            critique = verdict_for(f"[Math Problem]\n\n{r['question']}\n\n[Ground Truth]")
            recipe_score = (1.0 - recipe_flawed(critique)) if recipe_ok else -1.0
            assert out["score"] == recipe_score and out["judge_status"] == ("ok" if recipe_ok else "skipped")
    fapo_right = sum(n for (f, o, g), n in table.items() if f == g)
    recipe_right = sum(n for (f, o, g), n in table.items() if o == g)
    print(f"\nagreement with Qwen's grader on {len(rollouts)} rollouts: fapo {fapo_right}, recipe {recipe_right}; "
          f"(fapo, recipe, grader) -> count: {dict(sorted(table.items()))}")
    assert sum(n for (f, o, g), n in table.items() if f == o and f) > 600  # the agreeing correct ones were judged
    assert fapo_right > recipe_right


@pytest.mark.parametrize("critique_form", ["Step {k} is wrong. \\boxed{{{k}}}", "\\boxed{{ {k} }}", "x\n\\boxed{{{k}}}."])
def test_cross_check_genrm_reward_against_the_recipe(critique_form):
    """compute_score_genrm equals the recipe's GenRM reward for every (prediction, label, steps) in range."""
    for steps in range(1, 13):
        for label in range(-1, steps):
            for k in range(-1, steps + 2):
                critique = critique_form.format(k=k)
                mine = compute_score_genrm(critique, label, {"total_steps": steps})["score"]
                assert mine == pytest.approx(recipe_genrm_score(critique, label, steps)), (critique, label, steps)


def test_baseline_through_verl(tokenizer, rollouts):
    config = verl_config("compute_score_baseline")
    sample = [r for r in rollouts if not r["graded"]][:8] + [r for r in rollouts if r["graded"]][:8]

    async def run() -> tuple[list[dict], list[dict]]:
        manager = DAPORewardManager(config, tokenizer, get_custom_reward_fn(config))
        outs = await asyncio.gather(*(manager.run_single(data_item(tokenizer, r)) for r in sample))
        direct = await asyncio.gather(*(compute_score_baseline(r["response"], r["gold"]) for r in sample))
        return [o["reward_extra_info"] for o in outs], direct

    infos, direct = asyncio.run(run())
    assert [i["score"] for i in infos] == [d["score"] for d in direct]
    assert {i["score"] for i in infos} == {1.0, -1.0} and "judge_status" not in infos[0]
