"""Response models of the HTTP API and the OpenAI request (pydantic), and what one request may cost (the caps every
route applies; the native request models are generated from the modes' declarations in requests.py).

Invalid input never reaches the pipeline: FastAPI answers 422 with a one-line message built from these
constraints (see `errors.py`).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .feedback_api import FeedbackSet

MAX_PROMPT_CHARS = 1000  # MiniLM reads 24 tokens; a longer prompt is accepted and truncated by the encoder
MAX_IMAGES = 8           # per request: a single request must not hold the worker for minutes
MAX_CANDIDATES = 8       # best-of-N: N candidates drawn per returned image
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_SEED = 2**31 - 1


def _prompt(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt is empty; describe what to draw, e.g. \"red apple\"")
    return value


# -- OpenAI Images API ------------------------------------------------------------------------------
class OpenAIImageRequest(BaseModel):
    """`POST /v1/images/generations`, as OpenAI defines it. Fields we have no use for (model, quality,
    style, moderation, background, ...) are accepted and ignored, as other OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: Optional[str] = Field(None, max_length=256, description="a loaded model's name, with adapters as "
                                 "'base+adapter[:scale]' (GET /v1/models); others (dall-e-2, ...) mean the default")
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    size: Optional[str] = Field(None, max_length=32, description="WIDTHxHEIGHT: the model's native size, a larger one its upscaler draws (256x256), or 'auto'")
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
# The request models of /api/generate, /api/edit and /api/modes/{mode} are generated from the modes' declarations
# (requests.py); the responses are these.
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
