"""`minicream serve`: the web page and the HTTP APIs (minicream.serve)."""
from __future__ import annotations

import sys
from pathlib import Path


def cmd_serve(args) -> None:
    from ..serve import ServeSettings, create_app
    from ..serve.server import LOOPBACK, check_settings, run

    settings = ServeSettings(host=args.host, port=args.port, queue_size=args.queue_size, concurrency=args.concurrency,
                             timeout=args.timeout, output_dir=Path(args.output_dir),
                             allowed_hosts=tuple(args.allowed_host or ()), max_saved=args.max_saved,
                             compile=args.compile, cors_origins=tuple(args.cors_origin or ()),
                             body_timeout=args.body_timeout, feedback=not args.no_feedback,
                             feedback_per_minute=args.feedback_per_minute)
    if args.token:
        settings.token = args.token
    check_settings(settings)
    if args.host not in LOOPBACK and settings.token is None:
        print(f"warning: serving on {args.host} without a token: anyone who can reach it can generate", file=sys.stderr)
    if args.compile:
        print("compiling the UNet once (torch.compile; about a minute or two per model)...", file=sys.stderr)
    app = create_app(args.model or None, settings)
    if args.adapter:
        serve_adapters(app.state.pipelines.values(), args.adapter)
    print(f"minicream: serving {', '.join(str(p.model_dir) for p in app.state.pipelines.values())} on http://{args.host}:{args.port}/"
          + (" (bearer token required)" if settings.token else ""))
    run(app, settings)


def serve_adapters(pipes, specs: list[str]) -> None:
    """`serve --adapter DIR[:SCALE]`: each adapter loaded, for every request, into the served model it was made for."""
    from ..adapters import parse_adapter_arg
    from ..adapters.format import AdapterInfo
    from ..errors import MinicreamError

    pipes = list(pipes)
    for spec in specs:
        folder, scale = parse_adapter_arg(spec)
        info = AdapterInfo.read(Path(folder)) if Path(folder).is_dir() else None
        fits = [p for p in pipes if info is not None and info.base_model_hash == p.model_hash]
        for pipe in fits or pipes[:1]:  # none fits: the first model's load_adapter says why, in one line
            pipe.load_adapter(folder, scale=scale)
        if not fits:
            raise MinicreamError(f"{folder}: fits none of the served models")


def add_parsers(sub) -> None:
    sv = sub.add_parser("serve", help="web page + OpenAI-compatible image API (FastAPI)")
    sv.add_argument("--model", action="append", metavar="MODEL",
                    help="a model directory or shipped name (default: the default model); repeat to serve several, "
                         "e.g. --model reference --model onestep: the page and the APIs switch between them")
    sv.add_argument("--compile", action="store_true", help="torch.compile each UNet once at start-up (faster calls)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    sv.add_argument("--allowed-host", action="append", metavar="NAME",
                    help="a Host header name to answer besides the bound address (repeatable; DNS-rebinding guard)")
    sv.add_argument("--port", type=int, default=7860, help="TCP port")
    sv.add_argument("--token", help="bearer token required on API routes (default: env MINICREAM_TOKEN, else none)")
    sv.add_argument("--queue-size", type=int, default=8, help="requests that may wait; more get HTTP 429")
    sv.add_argument("--concurrency", type=int, default=1, help="generations running at once")
    sv.add_argument("--timeout", type=float, default=120.0, help="seconds per request before HTTP 504")
    sv.add_argument("--output-dir", default="outputs/serve", help="where images returned as URLs are saved")
    sv.add_argument("--max-saved", type=int, default=1000, help="saved images kept; the oldest beyond are deleted")
    sv.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                    help="a browser origin (e.g. http://localhost:3000) whose pages may call the API (repeatable); "
                         "without a token, POSTs from other sites are refused")
    sv.add_argument("--body-timeout", type=float, default=30.0, help="seconds a request body may take to arrive (HTTP 408)")
    sv.add_argument("--adapter", action="append", default=[], metavar="DIR[:SCALE]",
                    help="an adapter made by `minicream finetune`, loaded for every request into the model it was made for "
                         "(repeatable); requests choose among them (`adapters` in /api requests, model 'base+adapter' on /v1)")
    sv.add_argument("--no-feedback", action="store_true", help="record no candidates and take no ratings (POST /api/feedback "
                                                               "answers 404); default: OUTPUT_DIR/feedback.sqlite")
    sv.add_argument("--feedback-per-minute", type=int, default=30, help="ratings a minute from one address (more get HTTP 429)")
    sv.set_defaults(func=cmd_serve)
