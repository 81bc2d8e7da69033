"""Length-prefixed JSON frames over pipes, shared by the pool (host) and the zygote (jail).

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (an object).
Either side treats what it reads as untrusted: sizes are capped, malformed frames are errors.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any

__all__ = [
    "MAX_FRAME_BYTES",
    "FrameError",
    "FrameReader",
    "encode_frame",
    "write_all",
]

#: Largest frame either side accepts (requests carry traces of several MB).
MAX_FRAME_BYTES = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The peer closed the pipe, sent a malformed frame, or did not answer in time."""


def encode_frame(message: dict[str, Any]) -> bytes:
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them, the peer decodes them back
        body = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


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
                    raise FrameError("timed out waiting for a frame")
                ready, _, _ = select.select([self._fd], [], [], remaining)
                if not ready:
                    raise FrameError("timed out waiting for a frame")
            chunk = os.read(self._fd, max(65536, need - len(self._buf)))
            if not chunk:
                raise FrameError("the peer closed the pipe")
            self._buf += chunk

    def read_bytes(self, size: int, deadline: float | None = None) -> bytes:
        """Exactly ``size`` raw bytes (a blob that follows a frame)."""
        if size < 0 or size > self._limit:
            raise FrameError(f"blob of {size} bytes exceeds the limit of {self._limit}")
        self._fill(size, deadline)
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def read(self, deadline: float | None = None) -> dict[str, Any]:
        """The next frame as a dict; raises FrameError on EOF, timeout or garbage."""
        self._fill(4, deadline)
        (size,) = _HEADER.unpack_from(self._buf)
        if size > self._limit:
            raise FrameError(f"frame of {size} bytes exceeds the limit of {self._limit}")
        self._fill(4 + size, deadline)
        body = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        try:
            message = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"malformed frame: {exc}") from None
        if not isinstance(message, dict):
            raise FrameError("a frame must hold a JSON object")
        return message
