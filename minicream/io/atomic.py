"""Atomic file replacement, so a crash or Ctrl-C mid-save never leaves a half-written checkpoint or image.

The new content goes to a temporary file in the same directory (same filesystem, so `os.replace` is an
atomic rename), is fsynced, then renamed over the target; the directory is fsynced so the rename itself
survives a power cut. Readers see either the old file or the new one, never a mix.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

from minicream.errors import MinicreamError


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data to disk (opened read-only: fsync works on any descriptor of the file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Directories cannot be opened on Windows and some filesystems refuse fsync on them; the rename
    # is still atomic there, only its durability across a power cut is weaker.
    with contextlib.suppress(OSError):
        fsync_path(directory)


def _create_temp(directory: Path, name: str) -> Path:
    """Create an empty, uniquely named sibling file with normal (umask-respecting) permissions.

    Not `tempfile.mkstemp`: that makes the file mode 0600, which the final file would inherit.
    """
    while True:
        tmp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise MinicreamError(f"{directory / name}: cannot write: {exc.strerror}") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto `path`.

    On any exception the temporary file is removed and `path` is left untouched.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise MinicreamError(f"{target}: cannot write, directory {directory} does not exist")
    tmp = _create_temp(directory, target.name)
    mode = tmp.stat().st_mode & 0o777  # 0666 less the umask, as any tool writes files
    try:
        yield tmp
        os.chmod(tmp, mode)  # a writer that replaced the file (safetensors writes 0600) gets the usual mode back
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (a stage record, a config) so that a crash leaves the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


MAX_JSON_BYTES = 16 << 20  # a JSON file we read (a config, a stage record, a layout): far below this
MAX_JSON_DEPTH = 64         # nesting levels; ours use a handful, and deeper input only exhausts the recursion


def json_depth(value) -> int:
    """Nesting depth of a JSON value (0 for a scalar), walked without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            depth = max(depth, level)
            stack.extend((c, level + 1) for c in children)
    return depth


def parse_json(text: str | bytes, where: str, hint: str = ""):
    """JSON text -> value; broken, or nested deeper than MAX_JSON_DEPTH, is a one-line MinicreamError naming `where`."""
    import json

    tail = f"; {hint}" if hint else ""
    try:
        value = json.loads(text)
        too_deep = json_depth(value) > MAX_JSON_DEPTH
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinicreamError(f"{where}: truncated or not valid JSON ({e}){tail}") from None
    except RecursionError:  # nested past the interpreter's limit: too deep as well
        too_deep = True
    if too_deep:
        raise MinicreamError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels{tail}")
    return value


def read_json(path: str | os.PathLike, hint: str = "", max_bytes: int = MAX_JSON_BYTES):
    """A JSON file's content; a truncated, corrupt, oversized or too deeply nested file, or one that is not a regular
    file (/dev/zero, a FIFO), is a one-line MinicreamError (with `hint` on what to do). A missing file raises OSError."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise MinicreamError(f"{p}: not a regular file")
    with open(p, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise MinicreamError(f"{p}: larger than {max_bytes} bytes; not a file of ours")
    return parse_json(data, str(p), hint)


def read_json_object(path: str | os.PathLike, label: str, max_bytes: int, expected: str = "a JSON object") -> dict:
    """A JSON file given by a user as `label` (e.g. "layout FILE"): its object, or one line naming the file and what
    is wrong with it (unreadable, not JSON, too large or deep, not a regular file, not an object)."""
    try:
        data = read_json(path, max_bytes=max_bytes)
    except OSError as e:
        raise MinicreamError(f"{label}: not a readable JSON file ({type(e).__name__}: {e.strerror or e})") from None
    except MinicreamError as e:  # not JSON, too large, too deeply nested, not a regular file (/dev/zero)
        raise MinicreamError(f"{label}: not a readable JSON file ({str(e).removeprefix(f'{path}: ')})") from None
    if not isinstance(data, dict):
        raise MinicreamError(f"{label}: expected {expected}")
    return data
