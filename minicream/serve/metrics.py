"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # no *_created series: they double the output and no dashboard uses them
# Generation on a CPU takes from a fraction of a second to minutes: buckets cover that range.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("minicream_http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("minicream_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("minicream_images_generated_total", "images generated", registry=r)
        self.rejected = Counter("minicream_queue_rejected_total", "requests refused with 429 (queue full)", registry=r)
        self.timeouts = Counter("minicream_generation_timeouts_total", "generations stopped by the time limit", registry=r)
        Gauge("minicream_queue_depth", "generation jobs waiting for a worker", registry=r).set_function(lambda: queue.queued)
        Gauge("minicream_queue_running", "generation jobs running", registry=r).set_function(lambda: queue.running)
        Gauge("minicream_queue_capacity", "most jobs waiting before 429", registry=r).set(queue.max_queued)
        Gauge("minicream_workers", "generation worker threads", registry=r).set(queue.concurrency)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
