"""The `view` web app: FastAPI routes over a `Catalog` indexed at start. Pages are rendered on the server
by Jinja2 (autoescaped), so they work with no script and no network. Every request passes viewer/guard.py
first (Host header, body size; a POST would need the server's token and its own origin: none is served)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException

from .catalog import FACETS, Catalog, Entry, Query
from .charts import metric_names
from .guard import Guard, new_token
from .render import episode_context, page


def parse_query(params: Mapping[str, str]) -> Query:
    """The list's filters from a query string; a score bound that is not a number is a 400 that says so."""
    scores: dict[str, float | None] = {}
    for name in ("min_score", "max_score"):
        text = params.get(name, "").strip()
        try:
            scores[name] = float(text) if text else None
        except ValueError:
            raise HTTPException(400, f"{name} must be a number, not {text!r}; fix it in the filters") from None
    return Query(**{f: params.get(f, "") for f in FACETS}, **scores)


def query_string(query: Query) -> str:
    values = {f: getattr(query, f) for f in FACETS if getattr(query, f)}
    values.update({k: getattr(query, k) for k in ("min_score", "max_score") if getattr(query, k) is not None})
    return urlencode(values)


def entry_href(catalog: Catalog, entry: Entry) -> str:
    href = "/episode/" + quote(entry.id, safe="")
    copies = catalog.by_id[entry.id]
    if len(copies) > 1:  # the same id in several files (e.g. episodes.jsonl and its judged copy)
        href += f"?copy={next(k for k, i in enumerate(copies) if catalog.entries[i] is entry)}"
    return href


def export_page(catalog: Catalog, entries: list[Entry]) -> str:
    """One self-contained HTML file: styles inline, no script, no link outside the file. An episode whose
    file changed since it was chosen is left out (the caller refreshed the catalog just before)."""
    episodes = [e for e in map(catalog.load, entries) if e is not None]
    items = [episode_context(e, catalog.labels, catalog.reward_range) for e in episodes]
    return page("export.html", items=items, when=time.strftime("%Y-%m-%d %H:%M"), app_name="export")


def create_app(catalog: Catalog, page_size: int = 50, export_limit: int = 100, host: str = "127.0.0.1") -> FastAPI:
    """host: the address the server is bound to (a Host header naming it is accepted, besides loopback's)."""
    app = FastAPI(title="sotopia-env view", docs_url=None, redoc_url=None, openapi_url=None)
    common = {"catalog": catalog, "app_name": "view"}

    def refusal(status: int, message: str) -> str:
        return page("not_found.html", message=message, heading="Refused", catalog=None, app_name="view")

    app.add_middleware(Guard, bound_host=host, token=new_token(), error_page=refusal)
    catalog.select(Query())  # the unfiltered list, counted once before the first visit
    # Every page that shows episodes, labels or problems first catches up with files changed since
    # (`Catalog.refresh`: one stat per file when nothing changed).

    @app.exception_handler(HTTPException)
    async def error_page(request: Request, exc: HTTPException) -> HTMLResponse:
        return HTMLResponse(page("not_found.html", message=str(exc.detail), **common), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> HTMLResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return HTMLResponse(page("not_found.html", message=f"Bad address: {where}", **common), status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def episode_list(request: Request) -> str:
        query = parse_query(request.query_params)
        catalog.refresh()
        selection = catalog.select(query)
        pages = max(1, math.ceil(len(selection.entries) / page_size))
        try:
            number = min(max(1, int(request.query_params.get("page", "1"))), pages)
        except ValueError:
            number = 1
        shown = selection.entries[(number - 1) * page_size : number * page_size]
        rows = [{**e.__dict__, "href": entry_href(catalog, e)} for e in shown]
        return page(
            "list.html",
            sel=selection,
            query=query,
            facets=FACETS,
            rows=rows,
            page=number,
            pages=pages,
            qs=query_string(query),
            **common,
        )

    @app.get("/episode/{episode_id:path}", response_class=HTMLResponse)
    def episode_page(episode_id: str, copy: int = 0) -> str:
        try:
            found = catalog.episode(episode_id, copy)
        except RuntimeError as exc:  # its file is being rewritten again and again
            raise HTTPException(503, str(exc)) from None
        if found is None:
            raise HTTPException(
                404,
                f"No episode with id {episode_id!r} in the {len(catalog.sources)} file(s) being viewed "
                f"({len(catalog.entries)} episodes). Check the id, or find the episode in the list.",
            )
        entry, episode = found
        return page(
            "episode.html",
            c=episode_context(episode, catalog.labels, catalog.reward_range),
            entry=entry,
            source=catalog.sources[entry.source].label,
            copies=len(catalog.by_id[episode_id]),
            href="/episode/" + quote(episode_id, safe=""),
            **common,
        )

    @app.get("/problems", response_class=HTMLResponse)
    def problems() -> str:
        catalog.refresh()
        return page("problems.html", **common)

    @app.get("/run/{index}", response_class=HTMLResponse)
    def run_page(index: int) -> str:
        if not 0 <= index < len(catalog.runs):
            raise HTTPException(404, f"No training run number {index}; {len(catalog.runs)} run(s) are being viewed.")
        run = catalog.runs[index]
        return page("run.html", run=run, metrics=metric_names(run.metrics), **common)

    @app.get("/benchmark/{index}", response_class=HTMLResponse)
    def benchmark_page(index: int) -> str:
        if not 0 <= index < len(catalog.benchmarks):
            raise HTTPException(404, f"No benchmark number {index}; {len(catalog.benchmarks)} are being viewed.")
        return page("benchmark.html", bench=catalog.benchmarks[index], index=index, **common)

    @app.get("/benchmark/{index}/plot/{name}")
    def benchmark_plot(index: int, name: str) -> FileResponse:
        # Only the PNGs found at start: a name never reaches the file system unchecked.
        if not 0 <= index < len(catalog.benchmarks) or name not in catalog.benchmarks[index].plots:
            raise HTTPException(404, f"No plot {name!r} in benchmark number {index}.")
        return FileResponse(catalog.benchmarks[index].path / name, media_type="image/png")

    @app.get("/export", response_class=HTMLResponse)
    def export(request: Request) -> HTMLResponse:
        query = parse_query(request.query_params)
        catalog.refresh()
        chosen = catalog.select(query).entries[:export_limit]
        return HTMLResponse(
            export_page(catalog, chosen), headers={"Content-Disposition": 'attachment; filename="episodes.html"'}
        )

    return app
