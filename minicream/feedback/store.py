"""People's ratings of best-of-N candidates, in one SQLite file (see schema.py for the file and its checks).

    store = FeedbackStore(output_dir / "feedback.sqlite")      # checks the file; creates it when missing
    set_id = store.record_candidates("red apple", {"steps": 20}, hashes, pngs)   # the server, after drawing
    store.record_choice(hashes[2], set_id=set_id, client="203.0.113.7")       # a person picked the third one
    store.mark_wrong(hashes[0], client="203.0.113.7")                         # ...and marked the first wrong
    store.preferences()   # [Preference(prompt, winner, loser), ...] for fine-tuning the evaluator

Images are the candidates' PNG bytes, stored in the database (table images, keyed by the sha256 of the bytes,
at most `max_png_bytes` each), so the file alone is the dataset: `export_feedback` and the fine-tuning read
it, and the server's pruning of old output PNGs loses nothing. A rating names images by that hash, and only
images the server recorded are accepted. Every write is one `BEGIN IMMEDIATE` transaction on its own
connection, so writers in several threads or processes queue on SQLite's lock and lose nothing; the rate
limits are counted inside that transaction, so they hold across processes too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import MinicreamError
from .schema import connect, open_database, sqlite_errors

SHA256_RE = re.compile(r"[0-9a-f]{64}")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FeedbackError(MinicreamError):
    """Bad feedback input; `status` is the HTTP status the API should answer with."""
    status = 422


class UnknownImage(FeedbackError):
    status = 404


class RateLimited(FeedbackError):
    status = 429


class FeedbackFull(FeedbackError):
    status = 507


@dataclass(frozen=True)
class FeedbackLimits:
    max_prompt_chars: int = 1000  # the server's own prompt limit
    max_candidates: int = 64  # candidates of one set (rerank.MAX_CANDIDATES)
    max_settings_bytes: int = 4096  # the settings JSON, UTF-8
    max_png_bytes: int = 1 << 20  # one candidate's PNG (a 64 px emoji is a few kB)
    max_image_side: int = 2048  # PNG width / height
    max_client_chars: int = 128  # a client id (an address, a session token)
    max_ratings_per_minute: int = 30  # from one client (no client id: all anonymous ratings together)
    max_ratings_per_minute_all: int = 600  # from everyone
    max_ratings_per_set: int = 200  # ratings of one candidate set
    max_db_bytes: int = 1 << 30  # the database stops taking new candidates and ratings past this


@dataclass(frozen=True)
class Preference:
    prompt: str
    winner: str  # sha256 of the preferred PNG
    loser: str
    source: str  # "choice" (the winner was picked over the loser) or "wrong" (the loser was marked wrong)


@dataclass(frozen=True)
class Rating:
    id: int
    set_id: int
    prompt: str
    kind: str  # "choice" or "wrong"
    image: str  # the chosen image, or the one marked wrong
    rejected: tuple[str, ...]  # for a choice: the candidates it was preferred over
    created: float
    client: str | None


@dataclass(frozen=True)
class Recorded:
    rating_id: int
    set_id: int  # the candidate set the rating went to


@dataclass(frozen=True)
class Counts:
    sets: int
    images: int
    choices: int
    wrong: int


def png_sha256(png: bytes) -> str:
    """The hash that names a candidate everywhere (the page, the API, the database, the export)."""
    return hashlib.sha256(png).hexdigest()


def png_size(png: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, None when `png` does not start like a PNG."""
    if len(png) < 24 or not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", png[16:24])


class FeedbackStore:
    """A checked feedback database. Holds no open connection: each call opens its own, so one store may be
    shared by threads (and one file by processes). Raises only MinicreamError (FeedbackError for bad input)."""

    def __init__(self, path: str | Path, limits: FeedbackLimits | None = None, busy_s: float = 10.0,
                 clock: Callable[[], float] = time.time):
        self.limits, self.busy_s, self.clock = limits or FeedbackLimits(), busy_s, clock
        self.path = open_database(path, busy_s)

    @classmethod
    def open_existing(cls, path: str | Path, **kwargs) -> "FeedbackStore":
        """For readers (export, fine-tuning): a missing file is an error, not a new empty database."""
        if not Path(path).is_file():
            raise MinicreamError(f"{path}: no such feedback database file")
        return cls(path, **kwargs)

    # -- plumbing ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with sqlite_errors(self.path, self.busy_s), contextlib.closing(connect(self.path, self.busy_s)) as con:
            yield con

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the database's size limit is checked first."""
        with self._read() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                size = con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]
                if size > self.limits.max_db_bytes:
                    raise FeedbackFull(f"{self.path}: feedback database is full ({size} bytes, limit {self.limits.max_db_bytes}); "
                                       "export it and start a new one")
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:  # SQLite may have rolled back already (a full disk, an I/O error)
                    con.execute("ROLLBACK")
                raise

    # -- checks -----------------------------------------------------------------------------------------
    def _check_hash(self, h, what: str = "image") -> str:
        if not isinstance(h, str) or not SHA256_RE.fullmatch(h):
            raise FeedbackError(f"{what}: expected a sha256 (64 lowercase hex digits), got {str(h)[:80]!r}")
        return h

    def _check_client(self, client) -> str | None:
        if client is not None and (not isinstance(client, str) or len(client) > self.limits.max_client_chars):
            raise FeedbackError(f"client: a string of at most {self.limits.max_client_chars} characters")
        return client

    def _check_prompt(self, prompt) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise FeedbackError("prompt: a non-empty string")
        if len(prompt) > self.limits.max_prompt_chars:
            raise FeedbackError(f"prompt: at most {self.limits.max_prompt_chars} characters, got {len(prompt)}")
        return prompt

    def _check_settings(self, settings) -> str:
        if not isinstance(settings, dict):
            raise FeedbackError("settings: a JSON object (a dict)")
        try:
            text = json.dumps(settings, sort_keys=True, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise FeedbackError(f"settings: not JSON-serialisable ({str(e)[:120]})") from None
        if len(text.encode()) > self.limits.max_settings_bytes:
            raise FeedbackError(f"settings: at most {self.limits.max_settings_bytes} bytes of JSON, got {len(text.encode())}")
        return text

    def _check_png(self, h: str, png) -> tuple[int, int]:
        lim = self.limits
        if not isinstance(png, (bytes, bytearray)):
            raise FeedbackError(f"png of {h[:12]}: expected bytes")
        if len(png) > lim.max_png_bytes:
            raise FeedbackError(f"png of {h[:12]}: at most {lim.max_png_bytes} bytes, got {len(png)}")
        size = png_size(bytes(png))
        if size is None:
            raise FeedbackError(f"png of {h[:12]}: not a PNG file")
        if not (1 <= size[0] <= lim.max_image_side and 1 <= size[1] <= lim.max_image_side):
            raise FeedbackError(f"png of {h[:12]}: {size[0]}x{size[1]} pixels; at most {lim.max_image_side} a side")
        if png_sha256(bytes(png)) != h:
            raise FeedbackError(f"png of {h[:12]}: its sha256 is {png_sha256(bytes(png))[:12]}..., not the hash given")
        return size

    def _check_rate(self, con: sqlite3.Connection, client: str | None, set_id: int, now: float) -> None:
        lim = self.limits
        mine = con.execute("SELECT COUNT(*) FROM ratings WHERE client IS ? AND created > ?", (client, now - 60)).fetchone()[0]
        if mine >= lim.max_ratings_per_minute:
            raise RateLimited(f"too many ratings: at most {lim.max_ratings_per_minute} a minute from one client; try again shortly")
        everyone = con.execute("SELECT COUNT(*) FROM ratings WHERE created > ?", (now - 60,)).fetchone()[0]
        if everyone >= lim.max_ratings_per_minute_all:
            raise RateLimited(f"too many ratings: at most {lim.max_ratings_per_minute_all} a minute in all; try again shortly")
        in_set = con.execute("SELECT COUNT(*) FROM ratings WHERE set_id = ?", (set_id,)).fetchone()[0]
        if in_set >= lim.max_ratings_per_set:
            raise RateLimited(f"candidate set {set_id} already has {lim.max_ratings_per_set} ratings; no more are taken")

    def _find_set(self, con: sqlite3.Connection, images: Sequence[str], set_id: int | None, prompt: str | None) -> tuple[int, str]:
        """The set holding every one of `images` (the newest such one, unless `set_id` names it) -> (id, prompt)."""
        if set_id is not None and (isinstance(set_id, bool) or not isinstance(set_id, int) or not 1 <= set_id < 2**63):
            raise FeedbackError(f"set_id: a positive integer (the id recording the candidates gave), got {str(set_id)[:40]!r}")
        query = ("SELECT s.id, s.prompt FROM candidate_sets s WHERE " + " AND ".join(
            ["EXISTS (SELECT 1 FROM candidates c WHERE c.set_id = s.id AND c.sha256 = ?)"] * len(images)))
        args: list = list(images)
        if set_id is not None:
            query, args = query + " AND s.id = ?", args + [set_id]
        if prompt is not None:
            query, args = query + " AND s.prompt = ?", args + [prompt]
        row = con.execute(query + " ORDER BY s.id DESC LIMIT 1", args).fetchone()
        if row is not None:
            return row
        for h in images:
            if con.execute("SELECT 1 FROM candidates WHERE sha256 = ?", (h,)).fetchone() is None:
                raise UnknownImage(f"unknown image {h[:12]}...: not among the candidates this server drew")
        where = f"set {set_id}" if set_id is not None else "one candidate set"
        raise UnknownImage(f"images {', '.join(h[:12] for h in images)} are not all candidates of {where}"
                           + (f" with prompt {prompt[:60]!r}" if prompt is not None else ""))

    # -- writes -----------------------------------------------------------------------------------------
    def record_candidates(self, prompt: str, settings: dict, image_hashes: Sequence[str], pngs: Sequence[bytes] | None = None,
                          client: str | None = None) -> int:
        """Record one request's candidates (in the order shown) and return the set's id. `pngs`, when given, are
        the candidates' PNG bytes (each must hash to its entry of `image_hashes`); without them the ratings still
        count, but export and fine-tuning have no picture of these candidates."""
        prompt, text, client = self._check_prompt(prompt), self._check_settings(settings), self._check_client(client)
        hashes = [self._check_hash(h, f"image_hashes[{i}]") for i, h in enumerate(image_hashes)] \
            if isinstance(image_hashes, (list, tuple)) else None
        if not hashes or len(hashes) > self.limits.max_candidates:
            raise FeedbackError(f"image_hashes: a list of 1..{self.limits.max_candidates} hashes")
        if len(set(hashes)) != len(hashes):
            raise FeedbackError("image_hashes: the same image twice")
        if pngs is not None and (not isinstance(pngs, (list, tuple)) or len(pngs) != len(hashes)):
            raise FeedbackError(f"pngs: one PNG per hash ({len(hashes)})")
        sizes = [self._check_png(h, p) for h, p in zip(hashes, pngs)] if pngs is not None else [None] * len(hashes)
        with self._write() as con:
            set_id = con.execute("INSERT INTO candidate_sets (prompt, settings, created, client) VALUES (?, ?, ?, ?)",
                                 (prompt, text, self.clock(), client)).lastrowid
            for pos, (h, size) in enumerate(zip(hashes, sizes)):
                con.execute("INSERT OR IGNORE INTO images (sha256, png, width, height) VALUES (?, NULL, NULL, NULL)", (h,))
                if size is not None:
                    con.execute("UPDATE images SET png = ?, width = ?, height = ? WHERE sha256 = ? AND png IS NULL",
                                (bytes(pngs[pos]), size[0], size[1], h))
                con.execute("INSERT INTO candidates (set_id, position, sha256) VALUES (?, ?, ?)", (set_id, pos, h))
        return set_id

    def record_choice(self, chosen: str, others: Sequence[str] | None = None, *, set_id: int | None = None,
                      prompt: str | None = None, client: str | None = None) -> Recorded:
        """A person picked `chosen` as the best of its set; return the rating's and the set's ids.

        `others`: the candidates it was preferred over (default: every other candidate of the set). The set is
        `set_id`, else the newest set holding `chosen` and all `others` (and `prompt`, when given). A client's
        later choice in the same set replaces its earlier one (people change their mind; the old row is kept, marked
        superseded, so that changing one's mind over and over still counts against the rate limit)."""
        chosen, client = self._check_hash(chosen, "chosen"), self._check_client(client)
        if others is not None:
            if not isinstance(others, (list, tuple)) or len(others) > self.limits.max_candidates:
                raise FeedbackError(f"others: a list of at most {self.limits.max_candidates} hashes")
            others = [self._check_hash(h, f"others[{i}]") for i, h in enumerate(others)]
            if chosen in others or len(set(others)) != len(others):
                raise FeedbackError("others: each once, and not the chosen image")
        prompt = None if prompt is None else self._check_prompt(prompt)
        with self._write() as con:
            set_id, _ = self._find_set(con, [chosen, *(others or [])], set_id, prompt)
            if others is None:
                others = [r[0] for r in con.execute("SELECT sha256 FROM candidates WHERE set_id = ? AND sha256 != ? ORDER BY position",
                                                    (set_id, chosen))]
            if client is not None:
                con.execute("UPDATE ratings SET superseded = 1 WHERE set_id = ? AND client = ? AND kind = 'choice'", (set_id, client))
            now = self.clock()
            self._check_rate(con, client, set_id, now)
            rating = con.execute("INSERT INTO ratings (set_id, kind, image, created, client) VALUES (?, 'choice', ?, ?, ?)",
                                 (set_id, chosen, now, client)).lastrowid
            con.executemany("INSERT INTO rejected (rating_id, image) VALUES (?, ?)", [(rating, h) for h in others])
        return Recorded(rating, set_id)

    def mark_wrong(self, image_hash: str, *, set_id: int | None = None, prompt: str | None = None,
                   client: str | None = None) -> Recorded:
        """A person marked `image_hash` wrong (it does not show the prompt); return the rating's and the set's ids.
        Marking the same image of the same set again from the same client returns the first mark."""
        image_hash, client = self._check_hash(image_hash), self._check_client(client)
        prompt = None if prompt is None else self._check_prompt(prompt)
        with self._write() as con:
            set_id, _ = self._find_set(con, [image_hash], set_id, prompt)
            if client is not None:
                row = con.execute("SELECT id FROM ratings WHERE set_id = ? AND client = ? AND kind = 'wrong' AND image = ?",
                                  (set_id, client, image_hash)).fetchone()
                if row is not None:
                    return Recorded(row[0], set_id)
            now = self.clock()
            self._check_rate(con, client, set_id, now)
            return Recorded(con.execute("INSERT INTO ratings (set_id, kind, image, created, client) VALUES (?, 'wrong', ?, ?, ?)",
                                        (set_id, image_hash, now, client)).lastrowid, set_id)

    # -- reads ------------------------------------------------------------------------------------------
    def preferences(self, include_wrong: bool = True) -> list[Preference]:
        """(prompt, winner, loser) pairs, in rating order: a choice beats each candidate it was preferred over; a
        candidate marked wrong loses to each candidate of its set that nobody marked wrong. A pair two people gave
        appears twice (it is twice the evidence)."""
        with self._read() as con:
            rows = con.execute("SELECT s.prompt, r.image, j.image, 'choice' FROM ratings r JOIN candidate_sets s ON s.id = r.set_id "
                               "JOIN rejected j ON j.rating_id = r.id JOIN candidates c ON c.set_id = r.set_id AND c.sha256 = j.image "
                               "WHERE r.kind = 'choice' AND NOT r.superseded ORDER BY r.id, c.position").fetchall()
            if include_wrong:
                rows += con.execute("SELECT s.prompt, c.sha256, r.image, 'wrong' FROM ratings r JOIN candidate_sets s ON s.id = r.set_id "
                                    "JOIN candidates c ON c.set_id = r.set_id WHERE r.kind = 'wrong' AND c.sha256 NOT IN "
                                    "(SELECT w.image FROM ratings w WHERE w.set_id = r.set_id AND w.kind = 'wrong') "
                                    "ORDER BY r.id, c.position").fetchall()
        return [Preference(*row) for row in rows]

    def ratings(self) -> list[Rating]:
        """Every rating in force (a choice its client replaced is left out), oldest first."""
        with self._read() as con:
            rejected: dict[int, list[str]] = {}
            for rid, h in con.execute("SELECT j.rating_id, j.image FROM rejected j JOIN ratings r ON r.id = j.rating_id "
                                      "JOIN candidates c ON c.set_id = r.set_id AND c.sha256 = j.image ORDER BY j.rating_id, c.position"):
                rejected.setdefault(rid, []).append(h)
            rows = con.execute("SELECT r.id, r.set_id, s.prompt, r.kind, r.image, r.created, r.client FROM ratings r "
                               "JOIN candidate_sets s ON s.id = r.set_id WHERE NOT r.superseded ORDER BY r.id").fetchall()
        return [Rating(i, s, p, k, im, tuple(rejected.get(i, ())), t, c) for i, s, p, k, im, t, c in rows]

    def candidate_set(self, set_id: int) -> dict:
        """{"id", "prompt", "settings", "created", "images": [sha256 in the order shown]}."""
        with self._read() as con:
            row = con.execute("SELECT prompt, settings, created FROM candidate_sets WHERE id = ?", (set_id,)).fetchone()
            if row is None:
                raise UnknownImage(f"unknown candidate set {set_id}")
            images = [r[0] for r in con.execute("SELECT sha256 FROM candidates WHERE set_id = ? ORDER BY position", (set_id,))]
        return {"id": set_id, "prompt": row[0], "settings": json.loads(row[1]), "created": row[2], "images": images}

    def image_png(self, image_hash: str) -> bytes | None:
        """A candidate's PNG bytes; None when it was recorded without them. Unknown hash: UnknownImage."""
        with self._read() as con:
            row = con.execute("SELECT png FROM images WHERE sha256 = ?", (self._check_hash(image_hash),)).fetchone()
        if row is None:
            raise UnknownImage(f"unknown image {image_hash[:12]}...: not among the candidates this server drew")
        return None if row[0] is None else bytes(row[0])

    def count(self) -> Counts:
        with self._read() as con:
            one = lambda q: con.execute(q).fetchone()[0]  # noqa: E731
            return Counts(sets=one("SELECT COUNT(*) FROM candidate_sets"), images=one("SELECT COUNT(*) FROM images"),
                          choices=one("SELECT COUNT(*) FROM ratings WHERE kind = 'choice' AND NOT superseded"),
                          wrong=one("SELECT COUNT(*) FROM ratings WHERE kind = 'wrong'"))
