"""`sotopia-env play`: a person takes one seat of a scenario in the browser, a policy the other.

Each game is a `SocialParallelEnv` held by the server: the person's form becomes that seat's action in
`env.step`, the partner's move is asked of its policy on the server as soon as it is the partner's turn, and
the finished episode (judged, when a judge is given) is appended to the output file like any other record.
The page shows the seat's own observation text, nothing of the partner's goal or secrets.

A game's address holds its key (`secrets.token_urlsafe`): only whoever has it reaches the game, and the start
page lists a browser only the games it started (a cookie of their keys). Model and judge calls run in worker
threads, never on the event loop, so a slow judge does not hold up other pages. What every request must
pass first (Host, Origin, the form token, the body size) is in viewer/guard.py.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from agents.spec import make_policies
from sotopia_env import Episode, Policy, SocialParallelEnv, library_scenarios
from sotopia_env.actions import ActionType
from sotopia_env.episode import append_jsonl
from sotopia_env.policy import act_batch

from .configs import PlayConfig
from .guard import TOKEN_FIELD, Guard, new_token
from .render import episode_context, page

HUMAN_MODEL = "human (browser)"
GAMES_COOKIE = "sotopia_play_games"  # the keys of the games this browser started, "."-separated

ACTION_CHOICES = [(t.sotopia_name, t.sotopia_name) for t in ActionType if t is not ActionType.none] + [
    ("none", "none (say nothing this turn)")
]


class TableFull(RuntimeError):
    """No room for a new game: every game held is in play and touched recently."""


@dataclass
class Game:
    id: str  # the key in its address: secrets.token_urlsafe, never in the record
    env: SocialParallelEnv
    seat: int
    observations: dict[str, dict[str, Any]]  # both seats' latest observations (the page shows only the person's)
    saved: bool = False
    judged: Episode | None = None  # the latest judged copy (of the finished or the running dialogue)
    notes: list[str] = field(default_factory=list)  # the judge's failures
    partner_error: str = ""  # why the partner's last move failed; the game waits on its turn
    touched: float = field(default_factory=time.monotonic)  # the person's last request on it

    @property
    def human(self) -> str:
        return f"agent_{self.seat}"

    @property
    def partner(self) -> str:
        return f"agent_{1 - self.seat}"

    @property
    def observation(self) -> dict[str, Any]:
        return self.observations[self.human]

    @property
    def over(self) -> bool:
        return not self.env.agents

    @property
    def partners_turn(self) -> bool:
        return not self.over and self.human not in self.env.active_agents


class Table:
    """The games in play (at most cfg.max_games) and the parts they share: the partner policy, reward function
    and judge. Model calls are serialised by one lock (an engine serves one call at a time); callers run
    them in worker threads."""

    def __init__(
        self,
        cfg: PlayConfig,
        partner: Policy,
        reward_fn: Callable[[Any], float] | None = None,
        judge: Any = None,
    ) -> None:
        self.cfg, self.partner, self.reward_fn, self.judge = cfg, partner, reward_fn, judge
        self.games: dict[str, Game] = {}
        self.lock = threading.Lock()

    def new_game(self, scenario: str | None, characters: tuple[str, str] | None, seat: int) -> Game:
        env = SocialParallelEnv(
            max_turns=self.cfg.max_turns,
            reward_fn=self.reward_fn,
            agent_models={f"agent_{seat}": HUMAN_MODEL, f"agent_{1 - seat}": self.cfg.partner},
        )
        options: dict[str, Any] = {}
        if scenario:
            options["scenario"] = scenario
        if characters:
            options["characters"] = characters
        with self.lock:
            self._make_room()
            observations, _ = env.reset(seed=self.cfg.seed, options=options)
            env.episode.meta["played_in"] = "sotopia-env play"
            game = Game(secrets.token_urlsafe(16), env, seat, observations)
            env.episode.id = f"play-{uuid.uuid4().hex[:12]}"  # the record is shared later: not the key
            self.games[game.id] = game
        self.partner_moves(game)
        return game

    def _make_room(self) -> None:
        """Below max_games: drop the oldest finished game (saved already), else the oldest one untouched for
        idle_minutes (saved as unfinished first), else refuse. Called under the lock."""
        if len(self.games) < self.cfg.max_games:
            return
        idle_before = time.monotonic() - 60 * self.cfg.idle_minutes
        finished = [g for g in self.games.values() if g.over and g.saved]
        idle = sorted((g for g in self.games.values() if g.touched < idle_before), key=lambda g: g.touched)
        if not finished and not idle:
            raise TableFull(
                f"this server holds {len(self.games)} games (--max-games {self.cfg.max_games}), all in play and "
                f"touched in the last {self.cfg.idle_minutes:g} minutes (--idle-minutes); finish one, wait, or "
                "restart play with a larger --max-games"
            )
        dropped = finished[0] if finished else idle[0]
        self._save_unfinished(dropped)
        del self.games[dropped.id]

    def _save_unfinished(self, game: Game) -> bool:
        if game.saved or not game.env.episode.turns:
            return False
        append_jsonl(self.cfg.out, game.env.episode.model_copy(update={"end_reason": "unfinished"}))
        game.saved = True
        return True

    def act(self, game: Game, action_type: str, text: str) -> None:
        """The person's move, then the partner's until it is the person's turn again or the episode ends."""
        game.touched = time.monotonic()
        with self.lock:
            if game.over:
                raise ValueError("this episode is over; start a new one")
            if game.partners_turn:
                raise ValueError("it is the partner's turn; ask the partner again")
            game.observations, *_ = game.env.step({game.human: {"action_type": action_type, "argument": text}})
        self.partner_moves(game)

    def partner_moves(self, game: Game) -> None:
        """The partner acts until it is the person's turn or the episode ends. If its policy fails (e.g. its
        server is down), the error goes to the page and the game waits on the partner's turn to be asked again."""
        with self.lock:
            env = game.env
            game.partner_error = ""
            while game.partners_turn:
                seen = game.observations[game.partner]
                try:
                    [action] = act_batch(self.partner, [seen], [(env.episode.id, seen["turn"], 1 - game.seat)])
                except Exception as exc:  # any policy's failure: the dialogue so far must not be lost
                    game.partner_error = f"the partner {self.cfg.partner!r} failed: {type(exc).__name__}: {exc}"
                    return
                game.observations, *_ = env.step({game.partner: action})
            self._save_if_over(game)

    def _save_if_over(self, game: Game) -> None:
        env = game.env
        if game.over and not game.saved:
            record = env.episode
            if self.judge is not None:
                record = self._judge(game)
            append_jsonl(self.cfg.out, record)
            game.saved = True

    def _judge(self, game: Game) -> Episode:
        """A judged copy of the dialogue so far; a judge that fails is noted on the page and in the record."""
        try:
            [judged] = self.judge.judge_episodes([game.env.episode])
        except Exception as exc:  # e.g. its server is down: the person's dialogue must still be saved
            failure = f"judge {self.judge.model_name} failed: {type(exc).__name__}: {exc}"
            judged = game.env.episode.model_copy(update={"judge_failures": [failure]})
        game.judged = judged
        game.notes = list(judged.judge_failures)
        return judged

    def judge_now(self, game: Game) -> None:
        if self.judge is None:
            raise ValueError("no judge was given; restart play with --judge SPEC")
        with self.lock:
            self._judge(game)

    def save_unfinished(self) -> int:
        """Append every game stopped midway (end_reason 'unfinished'), so no dialogue is lost at shutdown."""
        with self.lock:
            return sum(self._save_unfinished(game) for game in self.games.values())


def create_play_app(table: Table) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        saved = table.save_unfinished()
        if saved:
            print(f"saved {saved} unfinished game(s) to {table.cfg.out}", flush=True)

    app = FastAPI(title="sotopia-env play", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    cfg = table.cfg
    token = new_token()  # in every form of the pages; Guard refuses a POST without it
    app.state.table = table

    def refusal(status: int, message: str) -> str:
        return page("not_found.html", message=message, heading="Refused", catalog=None, app_name="play")

    app.add_middleware(Guard, bound_host=cfg.host, token=token, error_page=refusal)
    forms = {"token": token, "token_field": TOKEN_FIELD}

    @app.exception_handler(HTTPException)
    async def error_page(request: Request, exc: HTTPException) -> HTMLResponse:
        html = page("not_found.html", message=str(exc.detail), catalog=None, app_name="play")
        return HTMLResponse(html, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> HTMLResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        html = page("not_found.html", message=f"Bad request: {where}", catalog=None, app_name="play")
        return HTMLResponse(html, status_code=400)

    def get_game(game_id: str) -> Game:
        if game_id not in table.games:
            raise HTTPException(404, f"No game {game_id!r} on this server (games end when it stops); start a new one.")
        return table.games[game_id]

    def own_games(request: Request) -> list[str]:
        """The keys of the games this browser started that the server still holds."""
        return [k for k in request.cookies.get(GAMES_COOKIE, "").split(".") if k in table.games]

    def start_page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
        scenarios = sorted(library_scenarios().values(), key=lambda s: s.id)
        games = [table.games[k] for k in own_games(request)]
        html = page("play_start.html", scenarios=scenarios, cfg=cfg, error=error, app_name="play", games=games, **forms)
        return HTMLResponse(html, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def start(request: Request) -> HTMLResponse:
        return start_page(request)

    @app.post("/new")
    async def new(request: Request) -> Any:
        form = await request.form()
        pair = [c.strip() for c in str(form.get("characters", "")).split(",") if c.strip()]
        try:
            seat = int(str(form.get("seat", cfg.seat)))
            if seat not in (0, 1):
                raise ValueError(f"seat must be 0 or 1, not {seat}")
            if pair and len(pair) != 2:
                raise ValueError("characters: name two character ids, comma-separated, or leave it empty")
            scenario = str(form.get("scenario", "")) or None
            game = await run_in_threadpool(table.new_game, scenario, (pair[0], pair[1]) if pair else None, seat)
        except ValueError as exc:
            return start_page(request, str(exc), 400)
        except TableFull as exc:
            return start_page(request, str(exc), 503)
        response = RedirectResponse(f"/game/{game.id}", status_code=303)
        keys = (own_games(request) + [game.id])[-cfg.max_games :]
        response.set_cookie(GAMES_COOKIE, ".".join(keys), httponly=True, samesite="strict")
        return response

    @app.get("/game/{game_id}", response_class=HTMLResponse)
    def game_page(game_id: str, error: str = "") -> str:
        game = get_game(game_id)
        episode = game.env.episode
        judged = game.judged
        rewards = [t.reward for t in episode.turns if t.is_speech]
        scale = (min(rewards), max(rewards)) if table.reward_fn is not None and rewards else None
        return page(
            "play.html",
            game=game,
            c=episode_context(episode, {}, scale),
            judged=episode_context(judged, {}, None) if judged is not None else None,
            rewarded=table.reward_fn is not None,
            has_judge=table.judge is not None,
            choices=ACTION_CHOICES,
            cfg=cfg,
            error=error,
            app_name="play",
            **forms,
        )

    @app.post("/game/{game_id}/act")
    async def act(game_id: str, request: Request) -> Any:
        game = get_game(game_id)
        form = await request.form()
        try:
            await run_in_threadpool(table.act, game, str(form.get("action_type", "speak")), str(form.get("text", "")))
        except (ValueError, TypeError) as exc:
            return HTMLResponse(game_page(game_id, error=str(exc)), status_code=400)
        return RedirectResponse(f"/game/{game.id}", status_code=303)

    @app.post("/game/{game_id}/partner")
    def ask_partner_again(game_id: str) -> Any:  # a plain def: FastAPI runs it in a worker thread
        game = get_game(game_id)
        game.touched = time.monotonic()
        table.partner_moves(game)
        return RedirectResponse(f"/game/{game.id}", status_code=303)

    @app.post("/game/{game_id}/judge")
    def judge_now(game_id: str) -> Any:  # a plain def: FastAPI runs it in a worker thread
        game = get_game(game_id)
        game.touched = time.monotonic()
        try:
            table.judge_now(game)
        except ValueError as exc:
            return HTMLResponse(game_page(game_id, error=str(exc)), status_code=400)
        return RedirectResponse(f"/game/{game.id}", status_code=303)

    return app


def build_table(cfg: PlayConfig) -> Table:
    """The partner policy from its spec, and the reward model and judge when the config names them."""
    partner = make_policies([cfg.partner], cfg.sampling(seed=cfg.seed))[0]
    reward_fn = None
    if cfg.reward_model:
        from rewards import RewardModel

        reward_fn = RewardModel.load(cfg.reward_model).as_env_reward()
    judge = None
    if cfg.judge:
        from rewards.cli import judge_from_spec

        judge = judge_from_spec(cfg.judge, Path(cfg.out).parent / "judge_cache.jsonl")
    return Table(cfg, partner, reward_fn, judge)
