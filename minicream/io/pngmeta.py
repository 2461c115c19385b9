"""Generation parameters stored inside the PNGs we write, so every image says how to reproduce it.

Two text chunks, for two audiences:
  * `parameters`: the AUTOMATIC1111 "infotext", which A1111, ComfyUI, Civitai and most image viewers
    already display:  prompt / "Negative prompt: ..." / "Steps: 20, Sampler: dpmpp_2m, CFG scale: 5.0,
    Seed: 1, Size: 64x64, Model hash: abcd012345, Model: name".
  * `minicream`: the full params dict as JSON, lossless (types, nested values, keys A1111 has no name for).

Params use these keys (others are kept too): prompt, negative_prompt, steps, sampler, cfg_scale, seed,
width, height, model_hash, model.
"""
from __future__ import annotations

import json
import numbers
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from minicream.errors import MinicreamError
from minicream.io.atomic import MAX_JSON_DEPTH, atomic_path, json_depth

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
A1111_KEY = "parameters"
JSON_KEY = "minicream"

# Our key -> A1111 label, in A1111's order. width/height become one "Size: WxH" field.
_LABELS = {
    "steps": "Steps",
    "sampler": "Sampler",
    "cfg_scale": "CFG scale",
    "seed": "Seed",
    "size": "Size",
    "model_hash": "Model hash",
    "model": "Model",
}
_KEYS = {label: key for key, label in _LABELS.items()}
_TEXT_KEYS = ("prompt", "negative_prompt", "width", "height")
_NEG_PREFIX = "Negative prompt:"
# One "Label: value" pair; a value is either a JSON-quoted string or runs to the next comma.
_PAIR_RE = r'\s*(\w[\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)'
_PAIR = re.compile(_PAIR_RE)
_PAIRS_LINE = re.compile(f"(?:{_PAIR_RE})+")


def _quote(value: Any) -> str:
    """A1111's quoting: values containing the field separators are written as JSON strings."""
    text = str(value)
    return json.dumps(text) if any(c in text for c in ",:\n\"") else text


def _label(key: str) -> str:
    return _LABELS.get(key) or key.replace("_", " ").capitalize()


def format_a1111(params: dict) -> str:
    """Render params as an AUTOMATIC1111 infotext string."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"{_NEG_PREFIX} {params['negative_prompt']}")
    fields = dict(params)
    if "width" in fields and "height" in fields:
        fields["size"] = f"{fields['width']}x{fields['height']}"
    ordered = [k for k in _LABELS if k in fields]
    ordered += [k for k in fields if k not in _LABELS and k not in _TEXT_KEYS]
    pairs = [f"{_label(k)}: {_quote(fields[k])}" for k in ordered if fields[k] is not None]
    if pairs:
        lines.append(", ".join(pairs))
    return "\n".join(lines)


def _convert(key: str, text: str) -> Any:
    if text.startswith('"'):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    if key in ("sampler", "model", "model_hash"):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_a1111(text: str) -> dict:
    """Parse an AUTOMATIC1111 infotext back into params (best effort, as A1111 itself does)."""
    lines = text.strip("\n").split("\n")
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last)
    # Like A1111: the last line holds the settings if it is entirely "Label: value" pairs and is
    # not the only line (a lone prompt may contain a colon), or if it has at least three pairs.
    is_settings = (
        bool(pairs)
        and not last.startswith(_NEG_PREFIX)
        and _PAIRS_LINE.fullmatch(last) is not None
        and (len(lines) > 1 or len(pairs) >= 3)
    )
    if is_settings:
        lines = lines[:-1]
    else:
        pairs = []
    params: dict[str, Any] = {}
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith(_NEG_PREFIX):
            in_negative = True
            line = line[len(_NEG_PREFIX):].lstrip()
        (negative if in_negative else prompt).append(line)
    params["prompt"] = "\n".join(prompt)
    if in_negative:
        params["negative_prompt"] = "\n".join(negative)
    for label, value in pairs:
        label = label.strip()
        key = _KEYS.get(label) or label.lower().replace(" ", "_")
        params[key] = _convert(key, value.strip())
    size = params.pop("size", None)
    if isinstance(size, str) and re.fullmatch(r"\d+x\d+", size):
        w, h = size.split("x")
        params["width"], params["height"] = int(w), int(h)
    elif size is not None:
        params["size"] = size
    return params


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without control characters (terminal escape codes, NUL): safe to print or to store in a PNG chunk."""
    return _CONTROL.sub("\ufffd", text)


def sanitize(value):
    """Strings in a JSON-like value (dicts, lists) with control characters replaced."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value


def save_png(image: Image.Image, path: str | os.PathLike, params: dict) -> None:
    """Write `image` as PNG at `path` (atomically) with params in `parameters` and `minicream` chunks.

    `params` must be JSON-serialisable: it is stored losslessly and read back by `read_png_params`.
    """
    params = sanitize(params)
    info = PngImagePlugin.PngInfo()
    # add_text writes tEXt when the text is Latin-1, else iTXt (UTF-8); the JSON is ASCII-escaped,
    # so it is always tEXt. Prompts with emoji make `parameters` an iTXt chunk, as A1111 does too.
    info.add_text(A1111_KEY, format_a1111(params))
    info.add_text(JSON_KEY, json.dumps(params, ensure_ascii=True, sort_keys=True))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


MAX_TEXT_CHUNK = 1 << 20  # bytes of one (decompressed) text chunk, Pillow's limit too
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _inflate(data: bytes, p: Path) -> bytes:
    z = zlib.decompressobj()
    try:
        out = z.decompress(data, MAX_TEXT_CHUNK)
    except zlib.error:
        raise MinicreamError(f"{p}: corrupt PNG (a compressed text chunk does not decompress)") from None
    if z.unconsumed_tail:
        raise MinicreamError(f"{p}: refused, a compressed text chunk is larger than {MAX_TEXT_CHUNK} bytes")
    return out


def _text_chunk(kind: bytes, data: bytes, p: Path) -> tuple[str, str]:
    key, sep, rest = data.partition(b"\0")
    if not sep:
        raise MinicreamError(f"{p}: corrupt PNG (a {kind.decode()} chunk has no keyword)")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:], p).decode("latin-1")
    if len(rest) < 2:
        raise MinicreamError(f"{p}: corrupt PNG (a short iTXt chunk)")
    compressed, body = rest[0], rest[2:]
    _lang, _, body = body.partition(b"\0")
    _translated, _, body = body.partition(b"\0")
    value = _inflate(body, p) if compressed else body
    return key.decode("latin-1"), value.decode("utf-8", errors="replace")


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The PNG's text chunks (tEXt, zTXt, iTXt; before or after the image data), read chunk by chunk without
    decoding a pixel: a huge or malicious image costs its file's read, never its pixels' memory."""
    p = Path(path)
    text: dict[str, str] = {}
    with open(p, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            raise MinicreamError(f"{p}: is not a PNG file")
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise MinicreamError(f"{p}: corrupt PNG (truncated: no IEND chunk)")
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                return text
            if kind not in _TEXT_CHUNKS:
                f.seek(length + 4, os.SEEK_CUR)  # the data and its CRC, unread
                continue
            if length > MAX_TEXT_CHUNK:
                raise MinicreamError(f"{p}: refused, a text chunk is larger than {MAX_TEXT_CHUNK} bytes")
            data, crc = f.read(length), f.read(4)
            if len(data) < length or len(crc) < 4:
                raise MinicreamError(f"{p}: corrupt PNG (truncated inside a {kind.decode()} chunk)")
            if zlib.crc32(kind + data) != struct.unpack(">I", crc)[0]:
                raise MinicreamError(f"{p}: corrupt PNG (a {kind.decode()} chunk fails its CRC)")
            key, value = _text_chunk(kind, data, p)
            text[key] = value  # a repeated keyword: the last one wins, as in Pillow


def read_png_params(path: str | os.PathLike) -> dict:
    """Generation params of a PNG written by `save_png` (or by A1111: parsed from its infotext)."""
    p = Path(path)
    if not p.is_file():
        raise MinicreamError(f"{p}: file not found" if not p.exists() else f"{p}: is not a regular file")
    text = read_png_text(p)
    if JSON_KEY in text:
        try:
            params = json.loads(text[JSON_KEY])
            too_deep = json_depth(params) > MAX_JSON_DEPTH
        except json.JSONDecodeError:
            params, too_deep = None, False
        except RecursionError:
            too_deep = True
        if too_deep:
            raise MinicreamError(f"{p}: refused, the '{JSON_KEY}' PNG chunk nests JSON deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(params, dict):
            return params
        if A1111_KEY not in text:
            raise MinicreamError(f"{p}: the '{JSON_KEY}' PNG chunk is not a JSON object")
    if A1111_KEY in text:
        return parse_a1111(text[A1111_KEY])
    raise MinicreamError(f"{p}: PNG has no generation parameters (no '{JSON_KEY}' or '{A1111_KEY}' text chunk)")


# The settings a re-run (`minicream ... --from IMAGE.png`) reads, and the JSON types they must have: a PNG's text is
# anyone's to write, so a wrong type is the file's fault (a one-line error), never a crash deep in the pipeline.
STORED_TYPES = {
    "prompt": str, "negative_prompt": str, "sampler": str, "dtype": str, "mode": str, "filter": str, "style": str,
    "rewritten_prompt": str, "init_image_sha256": str, "mask_sha256": str, "steps": int, "seed": int,
    "cfg_scale": numbers.Real, "guidance_max_noise": numbers.Real, "cads": numbers.Real, "harmonize": numbers.Real,
    "strength": numbers.Real, "layout": dict, "extend": dict, "filter_explanation": (list, str),
    "adapters": list,
}
_KIND_NAMES = {str: "a string", int: "an integer", numbers.Real: "a number", dict: "a JSON object", list: "a list",
               (list, str): "a list or a string"}


def check_stored_types(params: dict, path: str | os.PathLike) -> dict:
    """`params` (from read_png_params) when every stored setting has its type (null = not stored), else a one-line
    MinicreamError naming the setting."""
    for key, kind in STORED_TYPES.items():
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            shown = printable(repr(value))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise MinicreamError(f"{path}: the stored {key} is {shown}, not {_KIND_NAMES[kind]}; the PNG's settings "
                                 "were edited or damaged")
    return params
