"""Which attributes a ``str.format`` format string reads.

``"{0.__class__}".format(x)`` reads ``x.__class__`` without any attribute node in the source,
so the checker parses format strings the way ``str.format`` does: replacement fields come from
:meth:`string.Formatter.parse` (the same C parser that ``str.format`` uses), nested fields in
format specs are followed, and each field name is split into its ``.attr`` / ``[key]`` parts as
CPython's ``FieldNameIterator`` does.
"""

from __future__ import annotations

import string
from collections.abc import Iterator

__all__ = ["field_attributes", "format_attributes"]

#: ``str.format`` refuses to nest replacement fields deeper than this; we follow one level more.
_MAX_SPEC_NESTING = 3


def field_attributes(field_name: str) -> Iterator[str]:
    """The attribute names read by one field name, in order (``0.a[k].b`` -> a, b).

    Stops where ``str.format`` would raise: nothing after a malformed part is evaluated.
    """
    i, n = 0, len(field_name)
    while i < n and field_name[i] not in ".[":
        i += 1
    while i < n:
        if field_name[i] == ".":
            j = i + 1
            while j < n and field_name[j] not in ".[":
                j += 1
            if j == i + 1:
                return  # "Empty attribute in format string"
            yield field_name[i + 1 : j]
            i = j
        elif field_name[i] == "[":
            j = field_name.find("]", i + 1)
            if j < 0:
                return  # "Missing ']' in format string"
            i = j + 1
        else:
            return  # "Only '.' or '[' may follow ']' in format field specifier"


def format_attributes(fmt: str) -> Iterator[tuple[str, str]]:
    """Yield ``(field_name, attribute)`` for every attribute the format string reads.

    Parsing stops at the first malformed part, exactly where ``str.format`` would raise; the
    fields before it are still reported because ``str.format`` evaluates them first.
    """
    formatter = string.Formatter()
    pending: list[tuple[str, int]] = [(fmt, 0)]
    while pending:
        text, level = pending.pop()
        parsed = iter(formatter.parse(text))
        while True:
            try:
                _literal, field_name, spec, _conversion = next(parsed)
            except (StopIteration, ValueError):
                break
            if field_name:
                for attribute in field_attributes(field_name):
                    yield field_name, attribute
            if spec and "{" in spec and level < _MAX_SPEC_NESTING:
                pending.append((spec, level + 1))
