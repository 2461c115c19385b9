"""minicream's own API, one route per mode, generated from the served pipelines' declared modes (requests.py):

    POST /api/modes/{mode}   any mode, with its declared options (base64 images); /api/story and /api/fuse are
                             /api/modes/story and /api/modes/fuse
    POST /api/generate       text2img, every option
    POST /api/edit           the modes that take an uploaded image (img2img, inpaint, outpaint, variation, blend, ...),
                             chosen by `mode`
All three run one handler (`run_mode`): an option the chosen model's mode does not declare is refused, never
ignored; uploaded images are read after the queue has room and decoded in the worker.
"""
from __future__ import annotations

import base64
import inspect
import time

from fastapi import APIRouter, Request

from ..pipelines.modes import Text
from . import adapters as http_adapters
from .errors import error_response
from .feedback_api import FeedbackSet, record_generation
from .requests import SERVER_FIELDS, edit_request, generate_request, http_options, mode_request
from .schemas import GenerateResponse
from .served import UnknownModel, b64, served
from . import uploads
from .uploads import UploadError


class Refused(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


async def _record(request: Request, prompt: str, run: dict, out) -> FeedbackSet | None:
    """The returned images as one candidate set for people's ratings (feedback_api.py). The prompt recorded is the
    one the images were drawn and ranked for (the filter's rewrite, when every image has the same one)."""
    if len(out) < 2 or not prompt:  # ratings judge a picture against its prompt: an image prompt alone has none
        return None
    rewritten = {im.rewritten_prompt or prompt for im in out}
    ranked = rewritten.pop() if len(rewritten) == 1 else prompt
    settings = {k: run[k] for k in ("sampler", "steps", "guidance", "num_images", "num_candidates", "keep_top", "size", "model")}
    settings.update(seeds=[im.seed for im in out], typed_prompt=prompt[:200])
    return await record_generation(request, ranked, settings, [base64.b64decode(im.png_base64) for im in out])


def _options(target, mode_name: str, req) -> tuple[dict, dict]:
    """(the mode's options by name, the uploaded images' bytes by name) from a request; Refused when the chosen
    model's mode lacks an option given, misses a required one or a value is not one of its choices."""
    mode = (getattr(target, "modes", None) or {}).get(mode_name)
    if mode is None:
        raise Refused(501, f"this server's pipeline has no {mode_name} mode")
    declared = {o.http_name: o for o in http_options(mode)}
    values = {f: getattr(req, f) for f in type(req).model_fields if f not in SERVER_FIELDS}
    for f in sorted(req.model_fields_set - set(SERVER_FIELDS)):
        if f not in declared and values[f] is not None:
            raise Refused(422, f"{f}: {mode_name} takes no {f} here; leave it out (it takes: {', '.join(declared)})", f)
    options, raw = {}, {}
    for field, o in declared.items():
        value = values.get(field)
        if isinstance(value, str) and not value.strip() and o.kind == "str" and not o.required:
            value = None  # a blank optional text (a form's empty style field) is not given: the default applies
        if value is None:
            if o.required:
                raise Refused(422, f"{field}: {mode_name} needs a {field} ({o.help})", field)
            continue
        if o.choices and isinstance(value, (str, int, float)) and value not in o.choices:
            raise Refused(422, f"{field}: unknown {field} {value!r}; choose one of: {', '.join(map(str, o.choices))}", field)
        if o.kind == "image":
            raw[o.name] = (field, value)
        elif o.kind == "parts":  # texts stay text; images are decoded with the other uploads
            options[o.name] = [Text(p.text) if p.text is not None else None for p in value]
            for i, p in enumerate(value):
                if (p.image is None) == (p.text is None):
                    raise Refused(422, f"{field}[{i}]: give one of image or text", field)
                if p.image is not None:
                    raw[(o.name, i)] = (f"{field}[{i}]", p.image)
        else:  # a client's text is text, never the name of a file on this server
            options[o.name] = Text(value) if o.kind == "str" else value
    return options, raw


def _decode(raw: dict) -> dict:
    """In the worker: the uploads decoded (uploads.py: bounded pixels, scans and time); a mask is its image's size."""
    images = {name: uploads.read_image(data, field) for name, (field, data) in raw.items()}
    image, mask = images.get("image"), images.get("mask")
    if image is not None and mask is not None and mask.size != image.size:
        raise UploadError(f"mask: its size {mask.size[0]}x{mask.size[1]} differs from the image's "
                          f"{image.size[0]}x{image.size[1]}")
    return images


def _with_uploads(options: dict, images: dict) -> dict:
    """The options with the decoded uploads in place (a fusion's images go into their parts' slots)."""
    out = dict(options)
    for key, image in images.items():
        if isinstance(key, tuple):
            name, i = key
            out[name] = list(out[name])
            out[name][i] = image
        else:
            out[key] = image
    return out


async def run_mode(request: Request, req, mode_name: str):
    """Run one mode for a request: (the images, the target) or an error response."""
    s = served(request)
    try:
        target = s.pick(req.model)
        options, raw = _options(target, mode_name, req)
        chosen = http_adapters.checked(target, None if req.adapters is None else [(a.name, a.scale) for a in req.adapters])
    except UnknownModel as e:
        return error_response(422, str(e), "model"), None
    except Refused as e:
        return error_response(e.status, str(e), e.param), None
    except http_adapters.AdapterRefused as e:
        return error_response(422, str(e), "adapters"), None
    if raw:
        s.queue.check_room()  # 429 before the base64 is even decoded
        raw = {name: (field, b64(data, field)) for name, (field, data) in raw.items()}
    images = await s.generate(lambda: (mode_name, _with_uploads(options, _decode(raw))), req.client_id, target=target,
                              adapters=chosen)
    return images, target


def _summary(s, images) -> tuple[list, dict]:
    out = s.native_images(images)
    return out, (out[0].parameters if out else {})


def _endpoint(handler, model):
    """`handler(req, request)` as a route whose body is `model` (a class made at run time, so its annotation is set
    here rather than written in the source)."""
    async def endpoint(req, request: Request):
        return await handler(req, request)

    endpoint.__signature__ = inspect.Signature([
        inspect.Parameter("req", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=model),
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)])
    return endpoint


def build_router(modes: dict) -> APIRouter:
    """The native routes for these modes (the served pipelines' declarations, the default model's first)."""
    router = APIRouter(tags=["minicream"])

    def mode_handler(name: str):
        async def handler(req, request: Request):
            t0 = time.monotonic()
            images, target = await run_mode(request, req, name)
            if target is None:
                return images
            out, first = _summary(served(request), images)
            return GenerateResponse(images=out, parameters={"mode": name, **{k: first.get(k) for k in (
                "prompt", "seed", "steps", "sampler")}}, elapsed_s=round(time.monotonic() - t0, 3))
        return handler

    async def generate(req, request: Request):
        s, t0 = served(request), time.monotonic()
        images, target = await run_mode(request, req, "text2img")
        if target is None:
            return images
        out, first = _summary(s, images)
        asked = req.model_dump()
        run = {"prompt": req.prompt, "negative_prompt": asked.get("negative_prompt") or "",
               "seed": first.get("seed", asked.get("seed")), "sampler": first.get("sampler", asked.get("sampler")),
               "steps": first.get("steps", asked.get("steps")), "guidance": first.get("cfg_scale", asked.get("guidance")),
               "num_images": asked.get("num_images") or 1, "num_candidates": asked.get("num_candidates") or 1,
               "keep_top": asked.get("keep_top") or 1, "filter": first.get("filter", asked.get("filter")), "style": asked.get("style"),
               "size": first.get("width", s.size), "model": s.names.get(id(target), s.model_name)}
        return GenerateResponse(images=out, parameters=run, elapsed_s=round(time.monotonic() - t0, 3),
                                feedback=await _record(request, req.prompt, run, out))

    async def edit(req, request: Request):
        return await mode_handler(req.mode)(req, request)

    if (model := generate_request(modes)) is not None:
        router.post("/api/generate", response_model=GenerateResponse,
                    summary="Generate with every option")(_endpoint(generate, model))
    if (model := edit_request(modes)) is not None:
        names = ", ".join(model.model_fields["mode"].annotation.__args__)
        router.post("/api/edit", response_model=GenerateResponse,
                    summary=f"Edit an image: {names}, with every option")(_endpoint(edit, model))
    for mode in modes.values():
        router.post(f"/api/modes/{mode.name}", response_model=GenerateResponse,
                    summary=f"{mode.name}: {mode.help}")(_endpoint(mode_handler(mode.name), mode_request(mode)))
    for name in ("story", "fuse"):  # their own names (issues 33, 34), the same routes as /api/modes/story and .../fuse
        if name in modes:
            router.post(f"/api/{name}", response_model=GenerateResponse, summary=f"{name}: {modes[name].help}")(
                _endpoint(mode_handler(name), mode_request(modes[name])))
    return router
