"""A run directory's stage records (`RUN/stages/NAME.json`): a recipe skips a stage whose record exists, so a
stopped run resumes where it stopped. Written atomically; a damaged record is a one-line error naming the fix."""
from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import read_json, write_text_atomic


def stage_done(run: Path, name: str) -> dict | None:
    p = Path(run) / "stages" / f"{name}.json"
    return read_json(p, f"delete it to redo stage {name!r}") if p.is_file() else None


def mark_done(run: Path, name: str, result: dict) -> None:
    (Path(run) / "stages").mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(run) / "stages" / f"{name}.json", json.dumps(result, indent=1))
