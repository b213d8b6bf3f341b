"""Domain errors of the service, and the one function that turns any error into OpenAI's error shape."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ingest.errors import IngestError, StoreError, UnknownDocumentError, UnreadableFileError

from .protocol import ErrorDetail, ErrorResponse
from .validation import CONVERSATION, INVALID_TEXT, UNSUPPORTED

log = logging.getLogger(__name__)
INVALID = "invalid_request_error"
UNAVAILABLE = "service_unavailable"


class ServiceError(Exception):
    """An error a client should see: HTTP status plus the fields of OpenAI's error object. A subclass states its
    status, type and code in its class line (`class X(ServiceError, status=400, type=INVALID)`)."""

    status = 500
    type = "internal_error"
    code: str | None = None

    def __init_subclass__(cls, status: int = 0, type: str = "", code: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.status, cls.type, cls.code = status or cls.status, type or cls.type, code or cls.code

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers  # e.g. Retry-After of a 429
        if code is not None:
            self.code = code


# One line each: what a client sees (status, OpenAI type, code); the comment says when.
class BadRequest(ServiceError, status=400, type=INVALID): ...  # a request the service cannot take
class ContextTooLong(BadRequest, code="context_length_exceeded"): ...  # the prompt is over the model's window
class Unauthorized(ServiceError, status=401, type="authentication_error", code="invalid_api_key"): ...
class NotFound(ServiceError, status=404, type=INVALID, code="model_not_found"): ...  # model, document, path
class PayloadTooLarge(ServiceError, status=413, type=INVALID, code="request_too_large"): ...
class RateLimited(ServiceError, status=429, type="rate_limit_error", code="rate_limit_exceeded"): ...
class UpstreamError(ServiceError, status=502, type="upstream_error", code="bad_gateway"): ...  # it failed/broke off
class UpstreamUnavailable(UpstreamError, status=503, code="upstream_unavailable"): ...  # it cannot be reached
class UpstreamTimeout(UpstreamError, status=504, code="upstream_timeout"): ...
# a model that is configured but cannot be loaded here (missing files, no GPU for QLoRA...)
class EngineUnavailable(ServiceError, status=503, type=UNAVAILABLE, code="model_unavailable"): ...
# the knowledge base's store cannot be reached or written (Chroma server down, data folder read-only or full)
class KnowledgeBaseUnavailable(ServiceError, status=503, type=UNAVAILABLE, code="knowledge_base_unavailable"): ...


_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?!v1/)(?:[^\s/'\"]+/)+([^\s/'\":,;)]+)")  # not the API's routes (/v1/…)


def without_paths(message: str) -> str:
    """The message with every absolute server path shortened to its last part (URLs are left alone)."""
    return _ABS_PATH.sub(r"\1", message)


def as_service_error(exc: BaseException, request_id: str = "") -> ServiceError:
    """What a client should see for `exc`: a ServiceError as it is; the knowledge base's errors by kind (its
    store down 503, an unknown document 404, anything else it refuses 400 with its message); FastAPI's and
    Starlette's HTTP and validation errors; anything else a 500 naming the request id (logged with its trace)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, IngestError):
        return _ingest_error(exc)
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors())
    if isinstance(exc, HTTPException):  # an unknown path or method
        out = ServiceError(str(exc.detail), headers=dict(exc.headers or {}) or None)
        out.status, out.type = exc.status_code, "not_found_error" if exc.status_code == 404 else INVALID
        return out
    log.error("unhandled error (request %s)", request_id or "-", exc_info=exc)
    return ServiceError(f"internal error (request id {request_id or '-'})")


def _ingest_error(exc: IngestError) -> ServiceError:
    if isinstance(exc, StoreError):
        return KnowledgeBaseUnavailable(str(exc))
    if isinstance(exc, UnknownDocumentError):  # an API client lists documents with the API, not the CLI
        message = re.sub(r"see `ingest list --collection [^`]*`", "GET /v1/kb/documents lists them", str(exc))
        return NotFound(message, code="document_not_found")
    if isinstance(exc, UnreadableFileError):
        return BadRequest(f"{Path(exc.path).name}: {exc.reason}", param="files", code="unreadable_file")
    return BadRequest(str(exc))


def error_body(exc: BaseException, request_id: str = "") -> tuple[ServiceError, ErrorResponse]:
    """The one mapping to OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, without server paths."""
    err = as_service_error(exc, request_id)
    detail = ErrorDetail(message=without_paths(err.message), type=err.type, param=err.param, code=err.code)
    return err, ErrorResponse(error=detail)


def error_response(
    exc: BaseException, request_id: str = "", count: Callable[[str], None] | None = None
) -> JSONResponse:
    """The HTTP response for `exc`; `count` is told its OpenAI type (the error metric). A 500 carries the request
    id in a header too: it is sent from outside the access log's middleware."""
    err, body = error_body(exc, request_id)
    if count is not None:
        count(err.type)
    headers = err.headers if err.status != 500 or not request_id else {"x-request-id": request_id}
    return JSONResponse(body.model_dump(), status_code=err.status, headers=headers)


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|constrained-[a-z]+|[a-z-]+\[.*\])$")


def validation_error(errors: Sequence[Any]) -> BadRequest:
    """A 400 for the first problem pydantic found in a request, naming the field as OpenAI's `param` does."""
    def field(e: Any) -> list[str]:  # pydantic names the union member it tried (`content.str`): not a field
        return [str(p) for p in e.get("loc", ()) if p != "body" and not _UNION_TAG.match(str(p))]

    first: dict[str, Any] = dict(errors[0]) if errors else {}
    # of a union's errors for one field ("auto" or an integer up to 256), the one of a member other than a literal
    same = [dict(e) for e in errors if field(e) == field(first) and e.get("type") != "literal_error"]
    first = same[0] if first.get("type") == "literal_error" and same else first
    kind = first.get("type")
    loc = field(first)
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value"))
    if kind == "missing" and not loc:
        message = "a JSON body is required"
    elif kind == "json_invalid":  # its loc is the byte offset, not a field
        where = f" (at character {loc[0]})" if loc else ""
        message = f"the request body is not valid JSON{where}: " + str(first.get("ctx", {}).get("error", "parse error"))
        param = None
    elif kind in ("model_attributes_type", "dict_type") and not loc:  # curl -d without a JSON content type
        message = ("the request body must be a JSON object, sent with `Content-Type: application/json` "
                   "(curl: -H 'Content-Type: application/json')")
    elif kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind in (UNSUPPORTED, CONVERSATION):  # the request model's own refusals say everything themselves
        message = msg
    elif kind == INVALID_TEXT:  # raised for the whole body: the field is in its context
        message, param = msg, first.get("ctx", {}).get("param")
    else:
        message = f"{param or 'body'}: {msg}"
    return BadRequest(message, param=param)
