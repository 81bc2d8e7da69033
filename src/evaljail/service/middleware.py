"""The gate every HTTP request passes first (a plain ASGI middleware, no per-request tasks).

In order: give the request an id (``X-Request-ID``, echoed on the response); check the bearer
token when one is configured (constant-time compare; ``/health`` answers without it, with less
detail); read the body up to ``EVALJAIL_MAX_BODY_MB`` (``413`` beyond, after draining what the
client sends so that it can read the answer); count the request in flight (shutdown drains
them); turn an unexpected exception into ``500 internal_error``; log one structured line and
record the latency metric.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import dumps, error_payload
from .metrics import ServiceMetrics

__all__ = ["Gate", "GateState", "route_label"]

_log = logging.getLogger("evaljail.service")
_access = logging.getLogger("evaljail.service.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_METHODS = _BODY_METHODS | {"GET", "HEAD", "OPTIONS"}
#: Beyond the limit, this much more is read and discarded so the client can see the 413.
_DRAIN_BYTES = 64 * 1024 * 1024
_ROUTES = frozenset(
    {"/health", "/execute", "/execute/batch", "/check", "/metrics", "/docs", "/openapi.json"}
)
#: Routes answered without a token (with reduced detail).
_PUBLIC = frozenset({"/health"})


class GateState(Protocol):
    """What the gate needs from the service state."""

    @property
    def metrics(self) -> ServiceMetrics: ...

    def enter(self) -> None: ...

    def leave(self) -> None: ...


def route_label(path: str) -> str:
    """A bounded label for metrics and logs (never the raw path of an unknown URL)."""
    if path in _ROUTES:
        return path
    if path == "/sandboxes" or path.startswith("/sandboxes/"):
        return "/sandboxes"
    return "other"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class Gate:
    """See the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: GateState,
        token: str | None,
        max_body_bytes: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self._state = state
        self._expected = f"Bearer {token}".encode() if token else None
        self._max_body = max_body_bytes
        self._clock = clock
        # Request ids: a random per-process prefix and a counter (unique, and no syscall per
        # request as uuid4 would need).
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self._clock()
        raw_id = _header(scope, b"x-request-id")
        candidate = raw_id.decode("latin-1") if raw_id else ""
        if _REQUEST_ID.fullmatch(candidate):
            request_id = candidate
        else:
            request_id = f"{self._id_prefix}{next(self._ids):020x}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = [0]
        id_header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        self._state.enter()
        try:
            await self._handle(scope, receive, send_with_id, request_id, state)
        finally:
            self._state.leave()
            path = scope.get("path", "")
            route = route_label(path)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            elapsed = self._clock() - started
            self._state.metrics.observe_request(route, method, status[0], elapsed)
            if route != "/health" or status[0] != 200:
                _access.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "status": status[0],
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, state: dict[str, Any]
    ) -> None:
        if self._expected is not None:
            given = _header(scope, b"authorization") or b""
            authorized = hmac.compare_digest(given, self._expected)
            state["authenticated"] = authorized
            if not authorized and scope.get("path") not in _PUBLIC:
                await _reply(
                    send,
                    401,
                    "unauthorized",
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                    request_id,
                    headers=[(b"www-authenticate", b'Bearer realm="evaljail"')],
                )
                return
        else:
            state["authenticated"] = True
        if scope["method"] in _BODY_METHODS:
            body = await self._read_body(scope, receive, send, request_id)
            if body is None:
                return
            receive = _replay(body, receive)
        started = [False]

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            _log.error(
                "unhandled error",
                exc_info=exc,
                extra={"request_id": request_id, "error_type": type(exc).__name__},
            )
            if not started[0]:
                await _reply(
                    send,
                    500,
                    "internal_error",
                    "internal error; the server log has details under this request id",
                    request_id,
                )

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> bytes | None:
        """The whole body, or None after answering 413/400 (or when the client went away)."""
        declared = _header(scope, b"content-length")
        limit = self._max_body
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                await _reply(send, 400, "invalid_request", "bad Content-Length", request_id)
                return None
            if length > limit:
                if length <= limit + _DRAIN_BYTES:
                    await _drain(receive)
                await self._too_large(send, request_id)
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _drain(receive, budget=_DRAIN_BYTES)
                await self._too_large(send, request_id)
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send, request_id: str) -> None:
        await _reply(
            send,
            413,
            "request_too_large",
            f"the body exceeds the limit of {self._max_body} bytes (EVALJAIL_MAX_BODY_MB)",
            request_id,
            details={"limit_bytes": self._max_body},
        )


async def _drain(receive: Receive, *, budget: int = _DRAIN_BYTES) -> None:
    read = 0
    while read <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = [False]

    async def replay() -> Message:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    details: dict[str, Any] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = dumps(error_payload(code, message, request_id, details))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
