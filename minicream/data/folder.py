"""Load a user's captioned image folder into memory as `Example`s.

Two layouts are accepted because they are what people already have:
  * Hugging Face imagefolder: `metadata.jsonl` with `file_name` + `text`
    (at the top level, or in `train/` / `test/` subfolders);
  * loose images with `.txt` sidecar captions (`cat.png` + `cat.txt`).
Every image is normalised the same way as the emoji build (RGB, alpha on
white, centre-cropped square, LANCZOS resize) so the model sees one format.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minicream.data.images import to_square_rgb
from minicream.errors import MinicreamError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SPLITS = ("train", "test")
_MAX_NAMES_IN_WARNING = 5


@dataclass
class Example:
    """One training image with its caption and any extra metadata fields."""

    image: Image.Image
    text: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    """An image path with its caption, before the image is decoded."""

    path: Path
    text: str
    meta: dict


def _parse_metadata(metadata: Path) -> list[_Entry]:
    entries = []
    folder = metadata.parent.resolve()
    try:
        lines = metadata.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = metadata.read_bytes()[:e.start].count(b"\n") + 1
        raise MinicreamError(f"{metadata}:{line}: not UTF-8 text (save the file as UTF-8)") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise MinicreamError(f"{metadata}:{number}: not valid JSON") from None
        if not isinstance(row, dict) or "file_name" not in row:
            raise MinicreamError(f"{metadata}:{number}: each line needs a 'file_name' field")
        name = row["file_name"]
        if not isinstance(name, str) or not name.strip():
            raise MinicreamError(f"{metadata}:{number}: 'file_name' must be a non-empty string, got {name!r}")
        path = (metadata.parent / name).resolve()
        if Path(name).is_absolute() or not path.is_relative_to(folder):
            raise MinicreamError(f"{metadata}:{number}: 'file_name' {name!r} points outside the dataset folder")
        text = row.get("text", row.get("caption"))
        if not isinstance(text, str):
            raise MinicreamError(f"{metadata}:{number}: missing 'text' caption for {name}")
        entries.append(_Entry(metadata.parent / name, text, row))
    return entries


def _sidecar_entries(folder: Path) -> tuple[list[_Entry], list[str]]:
    """Images with a .txt caption next to them; also returns uncaptioned names."""
    entries, uncaptioned = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        sidecar = path.with_suffix(".txt")
        if not sidecar.is_file():
            uncaptioned.append(path.name)
            continue
        text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
        entries.append(_Entry(path, text, {"file_name": path.name}))
    return entries, uncaptioned


def _resolve(root: Path, split: str) -> tuple[list[_Entry], list[str]]:
    """Pick the layout: split subfolder first, then the folder itself."""
    if split not in SPLITS:
        raise MinicreamError(f"unknown split {split!r}; use 'train' or 'test'")
    if not root.is_dir():
        raise MinicreamError(f"dataset folder {root} does not exist")
    split_dir = root / split
    if (split_dir / "metadata.jsonl").is_file():
        return _parse_metadata(split_dir / "metadata.jsonl"), []
    if split == "train" and (root / "metadata.jsonl").is_file():
        return _parse_metadata(root / "metadata.jsonl"), []
    if split_dir.is_dir():
        return _sidecar_entries(split_dir)
    if split == "train":
        return _sidecar_entries(root)
    raise MinicreamError(f"dataset folder {root} has no {split!r} split ({split_dir} is missing)")


def _load_image(path: Path, size: int) -> Image.Image | None:
    """Decode and normalise one image; None if it is missing or corrupt."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_square_rgb(image, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _warn_skipped(what: str, names: list[str]) -> None:
    if not names:
        return
    shown = ", ".join(names[:_MAX_NAMES_IN_WARNING])
    more = ", ..." if len(names) > _MAX_NAMES_IN_WARNING else ""
    warnings.warn(f"skipped {len(names)} {what}: {shown}{more}", stacklevel=2)


def iter_examples(path: str | Path, size: int = 64, split: str = "train") -> Iterator[Example]:
    """Yield examples lazily; warns once, after the last one, about skipped files."""
    if not isinstance(size, int) or size < 1:
        raise MinicreamError(f"image size must be a positive integer, got {size!r}")
    entries, uncaptioned = _resolve(Path(path), split)
    unreadable = []
    for entry in entries:
        image = _load_image(entry.path, size)
        if image is None:
            unreadable.append(entry.path.name)
            continue
        yield Example(image=image, text=entry.text, meta=dict(entry.meta))
    _warn_skipped("images without a .txt caption", uncaptioned)
    _warn_skipped("unreadable images", unreadable)


def load_caption_folder(path: str | Path, size: int = 64, split: str = "train") -> list[Example]:
    """Load every captioned image of `split` from `path` as size x size RGB."""
    examples = list(iter_examples(path, size=size, split=split))
    if not examples:
        raise MinicreamError(f"no captioned images found in {path} (split {split!r})")
    return examples


def images_to_tensor(examples: list[Example]) -> torch.Tensor:
    """Stack example images into a uint8 tensor of shape (N, 3, H, W)."""
    if not examples:
        raise MinicreamError("cannot make an image tensor from zero examples")
    sizes = {ex.image.size for ex in examples}
    if len(sizes) != 1:
        raise MinicreamError(f"examples have different image sizes {sorted(sizes)}; load them with one size")
    array = np.stack([np.asarray(ex.image.convert("RGB"), dtype=np.uint8) for ex in examples])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
