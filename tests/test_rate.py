"""`sotopia-env rate` (viewer/rate.py): people rate episodes with the models hidden, in an order of their own, resuming
by rater id; pairwise mode asks which of two policies' agents did better. Through the real app: FastAPI's TestClient
for the cheap checks, and Debian's headless chromium (selenium) clicking through two episodes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from test_viewer import browser, navigates, serve  # noqa: F401 - browser: the module's one chromium session

from benchmarks.cli import build_parser
from rewards.dimensions import SOTOPIA_EVAL, DimensionSet
from rewards.ratings import read_ratings
from sotopia_env import Episode, SocialParallelEnv
from sotopia_env.episode import write_jsonl_atomic
from viewer.configs import RateConfig
from viewer.rate import create_rate_app, load_items, rater_order

BASE = "http://127.0.0.1"
MODELS = {"base": "hidden-model-base", "trained": "hidden-model-trained"}


def episode(episode_id: str, model: str, opening: str) -> Episode:
    env = SocialParallelEnv(max_turns=4, agent_models={"agent_0": model, "agent_1": "partner-model"})
    env.reset(seed=0, options={"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")})
    env.step({"agent_0": opening})
    env.step({"agent_1": "Too much. $300?"})
    env.step({"agent_0": {"action_type": "leave"}})
    ep = env.episode
    ep.id = episode_id
    ep.judge_scores = {"agent_0": {**dict.fromkeys(SOTOPIA_EVAL.names, 3.0), "overall": 3.0}}
    ep.judge_model = "judge-model-name"
    return ep


@pytest.fixture
def two_episodes(tmp_path) -> Path:
    """One cell (same scenario, characters, seed, seat) played by two policies, as a benchmark writes them."""
    path = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(
        path,
        [
            episode("bike|seat0", MODELS["base"], "It is $480, firm."),
            episode("bike2|seat0", MODELS["trained"], "I could do $450 if you pick it up today."),
        ],
    )
    return path


def token_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page's form carries no csrf_token"
    return found.group(1)


def post(web: TestClient, path: str, data: dict[str, str], html: str):
    item = re.search(r'name="item" value="([^"]+)"', html)
    fields = {**data, "csrf_token": token_of(html), **({"item": item.group(1)} if item else {})}
    return web.post(path, data=fields, headers={"Origin": BASE})


def test_each_rater_gets_an_order_of_their_own_that_stays_the_same_across_restarts(tmp_path, two_episodes):
    many = tmp_path / "many.jsonl"
    write_jsonl_atomic(many, [episode(f"e{k}|seat0", MODELS["base"], f"Offer {k}.") for k in range(8)])
    items, dims = load_items(RateConfig(episodes=[str(many)], out=str(tmp_path / "r.jsonl")))
    assert dims is SOTOPIA_EVAL and len(items) == 8
    orders = {rater: [i.key for i in rater_order(items, rater, seed=0)] for rater in ("ana", "ben", "cy")}
    assert len({tuple(o) for o in orders.values()}) == 3 and all(
        sorted(o) == sorted(orders["ana"]) for o in orders.values()
    )
    assert [i.key for i in rater_order(list(reversed(items)), "ana", seed=0)] == orders["ana"]  # a restart: same order
    assert [i.key for i in rater_order(items, "ana", seed=1)] != orders["ana"]
    sampled, _ = load_items(RateConfig(episodes=[str(many)], sample=3, seed=5))
    again, _ = load_items(RateConfig(episodes=[str(many)], sample=3, seed=5))
    assert len(sampled) == 3 and [i.key for i in sampled] == [i.key for i in again]  # the same sample for everyone


def test_in_a_benchmark_folder_the_policy_is_the_spec_its_folder_holds_not_the_shared_model_name(tmp_path):
    """A base and its adapter record the same engine model name; the benchmark's folders tell them apart."""
    from benchmarks.agreement import load_judged
    from benchmarks.hard_tasks import policy_dir
    from sotopia_env.jsonio import write_json_atomic

    specs = ["embedded", "embedded+lora:runs/grpo/adapter"]
    write_json_atomic(tmp_path / "config.json", {"policies": specs})
    for spec, line in zip(specs, ("It is $480, firm.", "I could do $450.")):
        write_jsonl_atomic(
            policy_dir(tmp_path, spec) / "episodes.judged.jsonl", [episode("bike|seat0", "SmolLM2", line)]
        )
    items, _ = load_items(RateConfig(episodes=[str(tmp_path)]))
    assert sorted(i.shown[0].policy for i in items) == specs
    [pair], _ = load_items(RateConfig(episodes=[str(tmp_path)], pairwise=True))
    assert sorted(s.policy for s in pair.shown) == specs
    assert sorted(k[2] for k in load_judged([tmp_path]) if k[1] == 0) == specs


def test_pairwise_mode_records_which_policy_did_better_whichever_side_it_was_shown_on(tmp_path, two_episodes):
    out = tmp_path / "ratings.jsonl"
    app = create_rate_app(RateConfig(episodes=[str(two_episodes)], out=str(out), pairwise=True))
    web = TestClient(app, base_url=BASE, follow_redirects=False)
    page = web.get("/rater/ana").text
    assert "Left" in page and "Right" in page and "hidden-model" not in page and "judge-model-name" not in page
    lines = re.findall(r"I could do \$450|It is \$480, firm", page)
    trained_side = "left" if lines[0].startswith("I could") else "right"
    answers = {f"better_{d}": "tie" for d in SOTOPIA_EVAL.names} | {"better_goal": trained_side}
    assert post(web, "/rater/ana", {k: v for k, v in answers.items() if k != "better_goal"}, page).status_code == 400
    assert out.exists() is False  # an unanswered dimension writes nothing
    assert post(web, "/rater/ana", answers, page).status_code == 303
    rows = {r.dimension: r for r in read_ratings(out, SOTOPIA_EVAL)}
    goal = rows["goal"]
    # Rows store the pair in a fixed order (sorted by policy); "other" is the second: the trained policy.
    assert (goal.kind, goal.policy, goal.other_policy, goal.choice) == (
        "pairwise",
        MODELS["base"],
        MODELS["trained"],
        "other",
    )
    assert rows["believability"].choice == "tie" and len(rows) == 7
    assert "All 1 rated, ana" in web.get("/rater/ana").text


def test_a_post_without_the_token_is_refused_and_a_bad_score_names_the_dimension(tmp_path, two_episodes):
    out = tmp_path / "ratings.jsonl"
    web = TestClient(create_rate_app(RateConfig(episodes=[str(two_episodes)], out=str(out))), base_url=BASE)
    page = web.get("/rater/ana").text
    assert web.post("/rater/ana", data={"score_goal": "5"}, headers={"Origin": BASE}).status_code == 403
    scores = {f"score_{d}": "0" for d in SOTOPIA_EVAL.names} | {"score_relationship": "7"}
    answer = post(web, "/rater/ana", scores, page)
    assert answer.status_code == 400 and "relationship: 7 is outside -5 to 5" in answer.text and not out.exists()
    assert "rate" in build_parser().parse_args(["rate", str(two_episodes)]).command


def test_a_custom_dimension_set_is_what_the_rating_page_asks_for(tmp_path, two_episodes):
    dims = DimensionSet.from_json(
        {"name": "tutoring", "dimensions": [{"name": "clarity", "low": 0, "high": 4, "rubric": "How clear: 0 to 4."}]}
    )
    path = tmp_path / "tutoring.json"
    path.write_text(__import__("json").dumps(dims.to_json()))
    web = TestClient(
        create_rate_app(RateConfig(episodes=[str(two_episodes)], out=str(tmp_path / "r.jsonl"), dimensions=str(path))),
        base_url=BASE,
    )
    page = web.get("/rater/ana").text
    assert 'name="score_clarity"' in page and 'max="4"' in page and "How clear: 0 to 4." in page
    assert "score_goal" not in page


@pytest.mark.slow
def test_a_rater_rates_two_episodes_by_clicking_pauses_and_resumes_with_the_same_id(browser, tmp_path, two_episodes):  # noqa: F811
    out = tmp_path / "ratings.jsonl"
    app = create_rate_app(RateConfig(episodes=[str(two_episodes)], out=str(out)))
    wanted = {"goal": 8, "relationship": -2, "secret": -10}  # the rest stay at the middle of their range
    seen_first = []
    with serve(app) as url:
        for round_ in range(2):
            browser.get(url + "/")
            browser.find_element(By.ID, "rater").send_keys("ana")
            with navigates(browser):
                browser.find_element(By.ID, "start").click()
            heading = browser.find_element(By.TAG_NAME, "h1").text
            assert heading == f"ana: episode {round_ + 1} of 2", heading
            source = browser.page_source
            assert (
                "hidden-model" not in source
                and "judge-model-name" not in source
                and "bike|seat0" not in source
                and "bike2" not in source
            )
            seen_first.append(browser.find_element(By.CSS_SELECTOR, ".chat .turn .text").text)
            for name, value in wanted.items():
                slider = browser.find_element(By.ID, f"score_{name}")
                slider.send_keys(Keys.HOME)
                for _ in range(value - SOTOPIA_EVAL.by_name[name].low):
                    slider.send_keys(Keys.ARROW_RIGHT)
                assert browser.find_element(By.ID, f"shown_{name}").text == str(value)
            browser.find_element(By.ID, "note").send_keys(f"note {round_}")
            with navigates(browser):
                browser.find_element(By.ID, "submit").click()
            if round_ == 0:  # pause: leave for the start page; the next round comes back with the same id
                assert browser.find_element(By.TAG_NAME, "h1").text == "ana: episode 2 of 2"
        assert browser.find_element(By.ID, "done").text == "All 2 rated, ana. Thank you."
    rows = read_ratings(out, SOTOPIA_EVAL)
    assert len(rows) == 2 * 7 and {r.rater for r in rows} == {"ana"}
    assert {r.policy for r in rows} == set(MODELS.values()) and {r.seat for r in rows} == {0}
    for r in rows:
        middle = round((SOTOPIA_EVAL.by_name[r.dimension].low + SOTOPIA_EVAL.by_name[r.dimension].high) / 2)
        assert r.score == wanted.get(r.dimension, middle) and r.dimensions == "sotopia-eval"
    assert sorted({r.note for r in rows}) == ["note 0", "note 1"]
    assert len(set(seen_first)) == 2  # the second round showed the other episode
