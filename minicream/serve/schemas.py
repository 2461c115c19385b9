"""Request and response models of the HTTP API (pydantic). Bounds live here, so every route validates the same way.

Invalid input never reaches the pipeline: FastAPI answers 422 with a one-line message built from these
constraints (see `errors.py`).
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .feedback_api import FeedbackSet

MAX_PROMPT_CHARS = 1000  # MiniLM reads 24 tokens; a longer prompt is accepted and truncated by the encoder
MAX_IMAGES = 8           # per request: a single request must not hold the worker for minutes
MAX_CANDIDATES = 8       # best-of-N: N candidates drawn per returned image
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_SEED = 2**31 - 1
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _prompt(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt is empty; describe what to draw, e.g. \"red apple\"")
    return value


def _client_id(value: str | None) -> str | None:
    if value is not None and not CLIENT_ID.match(value):
        raise ValueError("client_id must be 1-64 letters, digits, '-' or '_'")
    return value


# -- OpenAI Images API ------------------------------------------------------------------------------
class OpenAIImageRequest(BaseModel):
    """`POST /v1/images/generations`, as OpenAI defines it. Fields we have no use for (model, quality,
    style, moderation, background, ...) are accepted and ignored, as other OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: Optional[str] = Field(None, max_length=256, description="a loaded model's name; others (dall-e-2, ...) mean the default")
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    size: Optional[str] = Field(None, max_length=32, description="WIDTHxHEIGHT (the model's native size) or 'auto'")
    response_format: Optional[Literal["b64_json", "url"]] = "b64_json"
    output_format: Optional[Literal["png"]] = None
    stream: Optional[Literal[False]] = None
    user: Optional[str] = Field(None, max_length=256)
    model: Optional[str] = Field(None, max_length=256)

    _check_prompt = field_validator("prompt")(_prompt)


class OpenAIImage(BaseModel):
    b64_json: Optional[str] = None
    url: Optional[str] = None
    revised_prompt: Optional[str] = None


class OpenAIImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage]


# -- native API -------------------------------------------------------------------------------------
class GenerateRequest(BaseModel):
    """`POST /api/generate`: every pipeline option. Unset values take the model's defaults."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    model: Optional[str] = Field(None, max_length=128, description="a loaded model's name (GET /api/models); default: the first")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="seed of the first image; null = random")
    sampler: Optional[str] = Field(None, max_length=32)
    steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS)
    guidance: Optional[float] = Field(None, ge=0.0, le=MAX_GUIDANCE)
    guidance_max_noise: Optional[float] = Field(None, gt=0.0, le=1.0, description="guidance only at noise levels t/T up "
                                                "to this; above it the conditional prediction alone (more variety)")
    cads: Optional[float] = Field(None, ge=0.0, le=10.0, description="condition annealing (CADS): noise of this scale "
                                  "on the prompt's embedding at high noise levels (more variety); 0 = off")
    num_images: int = Field(1, ge=1, le=MAX_IMAGES)
    num_candidates: int = Field(1, ge=1, le=MAX_CANDIDATES, description="best-of-N (needs an evaluator-aware pipeline)")
    keep_top: int = Field(1, ge=1, le=MAX_CANDIDATES, description="with best-of-N: return the best K of each image's N "
                          "candidates, best first (K <= num_candidates), e.g. for a person to pick among")
    filter: Optional[str] = Field(None, max_length=32, description="language filter mode, e.g. offline | llm | none")
    style: Optional[str] = Field(None, max_length=200, description="style words the filter appends, e.g. 'openmoji style'")
    size: Optional[int] = Field(None, ge=8, le=4096, description="image side in pixels (the model's native size)")
    layout: Optional[dict | Literal["none"]] = Field(None, description='scene layout {"objects": [{"caption", "box": '
                                                    '[x0, y0, x1, y1]}]}; "none" = never; default: from the prompt')
    harmonize: Optional[float] = Field(None, ge=0.0, lt=1.0, description="with a layout: strength of the joint redraw")
    canvas: Optional[Literal["scene", "model"]] = Field(None, description='a scene laid out from the prompt: "scene" '
                                                        '(default) sizes the image so each object is drawn at the '
                                                        'model\'s size (136x64 for two), "model" = the model\'s canvas')
    client_id: Optional[str] = Field(None, description="any id of yours: GET /api/progress/{client_id} reports progress")

    _check_prompt = field_validator("prompt")(_prompt)

    _check_client_id = field_validator("client_id")(_client_id)


EDIT_MODES = ("img2img", "inpaint", "outpaint", "variation", "blend")
MAX_EXTEND = 192
MAX_FRAMES = 16


class EditRequest(BaseModel):
    """`POST /api/edit`: change an image. `image` (and `mask`) are base64 PNG, JPEG or WebP (a data: URL is fine).
    inpaint: mask white (or transparent) = repaint; outpaint: pixels to add per side; variation: prompt optional
    (the evaluator names the image); blend: frames from the image to `prompt`."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal[EDIT_MODES]
    model: Optional[str] = Field(None, max_length=128, description="a loaded model's name (GET /api/models); default: the first")
    image: str = Field(min_length=1, description="base64 image (or a data: URL)")
    mask: Optional[str] = Field(None, description="inpaint: base64 mask, the image's size")
    prompt: Optional[str] = Field(None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    strength: Optional[float] = Field(None, gt=0.0, le=1.0, description="img2img / inpaint / variation")
    left: int = Field(0, ge=0, le=MAX_EXTEND)
    right: int = Field(0, ge=0, le=MAX_EXTEND)
    top: int = Field(0, ge=0, le=MAX_EXTEND)
    bottom: int = Field(0, ge=0, le=MAX_EXTEND)
    frames: int = Field(8, ge=2, le=MAX_FRAMES, description="blend")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    sampler: Optional[str] = Field(None, max_length=32)
    steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS)
    guidance: Optional[float] = Field(None, ge=0.0, le=MAX_GUIDANCE)
    guidance_max_noise: Optional[float] = Field(None, gt=0.0, le=1.0, description="guidance only at noise levels t/T up "
                                                "to this; above it the conditional prediction alone (more variety)")
    cads: Optional[float] = Field(None, ge=0.0, le=10.0, description="condition annealing (CADS): noise of this scale "
                                  "on the prompt's embedding at high noise levels (more variety); 0 = off")
    num_images: int = Field(1, ge=1, le=MAX_IMAGES)
    client_id: Optional[str] = Field(None, description="GET /api/progress/{client_id} reports progress")

    _check_client_id = field_validator("client_id")(_client_id)


class GeneratedImage(BaseModel):
    png_base64: str = Field(description="the PNG, with its generation parameters in text chunks")
    url: Optional[str] = Field(None, description="where the server saved it (GET, same token)")
    seed: int
    parameters: dict = Field(description="the image's parameters (image.info['minicream'])")
    rewritten_prompt: Optional[str] = Field(None, description="what the language filter made of the prompt")
    filter_explanation: Optional[list[str]] = None
    score: Optional[float] = Field(None, description="evaluator score (best-of-N)")


class GenerateResponse(BaseModel):
    images: list[GeneratedImage]
    parameters: dict = Field(description="the request as run, defaults filled in")
    elapsed_s: float
    feedback: Optional[FeedbackSet] = Field(None, description="2+ distinct images: the candidate set recorded for "
                                            "POST /api/feedback (its id and each image's sha256)")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorBody
