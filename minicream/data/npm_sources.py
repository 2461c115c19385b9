"""Emoji designs shipped as npm packages of the Iconify icon format (one JSON of SVG bodies per design).

The package tarball is fetched once by name with the ordinary npm client (`npm pack`, whatever registry npm is
configured for), checked against a pinned sha256, and cached; nothing is read from a CDN or a model hub. A design
that is not in the cache is skipped by the dataset builder with a one-line message naming `minicream data fetch`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from minicream.errors import MinicreamError


@dataclass(frozen=True)
class NpmSource:
    package: str  # npm package name
    version: str
    sha256: str  # of the tarball `npm pack` writes
    licence: str
    title: str
    homepage: str

    @property
    def file_name(self) -> str:
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"


NPM_SOURCES = {
    "noto": NpmSource("@iconify-json/noto", "1.2.9",
                      "3e918d88fc945c0bb3d468dbace6f88caef67f01c9f0e7bcae0915a042e8f1ad",
                      "Apache-2.0", "Noto Emoji (Google)", "https://github.com/googlefonts/noto-emoji"),
    "fluent": NpmSource("@iconify-json/fluent-emoji-flat", "1.2.6",
                        "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175",
                        "MIT", "Fluent Emoji Flat (Microsoft)", "https://github.com/microsoft/fluentui-emoji"),
    # Designs no shipped model trained on: what adapters are measured on (a subject or a style the model never saw;
    # bench/adapters.py). Fetched only when named: `minicream data fetch fxemoji emojione-v1 emojione noto-v1`.
    "fxemoji": NpmSource("@iconify-json/fxemoji", "1.2.2",
                         "f3e72b3c59d05e1db03b7e308d55c0d05bd7ba3f625a90da1b79313c12858eef",
                         "Apache-2.0", "Firefox OS Emoji (Mozilla)", "https://github.com/mozilla/fxemoji"),
    "emojione-v1": NpmSource("@iconify-json/emojione-v1", "1.2.3",
                             "6641d59d48a42823fdc2b84e7427e9f302944eb98d2c7d94d6e67c139e7b37b3",
                             "CC-BY-SA-4.0", "Emoji One v1", "https://github.com/joypixels/emojione-legacy"),
    "emojione": NpmSource("@iconify-json/emojione", "1.2.3",
                          "26a14f44284407e8bcde91799388dca2bfd91dbcd55a97f425524a1c5b73610e",
                          "CC-BY-4.0", "Emoji One (EmojiTwo)", "https://github.com/EmojiTwo/emojitwo"),
    "noto-v1": NpmSource("@iconify-json/noto-v1", "1.2.5",
                         "2bf62c26c2c2884aa99e90aec942cdaee17a5921f05690694f4978ad4b017c37",
                         "Apache-2.0", "Noto Emoji v1 (Google)", "https://github.com/googlefonts/noto-emoji"),
}
TRAINING_DESIGNS = ("noto", "fluent")  # what `minicream data fetch` fetches by default (with the keywords)


def cache_dir() -> Path:
    """Where fetched tarballs live: $MINICREAM_CACHE/emoji-sources, else ~/.cache/minicream/emoji-sources."""
    root = os.environ.get("MINICREAM_CACHE") or Path.home() / ".cache" / "minicream"
    return Path(root) / "emoji-sources"


def tarball_path(style: str) -> Path:
    return cache_dir() / NPM_SOURCES[style].file_name


def source_path(src: NpmSource) -> Path:
    """Where one package's tarball is cached (a design's, or any other pinned npm source's)."""
    return cache_dir() / src.file_name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def missing_message(style: str) -> str:
    src = NPM_SOURCES[style]
    return (f"style {style!r} skipped: {src.package}@{src.version} is not fetched; "
            f"run `minicream data fetch {style}` (needs npm) to add it")


def is_fetched(style: str) -> bool:
    return tarball_path(style).is_file()


def fetch(style: str, timeout: float = 300.0) -> Path:
    """Fetch one design's tarball with `npm pack`, verify its sha256 and cache it; return its path."""
    if style not in NPM_SOURCES:
        raise MinicreamError(f"unknown npm emoji style {style!r}; choose from {', '.join(NPM_SOURCES)}")
    return fetch_source(NPM_SOURCES[style], timeout)


def fetch_source(src: NpmSource, timeout: float = 300.0) -> Path:
    """Fetch one pinned package's tarball with `npm pack`, verify its sha256 and cache it; return its path."""
    dest = source_path(src)
    if dest.is_file() and _sha256(dest) == src.sha256:
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise MinicreamError(f"`npm` is not installed; install Node.js/npm (e.g. apt-get install npm) to fetch {src.package}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        try:
            subprocess.run([npm, "pack", f"{src.package}@{src.version}", "--pack-destination", tmp, "--silent"],
                           check=True, capture_output=True, timeout=timeout, text=True)
        except subprocess.CalledProcessError as exc:
            last = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise MinicreamError(f"npm pack {src.package}@{src.version} failed: {last[0]}") from None
        except subprocess.TimeoutExpired:
            raise MinicreamError(f"npm pack {src.package}@{src.version} timed out after {timeout:.0f}s") from None
        got = Path(tmp) / src.file_name
        if not got.is_file():
            raise MinicreamError(f"npm pack did not write {src.file_name}")
        digest = _sha256(got)
        if digest != src.sha256:
            raise MinicreamError(f"{src.file_name}: sha256 {digest} does not match the pinned {src.sha256}")
        os.replace(got, dest)
    return dest


@lru_cache(maxsize=4)
def _icon_set(path: str) -> tuple[dict, dict]:
    """(icons.json, chars.json) of one Iconify package tarball."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            icons, chars = (json.load(tar.extractfile(f"package/{name}")) for name in ("icons.json", "chars.json"))
        if not isinstance(icons.get("icons"), dict) or not isinstance(chars, dict):
            raise ValueError("no icons table")
    except (KeyError, tarfile.TarError, EOFError, OSError, ValueError, AttributeError, TypeError) as e:
        raise MinicreamError(f"{path}: not a readable Iconify JSON package ({type(e).__name__}); delete it and run "
                             "`minicream data fetch` again") from None
    return icons, chars


def svg_documents(style: str) -> dict[str, str]:
    """Code-point stem ('1f34e', '1f44d-1f3fd') -> a complete SVG document, for every emoji of the design.

    Aliases resolve to their parent icon; an alias that transforms its parent (flip, rotate) is left out.
    """
    path = tarball_path(style)
    if not path.is_file():
        raise MinicreamError(missing_message(style))
    icons, chars = _icon_set(str(path))
    if not chars:  # a set that names its icons but maps no code points: match the names (emoji_names.stem_for_name)
        from .emoji_names import stem_for_name

        stems = {name: stem_for_name(name) for name in [*icons["icons"], *icons.get("aliases", {})]}
        chars = {stem: name for name, stem in reversed(stems.items()) if stem}  # an icon's own name beats an alias
    width, height = icons.get("width", 16), icons.get("height", 16)
    out = {}
    for stem, name in sorted(chars.items()):
        alias = icons.get("aliases", {}).get(name)
        if alias is not None:
            if set(alias) - {"parent"}:
                continue
            name = alias["parent"]
        icon = icons["icons"].get(name)
        if icon is None:
            continue
        w, h = icon.get("width", width), icon.get("height", height)
        left, top = icon.get("left", 0), icon.get("top", 0)
        out[stem] = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                     f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{icon["body"]}</svg>')
    return out
