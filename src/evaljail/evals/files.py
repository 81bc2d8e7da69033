"""Reading trace and feedback files, with errors that name the file and line.

Traces: a JSON array, or JSON Lines (one object per line; blank lines are skipped). Each item is
an iofold trace (``{"trace_id", "steps": [...]}``) or a batch item (``{"trace_id", "data"}``).
Feedback: JSON Lines of ``{"trace_id", "rating": "positive" | "negative" | "neutral"}``.
A ``trace_id`` is a string or an integer (``42`` and ``"42"`` are the same trace); each must be
unique in its file. Numbers of any length are read (JSON has no limit; CPython's 4 300-digit
limit on int conversion does not apply to the files).

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
from ..types import loads_json, raw_decode_json, trace_id_text
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
            yield number, loads_json(line)
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
            item, end = raw_decode_json(decoder, text, pos)
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


def _id(path: Path, line: int, item: dict[str, Any], what: str) -> str:
    trace_id = item.get("trace_id")
    if isinstance(trace_id, bool) or not isinstance(trace_id, str | int):
        message = f"{what} needs a trace_id (a string or an integer)"
        if "trace_id" in item:
            message += f", got {_json_type(trace_id)}"
        raise _fail(path, line, message)
    return trace_id_text(trace_id)


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", float: "a number", list: "an array"}
    return names.get(type(value), "an object")


def _trace_id(path: Path, line: int, item: Any) -> str:
    if not isinstance(item, dict):
        raise _fail(path, line, f"a trace must be a JSON object, got {type(item).__name__}")
    return _id(path, line, item, "a trace")


#: How many duplicated ids an error message names (the details name them all).
_NAMED_DUPLICATES = 10


def _duplicates_error(path: Path, lines: dict[str, list[int]]) -> ConfigurationError:
    duplicated = {key: where for key, where in lines.items() if len(where) > 1}
    ordered = sorted(duplicated.items(), key=lambda kv: kv[1][1])
    named = [
        f"{key!r} (lines {', '.join(map(str, where))})"
        for key, where in ordered[:_NAMED_DUPLICATES]
    ]
    more = len(ordered) - len(named)
    listing = ", ".join(named) + (f" and {more} more" if more else "")
    line = ordered[0][1][1]
    what = "a duplicate trace id" if len(ordered) == 1 else f"{len(ordered)} duplicate trace ids"
    return ConfigurationError(
        f"{path.name}:{line}: {what}: {listing}; every trace needs its own "
        "trace_id (results and ratings are matched by it)",
        details={"path": str(path), "line": line, "duplicates": dict(ordered)},
    )


def load_traces(path: Path) -> list[LoadedTrace]:
    """Read every trace of ``path`` (JSON array or JSON Lines)."""
    text = _read_text(path)
    stripped = text.lstrip()
    items = _array_items(path, text) if stripped.startswith("[") else _json_lines(path, text)
    traces: list[LoadedTrace] = []
    lines: dict[str, list[int]] = {}
    for line, item in items:
        trace_id = _trace_id(path, line, item)
        lines.setdefault(trace_id, []).append(line)
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
    if len(lines) < len(traces):
        raise _duplicates_error(path, lines)
    return traces


def load_feedback(path: Path) -> dict[str, Rating]:
    """Read a feedback file into ``trace_id -> rating``; a trace rated twice is an error.

    An empty file gives an empty mapping: the caller warns (nothing can be compared).
    """
    text = _read_text(path)
    ratings: dict[str, Rating] = {}
    first_line: dict[str, int] = {}
    for line, item in _json_lines(path, text):
        if not isinstance(item, dict):
            raise _fail(path, line, f"feedback must be a JSON object, got {type(item).__name__}")
        key = _id(path, line, item, "feedback")
        raw = item.get("rating")
        try:
            rating = Rating(raw) if isinstance(raw, str) else None
        except ValueError:
            rating = None
        if rating is None:
            raise _fail(
                path, line, f"rating must be 'positive', 'negative' or 'neutral', got {raw!r}"
            )
        if key in ratings:
            raise _fail(
                path, line, f"trace {key!r} is rated twice (first on line {first_line[key]})"
            )
        ratings[key] = rating
        first_line[key] = line
    return ratings
