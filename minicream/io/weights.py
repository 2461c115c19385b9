"""Loading and saving weights as safetensors only, with a hand-written header check first.

Why check by hand before `safetensors.torch.load_file`: the library's own errors are terse
("HeaderTooLarge", "InvalidHeaderDeserialization") and say nothing about the usual real cause, a
pickle checkpoint renamed `.safetensors` or a download cut short. We never unpickle anything: a
pickle can run arbitrary code on load. The check reads only the header (at most 100 MB of JSON,
the library's own limit) and the file size, so it costs nothing next to the load itself.

File layout (https://github.com/huggingface/safetensors#format): 8-byte little-endian header size N,
N bytes of UTF-8 JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the data buffer; offsets are relative to the buffer, which the tensors must cover exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import torch

from minicream.errors import MinicreamError
from minicream.io.atomic import atomic_path

MAX_HEADER_BYTES = 100_000_000  # safetensors refuses larger headers too

# Bits per element of every dtype the safetensors format defines.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

# Magic bytes of formats people commonly mistake for safetensors, to name them in the error.
_PICKLE_PROTOCOL_MARKS = tuple(bytes([0x80, proto]) for proto in range(2, 6))
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format: a zip holding a pickle


def _sniff_foreign_format(head: bytes) -> str | None:
    if head.startswith(_ZIP_MAGIC):
        return "looks like a PyTorch torch.save checkpoint, i.e. a pickle in a zip"
    if head.startswith(_PICKLE_PROTOCOL_MARKS):
        return "looks like a pickle"
    if head.startswith(b"GGUF"):
        return "looks like a GGUF file"
    if head.startswith(b"\x89HDF"):
        return "looks like an HDF5/Keras file"
    if head.startswith(b"\x93NUMPY"):
        return "looks like a NumPy .npy file"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer; run `git lfs pull` to fetch the real file"
    return None


def _fail(path: Path, what: str) -> MinicreamError:
    return MinicreamError(f"{path}: {what}")


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise _fail(p, "file not found")
    if not p.is_file():
        raise _fail(p, "is not a regular file")
    return p


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_entry(p: Path, name: str, entry: object, data_size: int) -> tuple[int, int]:
    """Validate one tensor entry; return its (begin, end) offsets in the data buffer."""
    bad = f"corrupt safetensors header: tensor {name!r}"
    if not isinstance(entry, dict):
        raise _fail(p, f"{bad} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise _fail(p, f"{bad} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(map(_is_int, shape)):
        raise _fail(p, f"{bad} has invalid shape {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_int, offsets)) or offsets[0] > offsets[1]:
        raise _fail(p, f"{bad} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if end > data_size:
        raise _fail(p, f"truncated file: tensor {name!r} ends at byte {end} of a {data_size}-byte data section")
    nbytes = math.ceil(math.prod(shape) * DTYPE_BITS[dtype] / 8)
    if end - begin != nbytes:
        raise _fail(p, f"{bad} spans {end - begin} bytes but {dtype}{shape} needs {nbytes}")
    return begin, end


def check_safetensors(path: str | os.PathLike) -> dict:
    """Validate a safetensors file's structure without loading tensors; return its parsed header.

    Raises MinicreamError naming the file and the problem: missing, not safetensors (and what it
    looks like instead), truncated, or a corrupt header.
    """
    p = _existing_file(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        foreign = _sniff_foreign_format(f.read(32))
        if foreign:
            raise _fail(p, f"is not a safetensors file ({foreign}); refusing to load")
        f.seek(0)
        head = f.read(8)
        if len(head) < 8:
            raise _fail(p, f"is not a safetensors file (only {size} bytes, truncated or empty)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > MAX_HEADER_BYTES:
            raise _fail(p, f"is not a safetensors file (header length field reads {n}); refusing to load")
        if 8 + n > size:
            raise _fail(p, f"truncated file: header needs {8 + n} bytes but the file has {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _fail(p, "is not a safetensors file (header is not valid JSON); refusing to load") from None
    if not isinstance(header, dict):
        raise _fail(p, "corrupt safetensors header: not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _fail(p, "corrupt safetensors header: __metadata__ must map strings to strings")
    data_size = size - 8 - n
    spans = sorted(_check_entry(p, k, v, data_size) for k, v in header.items() if k != "__metadata__")
    covered = 0
    for begin, end in spans:
        if begin != covered:
            raise _fail(p, f"corrupt safetensors header: data section has a gap or overlap at byte {covered}")
        covered = end
    if covered != data_size:
        raise _fail(p, f"corrupt safetensors file: {data_size - covered} unexpected bytes after the last tensor")
    return header


def load_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file after `check_safetensors`; never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(str(path), device=device)
    except SafetensorError as exc:  # header passed our check, so this is rarer corruption
        raise _fail(Path(path), f"cannot load safetensors file: {str(exc).splitlines()[0]}") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` string map of a safetensors file (empty if none), validated like a load."""
    return dict(check_safetensors(path).get("__metadata__", {}))


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, cloning any that share memory with an earlier one.

    safetensors refuses shared storage (e.g. tied embeddings); saving a copy is what we want anyway.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state[{name!r}] is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and key in seen:
            t = t.clone()
        seen.add(key)
        out[name] = t
    return out


def save_state_dict(
    state: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write tensors to `path` as safetensors atomically (temp file in the same dir, fsync, rename)."""
    from safetensors.torch import save_file

    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map str to str (json.dumps other values first)")
    tensors = _unshare(state)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB checkpoints do not need to fit in memory."""
    p = _existing_file(path)
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def short_hash(path: str | os.PathLike) -> str:
    """First 10 hex chars of the sha256: the "Model hash" convention of AUTOMATIC1111 infotexts."""
    return sha256_file(path)[:10]
