"""The ratings as a dataset folder, and that folder (or the database itself) read back as preference pairs.

    <out>/info.json           {"format": "minicream-feedback", "version": 1, counts...}
    <out>/preferences.jsonl   {"prompt", "winner", "loser", "source"} per pair, in rating order
    <out>/ratings.jsonl       {"id", "set", "prompt", "settings", "kind", "image", "rejected", "created"} per rating
    <out>/images/<sha256>.png  every rated candidate whose PNG the server recorded, byte for byte

Client ids (addresses) are left out. The same database always gives the same bytes (sorted keys, fixed order),
and a pair whose winner or loser has no PNG is counted in info.json, not written.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import MinicreamError
from ..io.atomic import read_json
from .store import SHA256_RE, FeedbackStore, Preference

FORMAT, VERSION = "minicream-feedback", 1
MAX_LINES = 1_000_000


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)


def _is_export(folder: Path) -> bool:
    try:
        return read_json(folder / "info.json").get("format") == FORMAT
    except (OSError, MinicreamError, AttributeError):
        return False


def export_feedback(db_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Write the ratings of the database at `db_path` as a dataset folder `out_dir`; return its info.json.

    `out_dir` must not exist or be empty; an earlier export there is replaced only with `overwrite`. The folder
    is written beside it under a temporary name and renamed into place, so it is never half-written."""
    store, out = FeedbackStore.open_existing(db_path), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (overwrite and out.is_dir() and _is_export(out)):
            raise MinicreamError(f"{out}: exists and is not empty; give a new folder"
                                 + (" (or --overwrite to replace an earlier export)" if _is_export(out) else ""))
    ratings, sets = store.ratings(), {}
    for r in ratings:
        if r.set_id not in sets:
            sets[r.set_id] = store.candidate_set(r.set_id)
    images: dict[str, bytes | None] = {}
    for s in sets.values():
        for h in s["images"]:
            images[h] = store.image_png(h)
    pairs = store.preferences()
    kept = [p for p in pairs if images.get(p.winner) is not None and images.get(p.loser) is not None]
    info = {"format": FORMAT, "version": VERSION, "ratings": len(ratings), "candidate_sets": len(sets), "pairs": len(kept),
            "pairs_without_images": len(pairs) - len(kept), "images": sum(v is not None for v in images.values())}
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    for h in sorted(images):
        if images[h] is not None:
            (tmp / "images" / f"{h}.png").write_bytes(images[h])
    (tmp / "preferences.jsonl").write_text(_jsonl([{"prompt": p.prompt, "winner": p.winner, "loser": p.loser, "source": p.source}
                                                   for p in kept]), encoding="utf-8")
    (tmp / "ratings.jsonl").write_text(_jsonl([{"id": r.id, "set": r.set_id, "prompt": r.prompt, "settings": sets[r.set_id]["settings"],
                                                "kind": r.kind, "image": r.image, "rejected": list(r.rejected), "created": r.created}
                                               for r in ratings]), encoding="utf-8")
    (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return info


@dataclass
class FeedbackDataset:
    pairs: list[Preference]
    pngs: dict[str, bytes]  # sha256 -> PNG bytes, every winner and loser of `pairs`


def _read_export(folder: Path) -> FeedbackDataset:
    if not _is_export(folder):
        raise MinicreamError(f"{folder}: not a feedback export (no info.json of format {FORMAT!r}); export one with "
                             "`minicream feedback export`")
    if read_json(folder / "info.json").get("version") != VERSION:
        raise MinicreamError(f"{folder}: feedback export version is not {VERSION}; export it again with this minicream")
    pairs, pngs = [], {}
    path = folder / "preferences.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MinicreamError(f"{path}: cannot read ({e})") from None
    if len(lines) > MAX_LINES:
        raise MinicreamError(f"{path}: more than {MAX_LINES} pairs")
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            p = Preference(str(row["prompt"]), row["winner"], row["loser"], str(row.get("source", "choice")))
        except (ValueError, KeyError, TypeError):
            raise MinicreamError(f"{path}:{n}: not a preference line (JSON with prompt, winner, loser)") from None
        for h in (p.winner, p.loser):
            if not isinstance(h, str) or not SHA256_RE.fullmatch(h):
                raise MinicreamError(f"{path}:{n}: {str(h)[:70]!r} is not a sha256")
            if h not in pngs:
                try:
                    data = (folder / "images" / f"{h}.png").read_bytes()
                except OSError:
                    raise MinicreamError(f"{path}:{n}: image {h[:12]}... is missing from {folder / 'images'}") from None
                if hashlib.sha256(data).hexdigest() != h:
                    raise MinicreamError(f"{folder / 'images' / (h + '.png')}: its content does not match its name (sha256)")
                pngs[h] = data
        pairs.append(p)
    return FeedbackDataset(pairs, pngs)


def read_feedback_dataset(source: str | Path) -> FeedbackDataset:
    """Preference pairs with their images, from a feedback database file or an exported folder. Pairs whose
    images the database does not hold are left out (an export leaves them out too)."""
    source = Path(source)
    if source.is_dir():
        return _read_export(source)
    if not source.exists():
        raise MinicreamError(f"{source}: no such feedback database or export folder")
    store = FeedbackStore.open_existing(source)
    pairs, pngs = [], {}
    for p in store.preferences():
        for h in (p.winner, p.loser):
            if h not in pngs:
                pngs[h] = store.image_png(h)
        if pngs[p.winner] is not None and pngs[p.loser] is not None:
            pairs.append(p)
    return FeedbackDataset(pairs, {h: b for h, b in pngs.items() if b is not None})
