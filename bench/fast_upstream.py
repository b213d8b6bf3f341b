"""Benchmark helper: a fast fake OpenAI-compatible server, so that the cost of what sits in front of it shows.

    python bench/fast_upstream.py --port 8101 --tokens 64 --delay-ms 0

`POST /v1/chat/completions` answers streamed (SSE, one event per token, usage in a last chunk when
`stream_options.include_usage`) or not, with `min(tokens, max_tokens)` tokens; `GET /v1/models`, `GET /health`;
`POST /_config {"tokens": 64, "delay_ms": 2, "ttft_ms": 0}` changes the shape of later answers at run time, so one
server (and the service pointed at it) can be measured at several token rates.

A raw ASGI app on uvicorn with uvloop + httptools; every response byte string is built once per shape and cached,
so a request costs one JSON parse plus the writes. Timing of a stream: the role chunk and the first token go out
after `ttft_ms` (as vLLM sends them together), then one token every `delay_ms`, then finish/usage/[DONE] at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover
    loads = json.loads

# 2-3 character pieces of Chinese, as a BPE tokenizer splits 诸葛亮's lines
_WORDS = ["臣本", "布衣", "，躬", "耕于", "南阳", "，苟", "全性", "命于", "乱世", "，不", "求闻", "达于", "诸侯", "。"]
_ID = "chatcmpl-fakeupstream0000000000000000"
_CREATED = 1_700_000_000
NOT_FOUND = b'{"error":{"message":"not found","type":"not_found_error","param":null,"code":null}}'


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class Shapes:
    """Precomputed bodies per (tokens, model, include_usage)."""

    def __init__(self) -> None:
        self._plain: dict[tuple[int, str, bool], bytes] = {}
        self._stream: dict[tuple[int, str, bool, bool], list[bytes]] = {}

    @staticmethod
    def tokens(n: int) -> list[str]:
        return [_WORDS[i % len(_WORDS)] for i in range(n)]

    def plain(self, n: int, model: str, length: bool) -> bytes:
        key = (n, model, length)
        body = self._plain.get(key)
        if body is None:
            body = _dumps({
                "id": _ID, "object": "chat.completion", "created": _CREATED, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.tokens(n))},
                             "finish_reason": "length" if length else "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 42, "completion_tokens": n, "total_tokens": 42 + n},
            })
            self._plain[key] = body
        return body

    def stream(self, n: int, model: str, length: bool, usage: bool) -> list[bytes]:
        """[role+first token, token 2, ..., token n, finish (+usage) + [DONE]]: one write each."""
        key = (n, model, length, usage)
        events = self._stream.get(key)
        if events is None:
            head = {"id": _ID, "object": "chat.completion.chunk", "created": _CREATED, "model": model}

            def ev(delta: dict[str, str], finish: str | None = None) -> bytes:
                chunk = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
                return b"data: " + _dumps(chunk) + b"\n\n"

            toks = [ev({"content": t}) for t in self.tokens(n)]
            role = ev({"role": "assistant", "content": ""})
            tail = ev({}, "length" if length else "stop")
            if usage:
                tail += b"data: " + _dumps({**head, "choices": [], "usage": {
                    "prompt_tokens": 42, "completion_tokens": n, "total_tokens": 42 + n}}) + b"\n\n"
            tail += b"data: [DONE]\n\n"
            events = [role + (toks[0] if toks else b""), *toks[1:], tail]
            self._stream[key] = events
        return events


class FastUpstream:
    def __init__(self, tokens: int = 64, delay_ms: float = 0.0, ttft_ms: float = 0.0) -> None:
        self.tokens = tokens
        self.delay = delay_ms / 1000
        self.ttft = ttft_ms / 1000
        self.shapes = Shapes()
        self.served = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "POST" and path.endswith("/chat/completions"):
            await self._chat(await _body(receive), send)
        elif method == "GET" and path in ("/health", "/v1/models"):
            data = {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "bench"}]}
            await _json(send, 200, _dumps(data))
        elif method == "POST" and path == "/_config":
            cfg = loads(await _body(receive) or b"{}")
            self.tokens = int(cfg.get("tokens", self.tokens))
            self.delay = float(cfg.get("delay_ms", self.delay * 1000)) / 1000
            self.ttft = float(cfg.get("ttft_ms", self.ttft * 1000)) / 1000
            await _json(send, 200, _dumps(self.config()))
        elif method == "GET" and path == "/_config":
            await _json(send, 200, _dumps(self.config()))
        else:
            await _json(send, 404, NOT_FOUND)

    def config(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "delay_ms": self.delay * 1000, "ttft_ms": self.ttft * 1000,
                "served": self.served}

    async def _chat(self, raw: bytes, send: Any) -> None:
        try:
            req = loads(raw)
            model = str(req["model"])
            limit = req.get("max_tokens") or req.get("max_completion_tokens")
        except (ValueError, KeyError, TypeError):
            await _json(send, 400, b'{"error":{"message":"bad request","type":"invalid_request_error",'
                                   b'"param":null,"code":null}}')
            return
        n = min(self.tokens, int(limit)) if limit else self.tokens
        length = n < self.tokens
        self.served += 1
        if not req.get("stream"):
            if self.ttft or self.delay:
                await asyncio.sleep(self.ttft + self.delay * max(n - 1, 0))
            await _json(send, 200, self.shapes.plain(n, model, length))
            return
        usage = bool((req.get("stream_options") or {}).get("include_usage"))
        events = self.shapes.stream(n, model, length, usage)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        if self.ttft:
            await asyncio.sleep(self.ttft)
        last = len(events) - 1
        for i, event in enumerate(events):
            if 0 < i < last and self.delay:
                await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": event, "more_body": i < last})


async def _body(receive: Any) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


async def _json(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8101)
    p.add_argument("--tokens", type=int, default=64, help="tokens per answer (capped by the request's max_tokens)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="pause between tokens of a stream")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="pause before the first token")
    args = p.parse_args()
    import uvicorn

    app = FastUpstream(args.tokens, args.delay_ms, args.ttft_ms)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", lifespan="on",
                log_level="warning", access_log=False, server_header=False, date_header=False)


if __name__ == "__main__":
    main()
