"""What the server's feedback endpoints do, without the web framework: the body of POST /api/feedback checked and
recorded, and a best-of-N response's candidates recorded, so the HTTP layer only parses, calls and answers.

    set_id, hashes = record_candidate_pngs(store, prompt, settings, pngs, client=ip)   # after drawing; give both to the page
    answer = handle_feedback(store, json_body, client=ip)   # FeedbackError -> its .status (404, 422, 429, 507)

The server should cap the body at MAX_BODY_BYTES before parsing it, and call these from a worker thread: a busy
database blocks for up to the store's busy timeout.
"""
from __future__ import annotations

from typing import Sequence

from .store import FeedbackError, FeedbackStore, png_sha256

MAX_BODY_BYTES = 16 * 1024  # an image hash, a few others and a prompt: far below this
ACTIONS = ("choose", "wrong")
KEYS = {"action", "image", "others", "set_id", "prompt"}


def record_candidate_pngs(store: FeedbackStore, prompt: str, settings: dict, pngs: Sequence[bytes],
                          client: str | None = None) -> tuple[int, list[str]]:
    """Record a best-of-N request's candidates (PNG bytes as served, in the order shown): (set id, their sha256)."""
    hashes = [png_sha256(bytes(p)) if isinstance(p, (bytes, bytearray)) else "" for p in pngs]
    return store.record_candidates(prompt, settings, hashes, list(pngs), client=client), hashes


def handle_feedback(store: FeedbackStore, body, client: str | None = None) -> dict:
    """Body {"action": "choose" | "wrong", "image": sha256, "others"?: [sha256], "set_id"?: int, "prompt"?: str}
    -> {"rating_id", "set_id", "action", "image"}. "choose": `image` is the best of its set (preferred over `others`,
    default all the set's other candidates); "wrong": `image` does not show its prompt. Raises FeedbackError."""
    if not isinstance(body, dict):
        raise FeedbackError("feedback: a JSON object with action and image")
    unknown = sorted(set(map(str, body)) - KEYS)
    if unknown:
        raise FeedbackError(f"feedback: unknown field(s) {', '.join(unknown)[:80]}; known: {', '.join(sorted(KEYS))}")
    action, image = body.get("action"), body.get("image")
    if action not in ACTIONS:
        raise FeedbackError(f"action: one of {', '.join(ACTIONS)}, got {str(action)[:40]!r}")
    if action == "wrong" and body.get("others") is not None:
        raise FeedbackError("others: only with action choose")
    where = {"set_id": body.get("set_id"), "prompt": body.get("prompt"), "client": client}
    if action == "choose":
        done = store.record_choice(image, body.get("others"), **where)
    else:
        done = store.mark_wrong(image, **where)
    return {"rating_id": done.rating_id, "set_id": done.set_id, "action": action, "image": image}
