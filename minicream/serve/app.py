"""The FastAPI app: `create_app(pipeline_or_model_dir, settings)`.

Routes (all but the page, its static files, /healthz and /openapi.json need the bearer token when one is set):
    GET  /                          the web page          GET  /static/...        its assets
    POST /v1/images/generations     OpenAI Images API     GET  /v1/models         OpenAI model list
    POST /v1/images/edits, /v1/images/variations   OpenAI's multipart image edits (inpaint / img2img) and variations
    POST /api/generate              every pipeline option GET  /api/progress/{id} progress of a request
    POST /api/edit                  img2img, inpaint, outpaint, variation, blend of a base64 image, every option
    GET  /api/models, /api/samplers GET  /outputs/{name}   images saved by the server
    GET  /healthz, /metrics (Prometheus), /openapi.json
The model loads once, here; generation runs in the bounded worker queue (queue.py), and so does the decoding of
uploaded images: a route reads only their bytes, after the queue has room (uploads.py). What every request passes
first (Host, cross-site, token, body size and time) is guard.py.
"""
from __future__ import annotations

import base64
import inspect
import io
import json
import logging
import re
import secrets
import time
import typing
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, PngImagePlugin
from starlette.requests import ClientDisconnect

from ..errors import MinicreamError
from ..io.pngmeta import A1111_KEY, JSON_KEY, format_a1111, save_png
from . import uploads
from .errors import error_response, install_error_handlers
from .guard import UNAUTHORIZED, Guard, allowed_hosts, token_ok
from .metrics import Metrics
from .queue import GenerationQueue
from .schemas import (MAX_IMAGES, MAX_PROMPT_CHARS, EditRequest, ErrorResponse, GeneratedImage, GenerateRequest, GenerateResponse, OpenAIImage,
                      OpenAIImageRequest, OpenAIImagesResponse)
from .settings import ServeSettings
from .uploads import UploadError, has_transparency

log = logging.getLogger("minicream.serve")
STATIC_DIR = Path(__file__).parent / "static"
OUTPUT_NAME_CHARS = set("0123456789abcdef")
PARAMS_KEY = "minicream"  # image.info key of the generation parameters (as in minicream.pipeline)
_ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 408, 413, 422, 429, 504)}
N_FIELD = re.compile(r"[0-9]{1,3}")  # ASCII digits only: str.isdigit() also takes '²' (int() fails) and '٣' (== 3)
_FORM_FIELDS = {  # OpenAI's multipart fields, for the schema (the route reads and checks them itself)
    "image": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP; at most 4 MB and 2048x2048 px"},
    "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
    "n": {"type": "integer", "minimum": 1, "maximum": MAX_IMAGES, "default": 1},
    "size": {"type": "string", "description": "the model's native WIDTHxHEIGHT, or 'auto'"},
    "response_format": {"type": "string", "enum": ["b64_json", "url"], "default": "b64_json"},
    "model": {"type": "string", "description": "a loaded model's name (GET /v1/models); others mean the default"},
}


def _multipart(*required: str, mask: bool = False) -> dict:
    fields = {**_FORM_FIELDS, **({"mask": {"type": "string", "format": "binary", "description": "transparent = "
                                           "repaint; the image's size"}} if mask else {})}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "properties": fields, "required": list(required)}}}}}


# -- helpers ------------------------------------------------------------------------------------------
def _b64(data: str, field: str) -> bytes:
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


def _params(image: Image.Image) -> dict:
    # JSON round trip: the dict goes into a PNG chunk and a JSON response, so it must be plain data.
    return json.loads(json.dumps(image.info.get(PARAMS_KEY, {}), default=str))


def _filter_modes(pipe, parameter: inspect.Parameter | None) -> list[str]:
    modes = getattr(pipe, "filter_modes", None)
    if modes:
        return [str(m) for m in modes]
    if parameter is not None and typing.get_origin(parameter.annotation) is typing.Literal:
        return [str(m) for m in typing.get_args(parameter.annotation)]
    try:  # minicream's own pipeline: the language filter's modes
        from ..filter import MODES
    except ImportError:
        return []
    return [str(m) for m in MODES]


class _Features:
    """Which optional pipeline arguments exist: minicream's pipeline declares them (Pipeline.modes["text2img"]);
    any other callable pipeline (a test double, a wrapper) is asked by its signature."""

    def __init__(self, pipe):
        mode = (getattr(pipe, "modes", None) or {}).get("text2img")
        if mode is not None:
            names = set(mode.names)
            filter_param, default = None, mode.option("filter").default if "filter" in names else None
        else:
            try:
                params = inspect.signature(pipe.__call__, eval_str=True).parameters
            except (NameError, TypeError):  # an annotation that cannot be evaluated: names are enough
                params = inspect.signature(pipe.__call__).parameters
            names, filter_param = set(params), params.get("filter")
            default = filter_param.default if filter_param is not None else None
        self.num_candidates = "num_candidates" in names
        self.filter = "filter" in names
        self.style = "style" in names
        self.guidance_max_noise = "guidance_max_noise" in names
        self.cads = "cads" in names
        self.layout = "layout" in names
        self.harmonize = "harmonize" in names
        self.canvas = "canvas" in names
        self.filter_modes = _filter_modes(pipe, filter_param) if self.filter else []
        self.filter_default = default if isinstance(default, str) else None

    def as_dict(self) -> dict:
        return {"num_candidates": self.num_candidates, "filter": self.filter, "filter_modes": self.filter_modes,
                "filter_default": self.filter_default, "style": self.style, "layout": self.layout,
                "guidance_max_noise": self.guidance_max_noise, "cads": self.cads}


class _UnknownModel(Exception):
    pass


# -- the app --------------------------------------------------------------------------------------------
def _load(pipeline_or_model_dir, compile_unet: bool = False):
    if pipeline_or_model_dir is None or isinstance(pipeline_or_model_dir, (str, Path)):
        from ..pipelines import Pipeline

        pipe = Pipeline.from_pretrained(pipeline_or_model_dir)
        if compile_unet:
            pipe.compile()
        return pipe
    return pipeline_or_model_dir


def _model_name(pipe) -> str:
    return Path(getattr(pipe, "model_dir", "model")).name


def create_app(pipeline_or_model_dir=None, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving pipelines: a `Pipeline` (or anything callable like one), a model directory or a shipped
    model's name (None = the default model), or a list / {name: ...} dict of those, the first being the default.
    Requests choose one with `model` (OpenAI clients' model names we do not have fall back to the default)."""
    settings = settings or ServeSettings()
    given = pipeline_or_model_dir
    if isinstance(given, dict):
        pipes = {str(name): _load(v, settings.compile) for name, v in given.items()}
    else:
        loaded = [_load(v, settings.compile) for v in (given if isinstance(given, (list, tuple)) else [given])]
        pipes = {}
        for pl in loaded:
            pipes.setdefault(_model_name(pl), pl)
    if not pipes:
        raise MinicreamError("no model to serve")
    model_name, pipe = next(iter(pipes.items()))
    served_names = {id(pl): name for name, pl in pipes.items()}
    features = _Features(pipe)
    size = int(pipe.image_size)
    for name, other in pipes.items():
        if int(other.image_size) != size:
            raise MinicreamError(f"model {name} draws {other.image_size} px images, {model_name} {size} px: "
                                 "serve models of one image size together")

    def pick(name: str | None):
        """The pipeline a request names (None: the default); an unknown name is the caller's error."""
        if name is None or name == "":
            return pipe
        if name not in pipes:
            raise _UnknownModel(f"model: {name!r} is not loaded here; choose one of: {', '.join(pipes)}")
        return pipes[name]
    output_dir = Path(settings.output_dir).resolve()
    queue = GenerationQueue(settings.concurrency, settings.queue_size, settings.timeout)
    metrics = Metrics(queue)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        yield
        queue.shutdown()

    app = FastAPI(title="minicream", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Text-to-image generation with a small latent-diffusion model. "
                              "Send `Authorization: Bearer TOKEN` when the server has a token.")
    app.state.pipelines = pipes
    app.state.pipeline, app.state.queue, app.state.metrics, app.state.settings = pipe, queue, metrics, settings
    install_error_handlers(app)
    if settings.cors_origins:  # browser pages on these origins may call the API (with the token, if one is set)
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, metrics=metrics, token=settings.token, hosts=allowed_hosts(settings),
                       cors_origins=tuple(settings.cors_origins), body_timeout=settings.body_timeout)

    def require_token(request: Request) -> None:
        if not token_ok(request.headers.get("authorization", ""), settings.token):
            from fastapi import HTTPException

            raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(dependencies=[Depends(require_token)], responses=_ERRORS)

    def _generate(kwargs, job_id: str | None = None, mode: str | None = None, target=None):
        """Run `target` on the queue. `kwargs` may be a function () -> (mode, kwargs), called in the worker once the
        job is admitted: uploaded images are decoded there, never on the event loop and only after the 429 check."""
        target = pipe if target is None else target

        def job(callback):
            run_mode, options = kwargs() if callable(kwargs) else (mode, kwargs)
            if run_mode is not None:
                return target.run(run_mode, **options, callback=callback)
            return target(**options, callback=callback)

        return queue.run(job, job_id)

    def _save(image: Image.Image, params: dict) -> str | None:
        """Save under a random name and prune the oldest beyond --max-saved; None when the disk refuses (the
        caller still has the image inline: a full disk must not fail a request whose compute is done)."""
        name = secrets.token_hex(16) + ".png"
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            save_png(image, output_dir / name, params)
            saved = sorted(output_dir.glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
            for old in saved[:max(0, len(saved) - settings.max_saved)]:
                old.unlink(missing_ok=True)
        except (OSError, MinicreamError) as e:
            log.warning("could not save %s: %s", name, e)
            return None
        return f"/outputs/{name}"

    # -- OpenAI Images API ------------------------------------------------------------------------
    @api.post("/v1/images/generations", response_model=OpenAIImagesResponse, response_model_exclude_none=True,
              tags=["openai"], summary="Create images (OpenAI Images API)")
    async def openai_generate(req: OpenAIImageRequest, request: Request):
        native = f"{size}x{size}"
        if req.size not in (None, "auto", native):
            return error_response(422, f"size: this model draws {native} images; use size '{native}' or 'auto' "
                                       f"(got {req.size!r})", "size")
        images = await _generate({"prompt": req.prompt, "num_images": req.n}, target=pipes.get(req.model or "", pipe))
        return _openai_response(images, req.response_format, request, req.prompt)

    def _openai_response(images, response_format, request: Request, prompt: str | None):
        metrics.images.inc(len(images))
        data = []
        for im in images:
            params = _params(im)
            revised = params.get("rewritten_prompt") or params.get("prompt") or prompt
            if response_format == "url":
                path = _save(im, params)
                if path is None:
                    return error_response(507, "the server could not store the image for a URL; ask for "
                                               "response_format 'b64_json'")
                url = str(request.base_url).rstrip("/") + path
                data.append(OpenAIImage(url=url, revised_prompt=revised))
            else:
                data.append(OpenAIImage(b64_json=base64.b64encode(png_bytes(im, params)).decode(), revised_prompt=revised))
        return OpenAIImagesResponse(created=int(time.time()), data=data)

    async def _upload_form(request: Request, needs_prompt: bool):
        """The multipart fields OpenAI's clients send, validated, the images still undecoded bytes:
        (the pipeline `model` names, image, mask or None, prompt, n, response_format)."""
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()  # case-insensitive
        if media_type != "multipart/form-data":
            raise UploadError("send multipart/form-data with an 'image' file (as OpenAI's clients do)")
        queue.check_room()  # 429 before an upload is read, let alone decoded, when no job could take it
        try:
            form = await request.form(max_files=4, max_fields=32)
        except ClientDisconnect:
            raise
        except Exception as e:  # the multipart parser's own errors (bad boundary, too many parts)
            reason = (str(e).splitlines() or [""])[0][:120] or type(e).__name__
            raise UploadError(f"could not read the multipart form ({reason})") from None
        files = [v for k, v in form.multi_items() if k in ("image", "image[]") and hasattr(v, "read")]
        if not files:
            raise UploadError("image: a file is required (multipart field 'image')")
        image = await files[0].read()
        mask_part = form.get("mask")
        mask = await mask_part.read() if hasattr(mask_part, "read") else None
        prompt = form.get("prompt")
        if needs_prompt and (not isinstance(prompt, str) or not prompt.strip()):
            raise UploadError("prompt: describe the edited image, e.g. \"red apple\"")
        if isinstance(prompt, str) and len(prompt) > MAX_PROMPT_CHARS:
            raise UploadError(f"prompt: at most {MAX_PROMPT_CHARS} characters")
        n_raw = form.get("n") or "1"
        if not isinstance(n_raw, str) or not N_FIELD.fullmatch(n_raw) or not 1 <= int(n_raw) <= MAX_IMAGES:
            raise UploadError(f"n: an integer in 1..{MAX_IMAGES}")
        fmt = form.get("response_format") or "b64_json"
        if fmt not in ("b64_json", "url"):
            raise UploadError("response_format: 'b64_json' or 'url'")
        native = f"{size}x{size}"
        if form.get("size") not in (None, "", "auto", native):
            raise UploadError(f"size: this model draws {native} images; use '{native}' or 'auto'")
        model = form.get("model")
        if model is not None and not isinstance(model, str):
            raise UploadError("model: a model's name (GET /v1/models)")
        # OpenAI's own model names (dall-e-2) mean the default, as on /v1/images/generations
        return pipes.get(model or "", pipe), image, mask, prompt, int(n_raw), fmt

    def _decoded(image: bytes, mask: bytes | None):
        """In the worker: the uploads decoded (uploads.py: bounded pixels, scans and time), the mask checked."""
        picture = uploads.read_image(image, "image")
        stencil = uploads.read_image(mask, "mask") if mask is not None else None
        if stencil is not None and stencil.size != picture.size:
            raise UploadError(f"mask: its size {stencil.size[0]}x{stencil.size[1]} differs from the image's "
                              f"{picture.size[0]}x{picture.size[1]}")
        return picture, stencil

    @api.post("/v1/images/edits", response_model=OpenAIImagesResponse, response_model_exclude_none=True,
              tags=["openai"], summary="Edit an image (OpenAI Images API): transparent mask pixels are repainted",
              openapi_extra=_multipart("image", "prompt", mask=True))
    async def openai_edit(request: Request):
        target, raw, raw_mask, prompt, n, fmt = await _upload_form(request, needs_prompt=True)
        if not {"img2img", "inpaint"} <= set(getattr(target, "modes", {}) or {}):
            return error_response(501, "this server's pipeline cannot edit images")

        def job_options():
            image, mask = _decoded(raw, raw_mask)
            if mask is None and has_transparency(image):  # OpenAI: without a mask, the image's transparency marks the edit
                mask = image.convert("RGBA")
            if mask is not None and mask.mode in ("RGBA", "LA") and not has_transparency(mask):
                raise UploadError("mask: it has no transparent pixels; make transparent the area to edit")
            options = {"image": image, "prompt": prompt, "num_images": n, **({"mask": mask} if mask is not None else {})}
            return ("inpaint" if mask is not None else "img2img"), options

        images = await _generate(job_options, target=target)
        return _openai_response(images, fmt, request, prompt)

    @api.post("/v1/images/variations", response_model=OpenAIImagesResponse, response_model_exclude_none=True,
              tags=["openai"], summary="Variations of an image (OpenAI Images API)", openapi_extra=_multipart("image"))
    async def openai_variations(request: Request):
        target, raw, _, _, n, fmt = await _upload_form(request, needs_prompt=False)
        if "variation" not in (getattr(target, "modes", {}) or {}):
            return error_response(501, "this server's pipeline cannot make variations")
        images = await _generate(lambda: ("variation", {"image": _decoded(raw, None)[0], "num_images": n}), target=target)
        return _openai_response(images, fmt, request, None)

    @api.get("/v1/models", tags=["openai"], summary="List models (OpenAI shape)")
    async def openai_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": int(started), "owned_by": "minicream"}
                                           for name in pipes]}

    # -- native API -------------------------------------------------------------------------------
    @api.post("/api/generate", response_model=GenerateResponse, tags=["minicream"], summary="Generate with every option")
    async def generate(req: GenerateRequest):
        try:
            target = pick(req.model)
        except _UnknownModel as e:
            return error_response(422, str(e), "model")
        kwargs = {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "num_images": req.num_images,
                  "steps": req.steps, "guidance": req.guidance, "sampler": req.sampler, "seed": req.seed, "size": req.size}
        for name, what in (("guidance_max_noise", "guidance interval"), ("cads", "condition annealing")):
            if getattr(req, name) is not None:
                if not getattr(features, name):
                    return error_response(422, f"{name}: this server's pipeline has no {what}; leave it out", name)
                kwargs[name] = getattr(req, name)
        if req.num_candidates != 1:
            if not features.num_candidates:
                return error_response(422, "num_candidates: this server's pipeline has no best-of-N; use 1", "num_candidates")
            kwargs["num_candidates"] = req.num_candidates
        if req.filter is not None:
            if not features.filter:
                return error_response(422, "filter: this server's pipeline has no prompt filter; leave it out", "filter")
            if features.filter_modes and req.filter not in features.filter_modes:
                return error_response(422, f"filter: unknown mode {req.filter!r}; choose one of: "
                                           f"{', '.join(features.filter_modes)}", "filter")
            kwargs["filter"] = req.filter
        for name in ("layout", "harmonize", "canvas"):
            value = getattr(req, name)
            if value is not None:
                if not getattr(features, name):
                    return error_response(422, f"{name}: this server's pipeline has no scene layouts; leave it out", name)
                kwargs[name] = value
        if req.style:
            if not features.style:
                return error_response(422, "style: this server's pipeline has no style option; leave it out", "style")
            kwargs["style"] = req.style
        t0 = time.monotonic()
        images = await _generate(kwargs, req.client_id, target=target)
        out = _native_images(images)
        first = out[0].parameters if out else {}
        run = {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "seed": first.get("seed", req.seed),
               "sampler": first.get("sampler", req.sampler), "steps": first.get("steps", req.steps),
               "guidance": first.get("cfg_scale", req.guidance), "num_images": req.num_images,
               "num_candidates": req.num_candidates, "filter": first.get("filter", req.filter), "style": req.style,
               "size": first.get("width", size), "model": served_names.get(id(target), model_name)}
        return GenerateResponse(images=out, parameters=run, elapsed_s=round(time.monotonic() - t0, 3))

    def _native_images(images) -> list[GeneratedImage]:
        metrics.images.inc(len(images))
        out = []
        for im in images:
            params = _params(im)
            url = _save(im, params)
            score = params.get("score")
            out.append(GeneratedImage(png_base64=base64.b64encode(png_bytes(im, params)).decode(), url=url,
                                      seed=int(params.get("seed", 0)), parameters=params,
                                      rewritten_prompt=params.get("rewritten_prompt"),
                                      filter_explanation=params.get("filter_explanation"),
                                      score=float(score) if isinstance(score, (int, float)) else None))
        return out

    @api.post("/api/edit", response_model=GenerateResponse, tags=["minicream"],
              summary="Edit an image: img2img, inpaint, outpaint, variation or blend, with every option")
    async def edit(req: EditRequest):
        try:
            target = pick(req.model)
        except _UnknownModel as e:
            return error_response(422, str(e), "model")
        if req.mode not in (getattr(target, "modes", {}) or {}):
            return error_response(501, f"this server's pipeline has no {req.mode} mode")
        queue.check_room()  # 429 before the base64 is even decoded
        raw, raw_mask = _b64(req.image, "image"), _b64(req.mask, "mask") if req.mask else None
        if req.mode == "inpaint" and raw_mask is None:
            return error_response(422, "mask: inpaint needs a mask (white or transparent = repaint)", "mask")
        if req.mode in ("img2img", "inpaint", "outpaint") and not (req.prompt or "").strip():
            return error_response(422, f"prompt: {req.mode} needs a prompt describing the result", "prompt")
        if req.mode == "blend" and not (req.prompt or "").strip():
            return error_response(422, "prompt: blend goes from the image to a prompt; give one", "prompt")
        common = {"negative_prompt": req.negative_prompt, "seed": req.seed, "sampler": req.sampler, "steps": req.steps,
                  "guidance": req.guidance}
        if req.guidance_max_noise is not None:
            common["guidance_max_noise"] = req.guidance_max_noise
        if req.cads is not None:
            common["cads"] = req.cads

        def job_options():
            image, mask = _decoded(raw, raw_mask)
            if req.mode == "blend":
                from ..pipelines.blend import Prompt  # the prompt is text: never a file name on this server

                return "blend", {"a": image, "b": Prompt(req.prompt), "frames": req.frames, **common}
            options = {"image": image, "num_images": req.num_images, **common}
            if req.prompt:
                options["prompt"] = req.prompt
            if req.mode in ("img2img", "inpaint", "variation"):
                options["strength"] = req.strength
            if req.mode == "inpaint":
                options["mask"] = mask
            if req.mode == "outpaint":
                options.update(left=req.left, right=req.right, top=req.top, bottom=req.bottom)
            return req.mode, options

        t0 = time.monotonic()
        images = await _generate(job_options, req.client_id, target=target)
        out = _native_images(images)
        first = out[0].parameters if out else {}
        return GenerateResponse(images=out, parameters={"mode": req.mode, "prompt": first.get("prompt"), "seed": first.get("seed"),
                                                        "steps": first.get("steps"), "sampler": first.get("sampler")},
                                elapsed_s=round(time.monotonic() - t0, 3))

    @api.get("/api/progress/{client_id}", tags=["minicream"], summary="Progress of a request sent with client_id")
    async def progress(client_id: str):
        p = queue.progress(client_id)
        if p is None:
            return {"state": "unknown", "step": 0, "total": 0}
        return {"state": p.state, "step": p.step, "total": p.total, "queued": queue.queued}

    @api.get("/api/models", tags=["minicream"], summary="The loaded models (the first is the default)")
    async def models():
        return {"models": [{"name": name, "image_size": size, "model_hash": getattr(pl, "model_hash", None),
                            "samplers": list(pl.samplers), "defaults": dict(getattr(pl, "defaults", {}) or {}),
                            "kind": (getattr(pl, "provenance", None) or {}).get("model_kind"),
                            "teacher": (getattr(pl, "provenance", None) or {}).get("teacher"),
                            "features": (features if pl is pipe else _Features(pl)).as_dict(), "loaded": True}
                           for name, pl in pipes.items()]}

    @api.get("/api/samplers", tags=["minicream"], summary="Samplers a model can use (default: the default model)")
    async def samplers(model: str | None = None):
        try:
            target = pick(model)
        except _UnknownModel as e:
            return error_response(422, str(e), "model")
        defaults = getattr(target, "defaults", {}) or {}
        return {"samplers": list(target.samplers), "default": defaults.get("sampler")}

    @api.get("/outputs/{name}", tags=["minicream"], summary="An image saved by this server",
             response_class=FileResponse)
    async def output_file(name: str):
        # Names are ours (32 hex digits + .png): anything else, '..' and '/' included, is not a file we wrote.
        stem = name.removesuffix(".png")
        if len(stem) != 32 or not name.endswith(".png") or not set(stem) <= OUTPUT_NAME_CHARS:  # before any path call:
            return error_response(404, f"no such image: {name[:80]!r}")  # a NUL byte makes resolve() raise
        path = (output_dir / name).resolve()
        if path.parent != output_dir or not path.is_file():
            return error_response(404, f"no such image: {name[:80]!r}")
        return FileResponse(path, media_type="image/png")

    @api.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    app.include_router(api)

    # -- public -----------------------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"], summary="Liveness and queue state")
    async def healthz():
        return {"status": "ok", "model": model_name, "queued": queue.queued, "running": queue.running,
                "queue_size": queue.max_queued, "concurrency": queue.concurrency,
                "auth": settings.token is not None, "uptime_s": round(time.time() - started, 1)}

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
