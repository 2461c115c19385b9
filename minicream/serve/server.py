"""Running the app with uvicorn: in the foreground (`minicream serve`) or in a background thread (tests, docs)."""
from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from typing import Iterator

import uvicorn

from ..errors import MinicreamError
from .settings import ServeSettings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_settings(s: ServeSettings) -> None:
    if not 0 <= s.port <= 65535:
        raise MinicreamError(f"--port must be in 0..65535, got {s.port}")
    if s.queue_size < 0 or s.concurrency < 1 or not math.isfinite(s.timeout) or s.timeout <= 0:
        raise MinicreamError("--queue-size must be >= 0, --concurrency >= 1 and --timeout > 0")
    if not math.isfinite(s.body_timeout) or s.body_timeout <= 0:
        raise MinicreamError(f"--body-timeout must be a number of seconds > 0, got {s.body_timeout}")
    for origin in s.cors_origins:
        if origin != origin.strip() or "://" not in origin or origin.endswith("/"):
            raise MinicreamError(f"--cors-origin must be an origin such as http://localhost:3000 (scheme://host[:port], "
                                 f"no path), got {origin!r}")
    if s.feedback_per_minute < 1:
        raise MinicreamError(f"--feedback-per-minute must be at least 1, got {s.feedback_per_minute}")
    if s.max_saved < 1:
        raise MinicreamError(f"--max-saved must be at least 1, got {s.max_saved}")
    if s.token is not None and len(s.token) < 8:
        raise MinicreamError("the token must be at least 8 characters")


def run(app, settings: ServeSettings) -> None:
    """Serve in the foreground until Ctrl-C."""
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", server_header=False)
    except OSError as e:  # port in use, address not available
        raise MinicreamError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}") from None


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning") -> Iterator[str]:
    """Run `app` on a real socket in a daemon thread; yields its base URL and stops it on exit."""
    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False))
    thread = threading.Thread(target=server.run, name="minicream-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
