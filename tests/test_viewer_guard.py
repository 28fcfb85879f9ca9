"""What the `play` and `view` servers check before a request reaches a page (viewer/guard.py): the per-server
token and the same-origin check on every POST, the Host header (a DNS-rebinding guard), the size of a request
body, the number of games held, unguessable game ids, model calls kept off the event loop, and the warning
printed when a server is bound off loopback. Through the real apps (FastAPI's TestClient, which sends what a
browser would send: Host, Origin, form fields), a real uvicorn server where timing matters, and a real
`sotopia-env view` process for the warning. The browser's side (a cross-origin page's form) is in
tests/test_viewer.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_viewer import free_port, make_episode, serve

from agents.engine import Sample
from rewards import Judge
from rewards.dimensions import NAMES
from sotopia_env import ScriptedPolicy, read_episodes
from sotopia_env.episode import write_jsonl_atomic
from viewer.app import create_app
from viewer.catalog import Catalog
from viewer.configs import PlayConfig
from viewer.play import Table, build_table, create_play_app

ROOT = Path(__file__).resolve().parents[1]
BASE = "http://127.0.0.1:8766"  # where the test client says the server is (its Host header and own origin)


def play_client(tmp_path: Path, **fields) -> TestClient:
    cfg = PlayConfig(partner="scripted:Hello.|Fine.|Bye.", out=str(tmp_path / "play.jsonl"), **fields)
    return TestClient(create_play_app(build_table(cfg)), base_url=BASE, follow_redirects=False)


def token_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page's form carries no csrf_token"
    return found.group(1)


def post(web: TestClient, path: str, data: dict[str, str], token: str | None, origin: str | None = BASE):
    headers = {"Origin": origin} if origin else {}
    fields = data if token is None else {**data, "csrf_token": token}
    return web.post(path, data=fields, headers=headers)


def start_game(web: TestClient) -> str:
    answer = post(web, "/new", {"seat": "0"}, token_of(web.get("/").text))
    assert answer.status_code == 303, answer.text[-1500:]
    return answer.headers["location"].removeprefix("/game/")


def table_of(web: TestClient) -> Table:
    return web.app.state.table


def test_a_post_without_the_servers_token_or_from_another_origin_is_refused_and_changes_nothing(tmp_path):
    web = play_client(tmp_path)
    token = token_of(web.get("/").text)
    refused = {
        "no token": post(web, "/new", {"seat": "0"}, None),
        "another server's token": post(web, "/new", {"seat": "0"}, "x" + token[1:]),
        "another origin": post(web, "/new", {"seat": "0"}, token, origin="http://127.0.0.1:9999"),
        "an opaque origin": post(web, "/new", {"seat": "0"}, token, origin="null"),
        "no origin and no referer": post(web, "/new", {"seat": "0"}, token, origin=None),
    }
    for why, answer in refused.items():
        assert answer.status_code == 403, (why, answer.status_code)
    assert "csrf_token" in refused["no token"].text and "token" in refused["another server's token"].text
    assert (
        "cross-origin" in refused["another origin"].text and "http://127.0.0.1:9999" in refused["another origin"].text
    )
    assert table_of(web).games == {}
    # A Referer naming another origin is refused too; one naming this server (no Origin sent) is accepted.
    other = web.post("/new", data={"csrf_token": token}, headers={"Referer": "http://evil.example/page"})
    assert other.status_code == 403 and table_of(web).games == {}
    game_id = start_game(web)
    act = f"/game/{game_id}/act"
    assert (
        post(web, act, {"action_type": "speak", "text": "From elsewhere."}, token, "http://evil.example").status_code
        == 403
    )
    assert table_of(web).games[game_id].env.episode.turns == []  # the person speaks first: nothing said yet
    # The token may come in a header instead of the form (for scripts).
    answer = web.post(act, data={"text": "By header."}, headers={"Origin": BASE, "X-CSRF-Token": token})
    assert answer.status_code == 303
    assert [t.argument for t in table_of(web).games[game_id].env.episode.turns] == ["By header.", "Hello."]


def test_a_request_naming_another_host_is_refused_so_dns_rebinding_reads_nothing(tmp_path):
    path = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(path, [make_episode("ep-a", [("Hi.", 1.0)])])
    view = TestClient(create_app(Catalog([path])), base_url="http://127.0.0.1:8765")
    play = play_client(tmp_path)
    for web, port in ((view, 8765), (play, 8766)):
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert web.get("/", headers={"Host": host}).status_code == 200, host
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"0.0.0.0:{port}"):
            answer = web.get("/", headers={"Host": host})
            assert answer.status_code == 400, host
            assert f"Host {host!r} is not this server" in answer.text.replace("&#39;", "'"), answer.text[-800:]
    # Bound to a name, the name is accepted as well.
    named = TestClient(create_app(Catalog([path]), host="viewer.lan"), base_url="http://127.0.0.1:8765")
    assert named.get("/", headers={"Host": "viewer.lan:8765"}).status_code == 200


def test_a_request_body_over_64_kib_is_refused_with_413(tmp_path):
    web = play_client(tmp_path)
    game_id = start_game(web)
    token = token_of(web.get(f"/game/{game_id}").text)
    big = "x" * (64 * 1024)
    answer = post(web, f"/game/{game_id}/act", {"action_type": "speak", "text": big}, token)
    assert answer.status_code == 413 and "64 KiB" in answer.text
    # Without a Content-Length (chunked), the body is counted as it arrives.
    chunks = (b"csrf_token=" + token.encode() + b"&text=" if i == 0 else b"y" * 8192 for i in range(10))
    answer = web.post(
        f"/game/{game_id}/act",
        content=chunks,
        headers={"Origin": BASE, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert table_of(web).games[game_id].env.episode.turns == []


def test_the_number_of_games_held_is_bounded_finished_then_idle_games_make_room(tmp_path):
    web = play_client(tmp_path, max_games=2, idle_minutes=0.01)  # idle after 0.6 s
    first, second = start_game(web), start_game(web)
    token = token_of(web.get("/").text)
    refused = post(web, "/new", {"seat": "0"}, token)
    assert refused.status_code == 503
    assert "holds 2 games (--max-games 2)" in refused.text and "--idle-minutes" in refused.text
    # A finished game (already saved) makes room first.
    assert post(web, f"/game/{first}/act", {"action_type": "leave"}, token).status_code == 303
    third = start_game(web)
    assert web.get(f"/game/{first}").status_code == 404 and set(table_of(web).games) == {second, third}
    # Then a game idle for --idle-minutes: saved as unfinished, then dropped.
    post(web, f"/game/{second}/act", {"action_type": "speak", "text": "Left midway."}, token)
    time.sleep(0.7)
    post(web, f"/game/{third}/act", {"action_type": "speak", "text": "Still here."}, token)
    fourth = start_game(web)
    assert set(table_of(web).games) == {third, fourth}
    finished, unfinished = read_episodes(tmp_path / "play.jsonl")
    assert finished.end_reason == "leave" and unfinished.end_reason == "unfinished"
    assert "Left midway." in [t.argument for t in unfinished.turns]


def test_a_game_is_reached_only_by_its_unguessable_id_which_the_start_page_lists_to_its_player_only(tmp_path):
    web = play_client(tmp_path)
    game_id = start_game(web)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", game_id), game_id  # secrets.token_urlsafe: 128 bits or more
    assert f"/game/{game_id}" in web.get("/").text  # the player's own browser (its cookie) lists it
    stranger = TestClient(web.app, base_url=BASE)
    assert game_id not in stranger.get("/").text
    assert stranger.get(f"/game/{game_id}").status_code == 200  # the id is the key: whoever holds it plays
    episode_id = table_of(web).games[game_id].env.episode.id
    assert game_id not in episode_id  # the record (shared with others later) does not carry the key


class SleepyJudgeEngine:
    """A small real engine for the judge, local and slow: it sleeps, then answers every request with valid
    scores (0 on each dimension). It stands for a judge model on a busy server."""

    model_name = "sleepy-judge"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = threading.Event()

    def generate(self, conversations, params, seeds=None):
        self.started.set()
        time.sleep(self.seconds)
        answer = json.dumps({name: {"reasoning": "slow but sure", "score": 0} for name in NAMES})
        return [[Sample(text=answer)] for _ in conversations]


@pytest.mark.slow
def test_a_page_loads_while_a_slow_judge_is_judging_another_request(tmp_path):
    """The judge runs when the person leaves (inside the `act` request): pages must load meanwhile."""
    cfg = PlayConfig(partner="scripted:Hello.", out=str(tmp_path / "play.jsonl"))
    engine = SleepyJudgeEngine(seconds=4.0)
    table = Table(cfg, ScriptedPolicy(["Hello."]), None, Judge(engine))
    with serve(create_play_app(table)) as url:
        html = urllib.request.urlopen(url + "/").read().decode()
        token = token_of(html)

        def send(path: str, fields: dict[str, str]) -> urllib.request.Request:
            body = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in {**fields, "csrf_token": token}.items())
            return urllib.request.Request(url + path, data=body.encode(), headers={"Origin": url})

        opener = urllib.request.build_opener(NoRedirect)
        started = opener.open(send("/new", {"seat": "0"}))
        game_path = started.headers["location"]
        leaving = threading.Thread(target=lambda: opener.open(send(game_path + "/act", {"action_type": "leave"})))
        leaving.start()
        assert engine.started.wait(20), "the judge was not asked"
        timings = {}
        for address in ("/", game_path):
            begun = time.perf_counter()
            with urllib.request.urlopen(url + address, timeout=30) as page:
                assert page.status == 200
            timings[address] = time.perf_counter() - begun
        judging = leaving.is_alive()
        leaving.join(30)
    assert all(t < 1.5 for t in timings.values()), f"pages waited for the judge (it sleeps 4 s): {timings}"
    assert judging, "the judge finished before the pages were asked for; the test measured nothing"
    [episode] = read_episodes(tmp_path / "play.jsonl")
    assert episode.judge_model == "sleepy-judge" and set(episode.judge_scores) == {"agent_0", "agent_1"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

    def http_error_303(self, req, fp, code, msg, headers):
        return fp


@pytest.mark.slow
def test_serving_off_loopback_prints_a_warning_that_goals_and_secrets_are_visible(tmp_path):
    path = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(path, [make_episode("ep-a", [("Hi.", 1.0)])])
    port = free_port()
    command = ["view", str(path), "--host", "0.0.0.0", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-c", f"from benchmarks.cli import main; main({command!r})"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("serving on"):
                break
    finally:
        process.kill()
        process.wait()
    warning = next((line for line in lines if line.startswith("warning: ")), "")
    assert f"0.0.0.0:{port}" in warning and "goals and secrets" in warning and "anyone who can reach" in warning, lines
