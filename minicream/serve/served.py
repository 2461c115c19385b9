"""What every route of one app shares: the served pipelines, the queue, the metrics, the saved images.

`Served` is built once by `create_app` and kept as `app.state.served`; routes reach it through `served(request)`.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request
from PIL import Image, PngImagePlugin

from ..errors import MinicreamError
from ..io.pngmeta import A1111_KEY, JSON_KEY, format_a1111, save_png
from . import adapters as http_adapters
from .features import Features
from .guard import UNAUTHORIZED, token_ok
from .metrics import Metrics
from .queue import GenerationQueue
from .schemas import GeneratedImage
from .settings import ServeSettings
from . import uploads
from .uploads import UploadError

log = logging.getLogger("minicream.serve")
PARAMS_KEY = "minicream"  # image.info key of the generation parameters (as in minicream.pipelines)


class UnknownModel(Exception):
    pass


@dataclass
class Served:
    pipes: dict  # name -> pipeline; the first is the default
    settings: ServeSettings
    queue: GenerationQueue
    metrics: Metrics
    output_dir: Path
    started: float = field(default_factory=time.time)

    def __post_init__(self):
        self.model_name, self.pipe = next(iter(self.pipes.items()))
        self.names = {id(pl): name for name, pl in self.pipes.items()}
        self.features = Features(self.pipe)
        self.size = int(self.pipe.image_size)
        self.locks = {id(pl): threading.Lock() for pl in self.pipes.values()}  # a model's adapters, set per request

    def pick(self, name: str | None):
        """The pipeline a request names (None: the default); an unknown name is the caller's error."""
        if name is None or name == "":
            return self.pipe
        if name not in self.pipes:
            raise UnknownModel(f"model: {name!r} is not loaded here; choose one of: {', '.join(self.pipes)}")
        return self.pipes[name]

    def features_of(self, pipe) -> Features:
        return self.features if pipe is self.pipe else Features(pipe)

    def generate(self, kwargs, job_id: str | None = None, mode: str = "text2img", target=None, adapters=None):
        """Run a mode of `target` (`target.run(mode, **kwargs)`) on the queue. `kwargs` may be a function
        () -> (mode, kwargs), called in the worker once the job is admitted: uploaded images are decoded there,
        never on the event loop and only after the 429 check. `adapters`: the (name, scale) a request chose, checked
        (adapters.py); None: the model's served mix."""
        target = self.pipe if target is None else target
        lock = self.locks.setdefault(id(target), threading.Lock())

        def job(callback):
            run_mode, options = kwargs() if callable(kwargs) else (mode, kwargs)
            with http_adapters.applied(target, adapters, lock):
                return target.run(run_mode, **options, callback=callback)

        return self.queue.run(job, job_id)

    def save(self, image: Image.Image, params: dict) -> str | None:
        """Save under a random name and prune the oldest beyond --max-saved; None when the disk refuses (the
        caller still has the image inline: a full disk must not fail a request whose compute is done)."""
        name = secrets.token_hex(16) + ".png"
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_png(image, self.output_dir / name, params)
            saved = sorted(self.output_dir.glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
            for old in saved[:max(0, len(saved) - self.settings.max_saved)]:
                old.unlink(missing_ok=True)
        except (OSError, MinicreamError) as e:
            log.warning("could not save %s: %s", name, e)
            return None
        return f"/outputs/{name}"

    def native_images(self, images) -> list[GeneratedImage]:
        self.metrics.images.inc(len(images))
        out = []
        for im in images:
            params = image_params(im)
            url = self.save(im, params)
            score = params.get("score")
            out.append(GeneratedImage(png_base64=base64.b64encode(png_bytes(im, params)).decode(), url=url,
                                      seed=int(params.get("seed", 0)), parameters=params,
                                      rewritten_prompt=params.get("rewritten_prompt"),
                                      filter_explanation=params.get("filter_explanation"),
                                      score=float(score) if isinstance(score, (int, float)) else None))
        return out


def served(request: Request) -> Served:
    return request.app.state.served


def require_token(request: Request) -> None:
    """The API routes' dependency: the bearer token, when the server has one."""
    if not token_ok(request.headers.get("authorization", ""), served(request).settings.token):
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def b64(data: str, field: str) -> bytes:
    """base64 (standard or URL-safe, optionally a data: URL) -> bytes; a clear 400 otherwise."""
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_" if ("-" in data or "_" in data) else None, validate=True)
    except (ValueError, TypeError):
        raise UploadError(f"{field}: not valid base64") from None


def png_bytes(image: Image.Image, params: dict) -> bytes:
    """The PNG as `save_png` writes it (A1111 `parameters` + lossless `minicream` JSON), in memory."""
    info = PngImagePlugin.PngInfo()
    info.add_text(A1111_KEY, format_a1111(params))
    info.add_text(JSON_KEY, json.dumps(params, ensure_ascii=True, sort_keys=True))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def image_params(image: Image.Image) -> dict:
    # JSON round trip: the dict goes into a PNG chunk and a JSON response, so it must be plain data.
    return json.loads(json.dumps(image.info.get(PARAMS_KEY, {}), default=str))


def decoded(image: bytes, mask: bytes | None):
    """In the worker: the uploads decoded (uploads.py: bounded pixels, scans and time), the mask checked."""
    picture = uploads.read_image(image, "image")
    stencil = uploads.read_image(mask, "mask") if mask is not None else None
    if stencil is not None and stencil.size != picture.size:
        raise UploadError(f"mask: its size {stencil.size[0]}x{stencil.size[1]} differs from the image's "
                          f"{picture.size[0]}x{picture.size[1]}")
    return picture, stencil
