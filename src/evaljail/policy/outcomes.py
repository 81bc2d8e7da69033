"""What the jail reported, judged: raw result frames -> ExecutionResult / TraceResult.

The per-execution child reports a small JSON dict (``status``, output, the eval's return value
described with exact types, resources). This module is the one place that turns it into
outcomes, error messages and contract verdicts, for every backend that runs code (the jailed
pool and the in-process mock alike). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from ..types import ExecutionResult, Outcome, TraceItem, TraceResult
from ._policy import Policy
from .contract import check_return

__all__ = ["script_result", "trace_result"]

_MIB = 1024 * 1024


class _Opaque:
    """A returned value that is not a plain type, known only by its type name."""

    __slots__ = ("evaljail_type_name", "text")

    def __init__(self, type_name: str, text: str) -> None:
        self.evaljail_type_name = type_name
        self.text = text


def _decode_value(d: Any) -> Any:
    if not isinstance(d, dict):
        return _Opaque("unknown", "")
    t = d.get("t")
    if t in ("bool", "str", "int", "float"):
        return d.get("v")
    if t == "NoneType":
        return None
    if t == "tuple":
        items = [_decode_value(i) for i in d.get("items", [])]
        length = int(d.get("len", len(items)))
        items += [_Opaque("object", "")] * max(length - len(items), 0)
        return tuple(items)
    return _Opaque(str(t), str(d.get("r", "")))


def _failure(raw: dict[str, Any], policy: Policy) -> tuple[Outcome, str, str | None]:
    """Outcome, error message and error type for a raw result that did not succeed."""
    status = raw.get("status")
    limits = policy.limits
    if status == "error":
        return Outcome.ERROR, str(raw.get("error", "error")), raw.get("error_type")
    timeouts = {
        "timeout": f"Execution timeout exceeded {limits.timeout_ms}ms",
        "cpu": f"CPU time limit exceeded ({limits.cpu_seconds} s)",
        "budget": "Batch time budget exhausted (batch_timeout_ms)",
    }
    if status in timeouts:
        return Outcome.TIMEOUT, timeouts[status], "TimeoutError"
    if status == "memory":
        message = f"Memory limit exceeded ({limits.memory_bytes // _MIB} MB)"
        return Outcome.MEMORY, message, "MemoryError"
    if status == "output_limit":
        stream = raw.get("stream", "output")
        message = f"Output limit exceeded: {stream} over {limits.output_bytes} characters"
        return Outcome.OUTPUT_LIMIT, message, "OutputLimitExceeded"
    if status == "internal":
        return Outcome.CRASHED, f"Sandbox failure: {raw.get('error', 'unknown')}", "SandboxError"
    return Outcome.CRASHED, f"Process crashed: {raw.get('error', 'no result')}", "ProcessCrashed"


def _common(raw: dict[str, Any], degraded: bool) -> dict[str, Any]:  # shared result fields
    return {
        "stdout": str(raw.get("stdout", "")),
        "stderr": str(raw.get("stderr", "")),
        "execution_time_ms": float(raw.get("elapsed_ms", 0.0)),
        "cpu_ms": float(raw.get("cpu_ms", 0.0)),
        "memory_peak_kb": int(raw.get("maxrss_kb", 0)),
        "degraded": degraded,
    }


def script_result(raw: dict[str, Any], policy: Policy, *, degraded: bool) -> ExecutionResult:
    common = _common(raw, degraded)
    if raw.get("status") == "ok":
        return ExecutionResult(success=True, outcome=Outcome.OK, output=common["stdout"], **common)
    outcome, error, error_type = _failure(raw, policy)
    return ExecutionResult(
        success=False,
        outcome=outcome,
        output=common["stdout"],
        error=error,
        error_type=error_type,
        traceback=raw.get("traceback"),
        **common,
    )


def trace_result(
    raw: dict[str, Any], item: TraceItem, policy: Policy, *, degraded: bool
) -> TraceResult:
    common = _common(raw, degraded)
    ident: dict[str, Any] = {"index": item.index, "trace_id": item.trace_id}
    if raw.get("status") != "ok":
        outcome, error, error_type = _failure(raw, policy)
        return TraceResult(**ident, success=False, outcome=outcome, error=error,
                           error_type=error_type, traceback=raw.get("traceback"),
                           **common)  # fmt: skip
    verdict = check_return(_decode_value(raw.get("value")))
    if not verdict.ok:
        return TraceResult(**ident, success=False, outcome=Outcome.SPEC_VIOLATION,
                           error=verdict.message, spec_violation=verdict.violation,
                           **common)  # fmt: skip
    return TraceResult(
        **ident,
        success=True,
        outcome=Outcome.PASSED if verdict.passed else Outcome.FAILED,
        passed=verdict.passed,
        reason=verdict.reason,
        **common,
    )
