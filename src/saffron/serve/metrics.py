"""Prometheus metrics of one server (its own registry, so several apps in one process — tests —
never share counters).

* ``saffron_http_requests_total{path, status}`` — every HTTP request by route and status code;
* ``saffron_completions_total{model, outcome}`` — answered requests by method and outcome
  (``ok``, ``cancelled`` when the client went away, ``error``);
* ``saffron_tokens_total{kind}`` — prompt and completion tokens of answered requests;
* ``saffron_tflop_total{model}`` — search compute (TFLOP, all models; the guard's verdict
  is not counted);
* ``saffron_reward_calls_total{role}`` — guard / MRM calls made by searches;
* ``saffron_request_latency_seconds{model}`` — time from arrival to the last byte of the answer;
* ``saffron_queue_depth`` and ``saffron_requests_running`` — read when scraped;
* ``process_*`` — the server process's memory and CPU (Linux).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from saffron.serve.engine import Outcome

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, float("inf"))
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters of one app. ``depth`` and ``running`` are read at scrape time."""

    def __init__(self, depth: Callable[[], int], running: Callable[[], int]) -> None:
        self.registry = reg = CollectorRegistry()
        self.http = Counter(
            "saffron_http_requests", "HTTP requests", ["path", "status"], registry=reg
        )
        self.completions = Counter(
            "saffron_completions", "answered requests", ["model", "outcome"], registry=reg
        )
        self.tokens = Counter("saffron_tokens", "tokens of answers", ["kind"], registry=reg)
        self.tflop = Counter("saffron_tflop", "search compute in TFLOP", ["model"], registry=reg)
        self.reward_calls = Counter(
            "saffron_reward_calls", "reward-model calls by searches", ["role"], registry=reg
        )
        self.latency = Histogram(
            "saffron_request_latency_seconds",
            "arrival to last byte of the answer",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        Gauge("saffron_queue_depth", "jobs waiting", registry=reg).set_function(depth)
        Gauge("saffron_requests_running", "jobs running", registry=reg).set_function(running)
        ProcessCollector(registry=reg)

    def answered(self, model: str, outcome: Outcome, seconds: float) -> None:
        """Record one answered request."""
        result = outcome.result
        self.completions.labels(model, "ok").inc()
        self.tokens.labels("prompt").inc(len(result.sequence.context))
        self.tokens.labels("completion").inc(len(result.generated))
        self.tflop.labels(model).inc(result.compute.tflop)
        for role, n in result.reward_calls.items():
            self.reward_calls.labels(role).inc(n)
        self.latency.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
