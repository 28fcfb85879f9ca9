"""What the `view` and `play` servers check before a request reaches a page: `Guard`, an ASGI middleware.

- Host: the request must name this server as 127.0.0.1, localhost or [::1], the host it was bound to, or
  the address the connection arrived at, with the server's port. A web page whose name was re-pointed at
  127.0.0.1 (DNS rebinding) names its own host and is refused, so it cannot read the pages.
- Body: at most `MAX_BODY` bytes, counted as it arrives (with or without a Content-Length); 413 beyond.
- State-changing methods (POST, ...): the Origin header (or, without one, the Referer) must be this server's
  own origin, and the request must carry the server's token (a random value made when the app is created,
  in every form of its pages as `csrf_token`, or in an `X-CSRF-Token` header). Another site's page can
  make a browser post a form here, but it cannot read the token, and its Origin gives it away: 403.

What none of this stops: anyone who can reach the port can load the pages (and with them the token). Bound
off loopback, the commands say so at start (`exposure_warning`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agents.serve import is_loopback

MAX_BODY = 64 * 1024  # bytes: a move's text is a few hundred; a form is never near this
TOKEN_FIELD, TOKEN_HEADER = "csrf_token", "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def exposure_warning(host: str, port: int, what: str) -> str | None:
    """The line a command prints when it serves off loopback; None on loopback."""
    if is_loopback(host):
        return None
    return (
        f"warning: serving on {host}:{port}, off loopback: anyone who can reach this port sees {what}. "
        "Serve on 127.0.0.1 (the default) unless everyone on that network may see them."
    )


def split_host(value: str) -> tuple[str, int | None]:
    """("name", port) of a Host header or URL netloc: "127.0.0.1:8766", "[::1]:8766", "localhost"."""
    parts = urlsplit("//" + value)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        return value.lower(), -1
    return (parts.hostname or "").lower(), port


class Guard:
    """The checks above, in front of `app`. error_page(status, message) renders the refusal as a page."""

    def __init__(self, app: ASGIApp, bound_host: str, token: str, error_page: Callable[[int, str], str]) -> None:
        self.app = app
        self.token = token
        self.error_page = error_page
        self.names = set(LOOPBACK_NAMES)
        bound = bound_host.strip("[]").lower()
        if bound not in ("0.0.0.0", "::", ""):  # an unspecified address is nobody's name
            self.names.add(bound)

    def _ours(self, host: str, port: int | None, scope: Scope, default_port: int = 80) -> bool:
        server = scope.get("server") or ("", None)
        names = self.names | {str(server[0]).lower()}  # the address the connection arrived at (an IP)
        return host in names and (port or default_port) == server[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)

        async def refuse(status: int, message: str) -> None:
            await HTMLResponse(self.error_page(status, message), status_code=status)(scope, receive, send)

        host_header = headers.get("host", "")
        if not self._ours(*split_host(host_header), scope):
            server = scope.get("server") or ("127.0.0.1", "PORT")
            await refuse(
                400,
                f"Host {host_header!r} is not this server. Open it as http://127.0.0.1:{server[1]}/ "
                f"(or http://localhost:{server[1]}/, or the host it was started with).",
            )
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            await refuse(413, f"The request body is {int(declared)} bytes; this server takes at most 64 KiB.")
            return
        body = b""
        while True:  # read (and count) the body here; the app gets it replayed below
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await refuse(413, "The request body is over 64 KiB; this server takes at most 64 KiB.")
                return
            if not message.get("more_body", False):
                break

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if scope["method"] not in SAFE_METHODS:
            problem = self._origin_problem(headers, scope) or await self._token_problem(headers, scope, body)
            if problem:
                await refuse(403, problem)
                return
        await self.app(scope, replay, send)

    def _origin_problem(self, headers: Headers, scope: Scope) -> str:
        origin = headers.get("origin")
        if origin is None and headers.get("referer"):
            referer = urlsplit(headers["referer"])
            origin = f"{referer.scheme}://{referer.netloc}"
        if origin is None:
            return (
                "Refused: this request names no Origin or Referer, so it cannot be told from another site's "
                "cross-origin post. Send it from this server's own pages (browsers add the header)."
            )
        parts = urlsplit(origin)
        default = 443 if parts.scheme == "https" else 80
        if parts.scheme not in ("http", "https") or not self._ours(*split_host(parts.netloc), scope, default):
            return (
                f"Refused a cross-origin request: it came from a page at {origin!r}, not from this server. "
                "Only this server's own pages may change a game; open it and use its buttons."
            )
        return ""

    async def _token_problem(self, headers: Headers, scope: Scope, body: bytes) -> str:
        token = headers.get(TOKEN_HEADER)
        if token is None and body:

            async def once() -> Message:
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                value = (await Request(scope, once).form()).get(TOKEN_FIELD)
            except Exception:  # a body that is no form: no token in it
                value = None
            token = value if isinstance(value, str) else None
        if token is None:
            return (
                f"Refused: this request carries no {TOKEN_FIELD} (the form field this server's pages hold). "
                "Reload the page and send it again."
            )
        if not secrets.compare_digest(token.encode(), self.token.encode()):
            return (
                f"Refused: the {TOKEN_FIELD} is not this server's (it changes each time the server starts). "
                "Reload the page and send it again."
            )
        return ""
