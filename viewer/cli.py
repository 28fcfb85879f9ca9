"""The viewer's commands: `view` (serve the pages, or --export one HTML file) and `play`. Each takes its
config (viewer.configs)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import uvicorn

from sotopia_env.episode import write_text_atomic

from .app import create_app, export_page
from .catalog import Catalog, Query
from .configs import PlayConfig, RateConfig, ViewConfig
from .guard import exposure_warning
from .play import build_table, create_play_app
from .rate import create_rate_app


def load_catalog(cfg: ViewConfig) -> Catalog:
    started = time.perf_counter()
    catalog = Catalog(cfg.paths, cfg.labels)
    print(
        f"indexed {len(catalog.entries)} episode(s) in {len(catalog.sources)} file(s), {len(catalog.benchmarks)} "
        f"benchmark(s), {len(catalog.runs)} run(s) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    for problem in catalog.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return catalog


def warn_if_exposed(host: str, port: int, what: str) -> None:
    warning = exposure_warning(host, port, what)
    if warning:
        print(warning, file=sys.stderr, flush=True)


def view_command(cfg: ViewConfig) -> int:
    catalog = load_catalog(cfg)
    if cfg.export:
        if cfg.episode_ids:
            chosen = []
            for episode_id in cfg.episode_ids:
                entry = catalog.find(episode_id)
                if entry is None:
                    raise ValueError(f"--episode-ids: no episode {episode_id!r} in {', '.join(cfg.paths)}")
                chosen.append(entry)
        else:
            query = Query(
                scenario=cfg.scenario,
                category=cfg.category,
                split=cfg.split,
                model=cfg.model,
                end_reason=cfg.end_reason,
                min_score=cfg.min_score,
                max_score=cfg.max_score,
            )
            chosen = catalog.select(query).entries
        if not chosen:
            raise ValueError("no episode matches the filters; loosen them or name --episode-ids")
        kept = chosen[: cfg.export_limit]
        write_text_atomic(cfg.export, export_page(catalog, kept))
        more = (
            f" (the first {len(kept)} of {len(chosen)}; raise --export-limit for more)"
            if len(kept) < len(chosen)
            else ""
        )
        print(f"wrote {len(kept)} episode(s){more} to {Path(cfg.export).resolve()}")
        return 0
    app = create_app(catalog, page_size=cfg.page_size, export_limit=cfg.export_limit, host=cfg.host)
    warn_if_exposed(cfg.host, cfg.port, "every episode in these files, with each character's goals and secrets")
    print(f"serving on http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0


def play_command(cfg: PlayConfig) -> int:
    print(f"loading the partner {cfg.partner!r} ...", flush=True)
    table = build_table(cfg)
    app = create_play_app(table)
    warn_if_exposed(
        cfg.host,
        cfg.port,
        "the scenarios' goals and secrets, and can start games on your partner model (a game itself needs its key)",
    )
    print(f"play on http://{cfg.host}:{cfg.port}/ ; episodes go to {cfg.out} (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0


def rate_command(cfg: RateConfig) -> int:
    app = create_rate_app(cfg)
    mode = "pairs of episodes" if cfg.pairwise else "episodes"
    warn_if_exposed(cfg.host, cfg.port, "the episodes to rate (models hidden), and can add ratings to the file")
    print(
        f"rate {len(app.state.items)} {mode} on http://{cfg.host}:{cfg.port}/ ; ratings go to {cfg.out} "
        "(Ctrl-C stops; a rater resumes with the same id)",
        flush=True,
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0
