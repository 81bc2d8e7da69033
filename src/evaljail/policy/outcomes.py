"""What the jail reported, judged: raw result frames -> ExecutionResult / TraceResult.

The per-execution child reports a small JSON dict (``status``, output, the eval's return value
described with exact types, resources). This module is the one place that turns it into
outcomes, error messages and contract verdicts, for every backend that runs code (the jailed
pool and the in-process mock alike). Pure: no I/O.
"""

from __future__ import annotations

import math
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


_PLAIN: dict[str, type | tuple[type, ...]] = {
    "bool": bool, "str": str, "int": int, "float": (int, float)
}  # fmt: skip


def _decode_value(d: Any, depth: int = 0) -> Any:
    """The eval's return value as the child described it (a forged description is only
    ever that execution's own result, but it must not crash the host: types are checked)."""
    if not isinstance(d, dict):
        return _Opaque("unknown", "")
    t = d.get("t")
    if isinstance(t, str) and t in _PLAIN:
        v = d.get("v")
        ok = isinstance(v, _PLAIN[t]) and (t == "bool" or not isinstance(v, bool))
        if not ok:
            return _Opaque(t, "")
        return float(v) if t == "float" and isinstance(v, int) else v
    if t == "NoneType":
        return None
    if t == "tuple" and depth == 0:
        raw_items = d.get("items")
        raw_items = raw_items[:3] if isinstance(raw_items, list) else []
        items = [_decode_value(i, depth + 1) for i in raw_items]
        length = d.get("len")
        length = length if isinstance(length, int) and 0 <= length < 2**31 else len(items)
        items += [_Opaque("object", "")] * max(min(length, 1 << 16) - len(items), 0)
        return tuple(items)
    return _Opaque(str(t)[:100], str(d.get("r", ""))[:200])


def _text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _number(raw: dict[str, Any], key: str) -> float:
    value = raw.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def _failure(raw: dict[str, Any], policy: Policy) -> tuple[Outcome, str, str | None]:
    """Outcome, error message and error type for a raw result that did not succeed."""
    status = raw.get("status")
    limits = policy.limits
    if status == "error":
        return Outcome.ERROR, _text(raw, "error") or "error", _text(raw, "error_type")
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
        stream = _text(raw, "stream") or "output"
        message = f"Output limit exceeded: {stream} over {limits.output_bytes} characters"
        return Outcome.OUTPUT_LIMIT, message, "OutputLimitExceeded"
    if status == "internal":
        return (
            Outcome.CRASHED,
            f"Sandbox failure: {_text(raw, 'error') or 'unknown'}",
            "SandboxError",
        )
    return (
        Outcome.CRASHED,
        f"Process crashed: {_text(raw, 'error') or 'no result'}",
        "ProcessCrashed",
    )


def _common(raw: dict[str, Any], degraded: bool) -> dict[str, Any]:  # shared result fields
    return {
        "stdout": _text(raw, "stdout") or "",
        "stderr": _text(raw, "stderr") or "",
        "execution_time_ms": _number(raw, "elapsed_ms"),
        "cpu_ms": _number(raw, "cpu_ms"),
        "memory_peak_kb": int(min(_number(raw, "maxrss_kb"), 2**53)),
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
        traceback=_text(raw, "traceback"),
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
                           error_type=error_type, traceback=_text(raw, "traceback"),
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
