"""minicream's own API: /api/generate (every text-to-image option) and /api/edit (img2img, inpaint, outpaint,
variation and blend of a base64 image). An option the served pipeline lacks is refused, never ignored."""
from __future__ import annotations

import base64
import time

from fastapi import APIRouter, Request

from .errors import error_response
from .feedback_api import FeedbackSet, record_generation
from .schemas import EditRequest, GenerateRequest, GenerateResponse
from .served import UnknownModel, b64, decoded, served

router = APIRouter(tags=["minicream"])


@router.post("/api/generate", response_model=GenerateResponse, summary="Generate with every option")
async def generate(req: GenerateRequest, request: Request):
    s = served(request)
    features = s.features  # the default model's (as the page shows them)
    try:
        target = s.pick(req.model)
    except UnknownModel as e:
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
    if req.keep_top != 1:
        if not features.keep_top:
            return error_response(422, "keep_top: this server's pipeline returns one candidate per image; use 1", "keep_top")
        if req.keep_top > req.num_candidates:
            return error_response(422, f"keep_top: at most num_candidates ({req.num_candidates}), got {req.keep_top}", "keep_top")
        kwargs["keep_top"] = req.keep_top
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
    images = await s.generate(kwargs, req.client_id, target=target)
    out = s.native_images(images)
    first = out[0].parameters if out else {}
    run = {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "seed": first.get("seed", req.seed),
           "sampler": first.get("sampler", req.sampler), "steps": first.get("steps", req.steps),
           "guidance": first.get("cfg_scale", req.guidance), "num_images": req.num_images,
           "num_candidates": req.num_candidates, "keep_top": req.keep_top, "filter": first.get("filter", req.filter), "style": req.style,
           "size": first.get("width", s.size), "model": s.names.get(id(target), s.model_name)}
    elapsed = round(time.monotonic() - t0, 3)
    return GenerateResponse(images=out, parameters=run, elapsed_s=elapsed, feedback=await _record(request, req, run, out))


async def _record(request: Request, req: GenerateRequest, run: dict, out) -> FeedbackSet | None:
    """The returned images as one candidate set for people's ratings (feedback_api.py). The prompt recorded is the
    one the images were drawn and ranked for (the filter's rewrite, when every image has the same one)."""
    if len(out) < 2:
        return None
    rewritten = {im.rewritten_prompt or req.prompt for im in out}
    prompt = rewritten.pop() if len(rewritten) == 1 else req.prompt
    settings = {k: run[k] for k in ("sampler", "steps", "guidance", "num_images", "num_candidates", "keep_top", "size", "model")}
    settings.update(seeds=[im.seed for im in out], typed_prompt=req.prompt[:200])
    return await record_generation(request, prompt, settings, [base64.b64decode(im.png_base64) for im in out])


@router.post("/api/edit", response_model=GenerateResponse,
             summary="Edit an image: img2img, inpaint, outpaint, variation or blend, with every option")
async def edit(req: EditRequest, request: Request):
    s = served(request)
    try:
        target = s.pick(req.model)
    except UnknownModel as e:
        return error_response(422, str(e), "model")
    if req.mode not in (getattr(target, "modes", {}) or {}):
        return error_response(501, f"this server's pipeline has no {req.mode} mode")
    s.queue.check_room()  # 429 before the base64 is even decoded
    raw, raw_mask = b64(req.image, "image"), b64(req.mask, "mask") if req.mask else None
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
        image, mask = decoded(raw, raw_mask)
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
    images = await s.generate(job_options, req.client_id, target=target)
    out = s.native_images(images)
    first = out[0].parameters if out else {}
    return GenerateResponse(images=out, parameters={"mode": req.mode, "prompt": first.get("prompt"), "seed": first.get("seed"),
                                                    "steps": first.get("steps"), "sampler": first.get("sampler")},
                            elapsed_s=round(time.monotonic() - t0, 3))
