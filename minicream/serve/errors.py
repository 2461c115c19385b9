"""Every error is one line of JSON in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
so the openai client shows our message; no stack trace ever leaves the server (it goes to the log)."""
from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import MinicreamError
from .queue import JobTimeout, QueueFull
from .uploads import UploadError

log = logging.getLogger("minicream.serve")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 499: "client_closed_request", 504: "timeout_error"}
CLIENT_CLOSED = 499  # nginx's status for a client that left before its request was read: not a server error


_PATH = re.compile(r"(?<![\w.])/(?:[^\s/'\"]+/)+([^\s/'\"]*)")


def hide_paths(message: str) -> str:
    """Absolute paths in a message (the model folder, a cache) reduced to their last part: clients need not learn
    the server's file layout."""
    return _PATH.sub(lambda m: m.group(1) or "/", message)


def error_response(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    message = " ".join(str(message).split())  # one line
    body = {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, first = [], None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "body"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            msg, where = "the request body is not valid JSON", "body"
        elif err.get("type") == "extra_forbidden":
            msg = "unknown field"
        first = first or where
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "invalid request", first


def _count(request: Request, counter: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        getattr(metrics, counter).inc()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(422, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, exc.detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(MinicreamError)
    async def _minicream(request: Request, exc: MinicreamError):  # the pipeline refusing its inputs
        return error_response(422, hide_paths(str(exc)))

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError):  # an uploaded image refused (also when decoded in a worker)
        return error_response(400, str(exc))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect):  # nobody reads this answer; the metrics do
        return error_response(CLIENT_CLOSED, "the client disconnected before its request was read")

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull):
        _count(request, "rejected")
        return error_response(429, str(exc), headers={"Retry-After": str(exc.retry_after), "Connection": "close"})

    @app.exception_handler(JobTimeout)
    async def _timeout(request: Request, exc: JobTimeout):
        _count(request, "timeouts")
        return error_response(504, str(exc))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal server error ({type(exc).__name__}); see the server log")
