"""The current job's deadline, for work that runs before the sampler's per-step check (the LLM filter's call).

The server's queue sets it for each job (`with job_deadline(t): ...`, in the worker thread); code that may wait on
something outside (a network call) asks `remaining()` and gives up in time. Outside a job there is no deadline.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Iterator

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("minicream_deadline", default=None)


@contextlib.contextmanager
def job_deadline(monotonic_deadline: float | None) -> Iterator[None]:
    token = _DEADLINE.set(monotonic_deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left before the current job's deadline (may be <= 0), or None when there is none."""
    d = _DEADLINE.get()
    return None if d is None else d - time.monotonic()
