"""The FastAPI app: `create_app(pipeline_or_model_dir, settings)` loads the models once and assembles the routers.

Routes (all but the page, its static files, /healthz and /openapi.json need the bearer token when one is set):
    GET  /                          the web page          GET  /static/...        its assets
    POST /v1/images/generations     OpenAI Images API     GET  /v1/models         OpenAI model list
    POST /v1/images/edits, /v1/images/variations   OpenAI's multipart image edits (inpaint / img2img) and variations
                                                    (openai_api.py)
    POST /api/generate              text2img, every option (native_api.py; request models from the modes'
                                    declarations: requests.py)
    POST /api/edit                  the modes taking an image (img2img, inpaint, outpaint, variation, blend) of a
                                    base64 image, every option
    POST /api/modes/{mode}          any declared mode, every option
    POST /api/feedback              a person's pick among a generation's candidates (feedback_api.py)
    GET  /api/progress/{id}         progress of a request (status_api.py)
    GET  /api/models, /api/samplers GET  /outputs/{name}   images saved by the server
    GET  /healthz, /metrics (Prometheus), /openapi.json
What the routes share (the pipelines, the queue, the metrics, saved images) is one `Served` (served.py), kept as
`app.state.served`. Generation runs in the bounded worker queue (queue.py), and so does the decoding of uploaded
images: a route reads only their bytes, after the queue has room (uploads.py). What every request passes first
(Host, cross-site, token, body size and time) is guard.py.
"""
from __future__ import annotations

import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..errors import MinicreamError
from ..feedback import FeedbackLimits
from . import feedback_api, native_api, openai_api, status_api
from .errors import install_error_handlers
from .features import declared_modes
from .guard import Guard, allowed_hosts
from .metrics import Metrics
from .queue import GenerationQueue
from .schemas import ErrorResponse
from .served import Served, require_token, served
from .settings import ServeSettings

STATIC_DIR = Path(__file__).parent / "static"
_ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 408, 413, 422, 429, 504)}


def served_modes(pipes: dict) -> dict:
    """Every mode the served pipelines declare, by name (the default model's declaration first)."""
    modes = {}
    for pipe in pipes.values():
        for name, mode in declared_modes(pipe).items():
            modes.setdefault(name, mode)
    return modes


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


def load_pipelines(given, compile_unet: bool = False) -> dict:
    """{name: pipeline} from a pipeline, a model folder or shipped name, or a list / {name: ...} dict of those."""
    if isinstance(given, dict):
        pipes = {str(name): _load(v, compile_unet) for name, v in given.items()}
    else:
        loaded = [_load(v, compile_unet) for v in (given if isinstance(given, (list, tuple)) else [given])]
        pipes = {}
        for pl in loaded:
            pipes.setdefault(_model_name(pl), pl)
    if not pipes:
        raise MinicreamError("no model to serve")
    model_name, pipe = next(iter(pipes.items()))
    size = int(pipe.image_size)
    for name, other in pipes.items():
        if int(other.image_size) != size:
            raise MinicreamError(f"model {name} draws {other.image_size} px images, {model_name} {size} px: "
                                 "serve models of one image size together")
    return pipes


public = APIRouter()


@public.get("/healthz", tags=["ops"], summary="Liveness and queue state")
async def healthz(request: Request):
    s = served(request)
    queue = s.queue
    return {"status": "ok", "model": s.model_name, "queued": queue.queued, "running": queue.running,
            "queue_size": queue.max_queued, "concurrency": queue.concurrency,
            "auth": s.settings.token is not None, "uptime_s": round(time.time() - s.started, 1)}


@public.get("/", include_in_schema=False)
async def page():
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))


def create_app(pipeline_or_model_dir=None, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving pipelines: a `Pipeline` (or anything callable like one), a model directory or a shipped
    model's name (None = the default model), or a list / {name: ...} dict of those, the first being the default.
    Requests choose one with `model` (OpenAI clients' model names we do not have fall back to the default)."""
    settings = settings or ServeSettings()
    pipes = load_pipelines(pipeline_or_model_dir, settings.compile)
    queue = GenerationQueue(settings.concurrency, settings.queue_size, settings.timeout)
    metrics = Metrics(queue)
    state = Served(pipes, settings, queue, metrics, Path(settings.output_dir).resolve())
    ratings = feedback_api.FeedbackService(state.output_dir / feedback_api.FEEDBACK_DB, enabled=settings.feedback,
                                           limits=FeedbackLimits(max_ratings_per_minute=settings.feedback_per_minute))

    @asynccontextmanager
    async def lifespan(app):
        yield
        queue.shutdown()
        ratings.shutdown()

    app = FastAPI(title="minicream", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Text-to-image generation with a small latent-diffusion model. "
                              "Send `Authorization: Bearer TOKEN` when the server has a token.")
    app.state.served, app.state.pipelines, app.state.feedback = state, pipes, ratings
    app.state.pipeline, app.state.queue, app.state.metrics, app.state.settings = state.pipe, queue, metrics, settings
    install_error_handlers(app)
    if settings.cors_origins:  # browser pages on these origins may call the API (with the token, if one is set)
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, metrics=metrics, token=settings.token, hosts=allowed_hosts(settings),
                       cors_origins=tuple(settings.cors_origins), body_timeout=settings.body_timeout)
    native = native_api.build_router(served_modes(pipes))  # routes and request models from the declarations
    for router in (openai_api.router, native, status_api.router, feedback_api.router):
        app.include_router(router, dependencies=[Depends(require_token)], responses=_ERRORS)
    app.include_router(public)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
