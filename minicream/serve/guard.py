"""What every request passes before a route sees it (`Guard`, a pure ASGI middleware), in this order:

    Host          a loopback server answers only loopback names and --allowed-host ones (DNS rebinding)      400
    cross-site    without a token, a browser POST from another site (a foreign Origin, Sec-Fetch-Site:
                  cross-site) is refused unless its origin is one of --cors-origin: any page a user visits
                  could otherwise drive the local server                                                       403
    token         the bearer token, before any body byte is read (CORS preflights of allowed origins pass)  401
    body size     Content-Length, and chunked bodies counted while they stream in                             413
    body time     the whole body must arrive within --body-timeout seconds (a stalled upload holds a socket) 408
and security headers on every answer, metrics for every request.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from urllib.parse import urlsplit

from .errors import error_response
from .metrics import Metrics
from .uploads import UPLOAD_BYTES

UNAUTHORIZED = "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')"
PUBLIC_PATHS = ("/", "/healthz", "/openapi.json")  # and /static/...: the page asks for the token itself
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # metric labels: a fixed set
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # what a cross-site page must not send unasked
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY_BYTES = 64 * 1024  # a JSON request; the upload routes take UPLOAD_BYTES
UPLOAD_PATHS = frozenset({"/v1/images/edits", "/v1/images/variations", "/api/edit"})


def allowed_hosts(settings) -> frozenset[str] | None:
    """Host header names the server answers (None: any). A loopback server answers only loopback names and
    --allowed-host ones, so a web page cannot reach it through DNS rebinding; a server bound elsewhere answers
    any name unless --allowed-host lists them."""
    extra = {h.lower() for h in settings.allowed_hosts}
    if settings.host in LOOPBACK_NAMES or settings.host.startswith("127."):
        return frozenset(LOOPBACK_NAMES | {settings.host} | extra)
    return frozenset(extra | {settings.host}) if extra else None


def _host_name(header: bytes) -> str:
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):  # [::1]:7860
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def token_ok(authorization: str, token: str | None) -> bool:
    """`Authorization: Bearer TOKEN` check (constant-time); always true when the server has no token."""
    if token is None:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _same_host(origin: str, host: bytes) -> bool:
    """Whether a browser's Origin (scheme://host[:port]) is this server as the browser addressed it (its Host)."""
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == host.decode("latin-1").strip().lower()


class Guard:
    """Pure ASGI middleware: the checks above, in that order, before the app reads a byte of the body."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
               (b"content-security-policy",
                b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                b"frame-ancestors 'none'")]

    def __init__(self, app, metrics: Metrics, token: str | None = None, hosts: frozenset[str] | None = None,
                 cors_origins: tuple[str, ...] = (), body_timeout: float = 30.0):
        self.app, self.metrics, self.token, self.hosts = app, metrics, token, hosts
        self.cors, self.body_timeout = frozenset(cors_origins), body_timeout

    async def _refuse(self, scope, receive, send, status: int, message: str, t0: float, headers=None) -> None:
        response = error_response(status, message, headers=headers)
        response.raw_headers += self.HEADERS
        await response(scope, receive, send)
        self._record(scope, status, t0)

    def _cross_site(self, scope, headers: dict) -> str | None:
        """Why this request from a browser page of another site is refused, or None (no token only: with one, a
        page cannot send it without the CORS preflight that --cors-origin controls)."""
        if self.token is not None or scope["method"] not in UNSAFE_METHODS:
            return None
        origin = headers.get(b"origin", b"").decode("latin-1").strip()
        if origin in self.cors:
            return None
        fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
        if origin and not _same_host(origin, headers.get(b"host", b"")) or fetch_site == "cross-site":
            shown = origin[:100] or "another site"
            return (f"cross-site request refused: {shown} is not this server's page (start the server with "
                    f"--cors-origin {origin[:100] or 'ORIGIN'} to let that page call it)")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status, started = time.perf_counter(), [500], [False]
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "")
        if self.hosts is not None and _host_name(headers.get(b"host", b"")) not in self.hosts:
            return await self._refuse(scope, receive, send, 400, "this Host is not served (start the server with "
                                      "--allowed-host NAME to allow it)", t0)
        refusal = self._cross_site(scope, headers)
        if refusal:
            return await self._refuse(scope, receive, send, 403, refusal, t0)
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # behind a proxy prefix (--root-path): the app's own path
            path = path[len(root):] or "/"
        preflight = scope["method"] == "OPTIONS" and self.cors and b"access-control-request-method" in headers
        if not (path in PUBLIC_PATHS or path.startswith("/static/") or preflight) and \
                not token_ok(headers.get(b"authorization", b"").decode("latin-1"), self.token):
            return await self._refuse(scope, receive, send, 401, UNAUTHORIZED, t0, {"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        limit = UPLOAD_BYTES if scope.get("path") in UPLOAD_PATHS else MAX_BODY_BYTES
        too_large = f"request body too large (limit {limit} bytes)"
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._refuse(scope, receive, send, 413, too_large, t0)
        seen, refused, body_done = [0], [False], [False]
        deadline = time.monotonic() + self.body_timeout

        async def refuse_midway(code: int, message: str) -> dict:
            """Answer now and tell the app the client left (its own answer is dropped by send_wrapper)."""
            refused[0], status[0] = True, code
            response = error_response(code, message, headers={"Connection": "close"})
            response.raw_headers += self.HEADERS
            await response(scope, receive, send)
            return {"type": "http.disconnect"}

        async def receive_limited():
            if refused[0]:
                return {"type": "http.disconnect"}
            if body_done[0] or started[0]:  # after the body (a route waiting for a disconnect): no time limit
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                return await refuse_midway(408, f"the request body did not arrive within {self.body_timeout:g} s")
            if message["type"] == "http.request":
                body_done[0] = not message.get("more_body", False)
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:  # a chunked body has no Content-Length: counted as it arrives
                    return await refuse_midway(413, too_large)
            return message

        async def send_wrapper(message):
            if refused[0]:
                return
            if message["type"] == "http.response.start":
                status[0], started[0] = message["status"], True
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        try:
            await self.app(scope, receive_limited, send_wrapper)
        finally:
            self._record(scope, status[0], t0)

    def _record(self, scope, status: int, t0: float) -> None:
        route = scope.get("route")
        label = getattr(route, "path", None) or "unmatched"  # templates, not raw paths: bounded label values
        method = scope["method"] if scope["method"] in METHODS else "other"
        self.metrics.observe(label, method, status, time.perf_counter() - t0)
