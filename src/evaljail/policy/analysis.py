"""Static analysis (layer 1): parse untrusted source and report what the policy forbids.

:func:`analyze` is pure (no I/O, no state) and parses with :mod:`ast`, never with patterns. It
returns every finding as a :class:`~evaljail.types.Violation` with a stable rule id, a 1-based
line and (character) column, a message and a hint; the rule ids are listed in
``docs/static-analysis.md``. It is a fast first rejection, never the only defence: the jail
(layers 2 to 4) stops what it misses.

Input it cannot analyse safely is an exception, never a crash or a stall:

- source over ``policy.limits.max_source_bytes`` raises :class:`SourceTooLargeError` (checked
  before anything is decoded or parsed);
- source nested deeper than ``policy.limits.max_nesting`` (AST depth), or deeper than the
  CPython tokenizer and parser accept (200 brackets, 100 indentation levels, parser stack),
  raises :class:`SourceTooComplexError`.

Parser warnings about the source (SyntaxWarning, DeprecationWarning) are ignored: see
:func:`_ignore_parser_warnings`, the one process-wide side effect. Parsing itself is serialised
across threads (:data:`_PARSE_LOCK`), the one piece of module state: see :func:`parse_module`.

Source that is not text is a finding, not an exception: bytes that do not decode (UTF-8 unless
a PEP 263 coding comment says otherwise) and strings with lone surrogates give an
``encoding-error`` violation; null bytes give a ``syntax-error`` violation, as in Python 3.12.
"""

from __future__ import annotations

import ast
import bisect
import io
import itertools
import re
import threading
import tokenize
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, SourceTooComplexError, SourceTooLargeError
from ..types import Violation
from ._checker import Checker, Finding
from ._policy import Policy
from ._rules import RULES

__all__ = ["AnalysisReport", "analyze", "parse_module"]

#: Syntax errors that are the tokenizer's nesting limits: "too complex", not "invalid".
_TOKENIZER_LIMITS = ("too many nested parentheses", "too many levels of indentation")

#: The file name untrusted source is parsed under; parser warnings are attributed to it.
_PARSE_FILENAME = "<evaljail-analysis>"

#: CPython 3.11 keeps the AST constructor's recursion-depth count in per-interpreter state
#: (python/cpython#106905): when another thread's ``ast.parse`` starts while one is building
#: its tree (a garbage collection that runs Python code lets the interpreter switch threads
#: there), one of them fails with ``SystemError: AST constructor recursion depth mismatch``.
#: ``ast.parse`` holds the GIL throughout, so serialising it costs no parallelism.
_PARSE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisReport:
    """What static analysis found in one source."""

    violations: tuple[Violation, ...]  #: sorted by position; empty when the source is accepted
    tree: ast.Module | None  #: None when the source does not parse
    imports: frozenset[str]  #: every module name the source imports (full dotted names)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "violations": [v.to_dict() for v in self.violations],
            "imports": sorted(self.imports),
        }


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]`` (lines end at \\n, \\r\\n or \\r)."""
    head = text[:index].replace("\r\n", "\n").replace("\r", "\n")
    line = head.count("\n") + 1
    return line, len(head) - head.rfind("\n")


def _rejected(rule_id: str, line: int, col: int, message: str) -> AnalysisReport:
    violation = Violation(
        rule_id=rule_id, line=line, col=col, message=message, hint=RULES[rule_id].hint
    )
    return AnalysisReport(violations=(violation,), tree=None, imports=frozenset())


def _too_large(size: int, limit: int) -> SourceTooLargeError:
    return SourceTooLargeError(
        f"source is {size} bytes, over the limit of {limit} bytes",
        details={"size_bytes": size, "max_source_bytes": limit},
    )


def _too_complex(why: str, limit: int) -> SourceTooComplexError:
    return SourceTooComplexError(
        f"source is nested too deeply to analyse safely ({why}; the limit is {limit} levels)",
        details={"max_nesting": limit},
    )


def _decode(data: bytes) -> str | AnalysisReport:
    """The text of ``data`` as Python would read the file, or an ``encoding-error`` report."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        return _rejected("encoding-error", exc.lineno or 1, 1, f"source encoding: {exc.msg}")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        col = len(head) - (head.rfind(b"\n") + 1) + 1
        return _rejected(
            "encoding-error", line, col, f"source is not valid {encoding}: {exc.reason}"
        )
    except (LookupError, ValueError) as exc:
        return _rejected("encoding-error", 1, 1, f"cannot decode source as {encoding}: {exc}")


def _ignore_parser_warnings() -> None:
    """Ignore the parser's warnings about untrusted source (``invalid decimal literal``,
    invalid escape sequences), which are attributed to :data:`_PARSE_FILENAME`.

    They are the submitter's business, not the service's stderr's, and must not turn into
    errors under ``-W error`` (the result of analysis would then depend on interpreter flags).
    ``warnings.catch_warnings`` is not thread-safe, so instead one narrow filter is kept first
    in the process's filter list (moved back to the front if something was put before it); it
    matches nothing else.
    """
    pattern = re.escape(_PARSE_FILENAME)
    first = warnings.filters[0] if warnings.filters else None
    if first is None or first[0] != "ignore" or getattr(first[3], "pattern", None) != pattern:
        warnings.filterwarnings("ignore", module=pattern)  # replaces an older copy, if any


def _columns(findings: list[Finding], text: str) -> tuple[Violation, ...]:
    """Findings as violations: 1-based character columns, sorted, duplicates removed."""
    lines: list[str] | None = None
    ends: dict[int, list[int]] = {}  # per non-ASCII line: the byte offset each character ends at
    violations: set[Violation] = set()
    for finding in findings:
        col = finding.col_offset + 1
        if lines is None:
            lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if 0 < finding.line <= len(lines) and not lines[finding.line - 1].isascii():
            line_ends = ends.get(finding.line)
            if line_ends is None:  # once per line: many findings on one long line stay linear
                line_ends = ends[finding.line] = list(
                    itertools.accumulate(
                        len(c.encode("utf-8", "surrogatepass")) for c in lines[finding.line - 1]
                    )
                )
            col = bisect.bisect_right(line_ends, finding.col_offset) + 1
        violations.add(
            Violation(
                rule_id=finding.rule_id,
                line=finding.line,
                col=col,
                message=finding.message,
                hint=finding.hint,
            )
        )
    return tuple(sorted(violations, key=lambda v: (v.line, v.col, v.rule_id, v.message)))


def parse_module(text: str, filename: str = _PARSE_FILENAME) -> ast.Module:
    """``ast.parse(text, filename)``, safe to call from several threads at once.

    Every ``ast.parse`` of untrusted source in a multi-threaded host (the service analyses in
    worker threads) should go through here; it raises what ``ast.parse`` raises.
    """
    with _PARSE_LOCK:
        return ast.parse(text, filename=filename, mode="exec")


def analyze(source: str | bytes, policy: Policy | None = None) -> AnalysisReport:
    """Check ``source`` against ``policy`` (default: the core policy) without running it.

    Raises only :class:`~evaljail.errors.EvaljailError` subclasses: SourceTooLargeError,
    SourceTooComplexError, or ConfigurationError when ``source`` is neither str nor bytes.
    """
    policy = Policy() if policy is None else policy
    limit = policy.limits.max_source_bytes
    nesting = policy.limits.max_nesting
    if isinstance(source, bytes):
        if len(source) > limit:
            raise _too_large(len(source), limit)
        decoded = _decode(source)
        if isinstance(decoded, AnalysisReport):
            return decoded
        text = decoded
    elif isinstance(source, str):
        # Every character is at least one UTF-8 byte: skip encoding huge strings.
        size = len(source) if len(source) > limit else len(source.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise _too_large(size, limit)
        text = source
    else:
        raise ConfigurationError(f"source must be str or bytes, got {type(source).__name__}")

    _ignore_parser_warnings()
    try:
        tree = parse_module(text)
    except SyntaxError as exc:
        message = exc.msg or "invalid syntax"
        if any(limit_msg in message for limit_msg in _TOKENIZER_LIMITS):
            raise _too_complex(message, nesting) from exc
        if exc.lineno is None and "\0" in text:  # null bytes: Python 3.11 gives no position
            line, col = _position(text, text.find("\0"))
            return _rejected("syntax-error", line, col, message)
        return _rejected("syntax-error", exc.lineno or 1, exc.offset or 1, message)
    except (RecursionError, MemoryError) as exc:
        raise _too_complex("the Python parser ran out of stack", nesting) from exc
    except UnicodeEncodeError as exc:  # lone surrogates cannot be compiled
        line, col = _position(text, exc.start)
        return _rejected("encoding-error", line, col, "source contains a lone surrogate")
    except ValueError:  # "source code string cannot contain null bytes" (Python 3.11)
        line, col = _position(text, max(text.find("\0"), 0))
        return _rejected("syntax-error", line, col, "source code cannot contain null bytes")

    checker = Checker(policy)
    try:
        findings = checker.run(tree)
    except (RecursionError, MemoryError) as exc:
        raise _too_complex("analysis ran out of stack", nesting) from exc
    return AnalysisReport(
        violations=_columns(findings, text), tree=tree, imports=frozenset(checker.imports)
    )
