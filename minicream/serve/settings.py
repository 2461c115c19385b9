"""Server settings: one dataclass, filled from `minicream serve` flags (or by a test)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_ENV = "MINICREAM_TOKEN"


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"   # loopback only unless asked: the server has no user accounts
    port: int = 7860          # the port AUTOMATIC1111 and Gradio use
    token: str | None = field(default_factory=lambda: os.environ.get(TOKEN_ENV) or None)  # bearer token for API routes
    queue_size: int = 8       # jobs that may wait for a worker; more get HTTP 429
    concurrency: int = 1      # worker threads generating at once (one is fastest on a small CPU)
    timeout: float = 120.0    # seconds a request may wait + run before it fails with 504
    output_dir: Path = Path("outputs/serve")  # saved images; GET /outputs/{name} serves only this folder
    cors_origins: tuple[str, ...] = ()        # browser origins allowed to call the API (none by default); without a
                                              # token, POSTs from any other site are refused (403)
    max_saved: int = 1000                     # saved images kept in output_dir; the oldest beyond it are deleted
    compile: bool = False                     # torch.compile each loaded UNet once at start-up (slow start, faster calls)
    allowed_hosts: tuple[str, ...] = ()       # Host header names accepted besides the bound address (DNS rebinding)
    body_timeout: float = 30.0                # seconds a request body may take to arrive before HTTP 408
    feedback: bool = True                     # record multi-image generations and take ratings (output_dir/feedback.sqlite)
    feedback_per_minute: int = 30             # ratings a minute from one client address; more get HTTP 429
