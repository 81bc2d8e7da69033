"""The gate every HTTP request passes first (a plain ASGI middleware, no per-request tasks).

In order: give the request an id (``X-Request-ID``, echoed on the response); refuse a request
that has both ``Transfer-Encoding`` and ``Content-Length`` (``400 bad_request``, connection
closed: RFC 9112 section 6.3); check the bearer token when one is configured (constant-time
compare; ``/health`` answers without it, with less detail); read the body up to
``EVALJAIL_MAX_BODY_MB`` (``413`` beyond, after draining what the client sends so that it can
read the answer) within ``EVALJAIL_READ_TIMEOUT_MS`` (``408 request_timeout`` otherwise, and
``503 not_ready`` when the server shuts down meanwhile); only then count the request in flight
(shutdown drains them; a stalled upload is not work); turn an unexpected exception into ``500
internal_error``, and a request cut off by the end of the graceful shutdown into ``503
not_ready``; log one structured line and record the latency metric.

:class:`Cors` is Starlette's CORS middleware with its preflight refusals in the same error shape.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import dumps, error_payload, error_response
from .metrics import ServiceMetrics

__all__ = ["SHUTDOWN_KEY", "Cors", "Gate", "GateState", "route_label"]

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
#: Set in a request's ``scope["state"]`` by the HTTP protocol (:mod:`.protocol`) when the server
#: shuts down while the request's body is arriving: the gate then answers ``503 not_ready``.
SHUTDOWN_KEY = "evaljail.shutting_down"
#: On a reply after which the connection cannot be reused (the rest of the request is unread).
_CLOSE = (b"connection", b"close")


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
        read_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self._state = state
        self._expected = f"Bearer {token}".encode() if token else None
        self._max_body = max_body_bytes
        self._read_timeout_s = read_timeout_s
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

        try:
            await self._handle(scope, receive, send_with_id, request_id, state)
        finally:
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
        if (
            _header(scope, b"transfer-encoding") is not None
            and _header(scope, b"content-length") is not None
        ):
            await _reply(
                send,
                400,
                "bad_request",
                "a request may not have both Transfer-Encoding and Content-Length",
                request_id,
                headers=[_CLOSE],
            )
            return
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
            body = await self._read_body(scope, receive, send, request_id, state)
            if body is None:
                return
            receive = _replay(body, receive)
        started = [False]

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        self._state.enter()
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs when its graceful shutdown times out, and would
            # answer a text/plain 500: say what happened instead, then let the task end.
            if not started[0]:
                await _reply(
                    send,
                    503,
                    "not_ready",
                    "the service shut down before this request finished",
                    request_id,
                    headers=[(b"retry-after", b"1"), _CLOSE],
                )
            raise
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
        finally:
            self._state.leave()

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, state: dict[str, Any]
    ) -> bytes | None:
        """The whole body, or None after answering 413/408/400/503 (or when the client went
        away).

        The body must arrive within the read timeout of the request's head: a client that
        stalls (or trickles a byte at a time) would otherwise hold its connection and what it
        sent so far for ever.
        """
        deadline = asyncio.get_running_loop().time() + self._read_timeout_s

        async def next_message() -> Message | None:
            """The next message; None once the deadline passed or the server is stopping."""
            if state.get(SHUTDOWN_KEY):
                return None
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return None
            return None if state.get(SHUTDOWN_KEY) else message

        declared = _header(scope, b"content-length")
        limit = self._max_body
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                await _reply(
                    send, 400, "bad_request", "bad Content-Length", request_id, headers=[_CLOSE]
                )
                return None
            if length > limit:
                # Drained (the connection stays usable) only if the rest is small enough to
                # read and drop, and the client is not waiting for "100 Continue" to send it
                # (the first receive() would invite the upload): otherwise 413 and close.
                expects = (_header(scope, b"expect") or b"").lower() == b"100-continue"
                drained = (
                    not expects and length <= limit + _DRAIN_BYTES and await _drain(next_message)
                )
                await self._too_large(send, request_id, state, drained=drained)
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await next_message()
            if message is None:
                await self._interrupted(send, request_id, state)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                drained = await _drain(next_message, budget=_DRAIN_BYTES)
                await self._too_large(send, request_id, state, drained=drained)
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _interrupted(self, send: Send, request_id: str, state: dict[str, Any]) -> None:
        """The body did not arrive in time, or the server is shutting down meanwhile."""
        if state.get(SHUTDOWN_KEY):
            await _reply(
                send,
                503,
                "not_ready",
                "the service is shutting down",
                request_id,
                headers=[(b"retry-after", b"1"), _CLOSE],
            )
            return
        timeout_ms = round(self._read_timeout_s * 1000)
        await _reply(
            send,
            408,
            "request_timeout",
            f"the request body did not arrive within {timeout_ms} ms (EVALJAIL_READ_TIMEOUT_MS)",
            request_id,
            details={"timeout_ms": timeout_ms},
            headers=[_CLOSE],
        )

    async def _too_large(
        self, send: Send, request_id: str, state: dict[str, Any], *, drained: bool
    ) -> None:
        """413; ``drained`` False: the rest of the body did not come in time (close, then)."""
        if state.get(SHUTDOWN_KEY):
            await self._interrupted(send, request_id, state)
            return
        await _reply(
            send,
            413,
            "request_too_large",
            f"the body exceeds the limit of {self._max_body} bytes (EVALJAIL_MAX_BODY_MB)",
            request_id,
            details={"limit_bytes": self._max_body},
            headers=None if drained else [_CLOSE],
        )


async def _drain(
    next_message: Callable[[], Awaitable[Message | None]], *, budget: int = _DRAIN_BYTES
) -> bool:
    """Read and drop up to ``budget`` more bytes of body; False if the deadline passed."""
    read = 0
    while read <= budget:
        message = await next_message()
        if message is None:
            return False
        if message["type"] != "http.request":
            return True
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return True


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


class Cors(CORSMiddleware):
    """Starlette's CORS middleware; a refused preflight is ``400 cors_rejected`` in the
    service's error shape (Starlette answers it in text/plain), with the same CORS headers."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers=request_headers)
        if response.status_code < 400:
            return response
        text = bytes(response.body).decode("latin-1")  # "Disallowed CORS origin, headers"
        refused = [part.strip() for part in text.removeprefix("Disallowed CORS ").split(",")]
        candidate = request_headers.get("x-request-id", "")
        request_id = candidate if _REQUEST_ID.fullmatch(candidate) else uuid.uuid4().hex
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-length", "content-type")
        }
        return error_response(
            response.status_code,
            "cors_rejected",
            f"CORS preflight refused: {', '.join(refused)} not allowed",
            request_id,
            details={"refused": refused},
            headers=headers | {"x-request-id": request_id},
        )
