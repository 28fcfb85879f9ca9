"""Screenshots of the viewer's pages for docs/viewer.md (docs/screenshots/*.png), taken with headless chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

The pages show demonstration data this script writes to a temporary folder: scripted dialogues with made-up
rewards, judge scores and training metrics (the page layout is the point, not the numbers). The play page
is a real game against a scripted partner. Needs chromium and chromedriver (scripts/install_browser.sh).
"""

from __future__ import annotations

import argparse
import math
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from sotopia_env import Episode, Turn, library_characters, library_pairings, library_scenarios
from sotopia_env.episode import write_jsonl_atomic
from viewer.app import create_app
from viewer.catalog import Catalog
from viewer.configs import PlayConfig
from viewer.play import build_table, create_play_app

DIALOGUE = [  # seat 0 sells, seat 1 buys (neg-used-bike)
    ("Hi! You're here about the road bike? It's in great shape.", 4.1),
    ("It looks nice. The listing says $480, that's more than I hoped to spend.", 5.0),
    ("It's barely been ridden. I could do $460.", 6.8),
    ("The rear tyre is worn; I'd have to replace it. Would you take $380?", 5.5),
    ("That's low. $430 and I'll throw in the lights.", 7.9),
    ("$410 with the lights, cash now?", 6.2),
    ("Deal at $420 with the lights. Enjoy the bike!", 8.6),
]


def demo_data(root: Path) -> None:
    """Episodes (one judged, with labels), a training run and nothing else: enough for each page."""
    scenarios, characters = library_scenarios(), library_characters()
    ids = ["neg-used-bike"] + [s for s in sorted(scenarios) if s != "neg-used-bike"][:23]
    names = sorted(characters)
    episodes = []
    for n, scenario_id in enumerate(ids):
        pair = next(iter(library_pairings().get(scenario_id, ())), (names[n % 40], names[(n + 7) % 40]))
        chars = (characters[pair[0]], characters[pair[1]])
        lines = DIALOGUE if n == 0 else DIALOGUE[: 3 + n % 5]
        turns = [
            Turn(i, f"agent_{i % 2}", chars[i % 2].name, "speak", text, round(r - (n % 3) * 0.7, 2))
            for i, (text, r) in enumerate(lines)
        ]
        if n % 4 != 3:  # the others ran out of turns
            turns.append(Turn(len(lines), f"agent_{len(lines) % 2}", chars[len(lines) % 2].name, "leave"))
        episode = Episode(
            id=f"demo-{n:02d}",
            scenario=scenarios[scenario_id],
            characters=chars,
            agents=("agent_0", "agent_1"),
            agent_models={"agent_0": "embedded+lora:runs/grpo/adapter" if n % 2 else "embedded", "agent_1": "embedded"},
            turns=turns,
            end_reason="leave" if n % 4 != 3 else "turn_limit",
            seed=n,
            meta={"max_turns": len(lines)} if n % 4 == 3 else {},
        )
        if n % 3 != 2:
            goal = 4.0 + (n % 6)
            episode.judge_scores = {
                "agent_0": {"goal": goal, "relationship": 2.0, "knowledge": 5.0, "overall": goal / 2},
                "agent_1": {"goal": 6.0, "relationship": 1.0, "knowledge": 3.0, "overall": 2.5},
            }
            episode.judge_reasoning = {
                "agent_0": {
                    "goal": "Sold at $420, the lowest price it would accept, conceding slowly.",
                    "relationship": "Friendly throughout; added the lights as a goodwill gesture.",
                    "knowledge": "Learned that the buyer cared about the tyre and paying cash.",
                },
                "agent_1": {
                    "goal": "Paid $420, above its limit of $350.",
                    "relationship": "Cordial.",
                    "knowledge": "Learned little about the seller's lowest price.",
                },
            }
            episode.judge_model = "judge: embedded"
        episodes.append(episode)
    write_jsonl_atomic(root / "episodes.jsonl", episodes)
    write_jsonl_atomic(
        root / "labels.jsonl",
        [
            {
                "episode_id": "demo-00",
                "turn_index": i,
                "label": r,
                "dims": {"goal": r * 0.9, "relationship": 1.5, "knowledge": r / 2},
                "normalized": {"goal": r / 10, "relationship": 0.6, "knowledge": r / 20},
            }
            for i, (_, r) in enumerate(DIALOGUE)
        ],
    )
    run = root / "grpo"
    run.mkdir()
    write_jsonl_atomic(
        run / "metrics.jsonl",
        [
            {
                "step": s,
                "reward_mean": 4.0 + 2.5 * (1 - math.exp(-s / 12)) + 0.3 * math.sin(s),
                "kl": 0.002 * s * (1 + 0.2 * math.cos(s)),
                "loss": -0.05 + 0.04 * math.sin(s / 2),
                "lr": 5e-6 * min(1.0, s / 5),
            }
            for s in range(1, 41)
        ],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def browser() -> webdriver.Chrome:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("chromium and chromedriver are missing: run scripts/install_browser.sh")
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def shoot(chrome: webdriver.Chrome, url: str, path: Path, height: int = 900) -> None:
    chrome.set_window_size(1280, height)
    chrome.get(url)
    chrome.save_screenshot(str(path))
    print("wrote", path)


def click(chrome: webdriver.Chrome, element) -> None:
    """Click and wait for the next page (the old one carries a window property the new one lacks)."""
    chrome.execute_script("window.oldPage = true")
    element.click()
    WebDriverWait(chrome, 60, ignored_exceptions=(WebDriverException,)).until(
        lambda c: c.execute_script("return window.oldPage === undefined && document.readyState === 'complete'")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/screenshots")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    chrome = browser()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        root.mkdir()
        demo_data(root)
        with serve(create_app(Catalog([root], labels=root / "labels.jsonl"))) as url:
            shoot(chrome, url + "/", out / "list.png")
            chrome.set_window_size(1280, 1500)
            chrome.get(url + "/episode/demo-00")
            chrome.find_element(By.CSS_SELECTOR, "#turn-4 summary").click()
            chrome.save_screenshot(str(out / "episode.png"))
            print("wrote", out / "episode.png")
            shoot(chrome, url + "/run/0", out / "run.png", height=700)
        cfg = PlayConfig(
            partner="scripted:Good to see you. The lease is up next month.|I was thinking of $1,650 a month.|I could meet you at $1,575.",
            out=str(Path(tmp) / "play.jsonl"),
        )
        with serve(create_play_app(build_table(cfg))) as url:
            chrome.set_window_size(1280, 900)
            chrome.get(url + "/")
            Select(chrome.find_element(By.ID, "scenario")).select_by_value("neg-apartment-rent")
            click(chrome, chrome.find_element(By.ID, "start"))
            chrome.find_element(By.ID, "text").send_keys("Hi! Thanks for meeting me about the lease.")
            click(chrome, chrome.find_element(By.ID, "send"))
            chrome.find_element(By.ID, "text").send_keys(
                "I've paid on time for three years. Could we keep it at $1,500?"
            )
            click(chrome, chrome.find_element(By.ID, "send"))
            chrome.save_screenshot(str(out / "play.png"))
            print("wrote", out / "play.png")
    chrome.quit()


if __name__ == "__main__":
    main()
