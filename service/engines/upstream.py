"""Engine that forwards chat completions to an OpenAI-compatible server (vLLM in production) over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from ..errors import BadRequest, ContextTooLong, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .base import Completion, Delta, Message, SamplingParams

log = logging.getLogger(__name__)

# How vLLM (and OpenAI) word a prompt that does not fit: "This model's maximum context length is ...",
# "... is longer than the maximum model length of ...".
_CONTEXT_MESSAGE = re.compile(r"maximum context length|maximum model length|context length", re.I)
# Failures that happen before the upstream has sent a single byte of the response: safe to send again.
_RETRYABLE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_BACKOFF = 0.1  # seconds, doubled per attempt


class OpenAICompatibleEngine:
    """Chat completions from `{base_url}/chat/completions` (base_url ends in /v1, as with the openai client).

    One pooled, keep-alive httpx client serves all requests. Connection failures before any response byte are
    retried `retries` times with a short backoff; nothing is re-sent once the upstream has answered. Closing a
    stream (the service's client went away) closes the upstream connection, which makes vLLM abort the request.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        name: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name or model
        self.retries = max(0, retries)
        self._url = f"{self.base_url}/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            # Benchmarks run 32+ concurrent streams; each holds a connection for its whole length.
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=128, keepalive_expiry=60.0),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _body(self, messages: list[Message], params: SamplingParams, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def _send(self, body: dict[str, Any]) -> httpx.Response:
        """POST and return the response with its headers read (body not yet read); error statuses raised."""
        request = self._client.build_request("POST", self._url, json=body, headers=self._headers)
        attempt = 0
        while True:
            try:
                response = await self._client.send(request, stream=True)
                break
            except httpx.TimeoutException as exc:
                raise UpstreamTimeout(f"model server at {self.base_url} did not answer in time ({exc!r})") from exc
            except _RETRYABLE as exc:
                if attempt >= self.retries:
                    if isinstance(exc, httpx.ConnectError):
                        raise UpstreamUnavailable(f"cannot connect to model server at {self.base_url}: {exc}") from exc
                    raise UpstreamError(f"model server at {self.base_url} closed the connection: {exc!r}") from exc
                delay = _BACKOFF * 2**attempt
                attempt += 1
                log.warning("model server %s: %r; retry %d/%d in %.2fs", self.base_url, exc, attempt, self.retries,
                            delay)
                await asyncio.sleep(delay)
            except httpx.HTTPError as exc:
                raise UpstreamError(f"request to model server at {self.base_url} failed: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                await response.aread()
            except httpx.HTTPError:
                pass
            finally:
                await response.aclose()
            raise _status_error(response)
        return response

    async def generate(self, messages: list[Message], params: SamplingParams) -> Completion:
        response = await self._send(self._body(messages, params, stream=False))
        try:
            raw = await response.aread()
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"model server at {self.base_url} did not finish in time ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"model server at {self.base_url} broke off its answer: {exc!r}") from exc
        finally:
            await response.aclose()
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
            return Completion(
                text=text,
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"model server at {self.base_url} sent a malformed completion: {raw[:200]!r}") from exc

    async def stream(self, messages: list[Message], params: SamplingParams) -> AsyncGenerator[Delta, None]:
        response = await self._send(self._body(messages, params, stream=True))
        finish: str | None = None
        usage: dict[str, Any] | None = None
        done = False
        buffer = b""
        try:
            async for chunk in response.aiter_bytes():
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    # SSE: only `data:` lines matter here (blank separators, comments and event names do not).
                    if not line.startswith(b"data:") or done:
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        # Read on to the end of the body, so the connection goes back to the pool.
                        done = True
                        continue
                    try:
                        event = json.loads(payload)
                        if "error" in event:
                            raise UpstreamError(f"model server error mid-stream: {_error_message(event)}")
                        if event.get("usage"):
                            usage = event["usage"]
                        for choice in event.get("choices") or ():
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                yield Delta(text=content)
                            if choice.get("finish_reason"):
                                finish = choice["finish_reason"]
                    except (ValueError, TypeError, AttributeError) as exc:
                        raise UpstreamError(
                            f"model server at {self.base_url} sent a malformed stream event: {payload[:200]!r}"
                        ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"model server at {self.base_url} stalled mid-stream ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"model server at {self.base_url} broke off the stream: {exc!r}") from exc
        finally:
            # Also runs when our consumer stops early: closing an unfinished response drops the connection,
            # which is how vLLM learns that the client is gone and aborts the generation.
            await response.aclose()
        if not done and finish is None:
            raise UpstreamError(f"model server at {self.base_url} ended the stream before the completion finished")
        usage = usage or {}
        yield Delta(
            finish_reason=finish or "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )


def _error_fields(data: Any) -> tuple[str, str | None]:
    """(message, param) of an OpenAI-style (`{"error": {...}}`), older-vLLM (`{"message"}`) or FastAPI error body."""
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            param = err.get("param")
            return str(err["message"]), str(param) if param else None
        if isinstance(err, str):
            return err, None
        for key in ("message", "detail"):
            if data.get(key):
                return str(data[key]), None
    return str(data), None


def _error_message(data: Any) -> str:
    return _error_fields(data)[0]


def _status_error(response: httpx.Response) -> Exception:
    try:
        message, param = _error_fields(json.loads(response.content))
    except ValueError:
        message, param = response.text[:500] or response.reason_phrase, None
    status = response.status_code
    if status == 400 and param != "max_tokens" and _CONTEXT_MESSAGE.search(message):
        return ContextTooLong(message, param="messages")
    if status in (401, 403, 404):
        # A wrong key for the upstream or a served-model name it does not know: our deployment's fault, not the
        # caller's (the service chose the upstream model name).
        return UpstreamError(f"model server refused the request ({status}): {message}")
    if status < 500:
        return BadRequest(message, param=param)
    return UpstreamError(f"model server error ({status}): {message}")
