"""The browser viewer (`sotopia-env view`) and `sotopia-env play`, through a real browser: the FastAPI app
served by uvicorn on 127.0.0.1 and Debian's headless chromium driven by selenium (chromium and
chromium-driver come from scripts/install_browser.sh, which scripts/test.sh runs)."""

from __future__ import annotations

import colorsys
import json
import shutil
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from benchmarks.cli import main
from benchmarks.hard_tasks import policy_dir
from rewards.dimensions import NAMES
from sotopia_env import Episode, Scenario, Turn, library_characters, library_scenarios, read_episodes
from sotopia_env.episode import write_jsonl_atomic
from viewer.app import create_app
from viewer.catalog import Catalog
from viewer.configs import PlayConfig
from viewer.play import build_table, create_play_app

SCENARIOS = library_scenarios()
CHARACTERS = library_characters()
PAIR = (CHARACTERS[sorted(CHARACTERS)[0]], CHARACTERS[sorted(CHARACTERS)[1]])
NASTY = '<script>window.pwned = 1</script><b>bold</b> & <img src=x onerror="window.pwned = 2">'


def make_episode(
    episode_id: str,
    lines: list[tuple[str, float]],
    scenario: Scenario | None = None,
    model: str = "embedded",
    judged: bool = False,
    end_reason: str = "leave",
) -> Episode:
    """Seats alternate line by line; agent_1 leaves after the last line."""
    turns = [
        Turn(index=i, agent=f"agent_{i % 2}", character=PAIR[i % 2].name, action_type="speak", argument=t, reward=r)
        for i, (t, r) in enumerate(lines)
    ]
    turns.append(Turn(index=len(lines), agent=f"agent_{len(lines) % 2}", character="x", action_type="leave"))
    episode = Episode(
        id=episode_id,
        scenario=scenario or SCENARIOS[sorted(SCENARIOS)[0]],
        characters=PAIR,
        agents=("agent_0", "agent_1"),
        agent_models={"agent_0": model, "agent_1": "scripted"},
        turns=turns,
        end_reason=end_reason,
    )
    if judged:
        episode.judge_scores = {"agent_0": {"goal": 8.0, "relationship": 2.0, "overall": 5.0}}
        episode.judge_reasoning = {"agent_0": {"goal": "She got the refund she asked for.", "relationship": "Polite."}}
        episode.judge_model = "judge-model"
    return episode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app) -> Iterator[str]:
    """The app on a real uvicorn server on 127.0.0.1, in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are missing: run scripts/install_browser.sh (scripts/test.sh does)")
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(120)  # a reward model scoring on a busy 2-core machine can take a while
    yield chrome
    chrome.quit()


@contextmanager
def navigates(browser: webdriver.Chrome) -> Iterator[None]:
    """Waits, after the block (a click, a choice that submits a form), until the next page has replaced this one.
    The old page is marked with a window property; the new one has none. Errors while the page is in transit
    (chromium's "node does not belong to the document") are waited through."""
    browser.execute_script("window.oldPage = true")
    yield
    WebDriverWait(browser, 60, ignored_exceptions=(WebDriverException,)).until(
        lambda b: b.execute_script("return window.oldPage === undefined && document.readyState === 'complete'")
    )


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def background(element) -> tuple[int, ...]:
    text = element.value_of_css_property("background-color")  # "rgba(r, g, b, a)" or "rgb(r, g, b)"
    return tuple(int(float(x)) for x in text[text.index("(") + 1 : -1].split(",")[:3])


def hsl(hue: float) -> tuple[float, ...]:
    """The page's colour for a reward at `hue` degrees (saturation 75%, lightness 82%), as 0..255 channels."""
    return tuple(255 * c for c in colorsys.hls_to_rgb(hue / 360, 0.82, 0.75))


@pytest.fixture
def episodes_file(tmp_path: Path) -> Path:
    other = SCENARIOS[sorted(SCENARIOS)[1]]
    path = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(
        path,
        [
            make_episode("ep-low-high", [("I want my money back.", 1.0), ("Fine, here it is.", 9.0)], judged=True),
            make_episode("ep-middle", [("Hello.", 5.0), ("Hi.", 5.0)], model="openai:gpt-4o@http://x/v1"),
            make_episode("ep-other", [("Shall we?", 3.0), ("Yes.", 7.0)], scenario=other, end_reason="turn_limit"),
        ],
    )
    return path


def test_the_list_shows_the_fixture_episodes_and_filters_them_with_counts(browser, episodes_file):
    with serve(create_app(Catalog([episodes_file]))) as url:
        browser.get(url + "/")
        ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tr.episode-row td:first-child a")]
        assert ids == ["ep-low-high", "ep-middle", "ep-other"]
        models = Select(browser.find_element(By.NAME, "model"))
        assert [o.text for o in models.options] == [
            "any",
            "embedded (2)",
            "openai:gpt-4o@http://x/v1 (1)",
            "scripted (3)",
        ]
        with navigates(browser):
            models.select_by_value("embedded")  # submits the form
        ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tr.episode-row td:first-child a")]
        assert ids == ["ep-low-high", "ep-other"]
        # Counts are of what each choice would leave given the other filters: one of the two is a turn_limit.
        reasons = Select(browser.find_element(By.NAME, "end_reason"))
        assert sorted(o.text for o in reasons.options) == ["any", "leave (1)", "turn_limit (1)"]
        browser.get(url + "/?min_score=4&max_score=6")  # only ep-low-high is judged (overall 5)
        ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tr.episode-row td:first-child a")]
        assert ids == ["ep-low-high"]


def test_an_episode_page_colours_utterances_by_reward_and_shows_the_judges_reasoning(browser, episodes_file):
    with serve(create_app(Catalog([episodes_file]))) as url:
        browser.get(url + "/")
        with navigates(browser):
            browser.find_element(By.LINK_TEXT, "ep-low-high").click()
        low, high = browser.find_element(By.ID, "turn-0"), browser.find_element(By.ID, "turn-1")
        # The scale runs over every speech turn indexed: 1.0 (red, hue 0) .. 9.0 (green, hue 120).
        for element, hue in ((low, 0), (high, 120)):
            assert all(abs(a - b) <= 1 for a, b in zip(background(element), hsl(hue))), (background(element), hue)
        assert "reward 1.00" in low.text and "reward 9.00" in high.text
        reasoning = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "td.reasoning")]
        assert "She got the refund she asked for." in reasoning
        goals = browser.find_elements(By.CSS_SELECTOR, ".goal .hidden-note")
        assert [g.text for g in goals] == [f"hidden from {PAIR[1].name}", f"hidden from {PAIR[0].name}"]


def test_a_label_file_recolours_the_utterances_and_shows_its_dimensions_on_demand(browser, episodes_file, tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = [
        {
            "episode_id": "ep-low-high",
            "turn_index": 0,
            "label": 8.0,
            "dims": {"goal": 6.0},
            "normalized": {"goal": 0.8},
        },
        {
            "episode_id": "ep-low-high",
            "turn_index": 1,
            "label": 2.0,
            "dims": {"goal": 1.5},
            "normalized": {"goal": 0.2},
        },
    ]
    write_jsonl_atomic(labels, rows)
    # An on-policy training episode records the candidates sampled at each learner turn (trainers.online).
    episode = make_episode("ep-trained", [("We could split it.", 2.0), ("No.", 0.0)])
    episode.meta["training"] = {
        "learner_agents": ["agent_0"],
        "candidates": {
            "0": [
                {"text": "Give it all to me.", "action_type": "speak", "played": False, "reward": -1.0},
                {"text": "We could split it.", "action_type": "speak", "played": True, "reward": 2.0},
            ]
        },
    }
    trained = tmp_path / "trained.jsonl"
    write_jsonl_atomic(trained, [episode])
    with serve(create_app(Catalog([episodes_file, trained], labels=labels))) as url:
        browser.get(url + "/episode/ep-low-high")
        first, second = browser.find_element(By.ID, "turn-0"), browser.find_element(By.ID, "turn-1")
        # The labels invert the recorded rewards' order: the first utterance is now the green one.
        assert all(abs(a - b) <= 1 for a, b in zip(background(first), hsl(120)))
        assert all(abs(a - b) <= 1 for a, b in zip(background(second), hsl(0)))
        table = first.find_element(By.CSS_SELECTOR, "table.labels")
        assert not table.is_displayed()
        first.find_element(By.TAG_NAME, "summary").click()
        assert table.is_displayed() and "goal 6.00 0.80" in table.text
        browser.get(url + "/episode/ep-trained")
        assert browser.find_elements(By.CSS_SELECTOR, "#turn-1 details") == []  # the partner's turn had none
        browser.find_element(By.CSS_SELECTOR, "#turn-0 summary").click()
        rows = browser.find_elements(By.CSS_SELECTOR, "#turn-0 table.candidates tr")
        assert [r.text for r in rows[1:]] == ["Give it all to me. speak -1.00", "We could split it. speak 2.00 played"]


def test_a_short_game_against_a_scripted_policy_is_played_in_the_browser_and_recorded(browser, tmp_path):
    out = tmp_path / "play.jsonl"
    scenario = sorted(SCENARIOS)[2]
    cfg = PlayConfig(partner="scripted:Who are you?|Thanks.|Then we agree.", out=str(out), max_turns=10)
    with serve(create_play_app(build_table(cfg))) as url:
        browser.get(url + "/")
        Select(browser.find_element(By.ID, "scenario")).select_by_value(scenario)
        with navigates(browser):
            browser.find_element(By.ID, "start").click()
        observation = browser.find_element(By.ID, "observation").text
        assert SCENARIOS[scenario].roles[0].goal in observation and SCENARIOS[scenario].roles[1].goal not in observation
        browser.find_element(By.ID, "text").send_keys("I am your new neighbour.")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        said = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".turn .text")]
        assert said == ["I am your new neighbour.", "Who are you?"]
        assert "Who are you?" in browser.find_element(By.ID, "observation").text  # the seat's own prompt moved on
        for action_type, text in (("non-verbal communication", "waves"), ("action", "hands over a pie")):
            Select(browser.find_element(By.ID, "action_type")).select_by_value(action_type)
            browser.find_element(By.ID, "text").send_keys(text)
            with navigates(browser):
                browser.find_element(By.ID, "send").click()
        Select(browser.find_element(By.ID, "action_type")).select_by_value("leave")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        assert "The episode ended (leave)" in browser.find_element(By.ID, "finished").text
        # A second game stopped midway is saved when the server stops.
        with navigates(browser):
            browser.find_element(By.LINK_TEXT, "Play again").click()
        with navigates(browser):
            browser.find_element(By.ID, "start").click()
        browser.find_element(By.ID, "text").send_keys("Wait, I have to go.")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
    episode, unfinished = read_episodes(out)
    assert [(t.agent, t.action_type, t.argument) for t in episode.turns] == [
        ("agent_0", "speak", "I am your new neighbour."),
        ("agent_1", "speak", "Who are you?"),
        ("agent_0", "non-verbal communication", "waves"),
        ("agent_1", "speak", "Thanks."),
        ("agent_0", "action", "hands over a pie"),
        ("agent_1", "speak", "Then we agree."),
        ("agent_0", "leave", ""),
    ]
    assert (episode.scenario.id, episode.end_reason) == (scenario, "leave")
    assert episode.agent_models == {"agent_0": "human (browser)", "agent_1": cfg.partner}
    assert unfinished.end_reason == "unfinished"
    assert [t.argument for t in unfinished.turns] == ["Wait, I have to go.", "Who are you?"]


ATTACKER_FORM = """<!doctype html><title>another site</title>
<form id="forged" method="post" action="{target}">
<input name="action_type" value="speak"><input name="text" value="Sent by another site."><input name="seat" value="0">
<input name="csrf_token" value="a guess"></form>
<script>document.getElementById("forged").submit()</script>"""


@pytest.mark.slow
def test_a_cross_origin_form_post_is_refused_and_a_game_is_still_played_by_clicking(browser, tmp_path):
    """Another site's page (here served from a second server on another loopback port) makes the browser post
    a form to the play server, to a game's act address (even knowing the game's key) and to /new: both are
    refused, and the game is unchanged. The person's own clicks still play the game."""
    out = tmp_path / "play.jsonl"
    table = build_table(PlayConfig(partner="scripted:Hello.|Bye.", out=str(out)))
    attacker, forged = FastAPI(), {}

    @attacker.get("/{name}", response_class=HTMLResponse)
    def attacker_page(name: str) -> str:
        return forged[name]

    with serve(create_play_app(table)) as url, serve(attacker) as elsewhere:
        browser.get(url + "/")
        with navigates(browser):
            browser.find_element(By.ID, "start").click()
        game_path = urllib.parse.urlsplit(browser.current_url).path
        browser.find_element(By.ID, "text").send_keys("First move.")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        [game] = table.games.values()
        said = [t.argument for t in game.env.episode.turns]
        assert said == ["First move.", "Hello."]
        forged.update(
            act=ATTACKER_FORM.format(target=url + game_path + "/act"), new=ATTACKER_FORM.format(target=url + "/new")
        )
        for name in ("act", "new"):
            browser.get(f"{elsewhere}/{name}")  # the page posts its form as soon as it loads
            WebDriverWait(browser, 30).until(
                lambda b: b.current_url.startswith(url) and b.execute_script("return document.readyState") == "complete"
            )
            refusal = " ".join(e.text for e in browser.find_elements(By.ID, "not-found"))
            assert refusal.startswith(f"Refused a cross-origin request: it came from a page at '{elsewhere}'"), refusal
        assert list(table.games.values()) == [game] and [t.argument for t in game.env.episode.turns] == said
        browser.get(url + game_path)
        browser.find_element(By.ID, "text").send_keys("Second move.")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        Select(browser.find_element(By.ID, "action_type")).select_by_value("leave")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        assert "The episode ended (leave)" in browser.find_element(By.ID, "finished").text
    [episode] = read_episodes(out)
    assert [t.argument for t in episode.turns] == ["First move.", "Hello.", "Second move.", "Bye.", ""]


def test_a_partner_that_fails_is_reported_and_the_dialogue_so_far_kept(browser, tmp_path, monkeypatch):
    monkeypatch.setenv("SOTOPIA_OPENAI_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # an OpenAI-compatible partner whose server is down
    out = tmp_path / "play.jsonl"
    cfg = PlayConfig(partner=f"openai:x@{dead}", out=str(out))
    with serve(create_play_app(build_table(cfg))) as url:
        browser.get(url + "/")
        with navigates(browser):
            browser.find_element(By.ID, "start").click()
        browser.find_element(By.ID, "text").send_keys("Anyone there?")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        error = browser.find_element(By.CSS_SELECTOR, "#partner-failed .error").text
        assert error.startswith(f"the partner 'openai:x@{dead}' failed: ServerUnavailable: {dead}"), error
        assert browser.find_elements(By.ID, "send") == []  # the person waits: it is the partner's turn
        with navigates(browser):
            browser.find_element(By.ID, "ask-again").click()
        assert browser.find_element(By.CSS_SELECTOR, "#partner-failed .error").text.startswith("the partner")
    [episode] = read_episodes(out)  # saved when the server stopped
    assert episode.end_reason == "unfinished" and [t.argument for t in episode.turns] == ["Anyone there?"]


def test_a_judge_that_cannot_be_reached_is_reported_and_the_game_still_recorded(browser, tmp_path, monkeypatch):
    monkeypatch.setenv("SOTOPIA_OPENAI_MAX_RETRIES", "0")  # a closed port refuses at once: no need to retry
    dead = f"http://127.0.0.1:{free_port()}/v1"  # bound, then released: nothing listens there
    out = tmp_path / "play.jsonl"
    cfg = PlayConfig(partner="scripted:Hello.", out=str(out), judge=f"openai:judge@{dead}")
    with serve(create_play_app(build_table(cfg))) as url:
        browser.get(url + "/")
        with navigates(browser):
            browser.find_element(By.ID, "start").click()
        browser.find_element(By.ID, "text").send_keys("Hi there.")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        with navigates(browser):
            browser.find_element(By.ID, "judge-now").click()
        notes = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "p.error")]
        assert len(notes) == 1 and notes[0].startswith("judge judge failed: ServerUnavailable: ") and dead in notes[0]
        Select(browser.find_element(By.ID, "action_type")).select_by_value("leave")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
    [episode] = read_episodes(out)
    assert [t.argument for t in episode.turns[:2]] == ["Hi there.", "Hello."] and episode.end_reason == "leave"
    assert episode.judge_scores == {} and dead in episode.judge_failures[0]


@pytest.mark.slow
def test_with_a_judge_its_scores_and_reasoning_show_as_the_dialogue_goes_and_are_recorded(
    browser, vllm_engine, tmp_path
):
    """The embedded model judging on in-process vLLM (guided JSON): 'judge the dialogue so far' shows each
    agent's seven scores and reasoning on the page, and the finished game's page and record hold the judge's
    scores for the whole dialogue (judged again at the end: the midway scores were for a shorter dialogue).
    The engine is the suite's shared one, used before by GRPO with its own prompt budget, by the benchmark
    and by task generation: the judge's prompt (about 700 tokens) and its 700 new tokens must still fit."""
    from agents.spec import make_policies
    from rewards import Judge
    from viewer.play import Table

    out = tmp_path / "play.jsonl"
    cfg = PlayConfig(partner="scripted:Is $450 fine for you?", out=str(out))
    judge = Judge(vllm_engine, cache_path=tmp_path / "judge_cache.jsonl", max_new_tokens=700)
    table = Table(cfg, make_policies([cfg.partner], cfg.sampling(seed=cfg.seed))[0], None, judge)
    with serve(create_play_app(table)) as url:
        browser.get(url + "/")
        Select(browser.find_element(By.ID, "scenario")).select_by_value("neg-used-bike")
        with navigates(browser):
            browser.find_element(By.ID, "start").click()
        assert browser.find_elements(By.CSS_SELECTOR, "table.judge-table") == []  # nothing judged yet
        browser.find_element(By.ID, "text").send_keys("The bike is $480, barely ridden.")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        with navigates(browser):
            browser.find_element(By.ID, "judge-now").click()
        [midway] = table.games.values()
        judged = midway.judged
        assert judged is not None and len(judged.turns) == 2
        assert judged.judge_scores, judged.judge_failures  # guided decoding: at least one agent judged
        assert_judgement_shown(browser, judged)
        Select(browser.find_element(By.ID, "action_type")).select_by_value("leave")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        [episode] = read_episodes(out)
        assert len(episode.turns) == 3 and episode.end_reason == "leave"
        assert episode.judge_model == "SmolLM2-135M-Instruct" and episode.judge_scores, episode.judge_failures
        assert_judgement_shown(browser, episode)


def assert_judgement_shown(browser: webdriver.Chrome, judged: Episode) -> None:
    """The page's judge tables hold exactly the judged agents' seven scores and reasoning."""
    shown = {
        t.get_attribute("data-agent"): [
            [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in t.find_elements(By.CSS_SELECTOR, "tr")[1:]
        ]
        for t in browser.find_elements(By.CSS_SELECTOR, "table.judge-table")
    }
    assert set(shown) == set(judged.judge_scores)
    for agent, rows in shown.items():
        assert [r[0] for r in rows][: len(NAMES)] == list(NAMES)
        for dim, score, reasoning in rows[: len(NAMES)]:
            assert score == f"{judged.judge_scores[agent][dim]:.2f}"
            assert reasoning == judged.judge_reasoning[agent][dim].strip()


def test_an_unknown_episode_id_gives_a_404_page(browser, episodes_file):
    with serve(create_app(Catalog([episodes_file]))) as url:
        assert status_of(url + "/episode/no-such-episode") == 404
        assert status_of(url + "/episode/ep-middle") == 200
        browser.get(url + "/episode/no-such-episode")
        assert "No episode with id 'no-such-episode'" in browser.find_element(By.ID, "not-found").text


def test_a_malformed_line_is_reported_and_skipped_while_the_rest_is_served(browser, tmp_path):
    good = [make_episode(f"good-{i}", [("Hello.", 1.0)]).model_dump_json() for i in range(2)]
    path = tmp_path / "mixed.jsonl"
    lines = [good[0], "{not json", json.dumps({"id": "half", "turns": []}), good[1], good[1][:50]]
    path.write_text("\n".join(lines))  # the last line has no newline: a write cut short
    with serve(create_app(Catalog([path]))) as url:
        browser.get(url + "/")
        ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tr.episode-row td:first-child a")]
        assert ids == ["good-0", "good-1"]
        problems = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#problems li")]
        assert len(problems) == 3
        assert problems[2] == f"{path}:5: last line has no newline (a write in progress or cut short); skipped"
        assert problems[0].startswith(f"{path}:2: not valid JSON") and problems[1].startswith(
            f"{path}:3: not an episode"
        )
        assert "scenario" in problems[1]  # names the missing field
        with navigates(browser):
            browser.find_element(By.LINK_TEXT, "good-1").click()
        assert browser.find_element(By.ID, "turn-0").text.endswith("Hello.")


def test_an_utterance_holding_script_and_html_is_shown_as_text(browser, tmp_path):
    base = SCENARIOS[sorted(SCENARIOS)[0]]
    scenario = base.model_copy(update={"situation": "A shop. " + NASTY})
    episode = make_episode("nasty", [(NASTY, 1.0), ("ok", 2.0)], scenario=scenario, judged=True)
    episode.judge_reasoning["agent_0"]["goal"] = NASTY
    path = tmp_path / "nasty.jsonl"
    write_jsonl_atomic(path, [episode])
    with serve(create_app(Catalog([path]))) as url:
        for address in ("/", "/episode/nasty"):
            browser.get(url + address)
            assert browser.execute_script("return window.pwned === undefined")
            assert browser.find_elements(By.CSS_SELECTOR, "main b, main img") == []
        assert browser.find_element(By.CSS_SELECTOR, "#turn-0 .text").text == NASTY
        assert NASTY in browser.find_element(By.CSS_SELECTOR, ".situation").text
        assert NASTY in [td.text for td in browser.find_elements(By.CSS_SELECTOR, "td.reasoning")]


def test_a_training_runs_metrics_are_drawn_as_curves(browser, tmp_path):
    run = tmp_path / "grpo"
    run.mkdir()
    rows = [
        {"step": s, "reward_mean": 0.5 * s, "kl": 0.01 * s, "loss": 1.0 / s, "lr": 1e-5, "time_update": 1}
        for s in (1, 2, 3, 4)
    ]
    write_jsonl_atomic(run / "metrics.jsonl", rows)
    with serve(create_app(Catalog([tmp_path]))) as url:
        browser.get(url + "/")
        with navigates(browser):
            browser.find_element(By.LINK_TEXT, f"run {tmp_path.name}/grpo").click()
        charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert [c.get_attribute("data-metric") for c in charts] == ["reward_mean", "kl", "loss", "lr"]
        # reward_mean rises 0.5 .. 2.0 over steps 1..4: the line runs from the bottom-left to the top-right corner
        # of the plot area (x 64..428, y 24..170 in the 440 x 200 view box).
        points = charts[0].find_element(By.CSS_SELECTOR, "polyline").get_attribute("points").split()
        assert points == ["64.0,170.0", "185.3,121.3", "306.7,72.7", "428.0,24.0"]


def one_pixel_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1 x 1, 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")
    )


def test_a_benchmark_folder_shows_its_report_and_each_policys_episodes(browser, tmp_path):
    bench = tmp_path / "bench"
    spec = "embedded"
    folder = policy_dir(bench, spec)  # where the benchmark writes a policy's episodes
    folder.mkdir(parents=True)
    write_jsonl_atomic(
        folder / "episodes.jsonl", [make_episode(f"b{i}", [("Hi.", 0.0)], judged=True) for i in range(3)]
    )
    estimate = {"mean": 5.0, "low": 4.5, "high": 5.5, "n": 3, "clusters": 1}
    report = {
        "policies": [{"spec": spec, "planned": 3, "judged": 3, "dimensions": {"goal": estimate, "overall": estimate}}]
    }
    (bench / "report.json").write_text(json.dumps(report))
    (bench / "dimensions.png").write_bytes(one_pixel_png())
    with serve(create_app(Catalog([bench]))) as url:
        browser.get(url + "/benchmark/0")
        plot = browser.find_element(By.CSS_SELECTOR, "img[alt='dimensions.png']")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", plot) == 1
        assert status_of(url + "/benchmark/0/plot/report.json") == 404  # only the PNGs found at start are served
        row = browser.find_element(By.CSS_SELECTOR, "#report tr:nth-child(2)")
        assert row.text.split()[:4] == ["embedded", "3/3", "5.00", "[4.50,"]
        with navigates(browser):
            row.find_element(By.LINK_TEXT, "3 episodes").click()
        ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "tr.episode-row td:first-child a")]
        assert ids == ["b0", "b1", "b2"]


def test_export_writes_one_self_contained_file_of_the_chosen_episodes(browser, episodes_file, tmp_path):
    out = tmp_path / "shared.html"
    assert (
        main(
            [
                "view",
                str(episodes_file),
                "--export",
                str(out),
                "--episode-ids",
                "ep-other",
                "--episode-ids",
                "ep-middle",
            ]
        )
        == 0
    )
    html = out.read_text()
    assert "src=" not in html and "http://127" not in html and "<link" not in html
    browser.get(out.as_uri())
    titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "section h1")]
    assert titles == ["Episode ep-other", "Episode ep-middle"]
    assert main(["view", str(episodes_file), "--export", str(out), "--episode-ids", "nope"]) == 2


def test_ten_thousand_episodes_are_indexed_once_and_paged(tmp_path, capsys):
    base = make_episode(
        "x", [(f"Line {i} of the dialogue, long enough to be a real utterance.", float(i)) for i in range(10)]
    )
    line = base.model_dump_json()
    head, tail = line.split('"id":"x"', 1)
    path = tmp_path / "many.jsonl"
    with path.open("w") as f:
        for i in range(10_000):
            f.write(f'{head}"id":"e{i:05d}"{tail}\n')
    started = time.perf_counter()
    catalog = Catalog([path])
    index_s = time.perf_counter() - started
    assert len(catalog.entries) == 10_000 and catalog.problems == []
    timings = {}
    with serve(create_app(catalog, page_size=50)) as url:
        for name, address in [
            ("first page", "/"),
            ("page 100", "/?page=100"),
            ("last page", "/?page=200"),
            ("filtered", "/?model=embedded&min_score=0"),
            ("episode", "/episode/e05000"),
        ]:
            started = time.perf_counter()
            with urllib.request.urlopen(url + address) as response:
                html = response.read().decode()
            timings[name] = time.perf_counter() - started
            if name == "page 100":
                assert "page 100 of 200" in html and "e04950" in html and "e04999" in html and "e05000" not in html
            if name == "last page":
                assert html.count('class="episode-row"') == 50 and "e09999" in html
            if name == "filtered":
                assert "0 of 10000" in html  # none is judged
    with capsys.disabled():
        print(
            f"\n10,000 episodes ({path.stat().st_size / 1e6:.1f} MB): index {index_s:.2f} s; pages "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
        )


@pytest.mark.slow
def test_with_a_reward_model_each_utterance_of_a_game_shows_the_reward_the_env_gave_it(browser, tmp_path):
    from rewards import RewardModel, RewardModelConfig
    from sotopia_env.replay import utterance_states

    rm_dir = tmp_path / "rm"
    rm = RewardModel.create(RewardModelConfig(max_length=256), device="cpu")
    rm.save(rm_dir)
    out = tmp_path / "play.jsonl"
    cfg = PlayConfig(partner="scripted:Fine, what do you offer?", out=str(out), reward_model=str(rm_dir))
    with serve(create_play_app(build_table(cfg))) as url:
        browser.get(url + "/")
        Select(browser.find_element(By.ID, "scenario")).select_by_value("neg-used-bike")
        with navigates(browser):
            browser.find_element(By.ID, "start").click()
        browser.find_element(By.ID, "text").send_keys("The bike is $480, barely ridden.")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
        shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".turn .value")]
        Select(browser.find_element(By.ID, "action_type")).select_by_value("leave")
        with navigates(browser):
            browser.find_element(By.ID, "send").click()
    [episode] = read_episodes(out)
    # The reward model scores (the prompt the speaker acted on, what it said): rebuild those prompts from the record.
    states = utterance_states(episode)
    expected = rm.score([s.prompt for s in states], [s.action.argument for s in states])
    assert [t.reward for t in episode.turns[:2]] == pytest.approx(expected, abs=1e-4)
    assert shown == [f"reward {r:.2f}" for r in expected]


def test_an_id_in_two_files_links_to_each_copy(browser, episodes_file, tmp_path):
    judged = tmp_path / "episodes.judged.jsonl"  # as the pipeline writes: the same ids, judged
    write_jsonl_atomic(judged, [make_episode("ep-middle", [("Hello.", 5.0)], judged=True)])
    with serve(create_app(Catalog([episodes_file, judged]))) as url:
        browser.get(url + "/?scenario=" + sorted(SCENARIOS)[0])
        links = {a.get_attribute("href").removeprefix(url) for a in browser.find_elements(By.LINK_TEXT, "ep-middle")}
        assert links == {"/episode/ep-middle?copy=0", "/episode/ep-middle?copy=1"}
        browser.get(url + "/episode/ep-middle?copy=1")
        assert "Not judged." not in browser.page_source and "She got the refund" in browser.page_source
        browser.get(url + "/episode/ep-middle?copy=0")
        assert "Not judged." in browser.page_source
        assert status_of(url + "/episode/ep-middle?copy=2") == 404


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["view", "no/such.jsonl"], "no/such.jsonl: no such file or folder"),
        (["view", ".", "--episode-ids", "x"], "chooses episodes for --export; add --export FILE.html"),
        (["view", ".", "--min-score", "5", "--max-score", "1"], "ViewConfig.max_score = 1.0: must not be below"),
        (["play", "--seat", "2"], "PlayConfig.seat = 2: must be 0 (you speak first) or 1"),
        (["play", "--partner", "human"], "PlayConfig.partner = 'human'"),
        (["play", "--reward-model", "no/rm"], "must be a reward model folder"),
    ],
)
def test_a_bad_view_or_play_flag_is_one_error_line(argv, named, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sotopia-env {argv[0]}: error: ") and named in err and err.count("\n") == 1, err
