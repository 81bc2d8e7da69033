"""Reading trace and feedback files, with errors that name the file and line.

Traces: a JSON array, or JSON Lines (one object per line; blank lines are skipped). Each item is
an iofold trace (``{"trace_id", "steps": [...]}``) or a batch item (``{"trace_id", "data"}``).
Feedback: JSON Lines of ``{"trace_id", "rating": "positive" | "negative" | "neutral"}``.

Every problem raises :class:`~evaljail.errors.ConfigurationError` whose message starts with
``path:line:`` (``traces.jsonl:17: invalid JSON: ...``), like a compiler's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .metrics import Rating

__all__ = ["LoadedTrace", "load_feedback", "load_traces"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedTrace:
    """One trace read from a file, and where it was."""

    trace_id: str
    data: Any  #: what the eval receives
    line: int


def _fail(path: Path, line: int, message: str) -> ConfigurationError:
    return ConfigurationError(
        f"{path.name}:{line}: {message}", details={"path": str(path), "line": line}
    )


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"{path}: cannot read: {exc.strerror or exc}", details={"path": str(path)}
        ) from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(path, line, f"not UTF-8 text (byte {exc.start})") from exc


def _json_lines(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(path, number, f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
        except RecursionError as exc:
            raise _fail(path, number, "invalid JSON: nested too deeply") from exc


def _array_items(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Items of a JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    cursor = [0, 1]  # a position and its line number, moved forward only

    def lineno(at: int) -> int:
        cursor[1] += text.count("\n", cursor[0], at)
        cursor[0] = at
        return cursor[1]

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def expect_end(pos: int) -> None:
        if skip(pos) != len(text):
            raise _fail(path, lineno(skip(pos)), "invalid JSON: extra data after the array")

    pos = skip(text.index("[") + 1)
    if pos < len(text) and text[pos] == "]":
        expect_end(pos + 1)
        return
    while True:
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _fail(path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
        except RecursionError as exc:
            raise _fail(path, lineno(pos), "invalid JSON: nested too deeply") from exc
        yield lineno(pos), item
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            expect_end(pos + 1)
            return
        raise _fail(path, lineno(pos), "invalid JSON: expected ',' or ']' in the array")


def _trace_id(path: Path, line: int, item: Any) -> str:
    if not isinstance(item, dict):
        raise _fail(path, line, f"a trace must be a JSON object, got {type(item).__name__}")
    trace_id = item.get("trace_id")
    if isinstance(trace_id, bool) or not isinstance(trace_id, str | int):
        raise _fail(path, line, "a trace needs a string trace_id")
    return str(trace_id)


def load_traces(path: Path) -> list[LoadedTrace]:
    """Read every trace of ``path`` (JSON array or JSON Lines)."""
    text = _read_text(path)
    stripped = text.lstrip()
    items = _array_items(path, text) if stripped.startswith("[") else _json_lines(path, text)
    traces: list[LoadedTrace] = []
    for line, item in items:
        trace_id = _trace_id(path, line, item)
        if "data" in item and "steps" not in item:
            extra = set(item) - {"trace_id", "data"}
            if extra:
                raise _fail(
                    path,
                    line,
                    f"a {{trace_id, data}} item has unexpected keys: {', '.join(sorted(extra))}",
                )
            data = item["data"]
        else:
            data = item
        traces.append(LoadedTrace(trace_id=trace_id, data=data, line=line))
    if not traces:
        raise _fail(path, 1, "no traces in the file")
    return traces


def load_feedback(path: Path) -> dict[str, Rating]:
    """Read a feedback file into ``trace_id -> rating``; a trace rated twice is an error."""
    text = _read_text(path)
    ratings: dict[str, Rating] = {}
    first_line: dict[str, int] = {}
    for line, item in _json_lines(path, text):
        if not isinstance(item, dict):
            raise _fail(path, line, f"feedback must be a JSON object, got {type(item).__name__}")
        trace_id = item.get("trace_id")
        if isinstance(trace_id, bool) or not isinstance(trace_id, str | int):
            raise _fail(path, line, "feedback needs a string trace_id")
        raw = item.get("rating")
        try:
            rating = Rating(raw) if isinstance(raw, str) else None
        except ValueError:
            rating = None
        if rating is None:
            raise _fail(
                path, line, f"rating must be 'positive', 'negative' or 'neutral', got {raw!r}"
            )
        key = str(trace_id)
        if key in ratings:
            raise _fail(
                path, line, f"trace {key!r} is rated twice (first on line {first_line[key]})"
            )
        ratings[key] = rating
        first_line[key] = line
    return ratings
