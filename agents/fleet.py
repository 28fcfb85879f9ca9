"""The servers behind one `OpenAIEngine`: one model served at one or more base URLs (a `vllm serve` fleet).

A policy spec lists them in its URL part, separated by commas:
`openai:smollm2@http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1+tokenizer:embedded`.

This is routing, and nothing more. Each attempt of a request goes to the live server with the fewest
requests in flight (ties: the one idle longest), and a retry to another server than the one the request just
failed on, while there is another in service. A server that refuses the connection, or does not answer a
request in time and then not its model list either, is taken out for `cooldown_s`; so is one that answers
`max_errors` server errors (5xx) in a row. A slow server that still answers is kept: only the timed-out
request is abandoned (vLLM aborts a request whose connection closes). A server that was out is tried again by
the next request that picks it; while every server is out, the one due back first is tried, so one server
behaves as a plain endpoint with retries. The retrying itself is the engine's one retry loop
(`OpenAIEngine._with_retries`): a request retried on another server keeps its prompt and seed, so its answer
does not depend on which server gave it. The fleet also remembers which adapter each server is known to hold:
a server new to the engine, or back from being out, holds an unknown set, and the engine gives it the current
adapter (and unloads the versions pruned meanwhile) before it serves again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def split_urls(base_url: str | Sequence[str]) -> list[str]:
    """The base URLs of a spec's URL part ("URL" or "URL1,URL2,...") or of a list; each must be http(s)."""
    urls = [u.strip() for u in base_url.split(",")] if isinstance(base_url, str) else [str(u) for u in base_url]
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if not urls or bad:
        raise ValueError(
            f"base URL {bad[0] if bad else base_url!r} is not an http(s) URL; give one URL, or several separated "
            "by commas for a fleet of servers of the same model, e.g. http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1"
        )
    if len(set(urls)) < len(urls):
        raise ValueError(f"base URLs {','.join(urls)} name a server twice; list each server once")
    return urls


@dataclass(eq=False)  # a server is itself, whatever its counts
class Endpoint:
    """One server: its URL (None: the client's default, OpenAI's API) and what the engine knows of it."""

    url: str | None
    in_flight: int = 0
    out_until: float = 0.0  # time.monotonic() before which it is out of service; 0: in service
    adapter: str | None = None  # the adapter name it is known to hold; None: not known (new, or back from out)
    answered: int = 0  # requests it answered (for logs, tests and benchmarks)
    failures: int = 0  # attempts that failed there: unreachable, timed out, or a server error (5xx)
    errors_in_row: int = 0  # server errors (5xx) since it last answered
    last_taken: float = 0.0

    def in_service(self, now: float) -> bool:
        return self.out_until <= now


class Fleet:
    def __init__(self, urls: Sequence[str | None], cooldown_s: float = 10.0, max_errors: int = 3) -> None:
        self.endpoints = [Endpoint(url) for url in urls]
        self.cooldown_s = cooldown_s
        self.max_errors = max_errors

    def in_service(self) -> list[Endpoint]:
        """The servers in service now; if none, the one due back first (it is tried rather than none)."""
        now = time.monotonic()
        live = [e for e in self.endpoints if e.in_service(now)]
        return live or [min(self.endpoints, key=lambda e: e.out_until)]

    def untried_in_service(self, tried: Sequence[Endpoint]) -> bool:
        """Whether a server in service is not among those a request already failed on (its retry need not wait)."""
        now = time.monotonic()
        return any(e.in_service(now) and e not in tried for e in self.endpoints)

    def take(self, tried: Sequence[Endpoint] = ()) -> Endpoint:
        """The server for a request's next attempt, counted in flight until `release`: in service, not the one
        the request failed on last while there is another, then the fewest of its failed attempts there, the
        fewest requests in flight, idle longest. tried: the servers its earlier attempts failed on, in order."""
        live = self.in_service()
        if tried and len(live) > 1:
            live = [e for e in live if e is not tried[-1]]
        endpoint = min(live, key=lambda e: (sum(t is e for t in tried), e.in_flight, e.last_taken))
        endpoint.in_flight += 1
        endpoint.last_taken = time.monotonic()
        return endpoint

    def release(self, endpoint: Endpoint, answered: bool) -> None:
        endpoint.in_flight -= 1
        endpoint.answered += answered
        if answered:
            endpoint.errors_in_row = 0

    def server_error(self, endpoint: Endpoint, why: str) -> None:
        """A 5xx answer: `max_errors` in a row take the server out, like an unreachable one. The count goes on
        while it is out, so a server back from its cool-down that still fails goes out again at the first error."""
        endpoint.errors_in_row += 1
        if endpoint.errors_in_row >= self.max_errors:
            self.take_out(endpoint, f"{endpoint.errors_in_row} server errors in a row, the last {why}")

    def take_out(self, endpoint: Endpoint, why: str) -> None:
        """Out of service for the cool-down; whatever adapters it held may be gone when it comes back."""
        now = time.monotonic()
        if len(self.endpoints) > 1 and endpoint.in_service(now):  # once, not for each request that failed there
            log.warning("server %s taken out for %.0fs: %s", endpoint.url, self.cooldown_s, why)
        endpoint.out_until = now + self.cooldown_s
        endpoint.adapter = None


class Connections:
    """The async clients (and per-server adapter locks) of one event loop: an async client belongs to the loop
    that made it, and each synchronous `generate` runs a loop of its own."""

    def __init__(self, make_client: Callable[[str | None], Any]) -> None:
        self._make_client = make_client
        self._clients: dict[str | None, Any] = {}
        self._locks: dict[str | None, asyncio.Lock] = {}

    def client(self, endpoint: Endpoint) -> Any:
        if endpoint.url not in self._clients:
            self._clients[endpoint.url] = self._make_client(endpoint.url)
        return self._clients[endpoint.url]

    def lock(self, endpoint: Endpoint) -> asyncio.Lock:
        return self._locks.setdefault(endpoint.url, asyncio.Lock())

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
