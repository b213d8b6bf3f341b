"""Observability: one JSON access-log line per request (request id, route, latency, tokens), Prometheus metrics
read from /metrics, and a Grafana dashboard whose every metric exists."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from service.logs import JsonFormatter, configure_logging
from service.settings import REPO_ROOT

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "孔明向鲁肃借了多少只船？"}]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "kongming.json"


@contextmanager
def access_log() -> Iterator[list[dict]]:
    """The access log's lines as the JSON formatter writes them, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("kongming.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines())


def test_access_log_is_one_json_line_per_request_with_id_route_latency_and_tokens(make_client):
    client = make_client(api_keys=["sk-log-test"])
    auth = {"authorization": "Bearer sk-log-test"}
    with access_log() as lines:
        r = client.post("/v1/chat/completions", headers={**auth, "x-request-id": "req-42"},
                        json={"model": "kongming-rag", "messages": QUESTION})
        s = client.post("/v1/chat/completions", headers=auth,
                        json={"model": "kongming-persona-zhuge-liang", "messages": QUESTION, "stream": True})
        client.get("/v1/models/nope", headers={**auth, "x-request-id": "bad id\nwith newline"})
        client.get("/v1/models")  # no key: 401
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    assert s.status_code == 200 and re.fullmatch(r"[0-9a-f]{16}", s.headers["x-request-id"])
    assert len(lines) == 4
    rag, stream, missing, unauthorized = lines
    assert rag["request_id"] == "req-42" and rag["logger"] == "kongming.access" and rag["level"] == "info"
    assert (rag["method"], rag["path"], rag["route_path"], rag["status"], rag["route"]) == (
        "POST", "/v1/chat/completions", "/v1/chat/completions", 200, "rag")
    usage = r.json()["usage"]
    assert (rag["prompt_tokens"], rag["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert rag["ms"] > 0 and rag["key_id"].startswith("settings:") and "sk-log-test" not in json.dumps(lines)
    # a stream is logged when its last byte has gone, with the tokens counted from it
    assert stream["route"] == "persona" and stream["request_id"] == s.headers["x-request-id"]
    assert stream["completion_tokens"] > 0
    assert (missing["route_path"], missing["status"]) == ("/v1/models/{model_id:path}", 404)
    assert "\n" not in missing["request_id"] and missing["request_id"] != "bad id\nwith newline"
    assert unauthorized["status"] == 401 and unauthorized["key_id"] is None and "prompt_tokens" not in unauthorized


def test_serve_logging_is_json_on_stderr(capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json", "INFO")
        logging.getLogger("kongming.access").info("GET /health 200", extra={"fields": {"status": 200}})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("service.x").exception("failed")
        configure_logging("text", "WARNING")
        logging.getLogger("kongming.access").info("hidden at WARNING")
        logging.getLogger("service.x").warning("plain", extra={"fields": {"a": 1}})
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    err = capsys.readouterr().err.splitlines()
    first = json.loads(err[0])
    assert first["msg"] == "GET /health 200" and first["status"] == 200 and first["ts"].endswith("+00:00")
    second = json.loads(err[1])
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]
    rest = "\n".join(err[2:])
    assert "hidden" not in rest and "plain a=1" in rest


def metrics_samples(client) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def exercise(client) -> None:
    """Traffic of every kind: routed, forced, streamed, refused, unknown route, oversized."""
    client.post("/v1/chat/completions", json={"model": "kongming", "messages": QUESTION})
    client.post("/v1/chat/completions", json={"model": "kongming-rag", "messages": QUESTION})
    client.post("/v1/chat/completions", json={"model": "kongming-rag", "messages": QUESTION, "stream": True})
    client.post("/v1/chat/completions", json={"model": "kongming-persona-zhuge-liang", "messages": QUESTION,
                                              "stream": True})
    client.post("/v1/chat/completions", json={"model": "kongming", "messages": []})
    client.get("/v1/models/nope")
    client.get("/v1/nowhere")
    client.post("/v1/chat/completions", content=b"x" * 5000, headers={"content-type": "application/json"})
    client.request("FROBNICATE", "/health")  # any method token reaches the app


def test_metrics_cover_requests_errors_latency_tokens_retrieval_and_routing(make_client):
    client = make_client(max_request_bytes=4096)
    exercise(client)
    m = metrics_samples(client)
    chat = {"path": "/v1/chat/completions"}
    assert value(m, "kongming_requests_total", method="POST", status="200", **chat) == 4
    assert value(m, "kongming_requests_total", status="400", **chat) == 1
    assert value(m, "kongming_requests_total", path="/v1/models/{model_id:path}", status="404") == 1  # template
    assert value(m, "kongming_requests_total", path="unmatched", status="404") == 1
    assert value(m, "kongming_requests_total", path="unmatched", status="413") == 1  # refused before routing
    assert value(m, "kongming_request_duration_seconds_count", method="POST", **chat) == 5
    assert value(m, "kongming_request_duration_seconds_sum", method="POST", **chat) > 0
    assert value(m, "kongming_errors_total", type="invalid_request_error") >= 3  # empty messages, 404 model, 413
    assert value(m, "kongming_errors_total", type="not_found_error") == 1
    assert value(m, "kongming_router_decisions_total", forced="false") == 1
    assert value(m, "kongming_router_decisions_total", route="rag", forced="true") == 2
    assert value(m, "kongming_router_decisions_total", route="persona", forced="true") == 1
    assert value(m, "kongming_router_latency_seconds_count") == 1  # only the routed request asks the router
    assert value(m, "kongming_retrieval_latency_seconds_count") >= 2
    assert value(m, "kongming_query_embedding_latency_seconds_count") >= 2
    assert value(m, "kongming_chat_latency_seconds_count", route="rag") >= 2
    assert value(m, "kongming_time_to_first_token_seconds_count") == 2
    assert value(m, "kongming_tokens_total", route="rag", kind="completion") > 0
    assert value(m, "kongming_tokens_total", route="persona", kind="completion") > 0
    assert value(m, "kongming_requests_in_flight") == 1  # the scrape itself
    assert value(m, "kongming_requests_total", method="other", path="/health", status="405") == 1  # bounded labels


def test_grafana_dashboard_uses_only_metrics_that_exist(make_client):
    """Every metric an expression of the dashboard names is in /metrics (after traffic of every kind), and every
    label it groups or filters by is a label of that metric."""
    from prometheus_client.parser import text_string_to_metric_families

    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["title"] == "kongming" and dash["__inputs"][0]["pluginId"] == "prometheus"
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 12 and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    client = make_client(max_request_bytes=4096)
    exercise(client)
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"],
                    "gauge": [""]}[family.type]
        for suffix in suffixes:
            labels[family.name + suffix] = {k for s in family.samples for k in s.labels}
    used = set()
    for expr in exprs:
        for name in re.findall(r"\bkongming_[a-z_]+", expr):
            used.add(name)
            assert name in labels, f"{name} (in {expr!r}) is not exported: {sorted(labels)}"
            for group in re.findall(r"by \(([^)]*)\)", expr):
                for label in (g.strip() for g in group.split(",")):
                    assert label == "le" or label in labels[name], (label, name, expr)
            for matcher in re.findall(name + r"\{([^}]*)\}", expr):
                for label in re.findall(r"(\w+)\s*=~?", matcher):
                    assert label in labels[name], (label, name, expr)
    metric_families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used}
    assert {"kongming_requests", "kongming_errors", "kongming_request_duration_seconds", "kongming_tokens",
            "kongming_retrieval_latency_seconds", "kongming_router_decisions"} <= metric_families
