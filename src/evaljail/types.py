"""The vocabulary shared by every layer: outcomes, findings and frozen results.

A user's code failing is a value here (an :class:`Outcome`), never an exception.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "BatchExecutionResult",
    "ExecutionResult",
    "Outcome",
    "TraceItem",
    "TraceResult",
    "Violation",
    "loads_json",
    "raw_decode_json",
    "trace_id_text",
]


#: Decodes JSON integers of any length: JSON has no digit limit, CPython's ``int(str)`` has
#: one (4 300 digits); ``Decimal`` has none. Used only once the default decoder refused.
_ANY_INT_DECODER = json.JSONDecoder(parse_int=lambda digits: int(Decimal(digits)))


def raw_decode_json(decoder: json.JSONDecoder, text: str, pos: int = 0) -> tuple[Any, int]:
    """``decoder.raw_decode(text, pos)``, with integers of any length."""
    try:
        return decoder.raw_decode(text, pos)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer of more than 4 300 digits
        return _ANY_INT_DECODER.raw_decode(text, pos)


def loads_json(text: str) -> Any:
    """``json.loads(text)``, with integers of any length (as the jailed child reads traces)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer of more than 4 300 digits
        return _ANY_INT_DECODER.decode(text)


def trace_id_text(value: str | int) -> str:
    """A trace id as results carry it: a string or an integer (not a bool), as text.

    ``42`` and ``"42"`` name the same trace. An integer of any length is accepted (CPython's
    4 300-digit limit applies to ``str(int)``, not to ``Decimal``). Raises TypeError otherwise.
    """
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a trace_id must be a string or an integer, got {type(value).__name__}")
    try:
        return str(int(value))
    except ValueError:  # more than 4 300 digits
        return str(Decimal(int(value)))


class Outcome(enum.StrEnum):
    """How one execution ended."""

    OK = "ok"  #: a script ran to completion (``execute``)
    PASSED = "passed"  #: an eval returned ``(True, reason)``
    FAILED = "failed"  #: an eval returned ``(False, reason)``
    ERROR = "error"  #: the code raised an exception
    TIMEOUT = "timeout"  #: the wall-clock deadline was reached and the process killed
    MEMORY = "memory"  #: the memory limit was reached
    OUTPUT_LIMIT = "output_limit"  #: stdout/stderr exceeded the output cap
    REJECTED = "rejected"  #: static analysis refused the source; nothing ran
    SPEC_VIOLATION = "spec_violation"  #: an eval returned something other than (bool, str)
    CRASHED = "crashed"  #: the process died (signal, seccomp kill, broken frame)

    @property
    def succeeded(self) -> bool:
        """True when the code ran to completion and honoured its contract."""
        return self in (Outcome.OK, Outcome.PASSED, Outcome.FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One static-analysis finding."""

    rule_id: str
    line: int
    col: int
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "line": self.line,
            "col": self.col,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionResult:
    """The result of running a script (``PythonRunner.execute``).

    ``output`` is what the script printed on stdout (script semantics, as the seed's executor).
    """

    success: bool
    outcome: Outcome
    output: str = ""
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    stdout: str = ""
    stderr: str = ""
    execution_time_ms: float = 0.0
    cpu_ms: float = 0.0
    memory_peak_kb: int = 0
    violations: tuple[Violation, ...] = ()
    degraded: bool = False  #: True when some isolation layer was off (never in strict mode)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "outcome": self.outcome.value,
            "output": self.output,
            "error": self.error,
            "error_type": self.error_type,
            "traceback": self.traceback,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "execution_time_ms": self.execution_time_ms,
            "cpu_ms": self.cpu_ms,
            "memory_peak_kb": self.memory_peak_kb,
            "violations": [v.to_dict() for v in self.violations],
            "degraded": self.degraded,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceResult:
    """The result of one eval over one trace.

    ``passed`` and ``reason`` are set only when the eval honoured its contract
    (``success`` is then True). ``spec_violation`` names the broken rule otherwise.
    """

    trace_id: str
    success: bool
    outcome: Outcome
    index: int = 0  #: position of the trace in the batch
    passed: bool | None = None
    reason: str | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    spec_violation: str | None = None
    stdout: str = ""
    stderr: str = ""
    execution_time_ms: float = 0.0
    cpu_ms: float = 0.0
    memory_peak_kb: int = 0
    degraded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "index": self.index,
            "success": self.success,
            "outcome": self.outcome.value,
            "passed": self.passed,
            "reason": self.reason,
            "error": self.error,
            "error_type": self.error_type,
            "traceback": self.traceback,
            "spec_violation": self.spec_violation,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "execution_time_ms": self.execution_time_ms,
            "cpu_ms": self.cpu_ms,
            "memory_peak_kb": self.memory_peak_kb,
            "degraded": self.degraded,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchExecutionResult:
    """The results of one eval over many traces, in input order."""

    results: tuple[TraceResult, ...]
    total_time_ms: float
    violations: tuple[Violation, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        """Number of results per outcome."""
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
        return counts

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.outcome is Outcome.PASSED)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.outcome is Outcome.FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "total_time_ms": self.total_time_ms,
            "violations": [v.to_dict() for v in self.violations],
            "counts": self.counts,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceItem:
    """One trace of a batch, ready to send: its position, id and JSON-encoded data."""

    index: int
    trace_id: str
    data_json: str
