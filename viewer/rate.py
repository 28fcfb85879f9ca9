"""`sotopia-env rate`: people rate episodes in the browser, one at a time, for `sotopia-env agreement`.

A rater gives an id on the start page and sees the episodes in an order shuffled for that id (seeded by the id
and --seed, so the same rater gets the same order back); each page shows one episode with the models hidden (no
model spec, no judge scores, no rewards, no file or id) and asks for the seat under test's score on each
dimension of the set, with its range and rubric text, and an optional note. Each submitted page is appended to
the ratings file at once (rewards/ratings.py: one row per dimension, atomic), so a rater can stop at any point
and come back with the same id: the episodes they rated are skipped. With --pairwise, each page shows two
policies' episodes of the same cell (scenario, characters, seed, seat) side by side, in a random left/right
order, and asks which agent did better on each dimension.

The seat under test is the one a benchmark episode's id names (`...|seat1`), else --seat. Every POST passes
viewer/guard.py (the server's token, its own origin).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException

from benchmarks.hard_tasks import benchmark_policy
from rewards.dimensions import DimensionSet, dimension_set, recorded_dimensions
from rewards.ratings import Rating, append_ratings, now, rated_by
from sotopia_env import Episode, read_episodes

from .configs import RateConfig
from .guard import TOKEN_FIELD, Guard, new_token
from .render import episode_context, page


@dataclass(frozen=True)
class Shown:
    """One episode's seat under test as a rater sees it: `episode` has its models, scores and meta removed."""

    episode: Episode
    seat: int
    policy: str  # the benchmark's spec of the seat's policy, else the model the episode records: never shown
    episode_id: str

    @property
    def key(self) -> str:
        return f"{self.episode_id}|{self.seat}|{self.policy}"


@dataclass(frozen=True)
class Item:
    """One page: one episode, or (pairwise) two policies' episodes of the same cell."""

    shown: tuple[Shown, ...]

    @property
    def key(self) -> str:  # as rewards.ratings.Rating.item writes it
        return "||".join(s.key for s in self.shown)


def episode_files(paths: list[str]) -> list[Path]:
    """Files as named; a folder gives its episodes files (a benchmark's judged copies where they exist)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            judged = sorted(path.rglob("episodes.judged.jsonl"))
            found += judged or sorted(path.rglob("episodes.jsonl"))
        else:
            found.append(path)
    return found


def seat_under_test(episode: Episode, default: int) -> int:
    """A benchmark episode's id ends with the seat its policy played (`|seat0`, `|seat1`)."""
    tail = episode.id.rsplit("|", 1)[-1]
    return int(tail[4:]) if tail in ("seat0", "seat1") else default


def hidden(episode: Episode) -> Episode:
    """What a rater may see: the dialogue and scenario, nothing that names a model or carries a judge's view."""
    return episode.model_copy(
        update={
            "id": "",
            "agent_models": {},
            "judge_scores": {},
            "judge_reasoning": {},
            "judge_model": "",
            "judge_failures": [],
            "meta": {},
            "turns": [replace(t, reward=0.0, repairs=[]) for t in episode.turns],
        }
    )


def load_items(cfg: RateConfig) -> tuple[list[Item], DimensionSet]:
    """The pages to rate and the dimension set: --dimensions, else the one the episodes record, else the seven."""
    episodes: dict[str, Shown] = {}
    recorded: dict[str, DimensionSet] = {}
    for path in episode_files(cfg.episodes):
        spec = benchmark_policy(path)
        for e in read_episodes(path):
            if not e.speech_turns():
                continue  # nothing was said: nothing to rate
            seat = seat_under_test(e, cfg.seat)
            shown = Shown(hidden(e), seat, spec or e.agent_models.get(f"agent_{seat}", ""), e.id)
            episodes[shown.key] = shown
            found = recorded_dimensions(e.meta)
            if found is not None:
                recorded[found.name] = found
    if not episodes:
        raise ValueError(f"no episodes with a dialogue in {', '.join(cfg.episodes)}; name episode files to rate")
    if cfg.dimensions:
        dims = dimension_set(cfg.dimensions)
    elif len(recorded) > 1:
        raise ValueError(
            f"the episodes were judged on several dimension sets ({', '.join(recorded)}); set --dimensions"
        )
    else:
        dims = next(iter(recorded.values())) if recorded else dimension_set(None)
    if not cfg.pairwise:
        return sample([Item((s,)) for s in episodes.values()], cfg), dims
    cells: dict[tuple[Any, ...], list[Shown]] = {}
    for s in episodes.values():
        e = s.episode
        cells.setdefault((e.scenario.id, tuple(c.id for c in e.characters), e.seed, s.seat), []).append(s)
    pairs = [
        Item((a, b))
        for group in cells.values()
        for a, b in combinations(sorted(group, key=lambda s: s.policy), 2)
        if a.policy != b.policy
    ]
    if not pairs:
        raise ValueError(
            "--pairwise needs two policies' episodes of the same cell (scenario, characters, seed, seat); "
            "name the benchmark folder (or the policies' episode files)"
        )
    return sample(pairs, cfg), dims


def sample(items: list[Item], cfg: RateConfig) -> list[Item]:
    """--sample N: the same N items for every rater (so raters overlap and their agreement can be measured)."""
    if cfg.sample is None or cfg.sample >= len(items):
        return items
    return random.Random(cfg.seed).sample(sorted(items, key=lambda i: i.key), cfg.sample)


def rater_order(items: list[Item], rater: str, seed: int) -> list[Item]:
    """The items in this rater's order: shuffled by a seed drawn from the rater id and --seed (stable across
    restarts, different between raters); in pairwise mode each pair's left/right is drawn likewise."""
    digest = int(hashlib.sha256(f"{seed}|{rater}".encode()).hexdigest()[:16], 16)
    rng = random.Random(digest)
    order = sorted(items, key=lambda i: i.key)
    rng.shuffle(order)
    return [Item(tuple(rng.sample(i.shown, len(i.shown)))) for i in order]


def check_rater(rater: str) -> str:
    rater = rater.strip()
    if not rater or len(rater) > 64 or not all(c.isalnum() or c in "-_." for c in rater):
        raise ValueError("a rater id is 1 to 64 letters, digits, '-', '_' or '.' (e.g. your initials)")
    return rater


def create_rate_app(cfg: RateConfig) -> FastAPI:
    items, dims = load_items(cfg)
    app = FastAPI(title="sotopia-env rate", docs_url=None, redoc_url=None, openapi_url=None)
    token = new_token()

    def refusal(status: int, message: str) -> str:
        return page("not_found.html", message=message, heading="Refused", catalog=None, app_name="rate")

    app.add_middleware(Guard, bound_host=cfg.host, token=token, error_page=refusal)
    forms = {"token": token, "token_field": TOKEN_FIELD, "app_name": "rate", "dims": dims, "cfg": cfg}

    @app.exception_handler(HTTPException)
    async def error_page(request: Request, exc: HTTPException) -> HTMLResponse:
        html = page("not_found.html", message=str(exc.detail), catalog=None, app_name="rate")
        return HTMLResponse(html, status_code=exc.status_code)

    def todo(rater: str) -> tuple[list[Item], int]:
        done = rated_by(cfg.out, rater)
        order = rater_order(items, rater, cfg.seed)
        return [i for i in order if _key(i) not in done], len(order)

    def start_page(error: str = "", status: int = 200) -> HTMLResponse:
        html = page("rate_start.html", error=error, count=len(items), **forms)
        return HTMLResponse(html, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def start() -> HTMLResponse:
        return start_page()

    @app.post("/start")
    async def begin(request: Request) -> Any:
        form = await request.form()
        try:
            rater = check_rater(str(form.get("rater", "")))
        except ValueError as exc:
            return start_page(str(exc), 400)
        return RedirectResponse(f"/rater/{rater}", status_code=303)

    def item_page(rater: str, error: str = "", status: int = 200) -> HTMLResponse:
        left, total = todo(rater)
        if not left:
            return HTMLResponse(page("rate_done.html", rater=rater, total=total, **forms), status_code=status)
        item = left[0]
        views = [
            {"c": episode_context(s.episode, {}, None), "seat": s.seat, "name": s.episode.characters[s.seat].name}
            for s in item.shown
        ]
        html = page(
            "rate.html",
            rater=rater,
            views=views,
            item=_digest(item),
            done=total - len(left),
            total=total,
            error=error,
            **forms,
        )
        return HTMLResponse(html, status_code=status)

    @app.get("/rater/{rater}", response_class=HTMLResponse)
    def rate_page(rater: str) -> HTMLResponse:
        try:
            rater = check_rater(rater)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        return item_page(rater)

    @app.post("/rater/{rater}")
    async def submit(rater: str, request: Request) -> Any:
        try:
            rater = check_rater(rater)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        form = await request.form()
        left, _ = todo(rater)
        if not left or str(form.get("item", "")) != _digest(left[0]):
            # A resubmitted or stale page (another tab rated it already): show the next one, write nothing.
            return RedirectResponse(f"/rater/{rater}", status_code=303)
        item = left[0]
        try:
            rows = _rows(item, dims, rater, form)
        except ValueError as exc:
            return item_page(rater, str(exc), 400)
        append_ratings(cfg.out, rows)
        return RedirectResponse(f"/rater/{rater}", status_code=303)

    app.state.items = items
    return app


def _key(item: Item) -> str:
    """The key rewards.ratings.Rating.item gives this page's rows: a pair is written first episode vs second in
    the order stored (sorted by policy), whichever side each was shown on."""
    return "||".join(s.key for s in sorted(item.shown, key=lambda s: s.policy))


def _digest(item: Item) -> str:
    """The page's item as its form names it: not the ids themselves (they may name a policy)."""
    return hashlib.sha256(_key(item).encode()).hexdigest()[:16]


def _rows(item: Item, dims: DimensionSet, rater: str, form: Any) -> list[Rating]:
    """The form's answers as rating rows; a missing or out-of-range answer is a ValueError saying which."""
    note = str(form.get("note", "")).strip()[:2000]
    when = now()
    rows = []
    if len(item.shown) == 1:
        [s] = item.shown
        for d in dims.dimensions:
            text = str(form.get(f"score_{d.name}", "")).strip()
            try:
                score = float(text)
            except ValueError:
                raise ValueError(f"{d.name}: give a score from {d.low} to {d.high}") from None
            if not d.low <= score <= d.high:
                raise ValueError(f"{d.name}: {score:g} is outside {d.low} to {d.high}")
            rows.append(
                Rating("score", rater, s.episode_id, s.seat, d.name, when, policy=s.policy, score=score, note=note)
            )
        return [replace(r, dimensions=dims.name) for r in rows]
    first, second = sorted(item.shown, key=lambda s: s.policy)  # stored in a fixed order, shown in a random one
    side = {"left": item.shown[0], "right": item.shown[1]}
    for d in dims.dimensions:
        answer = str(form.get(f"better_{d.name}", ""))
        if answer not in ("left", "right", "tie"):
            raise ValueError(f"{d.name}: choose left, right or about the same")
        choice = "tie" if answer == "tie" else ("episode" if side[answer] is first else "other")
        rows.append(
            Rating(
                "pairwise",
                rater,
                first.episode_id,
                first.seat,
                d.name,
                when,
                policy=first.policy,
                other=second.episode_id,
                other_policy=second.policy,
                choice=choice,
                note=note,
            )
        )
    return [replace(r, dimensions=dims.name) for r in rows]
