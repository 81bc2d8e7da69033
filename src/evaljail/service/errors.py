"""Every error the service returns, in one shape: ``{"error": {code, message, details,
request_id}}``.

- evaljail's own errors map through :func:`evaljail.errors.status_and_code`;
- request problems raise :class:`ApiError` with one of the service codes below;
- anything else is logged with its traceback and answered ``500 internal_error`` with no
  traceback and no exception text (a response never leaks server internals).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import EvaljailError, PoolError, SandboxLimitError, status_and_code

__all__ = [
    "SERVICE_ERROR_CODES",
    "ApiError",
    "dumps",
    "error_payload",
    "error_response",
    "install_error_handlers",
    "request_id_of",
]

_log = logging.getLogger("evaljail.service")

#: code -> (HTTP status, when it is used). docs/service.md mirrors this table.
SERVICE_ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the HTTP request itself is malformed (framing, headers)"),
    "cors_rejected": (400, "a CORS preflight asked for an origin, method or header not allowed"),
    "invalid_json": (400, "the body is not UTF-8 JSON"),
    "invalid_request": (422, "the JSON does not match the endpoint's schema"),
    "unauthorized": (401, "missing or wrong bearer token"),
    "not_found": (404, "no such endpoint"),
    "method_not_allowed": (405, "the endpoint exists, the method does not"),
    "request_timeout": (408, "the request's head or body did not arrive in time"),
    "request_too_large": (413, "the body exceeds EVALJAIL_MAX_BODY_MB"),
    "not_ready": (503, "starting, shutting down, or the backend is unhealthy"),
    "internal_error": (500, "a bug: logged with the request id"),
}

_HTTP_CODES = {
    400: "invalid_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
}
_HTTP_CODES |= {413: "request_too_large", 422: "invalid_request", 503: "not_ready"}


class ApiError(Exception):
    """A request the service refuses, with its status and stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})


def dumps(payload: Any) -> bytes:
    """Compact JSON as UTF-8; text that cannot be UTF-8 (lone surrogates) is \\u-escaped."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def request_id_of(request: Request) -> str:
    """The id the gate middleware gave this request (a fresh one if it ran without it)."""
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else uuid.uuid4().hex


def error_payload(
    code: str, message: str, request_id: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": dict(details or {}),
            "request_id": request_id,
        }
    }


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        dumps(error_payload(code, message, request_id, details)),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def _safe_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details that survive JSON encoding (anything odd becomes its string form)."""
    try:
        json.dumps(details)
    except (TypeError, ValueError):
        return {
            str(k): v if isinstance(v, int | float | bool | str) else str(v)
            for k, v in details.items()
        }
    return dict(details)


def evaljail_error_response(exc: EvaljailError, request_id: str) -> Response:
    """The response for one of evaljail's own errors (queue full -> 503 + Retry-After ...)."""
    status, code = status_and_code(exc)
    busy = isinstance(exc, SandboxLimitError) and exc.details.get("limit") == "max_running_commands"
    headers = {"Retry-After": "1"} if isinstance(exc, PoolError) or busy else None
    if status >= 500:
        _log.warning(
            "request failed",
            extra={"request_id": request_id, "error_code": code, "error_type": type(exc).__name__},
        )
    return error_response(
        status, code, exc.message, request_id, details=_safe_details(exc.details), headers=headers
    )


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        request_id_of(request),
        details=exc.details,
        headers=exc.headers,
    )


async def _on_evaljail_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EvaljailError)
    return evaljail_error_response(exc, request_id_of(request))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no endpoint at {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers or {})
    return error_response(exc.status_code, code, message, request_id_of(request), headers=headers)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    errors: Any = getattr(exc, "errors", list)()
    if any(isinstance(e, Mapping) and e.get("type") == "json_invalid" for e in errors):
        return error_response(
            400, "invalid_json", "the body is not valid JSON", request_id_of(request)
        )
    return error_response(
        422,
        "invalid_request",
        "the request does not match the schema",
        request_id_of(request),
        details={"errors": clean_validation_errors(errors)},
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    rid = request_id_of(request)
    _log.error(
        "unhandled error",
        exc_info=exc,
        extra={"request_id": rid, "error_type": type(exc).__name__, "path": request.url.path},
    )
    return error_response(
        500, "internal_error", "internal error; the server log has details under this id", rid
    )


def clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors without the offending input (which may be the submitted code)."""
    cleaned: list[dict[str, Any]] = []
    for err in list(errors)[:50]:
        if not isinstance(err, Mapping):
            continue
        cleaned.append(
            {
                "loc": [p if isinstance(p, int | str) else str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return cleaned


def install_error_handlers(app: Any) -> None:
    """Register every handler on a FastAPI/Starlette ``app``."""
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(EvaljailError, _on_evaljail_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
