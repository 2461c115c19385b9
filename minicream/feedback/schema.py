"""The feedback database file: created once, checked on every open, never recreated over what is there.

One SQLite file (standard library `sqlite3`) in WAL mode, so readers never block the one writer and writers
from several threads or processes queue on SQLite's lock (busy timeout) instead of failing. It is marked as
ours twice: `PRAGMA application_id` (MCRF) and a `meta` table; `PRAGMA user_version` is the schema version.

Opening checks, before anything is written, and refuses with one line (the file is left byte for byte):
  not a regular file / not a SQLite file (random bytes, a PNG...) / shorter than its header says (truncated) /
  SQLite's own quick_check fails (corrupt pages) / a SQLite database of another application /
  a schema version newer than this code reads.
A missing or empty (0-byte) file is created; nothing else ever is.
"""
from __future__ import annotations

import contextlib
import sqlite3
import struct
from pathlib import Path
from typing import Iterator

from ..errors import MinicreamError

APP_ID = 0x4D435246  # "MCRF": minicream feedback, in the SQLite header (offset 68)
SCHEMA_VERSION = 1
HEADER = b"SQLite format 3\x00"
MOVE_AWAY = "it was left as it is; restore a backup or give another file"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (                      -- every candidate's PNG, once per content hash
    sha256 TEXT PRIMARY KEY,               -- hex sha256 of the PNG bytes
    png BLOB,                              -- NULL when the server recorded the hash only
    width INTEGER, height INTEGER
);
CREATE TABLE candidate_sets (              -- one best-of-N request's candidates, as the server drew them
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    settings TEXT NOT NULL,                -- JSON object (steps, guidance, seed...)
    created REAL NOT NULL,                 -- unix time
    client TEXT
);
CREATE TABLE candidates (
    set_id INTEGER NOT NULL REFERENCES candidate_sets(id),
    position INTEGER NOT NULL,             -- order shown
    sha256 TEXT NOT NULL REFERENCES images(sha256),
    PRIMARY KEY (set_id, position),
    UNIQUE (set_id, sha256)
);
CREATE INDEX candidates_by_image ON candidates(sha256);
CREATE TABLE ratings (
    id INTEGER PRIMARY KEY,
    set_id INTEGER NOT NULL REFERENCES candidate_sets(id),
    kind TEXT NOT NULL CHECK (kind IN ('choice', 'wrong')),
    image TEXT NOT NULL,                   -- the chosen image, or the one marked wrong
    created REAL NOT NULL,
    client TEXT,
    superseded INTEGER NOT NULL DEFAULT 0  -- 1: the same client chose again in this set (kept: it counts for the rate)
);
CREATE INDEX ratings_by_client ON ratings(client, created);
CREATE INDEX ratings_by_time ON ratings(created);
CREATE INDEX ratings_by_set ON ratings(set_id);
CREATE TABLE rejected (                    -- the candidates a choice was preferred over
    rating_id INTEGER NOT NULL REFERENCES ratings(id) ON DELETE CASCADE,
    image TEXT NOT NULL,
    PRIMARY KEY (rating_id, image)
);
"""


def _uri(path: Path, mode: str) -> str:
    return f"{path.resolve().as_uri()}?mode={mode}"


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


@contextlib.contextmanager
def sqlite_errors(path: Path, busy_s: float) -> Iterator[None]:
    """sqlite3 errors as one-line MinicreamErrors naming the file."""
    try:
        yield
    except sqlite3.OperationalError as e:
        msg = _first_line(e)
        if "locked" in msg or "busy" in msg:
            raise MinicreamError(f"{path}: feedback database busy (another writer held it for over {busy_s:g} s); try again") from None
        raise MinicreamError(f"{path}: feedback database error ({msg})") from None
    except sqlite3.DatabaseError as e:  # "database disk image is malformed", "file is not a database"...
        raise MinicreamError(f"{path}: the feedback database is corrupt ({_first_line(e)}); {MOVE_AWAY}") from None


def connect(path: Path, busy_s: float, mode: str = "rw") -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit: BEGIN IMMEDIATE for writes). mode "rw" never
    creates the file: a database moved away while in use is an error, not a new empty one."""
    con = sqlite3.connect(_uri(path, mode), uri=True, timeout=busy_s, isolation_level=None, check_same_thread=False)
    con.execute(f"PRAGMA busy_timeout = {int(busy_s * 1000)}")
    con.execute("PRAGMA foreign_keys = ON")
    return con


def _check_header(path: Path) -> None:
    """Refuse what is not a whole SQLite file, reading only its first 100 bytes and its size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as e:
        raise MinicreamError(f"{path}: cannot read the feedback database ({e.strerror})") from None
    if len(head) < 100 or not head.startswith(HEADER):
        raise MinicreamError(f"{path}: not a SQLite database (not a minicream feedback file); {MOVE_AWAY}")
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise MinicreamError(f"{path}: the feedback database is corrupt (page size {page_size}); {MOVE_AWAY}")
    pages, counter, valid_for = struct.unpack(">I", head[28:32])[0], head[24:28], head[92:96]
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size:  # in use: a checkpoint may be growing the file page by page (quick_check runs)
        return
    if size % page_size or (pages and counter == valid_for and pages * page_size > size):
        raise MinicreamError(f"{path}: the feedback database is truncated ({size} bytes, its header says "
                             f"{pages * page_size}); {MOVE_AWAY}")


def _check_contents(con: sqlite3.Connection, path: Path) -> bool:
    """True when the database is ours at this schema version; False when it is empty (to be created)."""
    problems = [row[0] for row in con.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        said = " ".join("; ".join(map(str, problems)).split())[:160]  # SQLite's report spans lines: one line here
        raise MinicreamError(f"{path}: the feedback database is corrupt (SQLite quick_check: {said}); {MOVE_AWAY}")
    app_id = con.execute("PRAGMA application_id").fetchone()[0]
    version = con.execute("PRAGMA user_version").fetchone()[0]
    tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    if app_id != APP_ID:
        if app_id == 0 and version == 0 and not tables:
            return False
        shown = ", ".join(tables[:4]) + (", ..." if len(tables) > 4 else "")
        raise MinicreamError(f"{path}: a SQLite database of another application (tables {shown or 'none'}), not a minicream "
                             f"feedback file; {MOVE_AWAY}")
    if version > SCHEMA_VERSION:
        raise MinicreamError(f"{path}: feedback database schema version {version} is newer than this minicream reads "
                             f"({SCHEMA_VERSION}); upgrade minicream")
    if version < 1:
        raise MinicreamError(f"{path}: feedback database with an unknown schema version {version}; {MOVE_AWAY}")
    return True


def open_database(path: str | Path, busy_s: float = 10.0) -> Path:
    """Check (and, when missing or empty, create) the feedback database at `path`; return its path.

    Safe when several processes open a new file at once: creation runs inside one write transaction and the
    others find the schema there."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise MinicreamError(f"{path}: not a regular file; give the path of a feedback database file")
    fresh = not path.exists() or path.stat().st_size == 0
    if not fresh:
        _check_header(path)
        with contextlib.closing(connect(path, busy_s, "ro")) as con, sqlite_errors(path, busy_s):
            ours = _check_contents(con, path)
        if ours:
            with sqlite_errors(path, busy_s):  # a read-write close tidies the read-only one's -wal/-shm (when no one else is in)
                with contextlib.closing(connect(path, busy_s)) as rw:
                    rw.execute("PRAGMA schema_version").fetchone()  # reads the file, so closing it checkpoints
            return path
    elif not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MinicreamError(f"{path}: cannot create the feedback database ({e.strerror})") from None
    with contextlib.closing(connect(path, busy_s, "rwc")) as con, sqlite_errors(path, busy_s):
        con.execute("BEGIN IMMEDIATE")
        try:
            if not _check_contents(con, path):  # still empty now that we hold the write lock
                for statement in SCHEMA.split(";"):  # not executescript: it would commit the transaction first
                    if statement.strip():
                        con.execute(statement)
                con.execute("INSERT INTO meta VALUES ('application', 'minicream feedback'), ('schema_version', ?)", (str(SCHEMA_VERSION),))
                con.execute(f"PRAGMA application_id = {APP_ID}")
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        con.execute("PRAGMA journal_mode = WAL")  # persistent; outside a transaction
    return path
