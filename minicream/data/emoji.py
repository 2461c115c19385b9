"""Build the emoji text-to-image dataset (Hugging Face imagefolder layout).

Why emoji: they are small, clean, consistently named images with licences that
allow training, and up to four designs (Twemoji, OpenMoji, Noto, Fluent) give the
model the same concept drawn several ways -- enough signal to learn text
conditioning on a CPU, and variety within a concept.

Split choice: the held-out ("test") split is decided per IMAGE by hashing the
output file name (which contains style and code points) with the seed. Test
images are therefore never seen in training, but the same concept may appear
in training in the other style or another skin tone. This measures how well
the model renders known concepts, not zero-shot generalisation to unseen
concepts; it also keeps the split of an image stable when other images are
added or removed (e.g. with `limit` or `concepts`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from minicream.data.attribution import attribution_markdown
from minicream.data.emoji_names import EmojiNames, emoji_group, names_for_stem
from minicream.data.emoji_sources import (DEFAULT_STYLES, STYLES, SourceImage, is_available, list_sources,
                                         missing_message, rasterize, source_versions)
from minicream.data.images import to_square_rgb
from minicream.errors import MinicreamError

SPLITS = ("train", "test")


@dataclass
class _Planned:
    """A source image that passed the filters, with its names and split."""

    source: SourceImage
    names: EmojiNames
    split: str


@dataclass
class _StyleStats:
    found: int = 0
    written: int = 0
    skipped_unknown: int = 0
    skipped_skin_tone: int = 0
    skipped_filtered: int = 0


@dataclass
class _Plan:
    items: list[_Planned] = field(default_factory=list)
    per_style: dict[str, _StyleStats] = field(default_factory=dict)


def split_of(file_name: str, seed: int, heldout_fraction: float) -> str:
    """Deterministic 'train'/'test' for one image (see module docstring)."""
    digest = hashlib.sha256(f"{seed}:{file_name}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if fraction < heldout_fraction else "train"


def caption(names: EmojiNames, style: str) -> str:
    """Primary caption: short on purpose, since the text encoder sees it."""
    return f"{names.name_en}, {style}"


def metadata_record(item: _Planned) -> dict:
    """One metadata.jsonl line (imagefolder needs file_name; text is the caption)."""
    names, style = item.names, item.source.style
    return {
        "file_name": item.source.out_name,
        "text": caption(names, style),
        "name_en": names.name_en,
        "aliases": names.aliases,
        "name_ru": names.name_ru,
        "style": style,
        "concept": names.name_en,
        "base_concept": names.base_name_en,
        "emoji": names.emoji,
        "skin_tone": names.skin_tone,
        "group": emoji_group(names.emoji),
    }


def _validate(out_dir: Path, size: int, styles: tuple[str, ...], heldout_fraction: float, overwrite: bool) -> None:
    if not isinstance(size, int) or size < 8:
        raise MinicreamError(f"image size must be an integer >= 8, got {size!r}")
    if not styles:
        raise MinicreamError("no emoji styles selected; choose from " + ", ".join(STYLES))
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise MinicreamError(f"unknown emoji style {unknown[0]!r}; choose from {', '.join(STYLES)}")
    if not 0.0 <= heldout_fraction < 1.0:
        raise MinicreamError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    if out_dir.exists() and not out_dir.is_dir():
        raise MinicreamError(f"output path {out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise MinicreamError(f"output directory {out_dir} is not empty; remove it or pass overwrite=True")
        if not (out_dir / "dataset_info.json").is_file():
            # overwrite deletes the folder: refuse unless it is a previous emoji build.
            raise MinicreamError(f"refusing to overwrite {out_dir}: it is not an emoji dataset (no dataset_info.json)")


def _plan_style(
    style: str,
    skin_tones: bool,
    concepts: Collection[str] | None,
    limit: int | None,
    seed: int,
    heldout_fraction: float,
    plan: _Plan,
) -> None:
    """Add the kept images of one style to `plan`, counting what was skipped."""
    stats = plan.per_style.setdefault(style, _StyleStats())
    kept = 0
    for source in list_sources(style):
        stats.found += 1
        names = names_for_stem(source.stem)
        if names is None:
            stats.skipped_unknown += 1
            continue
        if names.skin_tone is not None and not skin_tones:
            stats.skipped_skin_tone += 1
            continue
        if concepts is not None and names.name_en not in concepts and names.base_name_en not in concepts:
            stats.skipped_filtered += 1
            continue
        if limit is not None and kept >= limit:
            stats.skipped_filtered += 1
            continue
        kept += 1
        plan.items.append(_Planned(source, names, split_of(source.out_name, seed, heldout_fraction)))


def _render_all(plan: _Plan, work_dir: Path, size: int, progress: bool) -> dict[str, list[dict]]:
    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for item in tqdm(plan.items, desc="emoji", unit="img", disable=not progress):
        image = to_square_rgb(rasterize(item.source, size), size)
        image.save(work_dir / item.split / item.source.out_name, optimize=True)
        records[item.split].append(metadata_record(item))
        plan.per_style[item.source.style].written += 1
    return records


def _write_metadata(work_dir: Path, records: dict[str, list[dict]]) -> None:
    """Write one metadata.jsonl per split; an empty split gets no folder at all,
    because an empty imagefolder split breaks Hugging Face `load_dataset`."""
    for split, rows in records.items():
        if not rows:
            (work_dir / split).rmdir()
            continue
        with open(work_dir / split / "metadata.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _stats(plan: _Plan, records, size, styles, skin_tones, heldout_fraction, seed, limit, seconds) -> dict:
    all_rows = records["train"] + records["test"]
    per_style = {s: asdict(st) for s, st in plan.per_style.items()}
    return {
        "images": len(all_rows),
        "train": len(records["train"]),
        "test": len(records["test"]),
        "concepts": len({r["concept"] for r in all_rows}),
        "base_concepts": len({r["base_concept"] for r in all_rows}),
        "skin_tone_images": sum(r["skin_tone"] is not None for r in all_rows),
        "skipped_unknown": sum(st.skipped_unknown for st in plan.per_style.values()),
        "per_style": per_style,
        "split_counts": {s: dict(Counter(r["style"] for r in records[s])) for s in SPLITS},
        "size": size,
        "styles": list(styles),
        "skin_tones": skin_tones,
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "limit": limit,
        "sources": source_versions(styles),
        "seconds": round(seconds, 1),
    }


def _finish(work_dir: Path, out_dir: Path) -> None:
    """Swap the finished build into place, so a crash never leaves half a dataset."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work_dir.rename(out_dir)


def build_emoji_dataset(
    out_dir: str | Path,
    size: int = 64,
    styles: tuple[str, ...] | None = None,
    skin_tones: bool = True,
    heldout_fraction: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    limit: int | None = None,
    concepts: Collection[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """Render emoji images + captions into `out_dir` and return build statistics.

    `limit` keeps at most that many images per style (in sorted file order) and
    `concepts` keeps only images whose English name, or name without skin
    tone, is in the collection; both exist for fast tests and small experiments.
    `overwrite` replaces an existing previous build at `out_dir`. `styles` defaults to every design of
    DEFAULT_STYLES; a design that is not on this machine is skipped with a one-line message on stderr.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    styles = tuple(DEFAULT_STYLES if styles is None else styles)
    _validate(out_dir, size, styles, heldout_fraction, overwrite)
    for style in [s for s in styles if not is_available(s)]:
        print(missing_message(style), file=sys.stderr)
    styles = tuple(s for s in styles if is_available(s))
    if not styles:
        raise MinicreamError("none of the selected emoji styles is available (see the messages above)")
    plan = _Plan()
    for style in styles:
        _plan_style(style, skin_tones, concepts, limit, seed, heldout_fraction, plan)
    if not plan.items:
        raise MinicreamError("no emoji images matched the selection; check styles, concepts and limit")
    work_dir = out_dir.with_name(out_dir.name + ".partial")
    if work_dir.exists():
        shutil.rmtree(work_dir)
    for split in SPLITS:
        (work_dir / split).mkdir(parents=True)
    records = _render_all(plan, work_dir, size, progress)
    _write_metadata(work_dir, records)
    seconds = time.perf_counter() - start
    stats = _stats(plan, records, size, styles, skin_tones, heldout_fraction, seed, limit, seconds)
    info = json.dumps(stats, indent=2, ensure_ascii=False) + "\n"
    (work_dir / "dataset_info.json").write_text(info, encoding="utf-8")
    (work_dir / "ATTRIBUTION.md").write_text(attribution_markdown(styles, size, stats["sources"]), encoding="utf-8")
    _finish(work_dir, out_dir)
    return stats
