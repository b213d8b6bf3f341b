"""Prometheus metrics of one app: requests, errors, latency per route, tokens, retrieval and routing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from .answer.chat import Reply

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Own registry per app, so several apps (tests, replicas in one process) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kongming_requests", "HTTP requests", ["method", "path", "status"], registry=r)
        self.request_latency = Histogram(
            "kongming_request_duration_seconds", "HTTP request latency (to the last byte of the body), per route",
            ["method", "path"], buckets=_LATENCY, registry=r,
        )
        self.in_flight = Gauge("kongming_requests_in_flight", "HTTP requests being served", registry=r)
        self.errors = Counter("kongming_errors", "errors returned, by OpenAI error type", ["type"], registry=r)
        self.routes = Counter("kongming_router_decisions", "chat turns per route", ["route", "forced"], registry=r)
        self.latency = Histogram(
            "kongming_chat_latency_seconds", "chat completion latency", ["route"], buckets=_LATENCY, registry=r
        )
        self.first_token = Histogram(
            "kongming_time_to_first_token_seconds", "streamed chat: time to the first token", ["route"],
            buckets=_LATENCY, registry=r,
        )
        self.tokens = Counter("kongming_tokens", "tokens (kind: prompt, completion)", ["route", "kind"], registry=r)
        self.retrieval = Histogram(
            "kongming_retrieval_latency_seconds", "retrieval latency", buckets=_LATENCY, registry=r
        )
        self.embedding = Histogram(
            "kongming_query_embedding_latency_seconds", "query embedding latency", buckets=_LATENCY, registry=r
        )
        self.routing = Histogram("kongming_router_latency_seconds", "routing decision latency", buckets=_LATENCY,
                                 registry=r)

    def observe_reply(self, reply: Reply) -> None:
        self.routes.labels(route=reply.decision.route, forced=str(reply.decision.forced).lower()).inc()
        if "retrieval_ms" in reply.timings:
            self.retrieval.observe(reply.timings["retrieval_ms"] / 1000)
        if "embed_ms" in reply.timings:
            self.embedding.observe(reply.timings["embed_ms"] / 1000)
        if "route_ms" in reply.timings:
            self.routing.observe(reply.timings["route_ms"] / 1000)

    def observe_done(self, reply: Reply, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
        route = reply.decision.route
        self.latency.labels(route=route).observe(seconds)
        self.tokens.labels(route=route, kind="prompt").inc(prompt_tokens)
        self.tokens.labels(route=route, kind="completion").inc(completion_tokens)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
