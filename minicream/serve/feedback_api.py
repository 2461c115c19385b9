"""People's ratings on the server (issue 35): the candidates of a generation are recorded, and POST /api/feedback
takes a person's pick among them (or an image marked wrong), in OUTPUT_DIR/feedback.sqlite (minicream.feedback).

    /api/generate returning 2+ distinct images  ->  record_generation(): one candidate set, each image's sha256;
                                                    the answer's `feedback` gives the page the set id and the hashes
    POST /api/feedback {"action": "choose" | "wrong", "image": sha256, "set_id"?, "others"?, "prompt"?}
        200 recorded   404 not an image this server drew   413 body over 16 KiB   422 bad fields or JSON
        429 too many ratings (Retry-After)   503 the database is corrupt, foreign or busy (one line; the file is
        left byte for byte: the store checks it before writing anything)   507 the database is full

The database is opened on first use, not at start-up: a corrupt file refuses ratings, never generation. Every
database call runs on one worker thread of its own (a write may wait up to the store's busy timeout for another
process's lock), never on the event loop.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ..errors import MinicreamError
from ..feedback import (MAX_BODY_BYTES, FeedbackError, FeedbackLimits, FeedbackStore, RateLimited, handle_feedback,
                        png_sha256, record_candidate_pngs)
from .errors import error_response, hide_paths

log = logging.getLogger("minicream.serve")
FEEDBACK_DB = "feedback.sqlite"
RETRY_AFTER_S = 60  # the store counts ratings over the last minute
BUSY_RETRY_S = 2

router = APIRouter(tags=["minicream"])


class FeedbackSet(BaseModel):
    """What the page needs to rate a generation's images: the candidate set and each image's hash, in order."""
    set_id: Optional[int] = Field(None, description="the candidate set recorded; null when recording failed")
    images: list[str] = Field(default_factory=list, description="sha256 of each returned PNG, in the answer's order")
    error: Optional[str] = Field(None, description="why the candidates could not be recorded (ratings refused)")


class FeedbackRequest(BaseModel):
    """`POST /api/feedback` (documentation of the body: it is read with a 16 KiB cap and checked by
    minicream.feedback.handle_feedback, whose messages name the field at fault)."""
    action: Literal["choose", "wrong"] = Field(description="choose: `image` is the best of its set; wrong: it does not show the prompt")
    image: str = Field(pattern="^[0-9a-f]{64}$", description="sha256 of the PNG as /api/generate returned it")
    set_id: Optional[int] = Field(None, ge=1, description="the `feedback.set_id` of the generation (default: the newest set holding the image)")
    others: Optional[list[str]] = Field(None, max_length=64, description="choose: the candidates it beats (default: all the set's others)")
    prompt: Optional[str] = Field(None, max_length=1000, description="narrows the set looked up without set_id")


class FeedbackAnswer(BaseModel):
    rating_id: int
    set_id: int
    action: str
    image: str


class FeedbackService:
    """The server's feedback database, opened on first use and reached only from its own worker thread."""

    def __init__(self, path: Path, limits: FeedbackLimits | None = None, enabled: bool = True):
        self.path, self.limits, self.enabled = Path(path), limits or FeedbackLimits(), enabled
        self._store: FeedbackStore | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minicream-feedback")

    def store(self) -> FeedbackStore:
        """The checked store (in the worker). Until a check passes, every call checks the file again, so a file
        restored from a backup is taken without a restart; a refused file is never touched."""
        with self._lock:
            if self._store is None:
                self._store = FeedbackStore(self.path, limits=self.limits)
            return self._store

    async def call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)  # a write in progress finishes: nothing half-recorded


def feedback_service(request: Request) -> FeedbackService:
    return request.app.state.feedback


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def record_generation(request: Request, prompt: str, settings: dict, pngs: list[bytes]) -> FeedbackSet | None:
    """Record a generation's returned images as one candidate set; None when there is nothing to choose between
    (fewer than 2 distinct images) or feedback is off. A database that refuses leaves the generation as it is."""
    service = feedback_service(request)
    hashes = [png_sha256(p) for p in pngs]
    distinct = list(dict.fromkeys(hashes))  # two seeds that drew the very same picture: one candidate
    if not service.enabled or len(distinct) < 2:
        return None
    unique = [pngs[hashes.index(h)] for h in distinct]

    def record():
        return record_candidate_pngs(service.store(), prompt, settings, unique, client=_client(request))

    try:
        set_id, _ = await service.call(record)
    except MinicreamError as e:
        message = hide_paths(" ".join(str(e).split()))
        log.warning("candidates not recorded: %s", message)
        return FeedbackSet(set_id=None, images=[], error=message)
    return FeedbackSet(set_id=set_id, images=hashes)


async def _capped_body(request: Request, limit: int) -> bytes | None:
    """The body, or None past `limit` bytes (by Content-Length, or counted as a chunked body streams in)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": FeedbackRequest.model_json_schema()}}}}


@router.post("/api/feedback", response_model=FeedbackAnswer, openapi_extra=_BODY_DOC,
             summary="A person's pick among a generation's candidates, or an image marked wrong")
async def feedback(request: Request):
    service = feedback_service(request)
    if not service.enabled:
        return error_response(404, "feedback is off on this server (started with --no-feedback)")
    raw = await _capped_body(request, MAX_BODY_BYTES)
    if raw is None:
        return error_response(413, f"request body too large (limit {MAX_BODY_BYTES} bytes for feedback)",
                              headers={"Connection": "close"})
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nested thousands deep
        return error_response(422, "the request body is not valid JSON", "body")
    client = _client(request)
    try:
        return await service.call(lambda: handle_feedback(service.store(), body, client=client))
    except RateLimited as e:
        return error_response(429, str(e), headers={"Retry-After": str(RETRY_AFTER_S)})
    except FeedbackError as e:  # 404 unknown image, 422 bad fields, 507 full
        return error_response(e.status, str(e), _field_of(str(e)))
    except MinicreamError as e:  # a corrupt, foreign or newer file; busy: the file is left as it is
        message = hide_paths(" ".join(str(e).split()))
        log.warning("feedback refused: %s", message)
        return error_response(503, message, headers={"Retry-After": str(BUSY_RETRY_S)} if "busy" in message else None)


def _field_of(message: str) -> str | None:
    name = message.split(":", 1)[0]
    return name if name.isidentifier() else None
