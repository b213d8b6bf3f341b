"""Engine that forwards chat completions to an OpenAI-compatible server (vLLM in production) over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, ContextTooLong, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .base import Completion, Delta, Message, SamplingParams
from .script import is_chinese

if TYPE_CHECKING:
    import aiohttp

# A stream is one JSON event per token: orjson parses them several times faster than json.
from orjson import loads as _loads

log = logging.getLogger(__name__)

# How vLLM (and OpenAI) word a prompt that does not fit: "This model's maximum context length is ...",
# "... is longer than the maximum model length of ...".
_CONTEXT_MESSAGE = re.compile(r"maximum context length|maximum model length|context length", re.I)
_BACKOFF = 0.1  # seconds, doubled per attempt


class OpenAICompatibleEngine:
    """Chat completions from `{base_url}/chat/completions` (base_url ends in /v1, as with the openai client).

    One pooled, keep-alive aiohttp session (per event loop) serves all requests; aiohttp hands a stream's body
    over as whatever has arrived, so tokens that queue while this process is busy (many streams, fast model) are
    parsed and forwarded in one go instead of one read each (the benchmark in BENCHMARKS.md shows the cost of
    the per-token reads of an httpx client). Failures before any response byte (refused connection, a pooled
    connection the server had closed) are retried `retries` times with a short backoff; nothing is re-sent once
    the upstream has answered. `timeout` bounds the wait for each read, `connect_timeout` the connection. Closing
    a stream (the service's client went away) drops the upstream connection, which makes vLLM abort the request.
    With `script_ids`, a `keep_script` reply to a Chinese conversation is sent vLLM's `allowed_token_ids` (the
    ~31k of gemma-3's 262k tokens a Chinese reply is written with; OpenAI's logit_bias takes 300 at most).
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
        script_ids: Callable[[], list[int]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.script_ids = script_ids  # the ids a Chinese reply may say (script.allowed_token_ids), for keep_script
        self._allowed_ids: list[int] | None = None
        self.model = model
        self.name = name or model
        self.retries = max(0, retries)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._url = f"{self.base_url}/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            import aiohttp

            self._session = aiohttp.ClientSession(
                # Benchmarks run 32+ concurrent streams; each holds a connection for its whole length.
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60.0),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=self.timeout),
                headers=self._headers,
                auto_decompress=False,
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def _allowed(self, messages: list[Message], params: SamplingParams) -> list[int] | None:
        """The token ids a reply may say (vLLM's allowed_token_ids), None for any: `script_ids` called once, in a
        thread (a few seconds for 262k tokens); when it fails the replies go unconstrained (logged once)."""
        if not (params.keep_script and self.script_ids and is_chinese(messages)):
            return None
        if self._allowed_ids is None:
            try:
                self._allowed_ids = await asyncio.to_thread(self.script_ids)
            except Exception as exc:  # no tokenizer here (an offline GPU host): answer without the control
                log.warning("%s: keep_script off, the served model's tokenizer cannot be read: %r", self.name, exc)
                self._allowed_ids = []
        return self._allowed_ids or None

    async def _post(self, messages: list[Message], params: SamplingParams, stream: bool) -> Any:
        """Send the request; when the server refuses its allowed_token_ids (it serves a model whose vocabulary is not
        the persona base's: vLLM's "allowed_token_ids contains out-of-vocab token id"), keep_script goes off for this
        engine (logged) and the request is sent again without them."""
        allowed = await self._allowed(messages, params)
        try:
            return await self._send(self._body(messages, params, stream, allowed))
        except BadRequest as exc:
            if allowed is None or "allowed_token_ids" not in str(exc):
                raise
            log.warning("%s: keep_script off, the model server refused the persona base's token ids: %s", self.name,
                        exc)
            self._allowed_ids = []
            return await self._send(self._body(messages, params, stream))

    def _body(self, messages: list[Message], params: SamplingParams, stream: bool,
              allowed: list[int] | None = None) -> dict[str, Any]:
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
        if allowed is not None:  # vLLM's extra sampling parameter
            body["allowed_token_ids"] = allowed
        if params.repetition_penalty is not None:  # vLLM's extra sampling parameter (no n-gram ban there)
            body["repetition_penalty"] = params.repetition_penalty
        for key in ("frequency_penalty", "presence_penalty"):
            if getattr(params, key) is not None:
                body[key] = getattr(params, key)
        for key in ("tools", "tool_choice", "parallel_tool_calls", "response_format"):  # passed through as asked
            if getattr(params, key) is not None:
                body[key] = getattr(params, key)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def _send(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST and return the response with its headers read (body not yet read); error statuses raised."""
        import aiohttp

        data = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        attempt = 0
        while True:
            try:
                response = await self._client().post(self._url, data=data, headers=headers)
                break
            except TimeoutError as exc:
                raise UpstreamTimeout(f"model server at {self.base_url} did not answer in time ({exc!r})") from exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                # Nothing of the response has arrived: a refused connection, or a kept-alive one the server had
                # closed. Safe to send again.
                if attempt >= self.retries:
                    if isinstance(exc, aiohttp.ClientConnectorError):
                        raise UpstreamUnavailable(f"cannot connect to model server at {self.base_url}: {exc}") from exc
                    raise UpstreamError(f"model server at {self.base_url} closed the connection: {exc!r}") from exc
                delay = _BACKOFF * 2**attempt
                attempt += 1
                log.warning("model server %s: %r; retry %d/%d in %.2fs", self.base_url, exc, attempt, self.retries,
                            delay)
                await asyncio.sleep(delay)
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"request to model server at {self.base_url} failed: {exc!r}") from exc
        if response.status >= 400:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            finally:
                response.release()
            raise _status_error(response.status, raw, response.reason or "")
        return response

    async def load_lora_adapter(self, lora_name: str, lora_path: str) -> None:
        """Register a LoRA adapter with vLLM (`POST /v1/load_lora_adapter`: the server runs with --enable-lora and
        VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and `lora_path` is a folder on the server's own disk); it is then
        served as the model `lora_name`. An adapter already loaded under that name counts as loaded (another
        replica, or before a restart of this service). UpstreamError: the server refused it."""
        status, message = await self._admin("load_lora_adapter", {"lora_name": lora_name, "lora_path": lora_path})
        if status == 400 and "already been loaded" in message:
            return
        if status >= 400:
            hint = ""
            if status == 404:
                hint = " (is it started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)"
            raise UpstreamError(f"model server did not load adapter {lora_name!r} ({status}): {message}{hint}")

    async def unload_lora_adapter(self, lora_name: str) -> bool:
        """Drop a runtime-loaded adapter (`POST /v1/unload_lora_adapter`); False when the server did not have it."""
        status, message = await self._admin("unload_lora_adapter", {"lora_name": lora_name})
        if status == 404 and "cannot be found" in message:
            return False
        if status >= 400:
            raise UpstreamError(f"model server did not unload adapter {lora_name!r} ({status}): {message}")
        return True

    async def _admin(self, endpoint: str, body: dict[str, Any]) -> tuple[int, str]:
        """POST `body` to `{base_url}/{endpoint}`; (status, the error message or the text of the answer)."""
        import aiohttp

        try:
            async with self._client().post(f"{self.base_url}/{endpoint}", json=body) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model server at {self.base_url} did not answer {endpoint} in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(f"cannot connect to model server at {self.base_url}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{endpoint} at model server {self.base_url} failed: {exc!r}") from exc
        try:
            message = _error_message(json.loads(raw)) if status >= 400 else raw.decode("utf-8", "replace")
        except ValueError:
            message = raw[:500].decode("utf-8", "replace")
        return status, message

    async def generate(self, messages: list[Message], params: SamplingParams) -> Completion:
        import aiohttp

        response = await self._post(messages, params, stream=False)
        try:
            raw = await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model server at {self.base_url} did not finish in time ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"model server at {self.base_url} broke off its answer: {exc!r}") from exc
        finally:
            response.release()
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
                tool_calls=choice["message"].get("tool_calls") or None,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"model server at {self.base_url} sent a malformed completion: {raw[:200]!r}") from exc

    async def stream(self, messages: list[Message], params: SamplingParams) -> AsyncGenerator[Delta, None]:
        import aiohttp

        response = await self._post(messages, params, stream=True)
        finish: str | None = None
        usage: dict[str, Any] | None = None
        done = False
        buffer = b""
        try:
            # iter_any: everything that has arrived, in one piece (not one HTTP chunk at a time)
            async for chunk in response.content.iter_any():
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                # Every token that arrived in this read goes out as one delta: when the upstream is faster than
                # this process, tokens queue in the socket and are forwarded in one write instead of one each;
                # when it is slower, a read holds one token and nothing waits.
                pieces: list[str] = []
                calls: list[dict[str, Any]] = []
                for line in lines:
                    # SSE: only `data:` lines matter here (blank separators, comments and event names do not).
                    if not line.startswith(b"data:") or done:
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    try:
                        event = _loads(payload)
                        if "error" in event:
                            raise UpstreamError(f"model server error mid-stream: {_error_message(event)}")
                        if event.get("usage"):
                            usage = event["usage"]
                        for choice in event.get("choices") or ():
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                pieces.append(content)
                            calls += (choice.get("delta") or {}).get("tool_calls") or ()
                            if choice.get("finish_reason"):
                                finish = choice["finish_reason"]
                    except (ValueError, TypeError, AttributeError) as exc:
                        raise UpstreamError(
                            f"model server at {self.base_url} sent a malformed stream event: {payload[:200]!r}"
                        ) from exc
                if pieces or calls:
                    yield Delta(text="".join(pieces), tool_calls=calls or None)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"model server at {self.base_url} stalled mid-stream ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"model server at {self.base_url} broke off the stream: {exc!r}") from exc
        finally:
            # Read to the end: the connection goes back to the pool. Stopped early (our consumer went away, or
            # an error): the connection is dropped, which is how vLLM learns the client is gone and aborts.
            if response.content.at_eof():
                response.release()
            else:
                response.close()
                await asyncio.sleep(0)  # the transport closes on the loop's next turn: let it happen now
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


def _status_error(status: int, raw: bytes, reason: str) -> Exception:
    try:
        message, param = _error_fields(json.loads(raw))
    except ValueError:
        message, param = raw[:500].decode("utf-8", "replace") or reason, None
    if status == 400 and param != "max_tokens" and _CONTEXT_MESSAGE.search(message):
        return ContextTooLong(message, param="messages")
    if status in (401, 403, 404):
        # A wrong key for the upstream or a served-model name it does not know: our deployment's fault, not the
        # caller's (the service chose the upstream model name).
        return UpstreamError(f"model server refused the request ({status}): {message}")
    if status < 500:
        return BadRequest(message, param=param)
    return UpstreamError(f"model server error ({status}): {message}")
