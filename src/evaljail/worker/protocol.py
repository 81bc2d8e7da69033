"""Length-prefixed JSON frames over pipes, shared by the pool (host) and the zygote (jail).

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (an object).
Either side treats what it reads as untrusted: sizes are capped, malformed frames are errors.

Two places carry raw bytes instead, so that trace data is never escaped into JSON strings or
copied through Python objects on the zygote's side (every page the zygote writes after a fork
costs a copy-on-write fault): a batch request is a JSON frame followed by the traces' bytes
(``blob_len`` in total, one length per item), and each result the zygote relays is a *result
frame* (``RESULT_TAG``, a fixed binary envelope, then the child's JSON as the child wrote it).
"""

from __future__ import annotations

import json
import json.encoder
import os
import select
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "FRAME_HEADER",
    "MAX_FRAME_BYTES",
    "RESULT_HEAD_SIZE",
    "RESULT_TAG",
    "FrameError",
    "FrameReader",
    "FrameTimeout",
    "FrameTooLarge",
    "decode_frame",
    "decode_result",
    "encode_frame",
    "encode_result",
    "result_head",
    "write_all",
    "write_all_v",
]

#: Largest frame either side accepts (requests carry traces of several MB).
MAX_FRAME_BYTES = 256 * 1024 * 1024
#: A frame's length prefix.
FRAME_HEADER = struct.Struct(">I")
_HEADER = FRAME_HEADER
#: First byte of a result frame (a JSON frame starts with ``{``).
RESULT_TAG = 0x52  # "R"
#: tag, request id, item index, elapsed ms, done flag
_RESULT = struct.Struct(">BQQdB")


class FrameError(Exception):
    """The peer closed the pipe, sent a malformed frame, or did not answer in time."""


class FrameTimeout(FrameError):
    """No complete frame before the deadline."""


class FrameTooLarge(FrameError):
    """A frame header claimed more bytes than the reader accepts."""


def decode_frame(body: bytes | str | memoryview) -> dict[str, Any]:
    """A JSON frame's body as a dict; FrameError for anything else."""
    try:
        message = json.loads(str(body, "utf-8") if isinstance(body, memoryview) else body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"malformed frame: {exc}") from None
    if not isinstance(message, dict):
        raise FrameError("a frame must hold a JSON object")
    return message


def _no_default(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: json.dumps(..., ensure_ascii=False, separators=(",", ":")) builds an encoder per call in
#: Python code; a forked child runs that code cold (copy-on-write faults). This one is built
#: once, at import, in the zygote. No cycle check: frames are made of fresh, acyclic values.
_make = getattr(json.encoder, "c_make_encoder", None)
_quote = getattr(json.encoder, "c_encode_basestring", None)
_C_ENCODER: Callable[[object, int], Iterable[str]] | None = (
    _make(None, _no_default, _quote, None, ":", ",", False, False, True)
    if _make is not None and _quote is not None
    else None
)


def encode_frame(message: dict[str, Any]) -> bytes:
    if _C_ENCODER is not None:
        text = "".join(_C_ENCODER(message, 0))
    else:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them, the peer decodes them back
        body = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


#: Bytes before a result frame's payload: the frame's length, then the envelope.
RESULT_HEAD_SIZE = _HEADER.size + _RESULT.size


def result_head(
    request_id: int, index: int, elapsed_ms: float, done: bool, payload_len: int
) -> bytes:
    """The start of a result frame whose payload (the child's JSON) follows."""
    return _HEADER.pack(_RESULT.size + payload_len) + _RESULT.pack(
        RESULT_TAG, request_id, index, elapsed_ms, done
    )


def encode_result(
    request_id: int, index: int, elapsed_ms: float, done: bool, payload: bytes
) -> bytes:
    """A result frame: the envelope the zygote vouches for, then the child's own JSON."""
    return result_head(request_id, index, elapsed_ms, done, len(payload)) + payload


def decode_result(body: bytes) -> tuple[int, int, float, bool, bytes]:
    """``(request_id, index, elapsed_ms, done, payload)`` of a result frame's body."""
    if len(body) < _RESULT.size:
        raise FrameError("truncated result frame")
    _, request_id, index, elapsed_ms, done = _RESULT.unpack_from(body)
    return request_id, index, elapsed_ms, bool(done), body[_RESULT.size :]


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_all_v(fd: int, buffers: list[bytes | memoryview]) -> None:
    """Write every buffer, in order, with as few system calls as the pipe allows."""
    pending = [memoryview(b) for b in buffers if len(b)]
    while pending:
        written = os.writev(fd, pending[:1024])  # IOV_MAX
        while written and pending:
            head = pending[0]
            if written >= len(head):
                written -= len(head)
                pending.pop(0)
            else:
                pending[0] = head[written:]
                written = 0


class FrameReader:
    """Reads frames from a file descriptor with an optional deadline."""

    __slots__ = ("_buf", "_fd", "_limit")

    def __init__(self, fd: int, *, limit: int = MAX_FRAME_BYTES) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._limit = limit

    def _fill(self, need: int, deadline: float | None) -> None:
        while len(self._buf) < need:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FrameTimeout("timed out waiting for a frame")
                ready, _, _ = select.select([self._fd], [], [], remaining)
                if not ready:
                    raise FrameTimeout("timed out waiting for a frame")
            chunk = os.read(self._fd, max(65536, need - len(self._buf)))
            if not chunk:
                raise FrameError("the peer closed the pipe")
            self._buf += chunk

    def read_raw(self, deadline: float | None = None) -> bytes:
        """The next frame's body, undecoded."""
        self._fill(4, deadline)
        (size,) = _HEADER.unpack_from(self._buf)
        if size > self._limit:
            raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {self._limit}")
        self._fill(4 + size, deadline)
        body = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return body

    def read(self, deadline: float | None = None) -> dict[str, Any]:
        """The next frame as a dict; raises FrameError on EOF, timeout or garbage."""
        return decode_frame(self.read_raw(deadline))
