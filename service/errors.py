"""Domain errors of the service, and the one place they become OpenAI-shaped error bodies."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error a client should see: HTTP status plus the fields of OpenAI's error object."""

    status = 500
    type = "internal_error"
    code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers  # e.g. Retry-After of a 429
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(ServiceError):
    status = 400
    type = "invalid_request_error"


class ContextTooLong(BadRequest):
    code = "context_length_exceeded"


class Unauthorized(ServiceError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ServiceError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(ServiceError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(ServiceError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(ServiceError):
    """The model server answered with an error or broke the connection."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class UpstreamUnavailable(UpstreamError):
    """The model server cannot be reached."""

    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class EngineUnavailable(ServiceError):
    """A model that is configured but cannot be loaded here (missing files, no GPU for QLoRA...)."""

    status = 503
    type = "service_unavailable"
    code = "model_unavailable"


class KnowledgeBaseUnavailable(ServiceError):
    """The knowledge base's store cannot be reached or written (Chroma server down, data folder read-only or full)."""

    status = 503
    type = "service_unavailable"
    code = "knowledge_base_unavailable"
