"""A bounded generation queue: `concurrency` worker threads, at most `max_queued` jobs waiting.

Requests beyond that are refused at once (`QueueFull` -> HTTP 429) rather than piling up: a CPU
generator serves a few images a second, and a client is better told to retry than left hanging.
Each job gets a deadline; the pipeline's per-step callback checks it, so a job that runs out of time
stops at its next sampling step and frees its worker (a thread cannot be killed from outside).
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..deadline import job_deadline


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the generation queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class JobTimeout(Exception):
    pass


@dataclass
class Progress:
    state: str = "queued"  # queued | running | done
    step: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)


class GenerationQueue:
    def __init__(self, concurrency: int = 1, max_queued: int = 8, timeout: float = 120.0, keep_progress: int = 256):
        if concurrency < 1 or max_queued < 0 or timeout <= 0:
            raise ValueError("concurrency >= 1, max_queued >= 0 and timeout > 0 are required")
        self.concurrency, self.max_queued, self.timeout = concurrency, max_queued, timeout
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="minicream-gen")
        self._lock = threading.Lock()
        self._queued = self._running = 0
        self._progress: dict[str, Progress] = {}
        self._keep = keep_progress
        self._recent_s = 1.0  # moving average of job durations, for Retry-After

    # -- state ----------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running(self) -> int:
        return self._running

    def progress(self, job_id: str) -> Progress | None:
        return self._progress.get(job_id)

    def retry_after(self) -> int:
        waves = (self._queued + self._running) / self.concurrency
        return max(1, round(self._recent_s * max(1.0, waves)))

    # -- jobs -----------------------------------------------------------------------------------
    def check_room(self) -> None:
        """QueueFull now if a job submitted now would be refused: a route calls it before reading an upload, so a
        full queue answers 429 without reading, let alone decoding, anything."""
        with self._lock:
            if self._queued + self._running >= self.concurrency + self.max_queued:
                raise QueueFull(self.retry_after())

    def submit(self, fn: Callable[[Callable[[int, int], None]], object], job_id: str | None = None) -> Future:
        """Queue `fn(callback)`; `callback(step, total)` must be called by fn at each step (it raises
        JobTimeout once the deadline has passed). Raises QueueFull when no slot is free."""
        with self._lock:
            if self._queued + self._running >= self.concurrency + self.max_queued:
                raise QueueFull(self.retry_after())
            self._queued += 1
        deadline = time.monotonic() + self.timeout
        progress = Progress()
        if job_id:
            self._remember(job_id, progress)

        def callback(step: int, total: int) -> None:
            progress.step, progress.total = step, total
            if time.monotonic() > deadline:
                raise JobTimeout(f"generation took longer than the server's limit of {self.timeout:g} s")

        def run():
            with self._lock:
                self._queued -= 1
                self._running += 1
            progress.state, t0 = "running", time.monotonic()
            try:
                if t0 > deadline:
                    raise JobTimeout(f"the request waited longer than the server's limit of {self.timeout:g} s")
                with job_deadline(deadline):  # work before the first sampling step (the LLM filter) sees it too
                    return fn(callback)
            finally:
                self._recent_s = 0.8 * self._recent_s + 0.2 * (time.monotonic() - t0)
                progress.state = "done"
                with self._lock:
                    self._running -= 1

        future = self._pool.submit(run)
        future.add_done_callback(self._on_done)
        return future

    def _on_done(self, future: Future) -> None:
        if future.cancelled():  # cancelled before it started: it still counted as queued
            with self._lock:
                self._queued -= 1

    async def run(self, fn, job_id: str | None = None):
        """Submit and await the result; JobTimeout when it takes longer than the time limit."""
        future = self.submit(fn, job_id)
        try:
            # A little grace beyond the deadline: the job itself raises JobTimeout at its next step.
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout + 5.0)
        except asyncio.TimeoutError:
            future.cancel()
            raise JobTimeout(f"generation took longer than the server's limit of {self.timeout:g} s") from None

    def _remember(self, job_id: str, progress: Progress) -> None:
        with self._lock:
            self._progress.pop(job_id, None)
            self._progress[job_id] = progress
            while len(self._progress) > self._keep:  # dicts keep insertion order: drop the oldest
                self._progress.pop(next(iter(self._progress)))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
