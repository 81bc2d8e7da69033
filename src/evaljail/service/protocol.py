"""The HTTP/1.1 protocol ``evaljail serve`` runs on: uvicorn's h11 protocol with the deadlines
uvicorn has no setting for, and errors in the service's own shape.

uvicorn bounds only the idle time *between* requests (``timeout_keep_alive``). This subclass
adds, per connection:

- a **read deadline for the request head** (``EVALJAIL_READ_TIMEOUT_MS``, from the connection
  opening, from the first byte of the next request, or, for a pipelined request whose first
  bytes came while the previous one was answered, from the end of that answer): a client that
  sends its request line and headers too slowly, or nothing at all, gets ``408
  request_timeout`` (a silent close when it sent nothing) instead of holding the connection for
  ever. The *body* deadline is the gate's
  (:mod:`.middleware`), so that it holds under any ASGI server;
- a **send deadline** (``EVALJAIL_SEND_TIMEOUT_MS``): when more than the transport's high-water
  mark (64 KiB) waits for a client that accepts none of it for that long, the connection is
  dropped. The application then sees a disconnect, which stops the work the request started, and
  the buffered response is freed;
- **parser errors as JSON**: what h11 refuses (bad framing, a malformed header, ...) is answered
  ``400 bad_request`` in the ``{"error": {...}}`` shape instead of uvicorn's text/plain;
- at **shutdown**, a request still receiving its body is woken up so that the gate answers it
  ``503 not_ready`` at once, instead of keeping the server up until the read deadline.

Each override calls uvicorn's own method (pinned in pyproject.toml); tests/service exercise
every one over a socket against ``evaljail serve``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import dumps, error_payload
from .middleware import SHUTDOWN_KEY

__all__ = ["http_protocol"]

_log = logging.getLogger("evaljail.service")


def http_protocol(*, read_timeout_s: float, send_timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, with these deadlines."""

    class EvaljailH11Protocol(_Protocol):
        _read_timeout_s = read_timeout_s
        _send_timeout_s = send_timeout_s

    return EvaljailH11Protocol


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete ``connection: close`` response, for when h11 has no request to answer."""
    request_id = uuid.uuid4().hex
    body = dumps(error_payload(code, message, request_id))
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nx-request-id: {request_id}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Protocol(H11Protocol):
    _read_timeout_s: float = 30.0
    _send_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # -- the request head's deadline ---------------------------------------------------------

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self._read_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self._between_requests():
            self._head_timer = self.loop.call_later(self._read_timeout_s, self._head_timed_out)
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle and self._head_timer is not None:  # a request's head came
            self._head_timer.cancel()
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Part of the next request's head may have come while this one was answered (pipelined
        # bytes are buffered, not seen by data_received as "between requests"): its deadline
        # starts now, or nothing but the keep-alive timeout would bound it.
        if (
            self._head_timer is None
            and self._between_requests()
            and not self.transport.is_closing()
            and self.conn.trailing_data[0]
        ):
            self._head_timer = self.loop.call_later(self._read_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._between_requests():
            return
        partial = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        _log.info(
            "request head not received in time; connection closed",
            extra={"timeout_ms": round(self._read_timeout_s * 1000), "partial": partial},
        )
        if partial:
            self.transport.write(
                _raw_response(
                    408,
                    "Request Timeout",
                    "request_timeout",
                    "the request line and headers did not arrive within "
                    f"{round(self._read_timeout_s * 1000)} ms (EVALJAIL_READ_TIMEOUT_MS)",
                )
            )
        self.transport.close()

    # -- the send deadline -------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self._send_timeout_s, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None
        request_id = None
        if self.cycle is not None:
            request_id = self.cycle.scope.get("state", {}).get("request_id")
        _log.warning(
            "client stopped reading; connection dropped",
            extra={
                "request_id": request_id,
                "timeout_ms": round(self._send_timeout_s * 1000),
                "buffered_bytes": self.transport.get_write_buffer_size(),
            },
        )
        self.transport.abort()  # frees the buffer; the application sees a disconnect

    # -- errors and shutdown -----------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """h11 refused the bytes (``msg`` is uvicorn's text, already logged)."""
        request_id = uuid.uuid4().hex
        body = dumps(
            error_payload(
                "bad_request",
                "the HTTP request is malformed (framing or headers); the connection is closed",
                request_id,
            )
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", request_id.encode()),
        ]
        try:
            for event in (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                output = self.conn.send(event)
                if output:
                    self.transport.write(output)
        except h11.LocalProtocolError:  # a response had begun: nothing more can be said
            pass
        self.transport.close()

    def shutdown(self) -> None:
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.more_body
            and not cycle.response_started
            and not cycle.response_complete
        ):
            state = cycle.scope.get("state")
            if isinstance(state, dict):
                state[SHUTDOWN_KEY] = True
                cycle.message_event.set()  # the gate, waiting for the body, answers 503
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._send_timer = None
        super().connection_lost(exc)
